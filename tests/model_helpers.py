"""Small generated site folders for the tests of genba.model: classes differ in pattern and colour,
so both the tiny encoder's joint features (colour pixels) and its visual ones (grey pixels) see them."""

from __future__ import annotations

import numpy as np
from PIL import Image

SITE = ("stripes", "bars", "checks")
NEW = ("dots", "diagonal")


def _pattern(name: str, size: int, rng) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.integers(0, 4)
    base = {"stripes": (y + phase) // 2 % 2, "bars": (x + phase) // 2 % 2, "checks": ((x + phase) // 3 + y // 3) % 2,
            "dots": ((x + phase) % 5 < 2) & (y % 5 < 2), "diagonal": (x + y + phase) // 2 % 2}[name].astype(float)
    tint = {"stripes": (1.0, 0.3, 0.3), "bars": (0.3, 1.0, 0.3), "checks": (0.3, 0.3, 1.0),
            "dots": (1.0, 1.0, 0.2), "diagonal": (0.2, 1.0, 1.0)}[name]
    img = base[..., None] * np.array(tint) * 200 + 30 + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def pattern_folder(root, classes=SITE, per_class: int = 40, size: int = 16, seed: int = 0):
    """root/<class>/<i>.png for each class name (SITE, NEW)."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_pattern(name, size, rng)).save(root / name / f"{i:03d}.png")
    return root


def split_files(spec: str):
    """(paths, labels) of the test split of a folder dataset, in dataset order."""
    from genba.data import load_dataset

    ds = load_dataset(spec)
    idx = ds.splits["test"]
    return [ds._load.paths[i] for i in idx], [ds.classnames[ds.labels[i]] for i in idx]
