"""Test-time views: pseudo-label a query from its most confident augmented views.

DMN and TDA (after TPT) classify V augmented views of each test image (V = 32 with 31 random
crops + the original in DMN's code), keep the fraction `keep` with the lowest prediction
entropy (10%, at least one view) and average their softmax: that average gives the
pseudo-label and the entropy used to write the memories. Making the views is the pipeline's
job; this module only selects and averages.
"""

from __future__ import annotations

import torch

from genba.errors import GenbaError
from genba.memory.read import entropy


def num_kept(views: int, keep: float) -> int:
    """Views kept out of `views`: max(1, int(views * keep)) (int() as in DMN's code: 32 * 0.1 -> 3)."""
    if not 0.0 < keep <= 1.0:
        raise GenbaError(f"the kept fraction of views must be in (0, 1], got {keep}")
    return max(1, int(views * keep))


def confident_views(probs: torch.Tensor, keep: float = 0.1, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the softmax of the lowest-entropy views.

    Args:
        probs: (V, C) per-view class probabilities of one query, or (B, V, C) for a batch.
        keep: fraction of views to keep.
        eps: 0 ranks views by H(p) = -sum p log p (TDA's reference, from logits); > 0 by
            -sum p log(p + eps), DMN's reference (eps = 1e-6), which orders very confident
            views differently.

    Returns:
        mean probabilities (C,) or (B, C), and the kept view indices (k,) or (B, k).
    """
    batched = probs.dim() == 3
    p = probs if batched else probs[None]  # (B, V, C)
    k = num_kept(p.shape[1], keep)
    h = entropy(p) if eps <= 0 else -(p * (p + eps).log()).sum(-1)  # (B, V)
    idx = torch.argsort(h, dim=1, stable=True)[:, :k]  # (B, k) lowest entropy first
    kept = torch.gather(p, 1, idx[..., None].expand(-1, -1, p.shape[2]))  # (B, k, C)
    mean = kept.mean(1)  # (B, C)
    return (mean, idx) if batched else (mean[0], idx[0])
