"""Optional compiled kernel for the one-query read of a half-precision memory.

`memory_read`'s Gram order in torch makes two passes (a half mat-vec over the rows, then the
Gram form with an fp16 -> fp32 conversion). `csrc/fused_read.cpp` does both in one pass per
class with F16C + FMA and OpenMP, which brings a one-query read close to the time of streaming
the memory's bytes. It is compiled on first use with torch's cpp_extension (needs a C++
compiler and `ninja`: `pip install 'genba[fast]'`), about 25 s, cached by torch afterwards.
When it cannot be built, `load()` returns None and callers keep the torch path.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def load():
    """The compiled module, or None (with one warning) when it cannot be built here."""
    try:
        from torch.utils.cpp_extension import load as load_extension

        source = Path(__file__).with_name("csrc") / "fused_read.cpp"
        return load_extension("genba_fused_read", [str(source)], extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"],
                              extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # no compiler, no ninja, unsupported CPU: keep the torch path
        warnings.warn(f"genba: fused memory read unavailable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); using torch", stacklevel=2)
        return None


def fused_read(rows: torch.Tensor, gram: torch.Tensor, valid: torch.Tensor, q: torch.Tensor, *, beta: float, scale: float) -> torch.Tensor | None:
    """(C, S, D) fp16 rows, (C, S, S) fp16 Gram, (C, S) mask, (1, D) query -> (1, C) logits, or None."""
    if rows.dtype != torch.float16 or gram is None or gram.dtype != torch.float16 or q.shape[0] != 1 or rows.shape[2] % 8:
        return None
    module = load()
    if module is None:
        return None
    return module.fused_read(rows, gram, valid, q[0].float().contiguous(), float(beta), float(scale))[None]
