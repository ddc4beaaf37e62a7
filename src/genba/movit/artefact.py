"""The saved MoViT: one safetensors file holding the weights, the memory and its prototypes.

    save_artefact(path, model, provenance, hyperparameters)      # atomic (temp file, fsync, rename)
    model, meta = load_artefact(path, expect_input="pixels:28x28x1")
    prototype_members(model)   # per layer, head, prototype: the training images it summarises

Tensors: the model's state dict (weights; per memory layer the slots' keys, values, source image
ids, token indices, last-write steps, the prototypes and the slot -> prototype assignment).
Metadata (JSON strings): format, the model config, provenance (input = what the model reads,
e.g. 'pixels:28x28x1' or the frozen encoder's provenance + stage + image size; dataset name,
fingerprint, class names; fraction, seed, training image ids; weight licences), hyperparameters,
and a sha256 over every tensor. Loading never unpickles; a damaged file, a file of another kind
or one made for another input / encoder is refused with one GenbaError and left untouched.
Memory source ids are dataset indices, so a prototype's members name training images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genba.cache import read_checked, write_checked
from genba.errors import GenbaError
from genba.movit.vit import MoViT, MoViTConfig

FORMAT = "genba-movit-1"


def save_artefact(path: str | Path, model: MoViT, provenance: dict, hyperparameters: dict) -> Path:
    """Write the model + memory atomically; returns the path."""
    meta = {"config": json.dumps(model.cfg.to_dict()), "provenance": json.dumps(provenance),
            "hyperparameters": json.dumps(hyperparameters)}
    return write_checked(path, model.state_dict(), format=FORMAT, metadata=meta)


def read_meta(path: str | Path) -> dict:
    """The artefact's metadata (config, provenance, hyperparameters) without building the model."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, raw = read_checked(path, format=FORMAT, what="MoViT model",
                                fix="pass the movit.safetensors written by `genba movit train` (or retrain it)")
    return tensors, {k: json.loads(raw[k]) for k in ("config", "provenance", "hyperparameters")}


def load_artefact(path: str | Path, expect_input: str | None = None,
                  expect_classes: list[str] | None = None) -> tuple[MoViT, dict]:
    """Rebuild the trained model (eval mode, prototypes on when present) from the file alone.

    Args:
        expect_input: the input the caller will feed ('pixels:...' or an encoder's provenance);
            a model made for another one is refused.
        expect_classes: class names of the data to predict; a model of other classes is refused.
    """
    path = Path(path)
    tensors, meta = _read(path)
    prov = meta["provenance"]
    if expect_input is not None and prov.get("input") != expect_input:
        raise GenbaError(f"{path} was made for input {prov.get('input')!r}, not {expect_input!r}: a memory "
                         "only works with the encoder (and image size) it was trained on; use that encoder "
                         "or train a new model")
    if expect_classes is not None and list(prov.get("classnames", [])) != list(expect_classes):
        raise GenbaError(f"{path} predicts classes {prov.get('classnames')} but the data has {expect_classes}; "
                         "use the dataset it was trained on or train a new model")
    model = MoViT(MoViTConfig(**meta["config"]))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise GenbaError(f"{path} does not match its own config ({str(error).splitlines()[0]}); retrain it") from None
    model.eval()
    if model.memories and all(bool(m.proto_valid.any()) for m in model.memories):
        model.use_prototypes(True)
    return model, meta


def prototype_members(model: MoViT) -> list[dict]:
    """For every memory layer, head and prototype: how many slots it summarises and which
    training images (dataset indices) they came from."""
    out = []
    layers = [i for i, b in enumerate(model.blocks) if b.attn.memory is not None]
    for layer, mem in zip(layers, model.memories):
        for h in range(mem.heads):
            for p in range(mem.num_prototypes):
                if bool(mem.proto_valid[h, p]):
                    out.append({"layer": layer, "head": h, "prototype": p,
                                "slots": int((mem.assign[h] == p).sum()), "images": mem.prototype_sources(h, p)})
    return out
