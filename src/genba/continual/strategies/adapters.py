"""Parameter-efficient strategies: one adapter per task (base frozen), and a mixture of
adapters with learned gates (MoE-Adapters, Yu et al. CVPR 2024). Both send images of unseen
domains to the zero-shot path in the task-agnostic setting (DIKI, Tang et al. ECCV 2024;
RAIL, Xu et al. NeurIPS 2024) through genba.continual.learner.TaskRouter.

* task-adapters: before task t a new zero-initialised adapter is added and every earlier one
  frozen; the learner reads adapter t for images of task t (MTIL), or the router's choice
  (X-TAIL). Nothing shared is trained, so no interference; Transfer is the zero-shot's.
* moe-adapters: a shared pool of experts, one new gate per task (earlier gates frozen);
  after each task the `freeze` most used experts are frozen (activate-freeze).
After each task the router learns the task's class centroids from its training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.continual.learner import MixtureAdapters, TaskAdapters
from genba.continual.strategies.base import (Strategy, in_unit_interval, non_negative, positive, register_strategy,
                                             task_rows)
from genba.train import TrainData


@dataclass
class TaskAdaptersConfig:
    hidden: int = 0
    """0: linear adapter per task; > 0: bottleneck width."""
    quantile: float = 0.05
    """Router threshold: this quantile of a class's own training similarities (fixed in advance)."""

    def __post_init__(self) -> None:
        non_negative(self, "hidden")
        in_unit_interval(self, "quantile")


@register_strategy("task-adapters")
class PerTaskAdapters(Strategy):
    config_cls = TaskAdaptersConfig
    requires = frozenset({"task-adapters"})

    def begin_task(self, objective, task_index: int) -> dict | None:
        if "delta" not in objective.provides:  # e.g. LoRA through peft: the learner's own adapter per task
            objective.add_task_adapter(task_index)
            return None
        adapters = objective.delta
        if not isinstance(adapters, TaskAdapters):
            adapters = TaskAdapters(objective.dim_visual, objective.dim, int(self.config.hidden), self.config.quantile)
        while len(adapters.adapters) <= task_index:
            adapters.add_task()
        return {"delta": adapters}

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        rows = task_rows(data, task_index)
        with torch.no_grad():
            if "delta" not in objective.provides:
                objective.router.add_task(objective.base_features(rows), rows["y"], task_index)
            else:
                objective.delta.router.add_task(objective.visual(rows), rows["y"], task_index)

    def extra_bytes(self) -> int:
        return 0  # adapters and router are counted in the learner's bytes


@dataclass
class MoEAdaptersConfig:
    experts: int = 8
    """Experts in the shared pool (MoE-Adapters: 22 for 11 tasks, i.e. 2 per task)."""
    hidden: int = 64
    """Bottleneck width of each expert."""
    top_k: int = 2
    """Experts mixed per image (MoE-Adapters: 2)."""
    freeze: int = 2
    """Experts frozen after each task (the most used ones; = top_k so a task's experts are kept)."""
    quantile: float = 0.05
    """Router threshold quantile (as task-adapters)."""

    def __post_init__(self) -> None:
        positive(self, "experts", "hidden", "top_k")
        non_negative(self, "freeze")
        in_unit_interval(self, "quantile")


@register_strategy("moe-adapters")
class MoEAdapters(Strategy):
    config_cls = MoEAdaptersConfig
    requires = frozenset({"delta", "visual"})

    def begin_task(self, objective, task_index: int) -> dict:
        cfg = self.config
        mixture = objective.delta
        if not isinstance(mixture, MixtureAdapters):
            mixture = MixtureAdapters(objective.dim_visual, objective.dim, int(cfg.experts), int(cfg.hidden),
                                      int(cfg.top_k), cfg.quantile)
        while len(mixture.gates) <= task_index:
            mixture.add_task()
        return {"delta": mixture}

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        rows = task_rows(data, task_index)
        with torch.no_grad():
            v = objective.visual(rows)
            objective.delta.router.add_task(v, rows["y"], task_index)
            usage = objective.delta.usage(v, task_index)
        trainable = [e for e in range(len(objective.delta.experts))
                     if any(p.requires_grad for p in objective.delta.experts[e].parameters())]
        ranked = sorted(trainable, key=lambda e: -float(usage[e]))
        for e in ranked[: int(self.config.freeze)]:
            if len(trainable) > 1:  # keep at least one expert trainable for the next task
                objective.delta.experts[e].requires_grad_(False)
                trainable.remove(e)
