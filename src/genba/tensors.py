"""Tensor helpers every layer shares (the bottom layer: imports nothing of genba)."""

from __future__ import annotations

import torch

EPS = 1e-12


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = EPS) -> torch.Tensor:
    """x / max(||x||, eps) along `dim` (zero rows stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats, H(p) = -sum p log p, along `dim` (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(dim)
