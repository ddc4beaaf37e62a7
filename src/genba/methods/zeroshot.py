"""Zero-shot CLIP: the text classifier alone, logits = scale * cos(image, class text).

The class text feature is the renormalised mean of the class name's prompt embeddings (built
by the pipeline); probabilities are softmax(scale * q W^T) on the un-augmented view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.methods.base import Method
from genba.methods.config import positive
from genba.methods.registry import register_method


@dataclass
class ZeroShotConfig:
    scale: float = 100.0
    """CLIP's logit scale exp(t) = 100."""

    def __post_init__(self) -> None:
        positive(self, "scale")


@register_method("zeroshot")
class ZeroShot(Method):
    """softmax(scale * q @ W_text^T)."""

    config_cls = ZeroShotConfig
    uses_cache = False

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        return self.text_logits(qj[:, 0]).softmax(-1)  # (N, C)
