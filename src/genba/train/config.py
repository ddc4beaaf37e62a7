"""The one training configuration every trained thing in genba uses (`--set train.lr=...`).

Defaults are generic; each method or model sets its own paper defaults by constructing a
TrainConfig with them (e.g. Tip-Adapter-F: lr 1e-3, 20 epochs, batch 256, eps 1e-4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from genba.errors import GenbaError

# Documented ranges: anything outside is refused before a parameter is touched.
RANGES: dict[str, tuple[float, float]] = {
    "lr": (0.0, 10.0),
    "epochs": (1, 100_000),
    "batch_size": (1, 1 << 20),
    "weight_decay": (0.0, 10.0),
    "eps": (0.0, 1.0),
    "warmup": (0.0, 1.0),
    "min_lr": (0.0, 10.0),
    "clip_norm": (0.0, 1e6),
    "seed": (0, 2**63 - 1),
    "patience": (0, 100_000),
    "eval_every": (1, 100_000),
    "checkpoint_every": (0, 1 << 40),
}


@dataclass
class TrainConfig:
    """Optimiser, schedule and loop settings.

    Schedule: linear warmup over the first `warmup` fraction of the steps, then cosine from `lr`
    to `min_lr`: lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * t' / T')) / 2, with t', T' counted
    after warmup (the closed form of torch's CosineAnnealingLR when warmup is 0).
    """

    lr: float = 1e-3
    """AdamW learning rate (peak, after warmup)."""
    epochs: int = 10
    """Passes over the training data."""
    batch_size: int = 64
    """Global batch size (split across processes under torchrun)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup: float = 0.0
    """Fraction of all steps spent in linear warmup."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine."""
    clip_norm: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    seed: int = 0
    """Seed of the batch order and of every step's random draws."""
    patience: int = 0
    """Early stop after this many evaluations without a better validation score (0: never)."""
    eval_every: int = 1
    """Evaluate the validation score every this many epochs (when the objective has one)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps (0: at the end of every epoch)."""
    drop_last: bool = False
    """Drop the last incomplete batch of each epoch."""

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise GenbaError(f"train.{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
        for name in ("epochs", "batch_size", "seed", "patience", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) != getattr(self, name):
                raise GenbaError(f"train.{name} must be an integer, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if self.lr <= 0:
            raise GenbaError(f"train.lr must be > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise GenbaError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with `changes` applied (unknown keys -> GenbaError listing the valid ones)."""
        fields = self.to_dict()
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise GenbaError(f"unknown training setting(s) {', '.join('train.' + k for k in unknown)}; "
                             f"valid: {', '.join('train.' + k for k in fields)}")
        fields.update(changes)
        return TrainConfig(**fields)
