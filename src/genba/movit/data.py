"""MoViT's data: nested class-stratified training fractions and small cached pixel tensors.

Fraction F of the train split (seeded, class-stratified, nested): every class c with n_c training
images keeps the first round(F * n_c) items of one fixed seeded permutation of its images
(`genba.data.splits` permutation, stream 3), so for one seed the F = 1% set is inside the 3% set,
which is inside the 10% set, and so on. A fraction outside (0, 1], or one that keeps no image of
some class, is refused before anything is trained or written.

Pixels: every image is converted to gray (when the whole split is gray) or RGB, resized to a
square `size` with PIL's bilinear filter (digits' 8x8 are upscaled, textile's 250x250 reduced),
and stored as uint8 (N, C, size, size) in the feature cache (TensorCache kind 'movit-pixels').
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genba.cache import TensorCache
from genba.data.splits import _class_members, _class_permutation
from genba.errors import GenbaError

_FRACTION_STREAM = 3
PIXELS_VERSION = "1"


def check_fraction(fraction: float) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise GenbaError(f"--fraction must be a number in (0, 1], got {fraction!r}") from None
    if not 0.0 < f <= 1.0:
        raise GenbaError(f"--fraction must be in (0, 1] (share of the train split, e.g. 0.03 for 3%), got {fraction}")
    return f


def fraction_indices(labels: np.ndarray, train: np.ndarray, fraction: float, seed: int,
                     classnames: list[str] | None = None) -> np.ndarray:
    """Sorted dataset indices of the nested class-stratified `fraction` of `train` (module doc)."""
    f = check_fraction(fraction)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classnames) if classnames is not None else int(labels.max()) + 1
    picked = []
    for c, members in enumerate(_class_members(labels, np.asarray(train, dtype=np.int64), num_classes)):
        keep = len(members) if f == 1.0 else int(round(f * len(members)))
        if keep == 0:
            name = classnames[c] if classnames is not None else str(c)
            need = "it has no training images" if len(members) == 0 else \
                f"{f:g} of its {len(members)} training images rounds to 0; use --fraction {0.5 / len(members) + 1e-9:.4g} or more"
            raise GenbaError(f"--fraction {f:g} leaves class '{name}' without images: {need}")
        picked.append(_class_permutation(members, seed, c, _FRACTION_STREAM)[:keep])
    return np.sort(np.concatenate(picked))


def is_gray(dataset, indices: np.ndarray, probe: int = 16) -> bool:
    """True when the first `probe` images of `indices` have equal R, G and B."""
    for i in indices[:probe]:
        a = np.asarray(dataset.image(int(i)))
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
            return False
    return True


def load_pixels(dataset, indices: np.ndarray, size: int, channels: int, cache: TensorCache | None,
                split: str = "custom") -> torch.Tensor:
    """uint8 (N, channels, size, size) pixels of dataset items `indices`, cached by content."""
    if channels not in (1, 3):
        raise GenbaError(f"channels must be 1 or 3, got {channels}")
    indices = np.asarray(indices, dtype=np.int64)

    def compute() -> dict[str, torch.Tensor]:
        out = np.empty((len(indices), channels, size, size), dtype=np.uint8)
        for row, i in enumerate(indices):
            img = dataset.image(int(i)).convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            a = np.asarray(img)
            out[row] = a[None] if channels == 1 else a.transpose(2, 0, 1)
        return {"pixels": torch.from_numpy(out)}

    import hashlib
    key = {"version": PIXELS_VERSION, "dataset": dataset.name, "fingerprint": dataset.fingerprint,
           "indices": hashlib.sha256(indices.tobytes()).hexdigest()[:16], "split": split,
           "size": str(size), "channels": str(channels)}
    tensors = cache.get_or_compute("movit-pixels", key, compute) if cache is not None else compute()
    return tensors["pixels"]


def default_image_size(dataset) -> tuple[int, int]:
    """(image size, patch) of the scratch ViT: 16x16 patches of 4 for 8x8 digits (upscaled 2x),
    28 / 7 for 28x28 sets, 32 / 8 for anything larger (textile 250x250 reduced to 32x32)."""
    w, h = dataset.image(int(dataset.splits["train"][0])).size
    side = max(w, h)
    if side <= 16:
        return 16, 4
    if side <= 28:
        return 28, 7
    return 32, 8
