"""Tip-Adapter (Zhang et al., ECCV 2022): a training-free cache of the few-shot features.

    logits = scale * q_joint W^T + alpha * exp(-beta * (1 - q_cache K^T)) @ L
with K (N, D) the support features (the mean of a support image's views, renormalised, as
Tip-Adapter's cache averages its augmentation epochs) and L (N, C) their one-hot labels.
The paper's fixed values are alpha = 1, beta = 5.5; `select_on_val` searches them on a
validation split instead of on test as the reference code's search does. Without a text
classifier (a vision-only encoder) the text logits are absent and the cache logits decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.memory.read import affinity_read, l2_normalize
from genba.methods.base import Method
from genba.methods.config import non_negative, positive
from genba.methods.registry import register_method


@dataclass
class TipAdapterConfig:
    alpha: float = 1.0
    """alpha, residual ratio of the cache logits."""
    beta: float = 5.5
    """beta, sharpness of the affinities exp(-beta (1 - cos))."""
    scale: float = 100.0
    """CLIP's logit scale for the text logits."""

    def __post_init__(self) -> None:
        non_negative(self, "alpha")
        positive(self, "beta", "scale")


@register_method("tip-adapter")
class TipAdapter(Method):
    """Text logits plus the affinity read of a one-hot labelled cache."""

    config_cls = TipAdapterConfig
    needs_support = True
    text_optional = True  # vision-only encoders: the cache logits alone
    # FACTS.md: validation picks alpha of 1e2-1e4 for visual caches, far from the paper's 1.0
    selection_grid = {"alpha": [1.0, 10.0, 100.0, 1000.0], "beta": [1.0, 5.5, 20.0]}
    shown_hyperparameters = ("alpha", "beta")

    def _fit(self, sj, sc, y, val) -> None:
        self.keys = l2_normalize(sc.mean(1))  # (N, Dc)
        self.values = torch.nn.functional.one_hot(y, self.num_classes).float()  # (N, C)

    def logits(self, qj: torch.Tensor, qc: torch.Tensor, keys: torch.Tensor, alpha: float | None = None,
               beta: float | None = None) -> torch.Tensor:
        """(B, Dt), (B, Dc) unit queries -> (B, C) Tip-Adapter logits with the given keys
        (alpha and beta: the config's unless given)."""
        alpha = self.config.alpha if alpha is None else alpha
        beta = self.config.beta if beta is None else beta
        return self.text_logits(qj) + alpha * affinity_read(qc, keys, self.values, beta=beta)

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        return self.logits(qj[:, 0], qc[:, 0], self.keys).softmax(-1)  # (N, C)
