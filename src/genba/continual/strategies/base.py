"""The continual-strategy contract: hooks around `genba.train.fit`, no training loop of its own.

    strategy = make_strategy("ewc", seed=run_seed, learner=objective, weight=100.0)
    # genba.continual.loop.run_tasks then does, per task t:
    objective.install(strategy.begin_task(objective, t))          # {slot: module} the strategy adds
    data = strategy.task_data(task_data, t)                       # TrainData (replay mixes rows in)
    fit(objective, data, cfg, callbacks=strategy.callbacks(objective))   # penalties are Callbacks
    strategy.end_task(objective, task_data, t)                    # buffer / Fisher / snapshot

A new strategy is one module in this package plus `@register_strategy("name")` on its class
(and its import in strategies/__init__.py). The contract it keeps:

* `requires`: the learner capabilities it reads (genba.continual.objective.CAPABILITIES, e.g.
  {"visual", "cache"}); `make_strategy(..., learner=...)` refuses a learner that lacks one,
  naming the methods that do work with it, and every list of names (CLI help, bench) is
  `strategy_names(learner)`.
* It never assigns into the learner: a module it adds (an adapter, a cache) is returned from
  `begin_task` as {slot: module} and the task loop installs it (`ContinualObjective.install`).
* Randomness: `self.seed` is the run's seed (make_strategy(seed=...)); every draw uses a
  generator built from it (torch.Generator / numpy Generator), never torch's global one. A
  subclass that overrides __init__ takes `(self, config=None, **kw)` and calls
  `super().__init__(config, **kw)`.
* `trains = False` for training-free strategies (fit is never called).

Hyperparameters live in one dataclass per strategy (`config_cls`), fixed in advance (the
defaults, each with its source) or chosen on the first task's validation split; unknown names
fail before anything is trained. `extra_bytes()` reports what the strategy keeps beyond the
learner (buffers, Fisher, snapshots, caches).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from genba.errors import GenbaError
from genba.registry import Registry
from genba.continual.objective import CAPABILITIES, ContinualObjective  # noqa: F401  (re-exported)
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
    requires: ClassVar[frozenset[str]] = frozenset({"logits"})
    """Learner capabilities this strategy reads (keys of genba.continual.objective.CAPABILITIES)."""

    def __init__(self, config=None, *, seed: int = 0) -> None:
        self.config = config if config is not None else self.config_cls()
        self.seed = int(seed)

    # ------------------------------------------------------------------ hooks
    def begin_task(self, objective, task_index: int) -> dict | None:
        """Before training task `task_index` (the objective already knows the task's classes).
        Returns the modules this strategy adds, {slot: nn.Module}, for the loop to install."""
        return None

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


def provided(learner) -> frozenset[str]:
    """The capabilities a learner (instance or class) offers; a duck-typed objective: logits only."""
    return frozenset(getattr(learner, "provides", None) or {"logits"})


def works_with(name: str, learner) -> bool:
    return STRATEGIES.get(name).requires <= provided(learner)


def strategy_names(learner=None) -> list[str]:
    """Registered strategies; with `learner` (instance or class), those whose requires it provides."""
    return [n for n in STRATEGIES.names() if learner is None or works_with(n, learner)]


def check_compatible(name: str, learner) -> None:
    """GenbaError unless `learner` provides every capability strategy `name` requires."""
    missing = sorted(STRATEGIES.get(name).requires - provided(learner))
    if missing:
        kind = learner.__name__ if isinstance(learner, type) else type(learner).__name__
        raise GenbaError(f"method '{name}' needs a learner with {', '.join(missing)} "
                         f"({'; '.join(CAPABILITIES.get(m, m) for m in missing)}); {kind} does not offer it. "
                         f"Methods that work with {kind}: {', '.join(strategy_names(learner))}")


def make_config(name: str, hp: dict):
    """The hyperparameter dataclass of strategy `name` with `hp` applied (unknown keys refused)."""
    from genba.settings import build_config

    cls = STRATEGIES.get(name).config_cls  # unknown name -> GenbaError listing the valid ones
    return build_config(cls, hp, f"method '{name}'")


def make_strategy(name: str, *, seed: int = 0, learner=None, **hp) -> Strategy:
    """A strategy by name with hyperparameters `hp`, drawing from the run's `seed` (GenbaError on an
    unknown name or key, or, given `learner` (instance or class), on a learner it does not work with)."""
    config = make_config(name, hp)
    if learner is not None:
        check_compatible(name, learner)
    return STRATEGIES.get(name)(config, seed=seed)


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
