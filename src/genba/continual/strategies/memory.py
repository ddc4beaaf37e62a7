"""Training-free continual learner: Tip-Adapter's cache (genba.methods.tip_adapter) grown task
by task. After task t, `shots` labelled training rows per class of t (seeded) join the cache
K (unit visual features) with their one-hot global labels (the draw: a torch.Generator seeded
from the run's seed and the task index, so a resumed task redraws the same shots); logits = text logits +
alpha * exp(-beta (1 - v K^T)) L. Nothing is trained; the bytes grow linearly with the classes
seen (reported as extra bytes). alpha, beta: Tip-Adapter's alpha = 1 would be drowned by the
x100 text logits of genba's scale, so defaults follow genba's validation-picked range for visual
caches (bench/results/adapt.md: alpha 1e2-1e3, beta 5.5), fixed in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.continual.learner import TipCache
from genba.continual.strategies.base import Strategy, all_rows, positive, register_strategy
from genba.train import TrainData


@dataclass
class MemoryConfig:
    shots: int = 16
    """Labelled rows per class kept in the cache."""
    alpha: float = 100.0
    """Weight of the cache logits."""
    beta: float = 5.5
    """Sharpness of exp(-beta (1 - cos)) (Tip-Adapter's default)."""

    def __post_init__(self) -> None:
        positive(self, "shots", "alpha", "beta")


@register_strategy("memory")
class GrowingMemory(Strategy):
    config_cls = MemoryConfig
    trains = False
    requires = frozenset({"cache", "visual"})

    def begin_task(self, objective, task_index: int) -> dict | None:
        if objective.cache is None:
            return {"cache": TipCache(objective.text.shape[0], self.config.alpha, self.config.beta)}
        return None

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        rows = all_rows(data)
        g = torch.Generator().manual_seed(self.seed * 1009 + task_index)
        picked = []
        for c in torch.unique(rows["y"]).tolist():
            members = (rows["y"] == c).nonzero()[:, 0]
            picked.append(members[torch.randperm(len(members), generator=g)[: int(self.config.shots)]])
        idx = torch.cat(picked)
        with torch.no_grad():
            objective.cache.add(objective.visual({k: v[idx] for k, v in rows.items()}), rows["y"][idx])

    def extra_bytes(self) -> int:
        return 0  # the cache is a learner buffer, counted in the learner's bytes
