"""Model kind `cvm`: a CVM student (genba.cvm) with its concept bank, from `genba cvm train --out DIR`.

logits = s * normalize(P f(x)) T^T over every class of the bank (classes known by name included);
probabilities = softmax(logits). Pixels are prepared as in training and in the ONNX graph
(genba.cvm.pixels: RGB, centre square crop, bilinear resize, x / 127.5 - 1). The student learns
nothing at test time: the service refuses test-time writes into it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genba.metaschema import AnyJSON, Dict, Int, List, Nullable, Str
from genba.model.base import MODEL_KINDS, Model, ModelKind
from genba.model.kinds.bundle import pack, unpacked

FILES = ("model.safetensors", "concepts.safetensors", "cvm.json")
# the embedded model directory describes the network (genba.cvm.model_dir checks it); every other
# field is derived from it by from_model_dir, and meta_problem derives it again and compares
META_SCHEMA = {
    "hyperparameters": Dict(values=AnyJSON(), max_len=100), "chosen": Dict(values=Nullable(Str(max_len=10_000)), max_len=100),
    "data": Dict({"sources": List(Dict(values=AnyJSON(), max_len=100), max_len=10_000)}),
    "metrics": Dict(values=AnyJSON(), max_len=100),
    "state": Dict({"known": Nullable(Int(min=0, max=1_000_000)), "licence": Nullable(Str(max_len=10_000))}),
}


def _dir_files(d: Path) -> dict[str, Path]:
    """Every file of the CVM model directory (whatever its layout), but the model file itself."""
    from genba.model.base import MODEL_FILE

    return {p.name: p for p in sorted(d.iterdir()) if p.is_file() and p.name != MODEL_FILE and not p.name.startswith(".")}


DERIVED = ("classes", "encoder", "method", "hyperparameters", "chosen", "data", "metrics", "state")


def meta_problem(meta: dict, tensors: dict) -> str | None:
    """The embedded files, read by their own checked loader, must give this very description."""
    if not {f"bundle/{name}" for name in FILES} <= set(tensors) or any(
            not k.startswith("bundle/") or v.dtype != torch.uint8 for k, v in tensors.items()):
        return f"tensors: expected the embedded model directory ({', '.join(FILES)}, ...) as uint8 bytes"
    from genba.errors import GenbaError

    try:
        with unpacked(tensors) as d:
            derived = from_model_dir(d).meta
    except GenbaError as error:  # it names a temporary folder: keep its problem only
        return "the embedded model directory: " + str(error).split(": ", 1)[-1][:200]
    differ = [k for k in DERIVED if derived[k] != meta[k]]
    return f"meta.{differ[0]}: differs from what the embedded model directory says" if differ else None


def from_model_dir(model_dir: str | Path, *, dataset_sources: list | None = None) -> Model:
    """The model of a trained CVM model directory (its files embedded byte for byte)."""
    import json

    from genba.cvm.model_dir import load_model_dir

    d = Path(model_dir)
    objective, bank, meta = load_model_dir(d)  # checks the directory first
    run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    train = run.get("hyperparameters", {})
    return Model.create(
        "cvm", classes=list(bank.names), tensors=pack(_dir_files(d)),
        encoder={"spec": "cvm-student", "provenance": json.dumps(meta["student"], sort_keys=True),
                 "text_model": meta.get("text_model"), "text_provenance": meta.get("text_provenance")},
        method=f"cvm ({meta['head']['kind']} head, {meta['loss']} loss)",
        hyperparameters={"head": meta["head"], "loss": meta["loss"], "run": train},
        chosen={"loss": run.get("selected_on", "given or default")},
        data={"sources": dataset_sources or [{"dataset": s} for s in run.get("stream", [])]},
        metrics={k: v for k, v in run.items() if k in ("settings", "stream")},
        state={"known": meta.get("known"), "licence": meta.get("licence")})


def load_objective(model: Model):
    from genba.cvm.model_dir import load_model_dir

    with unpacked(model.tensors) as d:
        objective, bank, meta = load_model_dir(d)
    return objective, bank, meta


class CVMPredictor:
    def __init__(self, model: Model) -> None:
        self.objective, self.bank, _ = load_objective(model)
        self.classes = list(self.bank.names)
        self.image_size = self.objective.student.image_size

    def pixels(self, images) -> torch.Tensor:
        from genba.cvm.pixels import normalize, resize_rgb

        return torch.from_numpy(np.stack([normalize(resize_rgb(im, self.image_size)) for im in images]))

    def probabilities(self, images) -> torch.Tensor:
        with torch.no_grad():
            logits = self.objective.head(self.objective.student(self.pixels(images)))
        return torch.softmax(logits, dim=-1)


@MODEL_KINDS.register("cvm", summary="CVM student mapped into a frozen language model's concept space")
class CVMKind(ModelKind):
    capabilities = frozenset({"predict", "export"})
    meta_schema = META_SCHEMA

    @classmethod
    def meta_problem(cls, meta, tensors):
        return meta_problem(meta, tensors)

    @classmethod
    def onnx_graph(cls, model, predictor):
        from genba.cvm.pixels import normalize, resize_rgb

        return None, lambda im: torch.from_numpy(normalize(resize_rgb(im, predictor.image_size)))

    @classmethod
    def onnx_bytes(cls, model, predictor, props):
        """CVM's own graph and metadata (genba.cvm.export): `genba predict` runs it without torch."""
        from genba.cvm.export import onnx_bytes

        return onnx_bytes(predictor.objective, predictor.bank, {})

    @classmethod
    def predictor(cls, model, *, cache=None, progress=False, encoder=None):
        return CVMPredictor(model)

    @classmethod
    def describe(cls, model):
        return [f"student: {model.meta['encoder']['provenance']}", f"known classes (with images): {model.meta['state']['known']}"]
