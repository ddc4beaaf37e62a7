"""ImageNet-C-style corruptions (Hendrycks & Dietterich, ICLR 2019) as pure PIL/numpy functions.

    img2 = corrupt(img, "gaussian_noise", severity=3)            # RGB PIL -> RGB PIL
    t = corruption_transform("contrast", 5)                       # for extract_features(transform=t)
    feats = extract_features(encoder, ds, "test", cache=cache, transform=t)

Every corruption is applied at the resolution ImageNet-C uses: the image is first resized so
its short side is `size` pixels (224, bicubic, as the encoders' own preprocessing does; the
tiny built-in images are upsampled), then corrupted on x in [0, 1] (RGB), then rounded back
to uint8. The severity parameters are ImageNet-C's, severities 1..5:

    gaussian_noise    x + N(0, s^2) per pixel and channel, clipped     s = .08 .12 .18 .26 .38
    gaussian_blur     PIL GaussianBlur, standard deviation sigma (px)  sigma = 1 2 3 4 6
    contrast          (x - m) * c + m, m = per-channel mean of image   c = .4 .3 .2 .1 .05
    jpeg_compression  PIL JPEG encode/decode at quality q              q = 25 18 15 10 7

Noise is deterministic: its generator is seeded from a sha256 of the corruption version, name,
severity and the (resized) image's bytes, so the same image always gets the same noise and
corrupted features are reproducible and cacheable. The transform name encodes corruption,
severity, resolution and `VERSION`; bump VERSION whenever any output pixel could change.
"""

from __future__ import annotations

import hashlib
import io
from functools import partial

import numpy as np
from PIL import Image, ImageFilter

from genba.errors import GenbaError
from genba.data.transforms import ImageTransform

VERSION = "1"
SEVERITIES = (1, 2, 3, 4, 5)


def _to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def _seed(image: Image.Image, name: str, severity: int) -> int:
    """64-bit seed from the corruption and the exact pixels: same image -> same noise."""
    h = hashlib.sha256(f"genba-corruption/v{VERSION}/{name}/{severity}/{image.size}".encode())
    h.update(image.tobytes())
    return int.from_bytes(h.digest()[:8], "little")


def _gaussian_noise(image: Image.Image, s: float, seed: int) -> Image.Image:
    x = _to_float(image)
    return _to_image(x + np.random.default_rng(seed).normal(0.0, s, size=x.shape).astype(np.float32))


def _gaussian_blur(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))  # PIL's radius is the std dev


def _contrast(image: Image.Image, c: float, seed: int) -> Image.Image:
    x = _to_float(image)
    m = x.mean(axis=(0, 1), keepdims=True)  # (1, 1, 3)
    return _to_image((x - m) * c + m)


def _jpeg(image: Image.Image, quality: int, seed: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


CORRUPTIONS: dict[str, tuple] = {  # name -> (function, parameter per severity 1..5)
    "gaussian_noise": (_gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38)),
    "gaussian_blur": (_gaussian_blur, (1.0, 2.0, 3.0, 4.0, 6.0)),
    "contrast": (_contrast, (0.4, 0.3, 0.2, 0.1, 0.05)),
    "jpeg_compression": (_jpeg, (25, 18, 15, 10, 7)),
}


def corruption_names() -> list[str]:
    """The corruption names, in table order."""
    return list(CORRUPTIONS)


def _check(name: str, severity, size) -> None:
    if name not in CORRUPTIONS:
        raise GenbaError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise GenbaError(f"corruption severity must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise GenbaError(f"corruption size must be a positive number of pixels or None, got {size!r}")


def _resize_short_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    target = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if target == image.size else image.resize(target, Image.BICUBIC)


def corrupt(image: Image.Image, name: str, severity: int, size: int | None = 224) -> Image.Image:
    """`image` resized (short side `size`; None keeps it) and corrupted; always an RGB image.

    Raises:
        GenbaError: unknown corruption name, severity outside 1..5, or a bad size.
    """
    _check(name, severity, size)
    image = image.convert("RGB")
    if size is not None:
        image = _resize_short_side(image, size)
    function, params = CORRUPTIONS[name]
    return function(image, params[int(severity) - 1], _seed(image, name, int(severity)))


def corruption_transform(name: str, severity: int, size: int | None = 224) -> ImageTransform:
    """A named transform for `extract_features`; the name is the cache key's transform part."""
    _check(name, severity, size)
    label = f"corrupt/{name}/s{int(severity)}/short{size if size is not None else 'native'}/v{VERSION}"
    return ImageTransform(label, partial(corrupt, name=name, severity=int(severity), size=size))
