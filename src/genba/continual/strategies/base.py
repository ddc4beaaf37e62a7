"""The continual-strategy contract: hooks around `genba.train.fit`, no training loop of its own.

    strategy = make_strategy("ewc", weight=100.0)
    strategy.begin_task(objective, t)
    data = strategy.task_data(task_data, t)                       # TrainData (replay mixes rows in)
    fit(objective, data, cfg, callbacks=strategy.callbacks(objective))   # penalties are Callbacks
    strategy.end_task(objective, task_data, t)                    # buffer / Fisher / snapshot

Hyperparameters live in one dataclass per strategy (`config_cls`), fixed in advance (the
defaults, each with its source) or chosen on the first task's validation split; unknown names
fail before anything is trained. `extra_bytes()` reports what the strategy keeps beyond the
learner (buffers, Fisher, snapshots, caches).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch

from genba.errors import GenbaError
from genba.registry import Registry
from genba.continual.objective import ContinualObjective  # noqa: F401  (re-exported with the strategies)
from genba.train import Callback, TensorData, TrainData


@dataclass
class NoHyperparameters:
    pass


class Strategy:
    """Base strategy: sequential fine-tuning (train on each task's data, nothing else)."""

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type] = NoHyperparameters
    trains: ClassVar[bool] = True
    """False for training-free strategies (zero-shot, memory): the protocol never calls fit."""

    def __init__(self, config=None) -> None:
        self.config = config if config is not None else self.config_cls()

    # ------------------------------------------------------------------ hooks
    def begin_task(self, objective, task_index: int) -> None:
        """Before training task `task_index` (the objective already knows the task's classes)."""

    def task_data(self, data: TrainData, task_index: int) -> TrainData:
        """The rows to train task `task_index` on (default: the task's own rows)."""
        return data

    def callbacks(self, objective) -> list[Callback]:
        """Engine callbacks for this task's fit (penalties, weight averaging)."""
        return []

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        """After training task `task_index` on `data` (its own rows, not the mixed ones)."""

    # ------------------------------------------------------------------ reporting
    def hyperparameters(self) -> dict:
        return asdict(self.config)

    def extra_bytes(self) -> int:
        """Bytes kept beyond the learner's own parameters."""
        return 0


# ---------------------------------------------------------------------- registry
STRATEGIES = Registry("continual method")


def register_strategy(name: str, summary: str = ""):
    return STRATEGIES.register(name, summary)


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def make_config(name: str, hp: dict):
    """The hyperparameter dataclass of strategy `name` with `hp` applied (unknown keys refused)."""
    cls = STRATEGIES.get(name).config_cls  # unknown name -> GenbaError listing the valid ones
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(hp) - set(valid))
    if unknown:
        raise GenbaError(f"unknown hyperparameter(s) {', '.join(unknown)} for method '{name}'; "
                         f"valid: {', '.join(valid) or '(none)'}")
    try:
        return cls(**hp)
    except (TypeError, ValueError) as error:
        raise GenbaError(f"bad hyperparameter for method '{name}': {error}") from error


def make_strategy(name: str, **hp) -> Strategy:
    """A strategy by name with hyperparameters `hp` (GenbaError on an unknown name or key)."""
    config = make_config(name, hp)
    return STRATEGIES.get(name)(config)


# ---------------------------------------------------------------------- data helpers
def all_rows(data: TrainData) -> dict[str, torch.Tensor]:
    """Every row of a TrainData as one batch dict."""
    if isinstance(data, TensorData):
        return dict(data.tensors)
    return data.take(torch.arange(len(data)))


def task_rows(data: TrainData, task_index: int) -> dict[str, torch.Tensor]:
    """The rows of `data` that belong to task `task_index` (all rows when they carry no task id),
    e.g. what a task router fits on at the end of a task, without the replayed rows."""
    rows = all_rows(data)
    if "task" not in rows:
        return rows
    keep = rows["task"] == task_index
    return {k: v[keep] for k, v in rows.items()}


def concat_data(*parts: dict[str, torch.Tensor]) -> TensorData:
    """Rows of several batch dicts (same keys) as one TensorData."""
    parts = [p for p in parts if p and len(next(iter(p.values())))]
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            raise GenbaError(f"cannot mix rows with different fields: {sorted(keys)} vs {sorted(p)}")
    return TensorData(**{k: torch.cat([p[k] for p in parts]) for k in sorted(keys)})


def positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def non_negative(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def in_unit_interval(config, *names: str) -> None:
    """Each named field in [0, 1) (router quantiles)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def tensor_bytes(*tensors) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, dict):
            total += tensor_bytes(*t.values())
        elif isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


def module_state(objective) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters (by name)."""
    return {n: p.detach().clone() for n, p in objective.named_parameters() if p.requires_grad}
