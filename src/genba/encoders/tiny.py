"""A tiny deterministic random VLM for fast tests.

Image: resize to 16x16 RGB, flatten, project with a fixed seeded Gaussian matrix (768 -> D),
L2-normalize. Visual features: the 16x16 grayscale pixels (256-d), centred.
Text: each lower-cased word hashed (sha256, stable across processes) to a seeded Gaussian
vector; the text embedding is the normalized sum over words. Same seed -> same function.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image

from genba.encoders import register_encoder
from genba.encoders.base import VisionLanguageEncoder, l2_normalize


class TinyEncoder(VisionLanguageEncoder):
    """Deterministic random image/text embeddings; no weights on disk."""

    side = 16
    batch_size = 64

    def __init__(self, embed_dim: int = 32, seed: int = 0):
        self.name = "tiny"
        self.embed_dim = embed_dim
        self.visual_dim = self.side * self.side
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self._projection = torch.randn(3 * self.side * self.side, embed_dim, generator=generator)

    @property
    def provenance(self) -> str:
        return f"tiny-v1:d{self.embed_dim}:s{self.seed}"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        small = image.convert("RGB").resize((self.side, self.side), Image.BILINEAR)
        array = np.asarray(small, dtype=np.float32) / 255.0  # (H, W, 3)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)

    def encode_image_with_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hardware = self.hardware
        pixels = hardware.to(pixels)
        with hardware.autocast():
            flat = pixels.flatten(1) - 0.5  # (N, 3*H*W)
            joint = l2_normalize((flat @ hardware.to(self._projection)).float())  # (N, D)
            gray = pixels.mean(dim=1).flatten(1).float()  # (N, H*W)
        return joint.cpu(), (gray - gray.mean(dim=1, keepdim=True)).cpu()

    def _word_vector(self, word: str) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        return torch.randn(self.embed_dim, generator=generator)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            words = text.lower().replace(".", " ").replace(",", " ").split() or [""]
            rows.append(torch.stack([self._word_vector(w) for w in words]).sum(0))
        return l2_normalize(torch.stack(rows))


@register_encoder("tiny", "deterministic random VLM for tests ('tiny' or 'tiny:<dim>')")
def _make_tiny(argument: str | None) -> VisionLanguageEncoder:
    return TinyEncoder(embed_dim=int(argument) if argument else 32)
