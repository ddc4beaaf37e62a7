"""Compiled kernel for the one-query read of a half-precision memory: the default fast path.

`memory_read`'s Gram order in torch makes two passes (a half mat-vec over the rows, then the
Gram form with an fp16 -> fp32 conversion). `csrc/fused_read.cpp` does both in one pass per
class with F16C + FMA and OpenMP, which brings a one-query read close to the time of streaming
the memory's bytes. It is built with torch's cpp_extension (a C++ compiler and `ninja`, in the
`fast` and `dev` extras) at install time by `scripts/setup.sh` (`python -m genba.memory.fused`),
or on first use (about 25 s) if it was not; the built library is then imported directly on
later runs. Memories use it by default (`kernel="auto"`) wherever it applies (float16 rows with
a Gram matrix, one query, D a multiple of 8); when it cannot be built, `load()` warns once and
every read takes the torch path, which gives the same logits to float rounding.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from pathlib import Path

import torch

NAME = "genba_fused_read"
SOURCE = Path(__file__).with_name("csrc") / "fused_read.cpp"
FLAGS = dict(extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"], extra_ldflags=["-fopenmp"])


def _prebuilt():
    """The library torch built earlier for this source, imported without re-running the build check, or None."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        library = Path(_get_build_directory(NAME, verbose=False)) / f"{NAME}.so"
        if not library.exists() or library.stat().st_mtime < SOURCE.stat().st_mtime:
            return None
        spec = importlib.util.spec_from_file_location(NAME, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[NAME] = module
        return module
    except Exception:  # noqa: BLE001 - any problem: build (or fail) the ordinary way
        return None


@functools.lru_cache(maxsize=1)
def load():
    """The compiled module, or None (with one warning per process) when it cannot be built here."""
    module = _prebuilt()
    if module is not None:
        return module
    try:
        from torch.utils.cpp_extension import load as load_extension

        return load_extension(NAME, [str(SOURCE)], verbose=False, **FLAGS)
    except Exception as error:  # no compiler, no ninja, unsupported CPU: keep the torch path
        first = str(error).splitlines()[0] if str(error) else ""
        warnings.warn(f"genba: compiled memory read unavailable ({type(error).__name__}: {first}); using the torch path "
                      "(same results, slower one-query reads); install a C++ compiler and ninja (pip install "
                      "'genba[fast]') to enable it", stacklevel=2)
        return None


def applies(rows: torch.Tensor, gram: torch.Tensor | None, q: torch.Tensor) -> bool:
    """True when the compiled read handles this memory and query."""
    return rows.device.type == "cpu" and rows.dtype == torch.float16 and gram is not None and gram.dtype == torch.float16 and q.shape[0] == 1 \
        and rows.shape[2] % 8 == 0


def fused_read(rows: torch.Tensor, gram: torch.Tensor, valid: torch.Tensor, q: torch.Tensor, *, beta: float, scale: float) -> torch.Tensor | None:
    """(C, S, D) fp16 rows, (C, S, S) fp16 Gram, (C, S) mask, (1, D) query -> (1, C) logits, or None."""
    if not applies(rows, gram, q):
        return None
    module = load()
    if module is None:
        return None
    return module.fused_read(rows, gram, valid, q[0].float().contiguous(), float(beta), float(scale))[None]


if __name__ == "__main__":  # install-time build: python -m genba.memory.fused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = load()
    print(f"genba: compiled memory read {'ready' if built is not None else 'not built (torch path): ' + str(caught[0].message if caught else '')}")
