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

from genba.model.base import MODEL_KINDS, Model, ModelKind
from genba.model.kinds.bundle import pack, unpacked

FILE = "movit.safetensors"


def from_artefact(path: str | Path, result: dict | None = None) -> Model:
    from genba.movit.artefact import read_meta

    meta = read_meta(path)
    prov, hp = meta["provenance"], meta["hyperparameters"]
    metrics = {k: result[k] for k in ("test_accuracy", "n_train", "n_val", "n_test", "inference")
               if result and k in result}
    return Model.create(
        "movit", classes=list(prov["classnames"]), tensors=pack({FILE: Path(path)}),
        encoder={"spec": prov.get("backbone", "pixels"), "provenance": prov["input"]},
        method=f"movit ({prov['setting']})", hyperparameters={k: v.get("value") if isinstance(v, dict) else v
                                                               for k, v in hp.items()},
        chosen={k: v.get("chosen") for k, v in hp.items() if isinstance(v, dict)},
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
    def predictor(cls, model, *, cache=None, progress=False, encoder=None):
        return MoViTPredictor(model)

    @classmethod
    def describe(cls, model):
        s = model.meta["state"]
        return [f"setting: {s['setting']}, input {s['input']}"]
