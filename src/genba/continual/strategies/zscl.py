"""ZSCL (Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of
Vision-Language Models", ICCV 2023), on the image side.

Feature-space distillation: on reference images from OUTSIDE the stream (ImageNet images in
the paper; here `objective.reference_batch()`), the initial model's image-text similarity
distribution over a large reference vocabulary (the 1000 ImageNet class names) is distilled:
    p0(r) = softmax(scale * e0(r) W^T / T),  p(r) = softmax(scale * e(r) W^T / T)
    loss += weight * T^2 * KL(p0 || p)     on `ref_batch` reference rows per step
(e0 = the initial model's embedding, W the (V, D) unit vocabulary texts, T = 2 as in their
code's distillation). Parameter-space regularisation: weight ensemble (their Sec. 3.3, "WE"):
every `average_every` steps theta_hat <- theta_hat + (theta - theta_hat) / (n + 1), n the number
of averages so far (theta_hat starts at the task's initial weights), and theta_hat replaces theta
at the end of the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.continual.strategies.base import Strategy, non_negative, positive, register_strategy, tensor_bytes
from genba.continual.strategies.lwf import distillation
from genba.errors import GenbaError
from genba.train import Callback


class ReferenceDistillation(Callback):
    def __init__(self, objective, initial_logits: torch.Tensor, vocab: torch.Tensor, weight: float,
                 temperature: float, batch: int) -> None:
        self.objective, self.initial, self.vocab = objective, initial_logits, vocab
        self.weight, self.temperature, self.batch = weight, temperature, batch

    def before_backward(self, engine, batch, loss):
        n = self.initial.shape[0]
        rows = torch.randperm(n)[: self.batch]  # seeded per step by the engine
        e = self.objective.embed(self.objective.reference_batch(rows))
        logits = self.objective.scale * e @ self.vocab.T
        return loss + self.weight * distillation(logits, self.initial[rows], self.temperature)


class WeightEnsemble(Callback):
    def __init__(self, objective, every: int) -> None:
        self.objective, self.every = objective, every
        self.average = {n: p.detach().clone() for n, p in objective.named_parameters() if p.requires_grad}
        self.count = 0

    def after_step(self, engine) -> None:
        if engine.step % self.every == 0:
            self.count += 1
            with torch.no_grad():
                for n, p in self.objective.named_parameters():
                    if n in self.average:
                        self.average[n] += (p.detach() - self.average[n]) / (self.count + 1)

    def on_fit_end(self, engine) -> None:
        with torch.no_grad():
            for n, p in self.objective.named_parameters():
                if n in self.average:
                    p.copy_(self.average[n])


@dataclass
class ZSCLConfig:
    weight: float = 1.0
    """Weight of the reference distillation (their code: 1)."""
    temperature: float = 2.0
    """Distillation temperature (their code: T = 2)."""
    ref_batch: int = 64
    """Reference rows per step."""
    average_every: int = 10
    """Steps between weight-ensemble updates (0: no weight ensemble)."""

    def __post_init__(self) -> None:
        non_negative(self, "weight", "average_every")
        positive(self, "temperature", "ref_batch")


@register_strategy("zscl")
class ZSCL(Strategy):
    config_cls = ZSCLConfig
    requires = frozenset({"reference"})

    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.initial_logits: torch.Tensor | None = None

    def begin_task(self, objective, task_index: int) -> None:
        if self.initial_logits is None:
            vocab = getattr(objective, "reference_vocab", None)
            if vocab is None or getattr(objective, "reference", None) is None:
                raise GenbaError("zscl needs reference images and a reference vocabulary on the learner")
            with torch.no_grad():  # the initial model is frozen: its logits are computed once
                self.initial_logits = objective.scale * objective.embed(objective.reference_batch()) @ vocab.T

    def callbacks(self, objective):
        cfg = self.config
        out: list[Callback] = [ReferenceDistillation(objective, self.initial_logits, objective.reference_vocab,
                                                     cfg.weight, cfg.temperature, int(cfg.ref_batch))]
        if cfg.average_every:
            out.append(WeightEnsemble(objective, int(cfg.average_every)))
        return out

    def extra_bytes(self) -> int:
        return tensor_bytes(self.initial_logits)
