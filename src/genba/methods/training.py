"""What the trained methods share on top of genba.train: the support set as engine data
(one random view per image per step) and the check of their nested training config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig


def check_train(cfg) -> None:
    """A method config's `train` must be a TrainConfig (dicts from JSON are converted)."""
    if isinstance(cfg.train, dict):
        cfg.train = TrainConfig(**cfg.train)
    if not isinstance(cfg.train, TrainConfig):
        raise GenbaError(f"{type(cfg).__name__}.train must be a TrainConfig, got {type(cfg.train).__name__}")


@dataclass
class SupportData:
    """Support features sj (N, V, Dt), sc (N, V, Dc) and labels y (N,)."""

    sj: torch.Tensor
    sc: torch.Tensor
    y: torch.Tensor

    def rows(self) -> TensorData:
        """Engine data whose batches are support row indices (the features stay here)."""
        return TensorData(i=torch.arange(len(self.y)))

    def one_view(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random view per row (the engine seeds every step, so this replays on resume)."""
        view = torch.randint(0, self.sj.shape[1], (len(rows),))
        return self.sj[rows, view], self.sc[rows, view], self.y[rows]
