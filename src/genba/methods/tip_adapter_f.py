"""Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned on the few-shot set.

The keys K (N, D), initialised from the cache, become parameters; values stay one-hot.
Training minimises cross-entropy of the Tip-Adapter logits on the support set with AdamW
(eps 1e-4) and a cosine schedule, as the reference code does. Each epoch a support image
contributes one of its views (the reference re-augments each epoch). The reference code keeps
the epoch with the best TEST accuracy; genba keeps the last epoch, or the best on `val` if given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import check_labels
from genba.methods.config import non_negative, positive
from genba.methods.registry import register_method
from genba.methods.tip_adapter import TipAdapter


@dataclass
class TipAdapterFConfig:
    alpha: float = 1.0
    """alpha, residual ratio of the cache logits."""
    beta: float = 5.5
    """beta, sharpness of the affinities."""
    scale: float = 100.0
    """CLIP's logit scale for the text logits."""
    lr: float = 1e-3
    """Learning rate (paper: 0.001)."""
    epochs: int = 20
    """Training epochs (paper: 20)."""
    batch_size: int = 256
    """Mini-batch size (reference code: 256)."""
    seed: int = 0
    """Seed of the shuffling and view sampling."""

    def __post_init__(self) -> None:
        non_negative(self, "alpha")
        positive(self, "beta", "scale", "lr", "epochs", "batch_size")


@register_method("tip-adapter-f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter with learnable cache keys."""

    config_cls = TipAdapterFConfig

    def _fit(self, sj, sc, y, val) -> None:
        super()._fit(sj, sc, y, val)
        cfg = self.config
        keys = torch.nn.Parameter(self.keys.clone())  # (N, Dc) learnable, init from the cache
        opt = torch.optim.AdamW([keys], lr=cfg.lr, eps=1e-4)
        steps = cfg.epochs * -(-len(y) // cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = torch.Generator().manual_seed(cfg.seed)
        best, best_keys = -1.0, keys.detach().clone()
        if val is not None:
            vj, vc, vspace = self._split(val[0], self.text.shape[1], "validation features")
            if vspace != self.space:
                raise GenbaError(f"validation features are in the {vspace} space, the support in {self.space}")
            vy = check_labels(val[1], len(val[0]), self.num_classes, "validation labels")
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(y), generator=g)
            view = torch.randint(0, sj.shape[1], (len(y),), generator=g)  # one view per image
            for i in range(0, len(y), cfg.batch_size):
                b = perm[i : i + cfg.batch_size]
                logits = self.logits(sj[b, view[b]], sc[b, view[b]], keys)  # (b, C)
                loss = torch.nn.functional.cross_entropy(logits, y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            if val is not None:
                with torch.no_grad():
                    acc = (self.logits(vj[:, 0], vc[:, 0], keys).argmax(1) == vy).float().mean().item()
                if acc > best:
                    best, best_keys = acc, keys.detach().clone()
        self.keys = best_keys if val is not None else keys.detach()
