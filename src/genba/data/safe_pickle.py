"""Load pickled numpy arrays without running arbitrary code.

`pickle.load` calls whatever callable a file names, so a crafted file can run `os.system`.
`load_arrays` uses an Unpickler whose `find_class` resolves only the few globals a plain
numpy ndarray (or numpy scalar) pickle needs and raises `UnsafePickleError` on anything else.
Elements of object arrays go through the same `find_class`, so they are held to it too.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import IO

# (module, name) pairs a numpy array pickle may reference. "numpy.core" was renamed
# "numpy._core" in numpy 2; both spellings appear in files written by different versions.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes as latin-1 text
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the numpy-array allowlist."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(f"refusing to load global {module}.{name} from a pickle")
        if module.startswith("numpy.core"):
            # Import the numpy-2 location directly to avoid the numpy.core deprecation shim.
            try:
                return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
            except ImportError:  # numpy 1.x
                pass
        return getattr(importlib.import_module(module), name)


def load_arrays(file: IO[bytes]) -> object:
    """Unpickle `file`, allowing only numpy arrays, dtypes and numpy scalars.

    Raises:
        UnsafePickleError: the pickle names any other global.
    """
    return _ArrayUnpickler(file).load()


def loads_arrays(data: bytes) -> object:
    """`load_arrays` over an in-memory bytes object."""
    return load_arrays(io.BytesIO(data))

