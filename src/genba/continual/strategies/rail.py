"""RAIL: gradient-free continual learning by recursive ridge regression (Xu et al., NeurIPS 2024,
"Advancing Cross-domain Discriminability in Continual Learning of Vision-Language Models"; the
primal form of github.com/linghan1997/Regression-based-Analytic-Incremental-Learning,
primal_RAIL.py), on cached features. Nothing is trained by gradient and no row is kept.

    phi(v) = ReLU(v P)                        P (Dv, H): a fixed random projection (the reference's
                                              nn.Linear(512, 15000, bias=False) at its default
                                              init U(-1/sqrt(Dv), 1/sqrt(Dv)), then ReLU)
    W = argmin ||Phi W - Y||^2 + gamma ||W||^2 over every row seen so far, Y one-hot global labels

solved task by task without the old rows (analytic learning / recursive least squares):
    first task:   R = (Phi^T Phi + gamma I)^-1,  W = R Phi^T Y
    later tasks, per batch Phi_b (B, H), W padded with zero columns for the new classes:
                  R <- R - R Phi_b^T (I + Phi_b R Phi_b^T)^-1 Phi_b R
                  W <- W + R Phi_b^T (Y_b - Phi_b W)
which is the joint ridge solution on all rows (Woodbury), whatever the task order.

Domain-wise fusion (the reference's test loop): p0 = softmax(zero-shot logits over the candidate
classes); an image whose zero-shot argmax is a learned class gets p = (1 - w) p0 + w [Phi W | 0
for classes not learned yet], the others keep p0 (images of domains never learned stay
zero-shot). Scores are log(max(p, 1e-8)) (the same argmax; softmax gives p renormalised, which
the calibration metrics read).

Defaults: gamma 0.1, w 0.8, batch 128 (configs/analytic_clip.yaml). Differences, fixed in
advance: H = 2048 instead of 15000 (R is H x H: 1.8 GB in float64 at 15000, 34 MB at 2048, on a
2-core CPU), and phi reads genba's centred unit visual features (conse: 1280-d EfficientNet
features; the reference's CLIP image feature is its visual feature too), `features="joint"`
reads the joint embedding instead. R and W are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genba.continual.strategies.base import Strategy, all_rows, positive, register_strategy
from genba.errors import GenbaError
from genba.train import TrainData


@dataclass
class RailConfig:
    hidden: int = 2048
    """H, width of the random ReLU projection (reference: 15000)."""
    gamma: float = 0.1
    """Ridge regularisation (reference: 0.1)."""
    fusion_weight: float = 0.8
    """w, weight of the ridge head on images the zero-shot model puts in a learned domain (reference: 0.8)."""
    batch: int = 128
    """Rows per recursive update (reference: batch_size 128)."""
    features: str = "visual"
    """"visual" (centred unit visual features) or "joint" (the joint image embedding) feed phi."""

    def __post_init__(self) -> None:
        positive(self, "hidden", "gamma", "batch")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {self.fusion_weight!r}")
        if self.features not in ("visual", "joint"):
            raise ValueError(f"features must be 'visual' or 'joint', got {self.features!r}")


class RailHead(nn.Module):
    """The random projection, the ridge solution (R, W) and the fusion with zero-shot scores."""

    def __init__(self, dim_in: int, config: RailConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        g = torch.Generator().manual_seed(int(seed))  # the run's seed (Strategy.seed)
        bound = 1.0 / dim_in ** 0.5
        self.register_buffer("projection", (torch.rand(dim_in, int(config.hidden), generator=g) * 2 - 1) * bound)
        self.register_buffer("R", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("W", torch.zeros(int(config.hidden), 0, dtype=torch.float64))

    @property
    def learned(self) -> int:
        """Global classes [0, learned) the head has rows for."""
        return int(self.W.shape[1])

    def expand(self, f: torch.Tensor) -> torch.Tensor:
        """(B, Din) features -> (B, H) float64 phi = ReLU(f P)."""
        return torch.relu(f.float() @ self.projection).double()

    def add_rows(self, f: torch.Tensor, y: torch.Tensor, classes: int) -> None:
        """Absorb rows (features f (N, Din), global labels y < classes) into R and W."""
        if classes < self.learned:
            raise GenbaError("RAIL learns classes in stream order: a task cannot shrink the label space")
        phi = self.expand(f)  # (N, H)
        Y = torch.nn.functional.one_hot(y.long(), classes).double()  # (N, classes)
        W = torch.cat([self.W, self.W.new_zeros(self.W.shape[0], classes - self.learned)], dim=1)
        if self.R.numel() == 0:  # first task: the closed form
            eye = torch.eye(phi.shape[1], dtype=torch.float64)
            self.R = torch.linalg.inv(phi.T @ phi + self.config.gamma * eye)
            self.W = self.R @ phi.T @ Y
            return
        R = self.R
        for i in range(0, len(phi), int(self.config.batch)):
            p, t = phi[i : i + int(self.config.batch)], Y[i : i + int(self.config.batch)]
            inner = torch.eye(len(p), dtype=torch.float64) + p @ R @ p.T  # (B, B)
            R = R - R @ p.T @ torch.linalg.solve(inner, p @ R)
            W = W + R @ p.T @ (t - p @ W)
        self.R, self.W = R, W

    def pick(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The features phi reads: unit visual v (B, Dv) or joint z (B, D)."""
        return v if self.config.features == "visual" else z

    def forward(self, v: torch.Tensor, z: torch.Tensor, zeroshot: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Visual (B, Dv) and joint (B, D) features, (B, K) zero-shot logits over global `classes` (K,)
        -> (B, K) fused log-scores."""
        if self.learned == 0:
            return zeroshot
        f = self.pick(v, z)
        p0 = zeroshot.float().softmax(-1)
        fused_rows = classes[zeroshot.argmax(1)] < self.learned  # zero-shot puts the image in a learned domain
        head = zeroshot.new_zeros(zeroshot.shape)
        known = classes < self.learned
        head[:, known] = (self.expand(f) @ self.W[:, classes[known]]).float()
        w = float(self.config.fusion_weight)
        p = torch.where(fused_rows[:, None], (1 - w) * p0 + w * head, p0)
        return torch.where(fused_rows[:, None], p.clamp_min(1e-8).log(), zeroshot)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.projection, self.R, self.W))


@register_strategy("rail")
class Rail(Strategy):
    """RAIL's primal form: a random ReLU projection and a recursively solved ridge head, fused with zero-shot."""

    config_cls = RailConfig
    trains = False

    requires = frozenset({"logits", "visual", "fusion"})

    def begin_task(self, objective, task_index: int) -> dict | None:
        if objective.fusion is not None:  # later tasks: the head installed on the first task keeps learning
            return None
        dim = objective.dim_visual if self.config.features == "visual" else objective.dim
        self.head = RailHead(dim, self.config, seed=self.seed)
        return {"fusion": self.head}

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        rows = all_rows(data)
        with torch.no_grad():
            objective.fusion.add_rows(objective.fusion.pick(objective.visual(rows), rows["z"].float()), rows["y"],
                                      objective.known)

    def extra_bytes(self) -> int:
        head = getattr(self, "head", None)
        return 0 if head is None else head.nbytes
