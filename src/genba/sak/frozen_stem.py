"""A frozen pretrained backbone as SAK's Teacher-Agnostic Stem, trained on its CACHED activations.

The seed of genba's SAK (and Lu, Cao, Wang 2024) adapts a FROZEN pretrained backbone with light
modules. Here the backbone is one of `genba.backbones` (EfficientNet-Lite0/1/2), cut at the last
block of each resolution stage with stride 4, 8, 16 and 32 (`cut_points`; the 1280-d head conv is
left out). Its activations at those cuts are computed ONCE per image set and cached
(`stem_activations`, genba.cache.TensorCache), and every trainable part runs on them:

    a_l = backbone activation at cut l (avg-pooled to at most g x g; g = image_size / patch)
    x^1 = Up_g(W_1 a_1),   x^l = x^{l-1} + Up_g(W_l a_l)   (W_l a 1x1 projection C_l -> D, Up_g bilinear)
    stem outputs: tokens (B, g*g, D) of x^1 .. x^L, the last one layer-normed

so the "block outputs" the adapter paths read form a residual stream over the levels (fine to
coarse), as a ViT's blocks do, and the last one holds every level. The projections W_l (the neck,
shared by all teachers and tasks) are the only trainable part of the stem; the backbone's weights
never receive a gradient and are not part of the student's state_dict (they are read from the
weight package by name and checked against the provenance recorded in the config).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genba.cache import TensorCache
from genba.errors import GenbaError

CACHE_KIND = "sak-stem"
STRIDES = (4, 8, 16, 32)


def cut_points(backbone, input_size: int) -> tuple[list[str], list[int]]:
    """(stage names, channels): the last stage at each stride in STRIDES, found by a probe forward."""
    x = torch.zeros(1, 3, input_size, input_size)
    last: dict[int, tuple[str, int]] = {}
    with torch.inference_mode():
        for index, stage in enumerate(backbone.stages[:-1]):  # not the head conv
            x = backbone._run(x, index)
            if x.ndim != 4:
                raise GenbaError(f"a frozen SAK stem needs a convolutional backbone with spatial maps "
                                 f"(efficientnet-lite0/1/2); {backbone.name} gives tokens {tuple(x.shape)}")
            stride = input_size // x.shape[-1]
            if stride in STRIDES:
                last[stride] = (stage, int(x.shape[1]))
    if not last:
        raise GenbaError(f"{backbone.name} has no stage at stride {STRIDES} for {input_size}px inputs")
    picked = [last[s] for s in STRIDES if s in last]
    return [s for s, _ in picked], [c for _, c in picked]


def backbone_pixels(images: torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> floats in [-1, 1] at input_size (bilinear), as the Lite weights expect."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def backbone_levels(backbone, images: torch.Tensor, stages: list[str], input_size: int, grid: int) -> list[torch.Tensor]:
    """Activations at each cut (one pass), avg-pooled to at most grid x grid: [(B, C_l, h_l, w_l)]."""
    backbone.module.eval()
    x = backbone.forward_features(backbone_pixels(images, input_size), until=stages[0])
    outs = [x]
    for before, stage in zip(stages, stages[1:]):
        x = backbone.forward_from(x, start=before, until=stage)
        outs.append(x)
    return [F.adaptive_avg_pool2d(o, (min(grid, o.shape[-2]), min(grid, o.shape[-1]))).float().contiguous() for o in outs]


def level_keys(count: int) -> list[str]:
    return [f"stem/{i}" for i in range(count)]


def stem_activations(backbone, images: torch.Tensor, fingerprint: str, stages: list[str], input_size: int, grid: int,
                     cache: TensorCache | None, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{'stem/0': (N, C_0, h, w) float16, ...} for every image, computed once and cached under
    {backbone provenance, images fingerprint, cuts, input size, grid, N}."""
    key = {"backbone": backbone.provenance, "images": fingerprint, "stages": ",".join(stages),
           "size": str(input_size), "grid": str(grid), "n": str(len(images))}

    def compute() -> dict[str, torch.Tensor]:
        rows: list[list[torch.Tensor]] = [[] for _ in stages]
        for start in range(0, len(images), batch_size):
            for i, level in enumerate(backbone_levels(backbone, images[start:start + batch_size], stages, input_size, grid)):
                rows[i].append(level.half())
        return {k: torch.cat(r) for k, r in zip(level_keys(len(stages)), rows)}

    if cache is None or not fingerprint:
        return compute()
    return cache.get_or_compute(CACHE_KIND, key, compute)


class FrozenStem(nn.Module):
    """forward(images uint8 (B, 3, H, W) | [cached level maps]) -> [x^1 .. x^L] tokens (B, g*g, D)."""

    def __init__(self, backbone_name: str, stages: list[str], channels: list[int], input_size: int, grid: int,
                 dim: int, backbone=None, provenance: str = ""):
        super().__init__()
        if len(stages) != len(channels) or not stages:
            raise GenbaError(f"frozen stem: {len(stages)} cut points but {len(channels)} channel counts")
        self.backbone_name, self.stages, self.input_size, self.grid = backbone_name, list(stages), input_size, grid
        self.proj = nn.ModuleList(nn.Conv2d(int(c), dim, 1) for c in channels)
        self.norm = nn.LayerNorm(dim)
        self._backbone = backbone  # a plain attribute: not a submodule, so not in state_dict / parameters()
        self._provenance = provenance

    @property
    def backbone(self):
        if self._backbone is None:
            from genba.backbones import load_backbone

            self._backbone = load_backbone(self.backbone_name)
            for p in self._backbone.module.parameters():
                p.requires_grad_(False)
            if self._provenance and self._backbone.provenance != self._provenance:
                raise GenbaError(f"the installed {self.backbone_name} weights ({self._backbone.provenance}) differ from "
                                 f"the ones this student was trained on ({self._provenance})")
        return self._backbone

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The live forward of the frozen backbone (what the cache holds, in float32)."""
        return backbone_levels(self.backbone, images, self.stages, self.input_size, self.grid)

    def forward(self, inputs) -> list[torch.Tensor]:
        levels = self.levels(inputs) if isinstance(inputs, torch.Tensor) else inputs
        if len(levels) != len(self.proj):
            raise GenbaError(f"frozen stem expects {len(self.proj)} level maps, got {len(levels)}")
        g = self.grid
        x, outs = None, []
        for proj, level in zip(self.proj, levels):
            y = proj(level.float())
            if y.shape[-1] != g or y.shape[-2] != g:
                y = F.interpolate(y, size=(g, g), mode="bilinear", align_corners=False)
            x = y if x is None else x + y
            outs.append(x.flatten(2).transpose(1, 2))
        outs[-1] = self.norm(outs[-1])
        return outs

    def backbone_parameters(self) -> int:
        return sum(p.numel() for p in self.backbone.module.parameters())
