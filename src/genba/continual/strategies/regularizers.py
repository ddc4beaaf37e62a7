"""Weight-space regularisers as engine Callbacks: L2 to the initial weights and EWC.

* l2:  loss += weight/2 * sum_i (theta_i - theta0_i)^2, theta0 the weights before the first
       task (the "L2" / WiSE-style anchor baseline of ZSCL's Table 1 and of Kirkpatrick et al.).
* ewc: loss += weight/2 * sum_i F_i (theta_i - theta*_i)^2 (Kirkpatrick et al., PNAS 2017,
       Eq. 3), F the diagonal empirical Fisher accumulated over past tasks (online sum, as in
       Schwarz et al. 2018 with gamma = 1), theta* the weights after the last task. F is the
       mean over mini-batches of the squared gradient of the task loss with the true labels,
       rescaled by the batch size (Avalanche's EWCPlugin): F_i = 1/N sum_b |b| (dL_b/dtheta_i)^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.continual.strategies.base import Strategy, module_state, non_negative, positive, register_strategy, \
    tensor_bytes
from genba.train import Callback, TrainData


class QuadraticPenalty(Callback):
    """loss += weight/2 * sum_i w_i (theta_i - anchor_i)^2 over the named parameters."""

    def __init__(self, objective, anchor: dict, importance: dict | None, weight: float) -> None:
        self.objective, self.anchor, self.importance, self.weight = objective, anchor, importance, weight

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        for name, p in self.objective.named_parameters():
            if name in self.anchor and p.requires_grad and p.shape == self.anchor[name].shape:
                sq = (p - self.anchor[name].to(p.device)) ** 2
                total = total + (sq * self.importance[name].to(p.device) if self.importance else sq).sum()
        return 0.5 * self.weight * total

    def before_backward(self, engine, batch, loss):
        return loss + self.penalty()


@dataclass
class L2Config:
    weight: float = 1.0
    """Penalty weight (fixed in advance)."""

    def __post_init__(self) -> None:
        non_negative(self, "weight")


@register_strategy("l2")
class L2Init(Strategy):
    config_cls = L2Config

    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.anchor: dict | None = None

    def begin_task(self, objective, task_index: int) -> None:
        if self.anchor is None:
            self.anchor = module_state(objective)

    def callbacks(self, objective):
        return [QuadraticPenalty(objective, self.anchor, None, self.config.weight)]

    def extra_bytes(self) -> int:
        return tensor_bytes(self.anchor or {})


@dataclass
class EWCConfig:
    weight: float = 1000.0
    """lambda of Kirkpatrick et al. (fixed in advance; their MNIST runs use 10^2 - 10^4)."""
    fisher_batch: int = 32
    """Mini-batch size of the Fisher estimate."""

    def __post_init__(self) -> None:
        non_negative(self, "weight")
        positive(self, "fisher_batch")


def diagonal_fisher(objective, data: TrainData, batch_size: int) -> dict[str, torch.Tensor]:
    """F_i = 1/N sum_b |b| (dL_b/dtheta_i)^2 over the trainable parameters (no optimiser step)."""
    params = {n: p for n, p in objective.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n = len(data)
    was_training = objective.training
    objective.eval()
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(n, start + batch_size))
        grads = torch.autograd.grad(objective(data.take(rows)), list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                fisher[name] += len(rows) * g.detach() ** 2
    objective.train(was_training)
    return {k: v / n for k, v in fisher.items()}


@register_strategy("ewc")
class EWC(Strategy):
    config_cls = EWCConfig

    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def callbacks(self, objective):
        if not self.fisher:
            return []
        return [QuadraticPenalty(objective, self.anchor, self.fisher, self.config.weight)]

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        new = diagonal_fisher(objective, data, self.config.fisher_batch)
        for name, f in new.items():
            old = self.fisher.get(name)
            self.fisher[name] = f if old is None or old.shape != f.shape else old + f
        self.anchor = module_state(objective)

    def extra_bytes(self) -> int:
        return tensor_bytes(self.fisher, self.anchor)
