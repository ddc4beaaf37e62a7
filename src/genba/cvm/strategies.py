"""Continual strategies for CVM and its CE baseline: none, replay, LwF, EWC.

The thinnest adapter with the contract genba.continual.strategies promised
(make_strategy(name, **hp) -> Strategy with task_data(data, task_index) -> TrainData,
callbacks(objective) -> list[Callback], end_task(objective, data, task_index)); genba.cvm uses
genba.continual's strategies instead when that package provides them (see stream.py).
Hyperparameters are fixed in advance (defaults below), never chosen on test labels or later tasks.

  replay  class-balanced buffer of `buffer` rows (prepared inputs + labels; iCaRL-style equal
          share per class, a seeded random choice within a class); the buffer rows are mixed
          into every later task's training data.
  lwf     Learning without Forgetting (Li & Hoiem, 2016): before each step, on the current batch,
          L += lam * T^2 * KL( softmax(z_old / T) || softmax(z_new / T) ) over the classes the
          previous model knew (lam = 1, T = 2).
  ewc     Elastic Weight Consolidation (Kirkpatrick et al., 2017), online form:
          L += lam / 2 * sum_k F_k (theta_k - theta*_k)^2, F = sum over past tasks of the diagonal
          empirical Fisher (squared gradients of the task loss on mini-batches of 16 of the task's
          data), each task's F scaled to mean 1 so that lam (= 1) is comparable across models.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from genba.errors import GenbaError
from genba.train import Callback, TensorData

STRATEGIES = ("none", "replay", "lwf", "ewc")
DEFAULTS = {"none": {}, "replay": {"buffer": 500, "seed": 0}, "lwf": {"lam": 1.0, "temperature": 2.0},
            "ewc": {"lam": 1.0, "fisher_batches": 32, "fisher_batch_size": 16}}


class Strategy:
    name = "none"

    def __init__(self, **hp):
        self.hp = hp

    def task_data(self, data, task_index: int):
        return data

    def callbacks(self, objective) -> list[Callback]:
        return []

    def end_task(self, objective, data, task_index: int) -> None:
        pass

    def memory_bytes(self) -> int:
        return 0


class Replay(Strategy):
    name = "replay"

    def __init__(self, buffer: int = 500, seed: int = 0):
        super().__init__(buffer=buffer, seed=seed)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def task_data(self, data, task_index: int):
        if self.x is None:
            return data
        return TensorData(x=torch.cat([data.tensors["x"], self.x]), y=torch.cat([data.tensors["y"], self.y]))

    def end_task(self, objective, data, task_index: int) -> None:
        x = data.tensors["x"] if self.x is None else torch.cat([self.x, data.tensors["x"]])
        y = data.tensors["y"] if self.y is None else torch.cat([self.y, data.tensors["y"]])
        classes = torch.unique(y)
        share = max(1, self.hp["buffer"] // len(classes))
        keep = []
        for c in classes.tolist():
            rows = torch.nonzero(y == c).flatten()
            g = torch.Generator().manual_seed(self.hp["seed"] * 100_003 + c)
            keep.append(rows[torch.randperm(len(rows), generator=g)[:share]])
        keep = torch.sort(torch.cat(keep)).values
        self.x, self.y = x[keep].clone(), y[keep].clone()

    def memory_bytes(self) -> int:
        return 0 if self.x is None else self.x.numel() * self.x.element_size() + self.y.numel() * 8


class _LwFPenalty(Callback):
    def __init__(self, strategy: "LwF"):
        self.s = strategy

    def before_backward(self, engine, batch, loss):
        old, k = self.s.old, self.s.old_known
        t, lam = self.s.hp["temperature"], self.s.hp["lam"]
        with torch.no_grad():
            target = F.softmax(old.logits(batch)[:, :k] / t, dim=-1)
        new = F.log_softmax(engine.objective.logits(batch)[:, :k] / t, dim=-1)
        return loss + lam * t * t * F.kl_div(new, target, reduction="batchmean")


class LwF(Strategy):
    name = "lwf"

    def __init__(self, lam: float = 1.0, temperature: float = 2.0):
        super().__init__(lam=lam, temperature=temperature)
        self.old = None
        self.old_known = 0

    def callbacks(self, objective):
        return [] if self.old is None else [_LwFPenalty(self)]

    def end_task(self, objective, data, task_index: int) -> None:
        self.old = copy.deepcopy(objective).eval()
        for p in self.old.parameters():
            p.requires_grad_(False)
        self.old_known = objective.known

    def memory_bytes(self) -> int:
        return 0 if self.old is None else sum(p.numel() * p.element_size() for p in self.old.parameters())


class _EWCPenalty(Callback):
    def __init__(self, strategy: "EWC"):
        self.s = strategy

    def before_backward(self, engine, batch, loss):
        params = dict(engine.objective.named_parameters())
        penalty = sum((self.s.fisher[n] * (params[n] - self.s.anchor[n]) ** 2).sum() for n in self.s.fisher)
        return loss + 0.5 * self.s.hp["lam"] * penalty


class EWC(Strategy):
    name = "ewc"

    def __init__(self, lam: float = 1.0, fisher_batches: int = 32, fisher_batch_size: int = 16):
        super().__init__(lam=lam, fisher_batches=fisher_batches, fisher_batch_size=fisher_batch_size)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def callbacks(self, objective):
        return [] if not self.fisher else [_EWCPenalty(self)]

    def end_task(self, objective, data, task_index: int) -> None:
        params = {n: p for n, p in objective.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        g = torch.Generator().manual_seed(task_index)
        order = torch.randperm(len(data), generator=g)
        size = self.hp["fisher_batch_size"]
        batches = [order[i:i + size] for i in range(0, len(order), size)][: self.hp["fisher_batches"]]
        objective.eval()  # BatchNorm statistics stay as trained
        for rows in batches:
            objective.zero_grad(set_to_none=True)
            objective(data.take(rows)).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 / len(batches)
        objective.zero_grad(set_to_none=True)
        scale = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-12)
        for n in fisher:
            self.fisher[n] = self.fisher.get(n, torch.zeros_like(fisher[n])) + fisher[n] / scale
            self.anchor[n] = params[n].detach().clone()

    def memory_bytes(self) -> int:
        return sum(2 * f.numel() * f.element_size() for f in self.fisher.values())


_CLASSES = {"none": Strategy, "replay": Replay, "lwf": LwF, "ewc": EWC}


def make_strategy(name: str, **hp) -> Strategy:
    if name not in _CLASSES:
        raise GenbaError(f"unknown continual strategy '{name}': choose one of {', '.join(STRATEGIES)}")
    unknown = sorted(set(hp) - set(DEFAULTS[name]))
    if unknown:
        raise GenbaError(f"unknown {name} setting(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS[name]) or 'none'}")
    return _CLASSES[name](**{**DEFAULTS[name], **hp})
