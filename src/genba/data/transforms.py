"""A named PIL -> PIL image transform (corruptions, test-time views), applied before an
encoder's own preprocessing; its name enters feature cache keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PIL import Image


@dataclass(frozen=True)
class ImageTransform:
    """A named PIL -> PIL transform applied before the encoder's preprocessing."""

    name: str
    apply: Callable[[Image.Image], Image.Image]
