"""Learning without Forgetting (Li & Hoiem, TPAMI 2017) as an engine Callback.

On the current task's rows, the previous model's logits over the old classes are distilled:
    loss += weight * T^2 * KL( softmax(o_old / T) || softmax(o_new / T) )
with o_old the snapshot's logits (taken at the end of the previous task), o_new the current
model's logits restricted to the same old classes, T the temperature (the paper's T = 2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genba.continual.strategies.base import Strategy, non_negative, positive, register_strategy, tensor_bytes
from genba.train import Callback, TrainData


def distillation(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(old/T) || softmax(new/T)), mean over rows."""
    t = temperature
    return t * t * F.kl_div(F.log_softmax(new_logits / t, dim=1), F.log_softmax(old_logits / t, dim=1),
                            reduction="batchmean", log_target=True)


class LwFPenalty(Callback):
    def __init__(self, objective, previous, old_classes: int, weight: float, temperature: float) -> None:
        self.objective, self.previous = objective, previous
        self.old, self.weight, self.temperature = old_classes, weight, temperature

    def before_backward(self, engine, batch, loss):
        with torch.no_grad():
            old = self.previous.logits(batch)[:, :self.old]
        new = self.objective.logits(batch)[:, :self.old]
        return loss + self.weight * distillation(new, old, self.temperature)


@dataclass
class LwFConfig:
    weight: float = 1.0
    """lambda_o of Li & Hoiem (their default 1)."""
    temperature: float = 2.0
    """T of Li & Hoiem (their default 2)."""

    def __post_init__(self) -> None:
        non_negative(self, "weight")
        positive(self, "temperature")


@register_strategy("lwf")
class LwF(Strategy):
    config_cls = LwFConfig

    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.previous = None
        self.old_classes = 0

    def callbacks(self, objective):
        if self.previous is None:
            return []
        return [LwFPenalty(objective, self.previous, self.old_classes, self.config.weight, self.config.temperature)]

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        self.previous = copy.deepcopy(objective).eval().requires_grad_(False)
        self.old_classes = int(objective.logits(data.take(torch.arange(1))).shape[1])

    def extra_bytes(self) -> int:
        return 0 if self.previous is None else tensor_bytes(dict(self.previous.named_parameters()))
