"""The one place a model is read and written: genba.artefact, kind "model".

    write_model_file(path, meta, tensors)      # atomic; checksum over metadata and tensors
    meta, tensors = read_model_file(path)      # verified; a foreign, damaged or newer file -> one error line
    blob = encode_model(meta, tensors); meta, tensors = decode_model(blob, name)   # bytes (the store)

The metadata schema checks the fields every kind shares (kind, classes, method, ...) and that
every class has a name; each kind checks its own tensors when it rebuilds the network.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genba.artefact import decode_artefact, encode_artefact, read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import AnyJSON, Dict, Int, List, Nullable, Schema, Str


def _cross_check(meta: dict, tensors: dict) -> str | None:
    """The class list against the class-text rows every kind with text keeps."""
    for name in ("text", "learner/text"):
        if name in tensors and (tensors[name].dim() != 2 or tensors[name].shape[0] != len(meta["classes"])):
            return f"tensor {name} has shape {tuple(tensors[name].shape)} but the model lists {len(meta['classes'])} classes"
    return None

KIND = "model"
SCHEMA = Schema(
    fields={"format": Str(max_len=64), "format_version": Int(min=1, max=1000), "kind": Str(max_len=100),
            "genba_version": Str(max_len=100), "command": Str(max_len=100_000), "created": Str(max_len=64),
            "encoder": Nullable(Dict(fields={"spec": Str(max_len=5000), "provenance": Str(max_len=100_000),
                                             "text_model": Nullable(Str(max_len=5000)),
                                             "text_provenance": Nullable(Str(max_len=100_000))},
                                     optional=("text_model", "text_provenance"))),
            "classes": List(Str(max_len=1000), min_len=1, max_len=1_000_000), "method": Str(max_len=1000),
            "hyperparameters": AnyJSON(), "chosen": AnyJSON(), "data": AnyJSON(), "metrics": AnyJSON(),
            "state": Dict(allow_extra=True), "version": Int(min=1, max=10**9), "parent": Nullable(AnyJSON())},
    check=_cross_check)


def write_model_file(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write one model file atomically."""
    path = Path(path)
    if path.is_dir():
        raise GenbaError(f"--out {path} is a directory: give a file name such as {path / 'model.genba'}")
    write_artefact(path, kind=KIND, meta=meta, tensors=tensors)
    return path


def read_model_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of a verified model file; anything else is one ArtefactError line."""
    art = read_artefact(path, kind=KIND, schema=SCHEMA)
    return art.meta, art.tensors


def encode_model(meta: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    return encode_artefact(kind=KIND, meta=meta, tensors=tensors)


def decode_model(blob: bytes, name: str = "<model>") -> tuple[dict, dict[str, torch.Tensor]]:
    art = decode_artefact(blob, kind=KIND, schema=SCHEMA, name=name)
    return art.meta, art.tensors
