"""Test-time augmented views: seeded random resized crops and horizontal flips.

View 0 is always the original image; view v >= 1 is a crop covering a fraction s ~ U(0.5, 1)
of the area, aspect ratio r ~ U(3/4, 4/3), resized back to the original size, flipped with
probability 1/2 (the augmentation of the DMN/TPT reference code, minus AugMix). The generator
is seeded by (view, crc32 of the image's pixels), so the same image always gets the same view
and the extracted features are cacheable under the transform's name.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image, ImageOps

from genba.errors import GenbaError
from genba.data.transforms import ImageTransform

VIEWS_VERSION = "1"


def augmented_view(image: Image.Image, view: int) -> Image.Image:
    """The `view`-th augmented copy of `image` (view 0: the image itself)."""
    if view == 0:
        return image
    rng = np.random.default_rng([view, zlib.crc32(image.tobytes())])
    width, height = image.size
    area = width * height * rng.uniform(0.5, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    crop = image.crop((left, top, left + w, top + h)).resize((width, height), Image.BICUBIC)
    return ImageOps.mirror(crop) if rng.random() < 0.5 else crop


def view_transform(view: int) -> ImageTransform | None:
    """The named transform of view `view` (None for view 0, the plain image)."""
    if view < 0:
        raise GenbaError(f"view index must be 0 or more, got {view}")
    return None if view == 0 else ImageTransform(f"view-v{VIEWS_VERSION}:{view}", lambda image: augmented_view(image, view))
