"""Model kind `movit`: a MoViT (genba.movit) with its attention memory and prototypes.

Inputs as in training: the scratch setting reads pixels (grayscale or RGB, resized bilinear to the
model's size, uint8); the head setting reads the frozen backbone's final feature map at the
model's image size (float16, as cached in training) flattened to tokens. Inference reads the
prototypes when the model has them; nothing is written to the memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genba.metaschema import AnyJSON, Dict, Float, Int, List, Nullable, OneOf, Str
from genba.model.base import MODEL_KINDS, Model, ModelKind
from genba.model.io import COUNT, IDS
from genba.model.kinds.bundle import pack, unpacked

FILE = "movit.safetensors"
# the embedded MoViT file is the network's description (its own schema, checked by meta_problem);
# hyperparameters and how each was chosen are its records, copied (meta_problem compares them)
META_SCHEMA = {
    "hyperparameters": Dict(values=AnyJSON(), max_len=1000), "chosen": Dict(values=Nullable(Str(max_len=1000)), max_len=1000),
    "data": Dict({"sources": List(Dict({"dataset": Str(max_len=4000), "fingerprint": Str(max_len=200), "train_ids": IDS}),
                                  min_len=1, max_len=1)}),
    "metrics": OneOf((Dict({"test_accuracy": Float(min=0.0, max=1.0), "n_train": COUNT, "n_val": COUNT, "n_test": COUNT,
                            "inference": Str(max_len=100)}), Dict({}))),  # genba.movit.run's result, or none given
    "state": Dict({"setting": Str(choices=("scratch", "head")), "input": Str(max_len=4000),
                   "backbone": Nullable(Str(max_len=4000)), "image_size": Nullable(Int(min=1, max=4096))}),
}


def meta_problem(meta: dict, tensors: dict) -> str | None:
    """The embedded file, read with its own schema, must describe the same model: classes, input,
    setting, backbone and image size, training ids."""
    from genba.artefact import ArtefactError, decode_artefact
    from genba.movit.artefact import KIND, SCHEMA

    if set(tensors) != {f"bundle/{FILE}"} or tensors[f"bundle/{FILE}"].dtype != torch.uint8:
        return f"tensors: expected exactly the embedded bundle/{FILE} (uint8 bytes)"
    try:
        inner = decode_artefact(tensors[f"bundle/{FILE}"].numpy().tobytes(), kind=KIND, schema=SCHEMA, name=FILE)
    except ArtefactError as error:
        return f"the embedded {FILE} {error.problem[:200]}"
    prov, state = inner.meta["provenance"], meta["state"]
    if (prov["classnames"], prov["input"], prov["setting"], prov.get("backbone"), prov.get("image_size")) != \
            (meta["classes"], state["input"], state["setting"], state["backbone"], state["image_size"]) or \
            meta["data"]["sources"][0]["train_ids"] != prov["train_ids"]:
        return f"meta.state: classes, input, setting or training ids differ from the embedded {FILE}"
    m = meta["metrics"]
    if m and len(prov["train_ids"]) not in (m["n_train"], m["n_train"] + m["n_val"]):
        return f"meta.metrics: {m['n_train']} training images for {len(prov['train_ids'])} training ids"
    hp = inner.meta["hyperparameters"]
    if not isinstance(hp, dict) or (meta["hyperparameters"], meta["chosen"]) != _records(hp):
        return f"meta.hyperparameters: not the hyperparameters (and how each was chosen) of the embedded {FILE}"
    return None


def _records(hp: dict) -> tuple[dict, dict]:
    """(value, how chosen) of each hyperparameter of a MoViT file, as the model keeps them."""
    return ({k: v.get("value") if isinstance(v, dict) else v for k, v in hp.items()},
            {k: v.get("chosen") for k, v in hp.items() if isinstance(v, dict)})


def from_artefact(path: str | Path, result: dict | None = None) -> Model:
    from genba.movit.artefact import read_meta

    meta = read_meta(path)
    prov, hp = meta["provenance"], meta["hyperparameters"]
    metrics = {k: result[k] for k in ("test_accuracy", "n_train", "n_val", "n_test", "inference")
               if result and k in result}
    values, chosen = _records(hp)
    return Model.create(
        "movit", classes=list(prov["classnames"]), tensors=pack({FILE: Path(path)}),
        encoder={"spec": prov.get("backbone", "pixels"), "provenance": prov["input"]},
        method=f"movit ({prov['setting']})", hyperparameters=values, chosen=chosen,
        data={"sources": [{"dataset": prov["dataset"], "fingerprint": prov["fingerprint"], "train_ids": prov["train_ids"]}]},
        metrics=metrics, state={"setting": prov["setting"], "input": prov["input"],
                                "backbone": prov.get("backbone"), "image_size": prov.get("image_size")})


def scratch_pixels(image, input_name: str) -> torch.Tensor:
    """One image as the scratch setting reads it: 'pixels:SxSxC' -> uint8 (C, S, S), bilinear resize."""
    size, _, channels = (int(v) for v in input_name.split(":", 1)[1].split("x"))
    a = np.asarray(image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(a[None] if channels == 1 else a.transpose(2, 0, 1)))


class MoViTPredictor:
    def __init__(self, model: Model) -> None:
        from genba.movit.artefact import load_artefact

        with unpacked(model.tensors) as d:
            self.model, meta = load_artefact(d / FILE)
        self.classes = model.classes
        self.state = model.meta["state"]
        if self.state["setting"] == "head":
            from genba.movit.head import backbone, input_name

            self.backbone = backbone(self.state["backbone"])
            if input_name(self.backbone, self.state["image_size"]) != self.state["input"]:
                from genba.errors import GenbaError

                raise GenbaError(f"the model reads {self.state['input']!r} but the backbone now gives "
                                 f"{input_name(self.backbone, self.state['image_size'])!r}: use the weights it was trained on")

    def inputs(self, images) -> torch.Tensor:
        if self.state["setting"] == "head":
            from genba.movit.head import STAGE, to_tokens

            size = int(self.state["image_size"])
            with torch.inference_mode():
                pixels = torch.stack([self.backbone.preprocess(im, size) for im in images])
                fmap = self.backbone.forward_features(pixels.contiguous(memory_format=torch.channels_last), until=STAGE)
            return to_tokens(fmap.contiguous().half())
        return torch.stack([scratch_pixels(im, self.state["input"]) for im in images])

    def probabilities(self, images) -> torch.Tensor:
        return torch.softmax(self.model.predict_logits(self.inputs(images)).float(), dim=-1)


@MODEL_KINDS.register("movit", summary="MoViT: a transformer reading an external attention memory")
class MoViTKind(ModelKind):
    capabilities = frozenset({"predict", "export"})
    meta_schema = META_SCHEMA

    @classmethod
    def onnx_graph(cls, model, predictor):
        """pixels (scratch: uint8 (N, C, S, S)) or tokens' source pixels (head: the backbone's
        preprocessing) -> probabilities, memory read through the prototypes (static at inference)."""
        from genba.model.export import ProbabilityGraph

        net = predictor.model.eval()
        if predictor.state["setting"] == "head":
            from genba.movit.head import STAGE, to_tokens

            backbone, size = predictor.backbone, int(predictor.state["image_size"])

            def forward(pixels):
                fmap = backbone.forward_features(pixels, until=STAGE)
                return torch.softmax(net(to_tokens(fmap.half().float())).float(), dim=-1)

            return ProbabilityGraph(forward, [net, backbone]), lambda im: backbone.preprocess(im, size)

        def forward(pixels):
            return torch.softmax(net(pixels).float(), dim=-1)

        return ProbabilityGraph(forward, [net]), cls.onnx_prepare(model.meta["encoder"], predictor.state)

    @classmethod
    def onnx_prepare(cls, encoder: dict, state: dict):
        if state["setting"] == "head":
            from genba.movit.head import backbone

            net, size = backbone(state["backbone"]), int(state["image_size"])
            return lambda im: net.preprocess(im, size)
        return lambda im: scratch_pixels(im, state["input"])

    @classmethod
    def meta_problem(cls, meta, tensors):
        return meta_problem(meta, tensors)

    @classmethod
    def predictor(cls, model, *, cache=None, progress=False, encoder=None):
        return MoViTPredictor(model)

    @classmethod
    def describe(cls, model):
        s = model.meta["state"]
        return [f"setting: {s['setting']}, input {s['input']}"]
