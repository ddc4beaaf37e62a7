"""What a trained thing supplies to the engine: an Objective (a module whose forward is the loss)
and Callbacks at fixed hook points. Nothing outside genba.train writes a training loop.

    class MyObjective(Objective):
        def __init__(self, ...):  # trainable parameters are the module's requires_grad parameters
        def forward(self, batch) -> Tensor | (Tensor, dict)   # mean loss over the batch's rows
        def validate(self) -> float | None                     # higher is better (optional)
        def param_groups(self) -> list[dict]                   # optional per-group lr / decay

The objective is an nn.Module so that torch's DistributedDataParallel can wrap it as is; its
forward must average over the rows of the batch (the engine reweights shards under torchrun so
that gradients equal the single-process gradient of the global batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from genba.train.engine import Engine


class Objective(nn.Module):
    """Base class of every training objective."""

    def forward(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """AdamW parameter groups; default: one group of every parameter that requires grad."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def validate(self) -> float | None:
        """A validation score (higher is better) for early stopping and best-state selection, or None."""
        return None

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps: the full state dict (parameters and buffers)."""
        return self.state_dict()


class Callback:
    """Hook points of the engine's loop. Override what you need; every hook may be left as is.

    before_backward returns the loss to back-propagate: a penalty (L2, EWC) is added there.
    The hooks run on every process under torchrun, with identical parameters on each.
    """

    def on_fit_start(self, engine: "Engine") -> None:
        """Before the first step (also on resume)."""

    def before_backward(self, engine: "Engine", batch, loss: torch.Tensor) -> torch.Tensor:
        """Return the loss to differentiate (default: unchanged)."""
        return loss

    def after_step(self, engine: "Engine") -> None:
        """After each optimiser step (engine.step is the number of steps done)."""

    def on_epoch_end(self, engine: "Engine", epoch: int) -> None:
        """After each epoch (0-based index of the epoch just finished)."""

    def on_fit_end(self, engine: "Engine") -> None:
        """After the last step and the best-state restore: the end of a task for continual strategies."""
