"""Small checks shared by the method configs (their defaults are the papers' values)."""

from __future__ import annotations

from genba.errors import GenbaError


def positive(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is > 0."""
    for n in names:
        if not getattr(cfg, n) > 0:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be > 0, got {getattr(cfg, n)}")


def non_negative(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is >= 0."""
    for n in names:
        if not getattr(cfg, n) >= 0:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be >= 0, got {getattr(cfg, n)}")


def fraction(cfg, *names: str) -> None:
    """Raise GenbaError unless every named field of `cfg` is in (0, 1]."""
    for n in names:
        if not 0 < getattr(cfg, n) <= 1:
            raise GenbaError(f"{type(cfg).__name__}.{n} must be in (0, 1], got {getattr(cfg, n)}")
