"""The pretrained student: an EfficientNet-Lite trunk (genba.backbones) with its last stages trainable.

    prepare(pixels) = bb.forward_features(pixels, until=cut)     frozen, eval mode, cached as float16
    encode(x)       = forward_head(bb.forward_from(x, start=cut)) the stages after the cut + head conv, pooled (1280-d)

Default cut "block14": at 64 px the cached activations are (192, 2, 2); block 15 (the last MBConv
stage, 192 -> 320) and the 1x1 head conv (320 -> 1280) train, about 1.1 M parameters and ~4 M
multiply-adds per image (the cut "block10" also trains the 192-channel stage: ~2.7 M parameters). The frozen stages always run in eval mode, so their
BatchNorm statistics stay ImageNet's. Weights and licence: genba.backbones.efficientnet.
"""

from __future__ import annotations

import torch

from genba.cvm.student import Student, register_student

VARIANT = {"lite0": "efficientnet-lite0", "lite1": "efficientnet-lite1", "lite2": "efficientnet-lite2"}


class LiteTrunkStudent(Student):
    def __init__(self, variant: str = "lite0", image_size: int = 64, cut: str = "block14", pretrained: bool = True):
        super().__init__()
        from genba.backbones import load_backbone

        self.backbone = load_backbone(VARIANT[variant], pretrained=pretrained)
        self.net = self.backbone.module  # registered, so state_dict / ONNX export hold the whole trunk
        self.backbone.stage_index(cut, 0)  # unknown cut -> GenbaError listing the cut points
        self.variant, self.image_size, self.cut, self.pretrained = variant, int(image_size), cut, pretrained
        self.feature_dim = self.backbone.feature_dim
        self.net._fc = torch.nn.Identity()  # the ImageNet classifier is not part of the student
        self.backbone.train_after(cut)
        self.train(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "backbone"):  # the trainable stages' BatchNorm learns its statistics
            self.backbone.apply_norm_policy("frozen-stages")
        return self

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.forward_features(pixels, until=self.cut)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_trunk(x, self.cut)

    def spec(self) -> dict:
        return {"kind": self.variant, "image_size": self.image_size, "cut": self.cut, "pretrained": self.pretrained}

    def provenance(self) -> str:
        return f"{self.backbone.provenance}:until={self.cut}:size={self.image_size}"


for _kind in VARIANT:
    register_student(_kind, f"EfficientNet-Lite{_kind[-1]} trunk, last stage trained from cached activations")(
        lambda _kind=_kind, **spec: LiteTrunkStudent(variant=_kind, **spec))
