"""A content-checked tensor store on disk: one verified artefact (genba.artefact) per entry.

Each entry is one `.safetensors` file named by the sha256 of its key (a dict of strings), of
artefact kind "cache-entry" with the key as its metadata. `load` reads it through
genba.artefact.read_artefact (checksum over the key and the tensors, bounded header, finite
tensors), so a truncated, corrupted, edited or foreign file is detected, deleted and reported as
a miss (the caller recomputes), never used and never a crash. Entries written before the artefact
format (metadata "key" + a tensor-only "sha256") are still read and verified, so existing cached
features stay valid. Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable

import torch

from genba.artefact import ArtefactError, atomic_write_bytes, read_artefact, write_artefact  # noqa: F401 - re-exported
from genba.metaschema import AnyJSON, Dict, Schema

CACHE_KIND = "cache-entry"
SCHEMA = Schema({"key": Dict(values=AnyJSON(), max_len=1000)})


class CacheCorruptWarning(UserWarning):
    """A cache file failed its checksum or could not be parsed; it was deleted and rebuilt."""


def key_digest(key: dict[str, str]) -> str:
    """Stable short hex digest of a key dict."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor, in name order (cache keys use it)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class TensorCache:
    """Folder of verified artefact entries keyed by dicts of strings."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: dict[str, str]) -> Path:
        return self.root / kind / f"{key_digest(key)}.safetensors"

    def load(self, kind: str, key: dict[str, str]) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent; a damaged entry is deleted and warned about."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            entry = read_artefact(path, kind=CACHE_KIND, schema=SCHEMA)
            problem = None if entry.meta["key"] == key else "its key does not match"
        except ArtefactError as error:
            problem = error.problem
        if problem is None:
            return entry.tensors
        warnings.warn(f"cache entry {path} is unusable: {problem}; deleting it and recomputing", CacheCorruptWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return None

    def save(self, kind: str, key: dict[str, str], tensors: dict[str, torch.Tensor]) -> Path:
        """Store `tensors` under `key` atomically; returns the file path."""
        path = self.path(kind, key)
        write_artefact(path, kind=CACHE_KIND, meta={"key": dict(key)}, tensors=tensors)
        return path

    def get_or_compute(self, kind: str, key: dict[str, str], compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Load the entry, or compute, store and return it."""
        found = self.load(kind, key)
        if found is not None:
            return found
        tensors = compute()
        self.save(kind, key, tensors)
        return tensors


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 hex


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (for weights provenance), memoized per (path, size, mtime) for
    this process: every encoder, backbone and teacher that loads the same weights hashes them once."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(resolved, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
