"""A content-checked tensor store on disk: safetensors files written atomically.

Each entry is one `.safetensors` file named by the sha256 of its key (a dict of strings).
The file's metadata holds the key and a sha256 over every tensor's bytes; `load` recomputes
it, so a truncated or corrupted file is detected, deleted and reported as a miss (the caller
recomputes), never silently used. Writes go to a temporary file in the same folder, are
fsynced, then renamed over the target (`os.replace`), so a crash never leaves a half file
under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from genba.errors import GenbaError


class CacheCorruptWarning(UserWarning):
    """A cache file failed its checksum or could not be parsed; it was deleted and rebuilt."""


def key_digest(key: dict[str, str]) -> str:
    """Stable short hex digest of a key dict."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checked(path: str | Path, tensors: dict[str, torch.Tensor], *, format: str,
                  metadata: dict[str, str] | None = None) -> Path:
    """One safetensors file of `tensors` with string `metadata`, its `format` tag and the sha256
    of the tensor bytes, written atomically: the shape of every file a user keeps (training
    checkpoints, replay buffers, concept banks, MoViT and SAK models)."""
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}  # no shared storage
    meta = {**(metadata or {}), "format": format, "sha256": tensors_digest(tensors)}
    path = Path(path)
    atomic_write_bytes(path, save_bytes(tensors, metadata=meta))
    return path


def read_checked(path: str | Path, *, format: str, what: str, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file written by write_checked; a missing, unreadable, foreign
    (other `format`) or damaged (checksum) file is one GenbaError naming `what` and ending in `fix`.
    Nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise GenbaError(f"no {what} at {path}: {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise GenbaError(f"{path} cannot be read as a {what} ({error}); {fix}") from None
    if meta.get("format") != format:
        raise GenbaError(f"{path} is not a genba {what} (format {meta.get('format')!r}, expected {format!r}); {fix}")
    if meta.get("sha256") != tensors_digest(tensors):
        raise GenbaError(f"{path} fails its checksum (damaged or edited); {fix}")
    return tensors, meta


class TensorCache:
    """Folder of checksummed safetensors entries keyed by dicts of strings."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: dict[str, str]) -> Path:
        return self.root / kind / f"{key_digest(key)}.safetensors"

    def load(self, kind: str, key: dict[str, str]) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent; a damaged entry is deleted and warned about."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        problem = None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if json.loads(meta.get("key", "null")) != key:
                problem = "its key does not match"
            elif meta.get("sha256") != tensors_digest(tensors):
                problem = "its checksum does not match (corrupted)"
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
            problem = f"it cannot be read ({error})"
        if problem is None:
            return tensors
        warnings.warn(f"cache entry {path} is unusable: {problem}; deleting it and recomputing", CacheCorruptWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return None

    def save(self, kind: str, key: dict[str, str], tensors: dict[str, torch.Tensor]) -> Path:
        """Store `tensors` under `key` atomically; returns the file path."""
        tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
        metadata = {"key": json.dumps(key, sort_keys=True), "sha256": tensors_digest(tensors)}
        path = self.path(kind, key)
        atomic_write_bytes(path, save_bytes(tensors, metadata=metadata))
        return path

    def get_or_compute(self, kind: str, key: dict[str, str], compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Load the entry, or compute, store and return it."""
        found = self.load(kind, key)
        if found is not None:
            return found
        tensors = compute()
        self.save(kind, key, tensors)
        return tensors
