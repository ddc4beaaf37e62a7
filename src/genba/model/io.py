"""The one place a model file is read and written (so the container can change in one spot).

    write_model_file(path, meta, tensors)      # atomic; sha256 over the tensors in the metadata
    meta, tensors = read_model_file(path)      # checked; a foreign or damaged file -> GenbaError

The container is genba's checked safetensors file (`genba.cache.write_checked`): tensors plus
string metadata, here one JSON document under the key "model". Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genba.cache import read_checked, write_checked
from genba.errors import GenbaError

CONTAINER = "genba-model"
FIX = "pass a model written by `genba adapt|continual|cvm train|movit train --out` (see `genba model show`)"


def write_model_file(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write one model file atomically; `meta` must be JSON-serialisable."""
    path = Path(path)
    if path.is_dir():
        raise GenbaError(f"--out {path} is a directory: give a file name such as {path / 'model.genba'}")
    return write_checked(path, tensors, format=CONTAINER, metadata={"model": json.dumps(meta, default=str)})


def read_model_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of a model file; anything else is one GenbaError ending in the fix."""
    tensors, raw = read_checked(path, format=CONTAINER, what="model", fix=FIX)
    try:
        meta = json.loads(raw["model"])
    except (KeyError, json.JSONDecodeError):
        raise GenbaError(f"{path} has no readable model description; {FIX}") from None
    return meta, tensors
