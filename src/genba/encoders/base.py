"""The encoder protocols, split by capability.

    ImageEncoder           encode_image(x) -> (N, D), ||row|| = 1; optional visual features
                           (`visual_dim` > 0) from the same pass (`encode_image_with_visual`)
    TextEncoder            encode_text(texts) -> (N, D), ||row|| = 1
    VisionLanguageEncoder  both, in one joint space where cos(image, text) ranks how well a text
                           describes an image (`Encoder` is this, the name before the split)
`has_text` / `has_image` say which protocol an encoder follows (isinstance, not a flag to set).
Methods declare what they need (`Method.works_without_text`); `genba adapt` and `genba serve`
refuse a method that needs text on an ImageEncoder with the list of the ones that run.

`provenance` identifies the exact function computed (name, weights hash, options); feature
caches are keyed by it, so two encoders with equal provenance must give equal features.

Hardware: an image encoder computes on `encoder.hardware` (set with `on(hardware)`, else
genba.device.current()): its model moves there on first use, pixels follow, the forward pass runs
under that precision's autocast, and the rows come back on the CPU as float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from genba.cache import file_sha256  # noqa: F401  (re-exported: encoders.base.file_sha256)
from genba.device import Hardware, current, module_device
from genba.tensors import l2_normalize  # noqa: F401  (re-exported: encoders.base.l2_normalize)


class _Embedder:
    """What every encoder has: a name, an output dimension and a provenance."""

    name: str = "encoder"
    embed_dim: int = 0

    @property
    def provenance(self) -> str:
        """A string that changes whenever the computed function changes (weights, options)."""
        raise NotImplementedError

    @property
    def has_text(self) -> bool:
        """True when this encoder embeds text (it is a TextEncoder)."""
        return isinstance(self, TextEncoder)

    @property
    def has_image(self) -> bool:
        """True when this encoder embeds images (it is an ImageEncoder)."""
        return isinstance(self, ImageEncoder)


class ImageEncoder(_Embedder):
    """Images -> (N, D) L2-normalized rows, plus optional visual features (N, Dv).

    A vision-only model (DINOv2) is just this; the methods that run on it declare
    `text_optional` (genba.methods.base).
    """

    visual_dim: int = 0  # 0 when the encoder has no separate visual features
    batch_size: int = 32  # preferred batch for image extraction on CPU
    hardware_choice: Hardware | None = None  # None: genba.device.current() at each call

    @property
    def hardware(self) -> Hardware:
        """Where and in what precision this encoder computes."""
        return self.hardware_choice or current()

    def on(self, hardware: Hardware | None) -> "ImageEncoder":
        """Compute on `hardware` from now on (None: follow genba.device.current()); returns self."""
        self.hardware_choice = hardware
        return self

    @property
    def runtime(self) -> str:
        """What computes the image features: 'torch', or an ONNX Runtime graph ('onnx', 'onnx-int8')
        for encoders that have one (the feature cache key names a runtime other than torch)."""
        return "torch"

    def place(self, module: torch.nn.Module) -> Hardware:
        """Move `module` to this encoder's device if it is elsewhere; returns the Hardware."""
        hardware = self.hardware
        if module_device(module) != hardware.device:
            module.to(hardware.device)
        return hardware

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> a (3, H, W) float tensor ready for `encode_image`."""
        raise NotImplementedError

    def encode_image_with_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, 3, H, W) -> (joint (N, D) normalized, visual (N, Dv) or None)."""
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D), L2-normalized rows."""
        return self.encode_image_with_visual(pixels)[0]

    def describe(self) -> str:
        """One line for `genba encoders`."""
        kind = "image+text" if self.has_text else "image only"
        return f"{self.name} ({kind}): joint dim {self.embed_dim}, visual dim {self.visual_dim or '-'}"


class TextEncoder(_Embedder):
    """Texts -> (N, D) L2-normalized rows (a language model's sentence embedding, or a VLM's
    text tower). CVM's concept bank takes any of these."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of N strings -> (N, D), L2-normalized rows."""
        raise NotImplementedError


class VisionLanguageEncoder(ImageEncoder, TextEncoder):
    """Both towers in one joint space, where cos(image, text) ranks how well a text describes an
    image: CLIP, SigLIP, the embedded ConSE default. Zero-shot and every method need this."""


Encoder = VisionLanguageEncoder
"""The full protocol (the name genba used before the capability split; kept for subclasses)."""


EncoderFactory = Callable[[str], ImageEncoder]
