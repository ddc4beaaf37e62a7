"""The one place a model is read and written: genba.artefact, kind "model".

    write_model_file(path, meta, tensors)      # atomic; checksum over metadata and tensors
    meta, tensors = read_model_file(path)      # verified; a foreign, damaged or newer file -> one error line
    blob = encode_model(meta, tensors); meta, tensors = decode_model(blob, name)   # bytes (the store)

The metadata schema checks the fields every kind shares (kind, classes, method, version and its
parent, ...), then the model's kind checks its own fields (ModelKind.meta_schema: state,
hyperparameters, how each was chosen, data sources, metrics) and cross-checks them against the
tensors (ModelKind.meta_problem); the network is rebuilt only from a description that passed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genba.artefact import decode_artefact, encode_artefact, read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import AnyJSON, Dict, Float, Int, List, Nullable, Schema, Str


KIND = "model"
PERCENT = Float(min=0.0, max=100.0)
IDS = List(Int(min=0, max=10**12), max_len=10**7)  # dataset indices (an image's position in its dataset)
COUNT = Int(min=0, max=10**12)  # images counted (test rows, ...)
ENCODER = Dict({"spec": Str(max_len=5000), "provenance": Str(max_len=100_000), "text_model": Nullable(Str(max_len=5000)),
                "text_provenance": Nullable(Str(max_len=100_000))}, optional=("text_model", "text_provenance"))
MAX_VERSION = 10**6  # a model learns one task per version (and each version names its parent's)
PARENT = Dict({"path": Str(max_len=4096), "version": Int(min=1, max=MAX_VERSION)})


def _check(meta: dict, tensors: dict) -> str | None:
    from genba.model.base import kind_problem

    parent, version = meta["parent"], meta["version"]
    if (parent is None) != (version == 1) or (parent is not None and parent["version"] != version - 1):
        return f"meta.version: version {version} does not follow its parent {parent and parent['version']}"
    return kind_problem(meta, tensors)


# the fields every kind shares; each kind's own (hyperparameters, chosen, data, metrics, state) are
# checked against its ModelKind.meta_schema by genba.model.base.kind_problem
SCHEMA = Schema(
    fields={"format": Str(max_len=64), "format_version": Int(min=1, max=1000), "kind": Str(max_len=100),
            "genba_version": Str(max_len=100), "command": Str(max_len=100_000), "created": Str(max_len=64),
            "encoder": ENCODER, "classes": List(Str(min_len=1, max_len=1000), min_len=1, max_len=1_000_000),
            "method": Str(max_len=1000), "hyperparameters": AnyJSON(), "chosen": AnyJSON(), "data": AnyJSON(),
            "metrics": AnyJSON(), "state": AnyJSON(), "version": Int(min=1, max=MAX_VERSION), "parent": Nullable(PARENT)},
    check=_check)


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
