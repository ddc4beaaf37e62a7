"""The saved MoViT: one safetensors file holding the weights, the memory and its prototypes.

    save_artefact(path, model, provenance, hyperparameters)      # atomic (temp file, fsync, rename)
    model, meta = load_artefact(path, expect_input="pixels:28x28x1")
    prototype_members(model)   # per layer, head, prototype: the training images it summarises

Tensors: the model's state dict (weights; per memory layer the slots' keys, values, source image
ids, token indices, last-write steps, the prototypes and the slot -> prototype assignment).
Metadata: the model config, provenance (input = what the model reads, e.g. 'pixels:28x28x1' or
the frozen encoder's provenance + stage + image size; dataset name, fingerprint, class names;
fraction, seed, training image ids; weight licences), hyperparameters. It is one artefact
(genba.artefact, kind "movit-model"): the checksum covers metadata and tensors, SCHEMA bounds
every config field, and the model is first built on the meta device and compared with the
file's tensors (genba.artefact.module_problem), so a config of dim 10**6 allocates nothing.
Loading never unpickles; a damaged file, a file of another kind or one made for another input /
encoder is refused with one GenbaError and left untouched. Memory source ids are dataset
indices, so a prototype's members name training images.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from genba.artefact import module_problem, read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import AnyJSON, Bool, Dict, Float, Int, List, Schema, Str
from genba.movit.vit import MoViT, MoViTConfig

KIND = "movit-model"
_MEM = Dict({"capacity": Int(min=1, max=1 << 20), "topk": Int(min=1, max=4096), "alpha": Float(min=0.0, max=1.0),
             "prototypes": Int(min=1, max=1 << 16), "kmeans_iters": Int(min=0, max=10_000), "layers": Str(max_len=200),
             "write": Str(choices=("all", "image")), "count_weight": Bool(), "bias_init": Float(min=-1e4, max=1e4)})
CONFIG = Dict({"num_classes": Int(min=1, max=100_000), "stem": Str(choices=("patch", "tokens")),
               "image_size": Int(min=1, max=1024), "patch": Int(min=1, max=1024), "channels": Int(min=1, max=4),
               "token_dim": Int(min=1, max=1 << 14), "num_tokens": Int(min=1, max=1 << 14), "dim": Int(min=1, max=1 << 13),
               "depth": Int(min=1, max=64), "heads": Int(min=1, max=256), "mlp_ratio": Float(min=0.0, max=64.0),
               "dropout": Float(min=0.0, max=1.0), "memory": Bool(), "mem": _MEM})
PROVENANCE = Dict({"input": Str(max_len=4000), "setting": Str(max_len=32), "dataset": Str(max_len=4000),
                   "fingerprint": Str(max_len=200), "classnames": List(Str(max_len=200), max_len=100_000),
                   "fraction": Float(min=0.0, max=1.0), "seed": Int(min=0, max=2**63 - 1),
                   "train_ids": List(Int(min=0, max=10**12), max_len=10**7),
                   "weights_licences": Dict(values=Str(max_len=4000), max_len=100), "created": Str(max_len=64),
                   "method": Str(max_len=1000), "backbone": Str(max_len=4000), "image_size": Int(min=1, max=4096)},
                  optional=("backbone", "image_size"))


def _check(meta: dict, tensors: dict) -> str | None:
    prov, config = meta["provenance"], meta["config"]
    if prov["setting"] != "head" and not re.fullmatch(r"pixels:\d{1,4}x\d{1,4}x\d", prov["input"]):
        return f"meta.provenance.input: {prov['input'][:40]!r} is not 'pixels:<size>x<size>x<channels>'"
    if prov["setting"] == "head" and not {"backbone", "image_size"} <= set(prov):
        return "meta.provenance: a head-setting model needs its backbone and image_size"
    if len(prov["classnames"]) != config["num_classes"]:
        return f"meta.provenance.classnames: {len(prov['classnames'])} names for {config['num_classes']} classes"
    return module_problem(lambda: MoViT(MoViTConfig(**config)), tensors)


SCHEMA = Schema({"config": CONFIG, "provenance": PROVENANCE, "hyperparameters": AnyJSON()}, check=_check)


def save_artefact(path: str | Path, model: MoViT, provenance: dict, hyperparameters: dict) -> Path:
    """Write the model + memory atomically; returns the path."""
    meta = {"config": model.cfg.to_dict(), "provenance": provenance, "hyperparameters": hyperparameters}
    write_artefact(path, kind=KIND, meta=meta, tensors=model.state_dict())
    return Path(path)


def read_meta(path: str | Path) -> dict:
    """The artefact's metadata (config, provenance, hyperparameters), verified, without building the model."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    found = read_artefact(path, kind=KIND, schema=SCHEMA)
    return found.tensors, found.meta


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
