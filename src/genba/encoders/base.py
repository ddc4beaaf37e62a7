"""The encoder protocol every vision(-language) model in genba follows.

An encoder maps images and texts into one joint space of dimension `embed_dim` where
cos(image, text) ranks how well a text describes an image. Outputs are L2-normalized:
    encode_image(x) -> (N, D), ||row|| = 1
    encode_text(texts) -> (N, D), ||row|| = 1
Encoders may also expose visual features (`visual_dim` > 0) from the same forward pass
(`encode_image_with_visual`), for methods that keep a visual cache.

`provenance` identifies the exact function computed (name, weights hash, options); feature
caches are keyed by it, so two encoders with equal provenance must give equal features.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from genba.tensors import l2_normalize  # noqa: F401  (re-exported: encoders.base.l2_normalize)


class Encoder:
    """Base class; subclasses set the attributes and implement the `_encode_*` methods."""

    name: str = "encoder"
    embed_dim: int = 0
    visual_dim: int = 0  # 0 when the encoder has no separate visual features
    has_text: bool = True
    batch_size: int = 32  # preferred batch for image extraction on CPU

    @property
    def provenance(self) -> str:
        """A string that changes whenever the computed function changes (weights, options)."""
        raise NotImplementedError

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> a (3, H, W) float tensor ready for `encode_image`."""
        raise NotImplementedError

    def encode_image_with_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, 3, H, W) -> (joint (N, D) normalized, visual (N, Dv) or None)."""
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D), L2-normalized rows."""
        return self.encode_image_with_visual(pixels)[0]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of N strings -> (N, D), L2-normalized rows."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for `genba encoders`."""
        return f"{self.name}: joint dim {self.embed_dim}, visual dim {self.visual_dim or '-'}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (for weights provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


EncoderFactory = Callable[[str], Encoder]
