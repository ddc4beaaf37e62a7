"""Small checks shared by the method configs (their defaults are the papers' values).

Every numeric hyperparameter has a documented range, `RANGES` (field name -> [low, high]); the
checks below apply it to each field they look at, so a value the memory cannot hold (e.g.
capacity=10**6, which would allocate terabytes) or a non-finite one is refused with a GenbaError
before anything is built. The ranges are wide: they bound what the code can hold, not what is
sensible; pick values inside them on validation.
"""

from __future__ import annotations

import math

from genba.errors import GenbaError

RANGES: dict[str, tuple[float, float]] = {
    # memories
    "capacity": (1, 1000),          # DMN dynamic queue length L (paper 50)
    "pos_capacity": (1, 100),       # TDA positive cache per class (paper 3)
    "neg_capacity": (1, 100),       # TDA negative cache per class (paper 2)
    "stream_batch": (1, 4096),
    # read and fusion weights
    "beta": (0.0, 1000.0),
    "pos_beta": (0.0, 1000.0),
    "neg_beta": (0.0, 1000.0),
    "scale": (0.0, 1000.0),
    "alpha": (0.0, 1e6),
    "pos_alpha": (0.0, 1e6),
    "neg_alpha": (0.0, 1e6),
    "init_alpha": (0.0, 1e6),       # Tip-Adapter-F's starting alpha, beta and its search grid after training
    "init_beta": (0.0, 1000.0),
    "search_alpha_max": (0.0, 1e6),
    "search_beta_max": (0.0, 1000.0),
    "search_alpha_steps": (1, 100_000),
    "search_beta_steps": (1, 100_000),
    "b_dyn": (0.0, 1e6),
    "b_static": (0.0, 1e6),
    "view_keep": (0.0, 1.0),
    "neg_entropy_lower": (0.0, 1.0),
    "neg_entropy_upper": (0.0, 1.0),
    "mask_lower": (0.0, 1.0),
    "mask_upper": (0.0, 1.0),
    # collapse guard of test-time memories (genba.memory.guard.GuardOptions; CollapseGuard checks the rest)
    "guard_max_entropy": (0.0, 1.0),
    "guard_balance": (0.0, 1e6),
    "guard_prior": (0.0, 1.0),
    # training (methods that keep their own settings; genba.train.TrainConfig has its own ranges)
    "lr": (0.0, 10.0),
    "epochs": (1, 1000),
    "batch_size": (1, 65_536),
    "weight_decay": (0.0, 10.0),
    "l2": (0.0, 1e6),
}


def in_range(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field is a finite number inside its RANGES entry."""
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise GenbaError(f"{type(cfg).__name__}.{n} must be a finite number, got {v!r}")
        lo, hi = RANGES.get(n, (-math.inf, math.inf))
        if not lo <= v <= hi:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be in [{lo:g}, {hi:g}], got {v!r}")


def positive(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is > 0 (and inside its range)."""
    in_range(cfg, *names)
    for n in names:
        if not getattr(cfg, n) > 0:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be > 0, got {getattr(cfg, n)}")


def non_negative(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is >= 0 (and inside its range)."""
    in_range(cfg, *names)
    for n in names:
        if not getattr(cfg, n) >= 0:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be >= 0, got {getattr(cfg, n)}")


def fraction(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is in (0, 1]."""
    in_range(cfg, *names)
    for n in names:
        if not 0 < getattr(cfg, n) <= 1:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be in (0, 1], got {getattr(cfg, n)}")
