"""The small visual models that CVM trains (the "student" f of the paper).

Two kinds, so the cost / accuracy trade-off can be measured on weak hardware:
  * "small": a compact CNN trained from scratch: four 3x3 conv + BatchNorm + ReLU stages
    (widths 16-32-64-128, strides 2-2-2-1) and global average pooling -> 128-d feature,
    about 0.1 M parameters and ~2 M multiply-adds at 32x32 px.
  * "lite0" / "lite1" / "lite2": the ImageNet EfficientNet-Lite trunk (genba.backbones, offline
    weights) frozen up to a cut stage; only the stages after the cut (and the head conv) train.
    The frozen part runs once per image (`prepare`), its activations are cached, and training
    reads them, so a step costs only the trainable stages.

Every student is `prepare(pixels) -> x` (frozen, no gradient; identity for "small") followed by
`encode(x) -> (B, F)` (trainable); `forward(pixels) = encode(prepare(pixels))` is what is exported.
Pixels are (B, 3, S, S) float32 in [-1, 1] (genba.cvm.pixels.normalize).
"""

from __future__ import annotations

import torch
from torch import nn

from genba.errors import GenbaError
from genba.registry import Registry

STUDENTS = Registry("student")
"""Student kinds: `factory(**spec) -> Student` (a new kind is one module plus @register_student)."""


def register_student(kind: str, summary: str = ""):
    return STUDENTS.register(kind, summary, set_name=False)


class Student(nn.Module):
    """Base: prepare (frozen front) + encode (trainable); `spec` rebuilds the same architecture."""

    feature_dim: int
    image_size: int

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode(self.prepare(pixels))

    def spec(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> str:
        """What determines `prepare` (the cache key of prepared inputs)."""
        return f"pixels:{self.image_size}"


@register_student("small", "compact CNN trained from scratch")
class SmallCNN(Student):
    """Compact CNN from scratch (see module docstring)."""

    def __init__(self, image_size: int = 32, widths: tuple[int, ...] = (16, 32, 64, 128),
                 strides: tuple[int, ...] = (2, 2, 2, 1)):
        super().__init__()
        if len(widths) != len(strides):
            raise GenbaError("small student: widths and strides differ in length")
        layers, channels = [], 3
        for width, stride in zip(widths, strides):
            layers += [nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.image_size, self.widths, self.strides = int(image_size), tuple(widths), tuple(strides)
        self.feature_dim = channels

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def spec(self) -> dict:
        return {"kind": "small", "image_size": self.image_size, "widths": list(self.widths), "strides": list(self.strides)}


def build_student(spec: dict | str, image_size: int | None = None, **options) -> Student:
    """A student from its spec dict (as saved) or its kind name."""
    if isinstance(spec, str):
        spec = {"kind": spec, **({"image_size": image_size} if image_size else {}), **options}
    spec = dict(spec)
    kind = spec.pop("kind", None)
    from genba.cvm import trunk  # noqa: F401  (registers the lite students)

    return STUDENTS.get(str(kind))(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_macs(module: nn.Module, fn, *inputs) -> int:
    """Multiply-adds of one call fn(*inputs) through `module`'s Conv2d and Linear layers (forward hooks)."""
    total = 0

    def conv_hook(module, args, out):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total += out.numel() * k

    def linear_hook(module, args, out):
        nonlocal total
        total += out.numel() * module.in_features

    handles = []
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            handles.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            fn(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
