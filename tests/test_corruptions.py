"""ImageNet-C-style corruptions: determinism, severity monotonicity, names and errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genba.data.corruptions import SEVERITIES, corrupt, corruption_names, corruption_transform
from genba.errors import GenbaError


def _scene(seed: int = 0, size: int = 48) -> Image.Image:
    """A small RGB image with smooth gradients, edges and texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    x = np.stack([xx, yy, 0.5 + 0.3 * np.sin(6 * xx + 4 * yy)], axis=-1)
    x[size // 4 : size // 2, size // 4 : 3 * size // 4] = [0.9, 0.2, 0.1]  # a block with sharp edges
    x += rng.normal(0, 0.03, x.shape)
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), "RGB")


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.mark.parametrize("name", corruption_names())
def test_deterministic_rgb_at_224(name):
    image = _scene()
    a, b = corrupt(image, name, 3), corrupt(image.copy(), name, 3)
    assert a.mode == "RGB" and a.size == (224, 224)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    t = corruption_transform(name, 3)
    assert np.array_equal(np.asarray(t.apply(image)), np.asarray(a))


def test_noise_is_seeded_by_the_image():
    a, b = _scene(0), _scene(1)
    na, nb = corrupt(a, "gaussian_noise", 2), corrupt(b, "gaussian_noise", 2)
    residual_a = np.asarray(na, np.int16) - np.asarray(corrupt(a, "gaussian_noise", 2), np.int16)
    assert not residual_a.any()  # same image -> same noise
    ra = np.asarray(na, np.int16) - np.asarray(a.resize((224, 224), Image.BICUBIC), np.int16)
    rb = np.asarray(nb, np.int16) - np.asarray(b.resize((224, 224), Image.BICUBIC), np.int16)
    assert abs(np.corrcoef(ra.ravel(), rb.ravel())[0, 1]) < 0.2  # different images -> different noise


@pytest.mark.parametrize("name", corruption_names())
def test_psnr_decreases_with_severity(name):
    image = _scene()
    clean = image.resize((224, 224), Image.BICUBIC)
    psnr = [_psnr(clean, corrupt(image, name, s)) for s in SEVERITIES]
    assert all(p1 > p2 for p1, p2 in zip(psnr, psnr[1:])), psnr
    assert psnr[0] < 50  # severity 1 changes the image (blur on an upsampled image least)


def test_native_size_and_grayscale_input():
    gray = Image.fromarray((np.arange(64, dtype=np.uint8) * 4).reshape(8, 8), "L")
    out = corrupt(gray, "contrast", 5, size=None)
    assert out.mode == "RGB" and out.size == (8, 8)
    x = np.asarray(out, np.float32)
    assert x.std() < np.asarray(gray.convert("RGB"), np.float32).std() * 0.1


def test_transform_names_are_distinct_and_versioned():
    names = {corruption_transform(n, s).name for n in corruption_names() for s in SEVERITIES}
    assert len(names) == len(corruption_names()) * len(SEVERITIES)
    name = corruption_transform("gaussian_blur", 4).name
    assert "gaussian_blur" in name and "s4" in name and "/v" in name
    assert corruption_transform("gaussian_blur", 4, size=None).name != name


@pytest.mark.parametrize("name,severity,match", [
    ("snow", 1, "gaussian_noise, gaussian_blur, contrast, jpeg_compression"),
    ("contrast", 0, "1, 2, 3, 4, 5"),
    ("contrast", 6, "1, 2, 3, 4, 5"),
    ("contrast", 2.0, "1, 2, 3, 4, 5"),
    ("contrast", True, "1, 2, 3, 4, 5"),
])
def test_bad_name_or_severity(name, severity, match):
    with pytest.raises(GenbaError, match=match):
        corruption_transform(name, severity)
    with pytest.raises(GenbaError, match=match):
        corrupt(_scene(), name, severity)


def test_bad_size():
    with pytest.raises(GenbaError, match="size"):
        corruption_transform("contrast", 1, size=0)
