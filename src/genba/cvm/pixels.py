"""Image decoding and resizing without torch: the one preprocessing of training and `genba predict`.

    pixels = resize_rgb(image, S)            # (S, S, 3) uint8: RGB, centre square crop, bilinear
    x = normalize(pixels)                    # (3, S, S) float32 = pixels / 127.5 - 1, in [-1, 1]

Training stores the uint8 arrays (compact) and applies the same normalisation in torch
(x.float() / 127.5 - 1: identical float32 operations), so the exported model sees bit-identical
inputs in `genba predict`. Only numpy and PIL are imported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genba.errors import GenbaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_PIXELS = 40_000_000
"""width * height of one image: the server's budget (genba.serve.uploads.Limits.max_pixels)."""
MAX_SIDE = 12_000
"""Longest side of one image (the server's max_side)."""


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """RGB, centre-cropped to a square, resized to (size, size) bilinear -> (S, S, 3) uint8."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float32 in [-1, 1]."""
    x = np.moveaxis(pixels, -1, -3).astype(np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def load_image(path: str | Path) -> Image.Image:
    """Decode one image file (EXIF-rotated, RGB); an undecodable file, or one over MAX_PIXELS or
    MAX_SIDE (read from its header, before a pixel is decoded) -> GenbaError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                raise GenbaError(f"image '{path}' is {width}x{height} pixels, over the budget of {MAX_PIXELS} pixels "
                                 f"and {MAX_SIDE} per side: resize it")
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise GenbaError(f"cannot decode image '{path}' ({error}): replace or remove the file") from None


def image_files(directory: str | Path) -> list[Path]:
    """Image files under `directory` (recursively, sorted), or the one file if it is a file."""
    directory = Path(directory)
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise GenbaError(f"no image folder or file at {directory}: pass --images DIR with image files in it")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GenbaError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return files
