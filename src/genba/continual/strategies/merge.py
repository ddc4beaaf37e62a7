"""Model merging: one adapter trained per task, the learner predicts with their average.

    theta_t = fit(theta_0, task t)            every task starts from the same initial adapter
    theta   = (1 / T) sum_{t < T} theta_t     after task T-1 (uniform weight averaging: a model
                                              soup, Wortsman et al. ICML 2022; task arithmetic
                                              with lambda = 1 / T, Ilharco et al. ICLR 2023)
On the linear residual adapter delta(v) = A v + b the average of the weights is the average of
the adapters' outputs; the learner stays one adapter wide at prediction. The per-task weights
are kept (extra bytes). A baseline beside task-adapters (which keeps the tasks apart by routing)
and replay (which keeps old rows).
"""

from __future__ import annotations

import copy

import torch

from genba.continual.strategies.base import Strategy, register_strategy, tensor_bytes
from genba.train import TrainData


@register_strategy("merge")
class MergeAdapters(Strategy):
    """Train each task's adapter from the common initial state, predict with the mean of them all."""

    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.initial: dict[str, torch.Tensor] | None = None
        self.tasks: list[dict[str, torch.Tensor]] = []

    requires = frozenset({"logits", "delta"})

    def begin_task(self, objective, task_index: int) -> dict:
        if self.initial is None:
            self.initial = {k: v.detach().clone() for k, v in objective.delta.state_dict().items()}
        fresh = copy.deepcopy(objective.delta)  # task t trains from theta_0, not from the merge
        fresh.load_state_dict(self.initial)
        return {"delta": fresh}

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        trained = {k: v.detach().clone() for k, v in objective.delta.state_dict().items()}
        self.tasks = self.tasks[:task_index] + [trained]  # a resumed task replaces its own entry
        merged = {k: torch.stack([t[k].float() for t in self.tasks]).mean(0).to(trained[k].dtype) for k in trained}
        objective.delta.load_state_dict(merged)

    def extra_bytes(self) -> int:
        return tensor_bytes(*self.tasks)
