"""The trainable backbone surface: cut points, spatial features, a pooled head, trainable parts.

    bb = load_backbone("efficientnet-lite0")
    fmap = bb.forward_features(pixels)                  # (B, 3, H, W) -> final spatial map (B, C, h, w)
    mid = bb.forward_features(pixels, until="block12")   # activations at a cut point
    fmap = bb.forward_from(mid, start="block12")         # ... and onwards from it
    vec = bb.forward_head(fmap)                          # (B, D) pooled
    bb.trainable_modules(after="block12")                # what a user may fine-tune past a cut

In the manner of timm's forward_features / forward_head split. The feature cache
(`extract_activations`), CVM's student, MoViT's head setting, SAK's teachers and ONNX export
use this surface, so every one of them cuts a network the same way.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

import numpy as np

from genba.errors import GenbaError


def resize_centre_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the short side to `size` (bicubic), centre-crop size x size, scale to [-1, 1]: (3, size, size)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


NORM_POLICIES = ("frozen", "frozen-stages")


class Backbone:
    """Base class. Subclasses define `stages` (ordered cut-point names), `_run(x, i)` applying
    stage i, `forward_head`, `module`, `provenance`, `feature_dim`."""

    name: str = "backbone"
    stages: list[str] = []
    feature_dim: int = 0
    licence: str = ""

    @property
    def module(self) -> nn.Module:
        raise NotImplementedError

    @property
    def provenance(self) -> str:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preprocess(self, image: Image.Image, size: int = 224) -> torch.Tensor:
        return resize_centre_crop(image, size)

    def stage_index(self, name: str | None, default: int) -> int:
        if name is None:
            return default
        if name not in self.stages:
            raise GenbaError(f"{self.name} has no stage {name!r}; its cut points are: {', '.join(self.stages)}")
        return self.stages.index(name)

    def forward_features(self, pixels: torch.Tensor, until: str | None = None) -> torch.Tensor:
        """Activations after stage `until` (default the last stage)."""
        return self._span(pixels, 0, self.stage_index(until, len(self.stages) - 1))

    def forward_from(self, acts: torch.Tensor, start: str, until: str | None = None) -> torch.Tensor:
        """Continue from the activations after stage `start` through stage `until` (default the last)."""
        first = self.stage_index(start, 0) + 1
        return self._span(acts, first, self.stage_index(until, len(self.stages) - 1))

    def _span(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        if last < first - 1:
            raise GenbaError(f"stage {self.stages[last]!r} comes before the start {self.stages[first - 1]!r}")
        for index in range(first, last + 1):
            x = self._run(x, index)
        return x

    def trainable_modules(self, after: str) -> list[nn.Module]:
        """The modules of the stages after the cut `after` (the part one fine-tunes)."""
        first = self.stage_index(after, 0) + 1
        return [m for i in range(first, len(self.stages)) for m in self._stage_modules(i)]

    # ------------------------------------------------------------------ a trunk trained after a cut
    def train_after(self, cut: str) -> None:
        """Freeze every parameter, then make the stages after `cut` trainable (the one place the
        continual trunk learner and CVM's trunk student set their trainable part)."""
        self.module.requires_grad_(False)
        for m in self.trainable_modules(after=cut):
            m.requires_grad_(True)

    def forward_trunk(self, acts: torch.Tensor, cut: str) -> torch.Tensor:
        """Pooled features from activations after `cut`: forward_head(forward_from(acts, cut))."""
        return self.forward_head(self.forward_from(acts, start=cut))

    def apply_norm_policy(self, policy: str) -> None:
        """BatchNorm in training, an explicit choice (call after module.train(mode)):
        "frozen"        every BatchNorm keeps its pretrained statistics (eval mode), trainable
                        stages included (genba.continual.trunk);
        "frozen-stages" the modules whose own parameters are all frozen run in eval mode, so the
                        BatchNorm of the trainable stages updates its statistics (genba.cvm.trunk)."""
        if policy not in NORM_POLICIES:
            raise ValueError(f"BatchNorm policy must be one of {', '.join(NORM_POLICIES)}, got {policy!r}")
        for m in self.module.modules():
            own = list(m.parameters(recurse=False))
            if (policy == "frozen" and isinstance(m, nn.modules.batchnorm._BatchNorm)) or \
                    (policy == "frozen-stages" and own and not any(p.requires_grad for p in own)):
                m.eval()

    def _stage_modules(self, index: int) -> list[nn.Module]:
        raise NotImplementedError

    def adapter_targets(self) -> list[str]:
        """Names of the modules adapters (LoRA through peft) may target (peft's target_modules)."""
        return []
