"""Prediction heads on a student's pooled feature h (B, F).

ConceptHead (CVM): a linear projection into the frozen language model's concept space and a
cosine against the concept bank T (C, D) (genba.cvm.concepts):
    z = normalize(P h + b),   logits_c = s * cos(z, t_c) = s * z . t_c
with a fixed scale s (CLIP-style temperature 1/s; chosen on the first task's validation split,
genba.cvm.stream.select_loss). T is the bank's rows, or its centred rows (ConceptBank.targets). A class is
one row of T, so classes known only by name get logits too (zero-shot), and the head never grows.

LinearHead (the cross-entropy baseline): logits = W h + b with one row per class of the label
space, a classifier head that grows with the classes (rows of classes without images stay at
their seeded initialisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_SCALE = 20.0


class ConceptHead(nn.Module):
    kind = "concept"

    def __init__(self, feature_dim: int, bank: torch.Tensor, scale: float = DEFAULT_SCALE, centered: bool = False):
        super().__init__()
        self.centered = bool(centered)  # whether `bank` holds centred targets (genba.cvm.concepts); recorded only
        self.proj = nn.Linear(feature_dim, bank.shape[1])
        self.register_buffer("bank", F.normalize(bank.float(), dim=-1).clone(), persistent=False)
        self.scale = float(scale)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, D) unit rows in the concept space."""
        return F.normalize(self.proj(h), dim=-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, C) logits over every class of the bank."""
        return self.scale * self.embed(h) @ self.bank.T

    def set_bank(self, bank: torch.Tensor) -> None:
        """Replace the concept rows (e.g. after classes were added by name)."""
        self.bank = F.normalize(bank.float(), dim=-1).clone()

    @property
    def num_classes(self) -> int:
        return int(self.bank.shape[0])

    def spec(self) -> dict:
        return {"kind": self.kind, "scale": self.scale, "centered": self.centered}


class LinearHead(nn.Module):
    kind = "linear"

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h)

    @property
    def num_classes(self) -> int:
        return int(self.fc.out_features)

    def spec(self) -> dict:
        return {"kind": self.kind}
