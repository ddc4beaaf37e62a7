"""The dataset record every part of genba consumes, and the entry type of the built-in table.

A `Dataset` is data, not code: class names, prompt templates, integer labels, named index
splits into those labels, a fingerprint for cache keys, and one function that decodes image i.
Images are decoded lazily, one at a time, and always come back as RGB PIL images.
"""

from __future__ import annotations

import dataclasses

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from genba.errors import GenbaError


@dataclass
class Dataset:
    """A labelled image collection with fixed train/test splits.

    Attributes:
        name: "textile", "folder:<abs path>", "csv:<abs path>", ...
        classnames: natural-language class names, index = label; used in prompts.
        templates: prompt templates, each with one "{}" for the class name.
        labels: (N,) int64 in [0, C).
        splits: "train" and "test" (and possibly more): disjoint index arrays into labels.
        fingerprint: short hex digest; changes whenever images, labels or splits change.
        source: one line saying where the data came from and how it was split.
        _load: i -> PIL image of item i (any mode; `image` converts to RGB).
        class_ids: short stable ids (folder names, raw labels); default = classnames.
    """

    name: str
    classnames: list[str]
    templates: list[str]
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    fingerprint: str
    source: str
    _load: Callable[[int], Image.Image] = field(repr=False)
    class_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in self.splits.items()}
        if not self.class_ids:
            self.class_ids = list(self.classnames)
        n, c = len(self.labels), len(self.classnames)
        problems = [
            (self.labels.ndim != 1, "labels must be 1-D"),
            (n > 0 and (self.labels.min() < 0 or self.labels.max() >= c), "labels outside [0, C)"),
            (len(self.class_ids) != c, "class_ids and classnames differ in length"),
            (any(t.count("{}") != 1 for t in self.templates), 'each template needs one "{}"'),
            (not {"train", "test"} <= self.splits.keys(), "splits need 'train' and 'test'"),
            (any(((idx < 0) | (idx >= n)).any() for idx in self.splits.values()), "split index out of range"),
        ]
        for bad, what in problems:
            if bad:
                raise ValueError(f"invalid Dataset {self.name!r}: {what}")
        if np.intersect1d(self.splits["train"], self.splits["test"]).size:
            raise ValueError(f"invalid Dataset {self.name!r}: train and test overlap")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Decode item i as an RGB PIL image."""
        img = self._load(int(i))
        return img if img.mode == "RGB" else img.convert("RGB")

    def with_subset_split(self, parent: str, indices: np.ndarray, label: str | None = None) -> tuple["Dataset", str]:
        """A copy with one more split holding `indices` (a subset of split `parent`).

        The new split's name carries a digest of the indices, so feature-cache keys stay exact and
        only those images are encoded. Returns (dataset copy, split name).
        """
        idx = np.sort(np.asarray(indices, dtype=np.int64))
        if not np.isin(idx, self.splits[parent]).all():
            raise ValueError(f"subset indices are not all in split {parent!r} of {self.name!r}")
        name = f"{label or parent + '-subset'}-{len(idx)}-{hashlib.sha256(idx.tobytes()).hexdigest()[:12]}"
        return dataclasses.replace(self, splits={**self.splits, name: idx}), name

    def prompts(self, class_index: int) -> list[str]:
        """All templates filled with the name of one class."""
        return [t.format(self.classnames[class_index]) for t in self.templates]


@dataclass(frozen=True)
class DatasetEntry:
    """One row of the built-in table.

    Attributes:
        name: the name users type ("textile").
        summary: one line for `genba datasets`.
        load: builds the Dataset (offline).
        check: () -> (ok, reason); reason names the install command when not ok.
    """

    name: str
    summary: str
    load: Callable[[], Dataset] = field(repr=False)
    check: Callable[[], tuple[bool, str]] = field(repr=False)


def fingerprint(*parts: object) -> str:
    """16-hex-digit sha256 over arrays (dtype, shape, bytes), containers (recursively) and the
    repr of anything else."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()[:16]


def _feed(h: "hashlib._Hash", part: object) -> None:
    if isinstance(part, np.ndarray):
        h.update(f"array{part.dtype}{part.shape}".encode())
        h.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, dict):
        h.update(b"{")
        for key in sorted(part):
            _feed(h, key)
            _feed(h, part[key])
        h.update(b"}")
    elif isinstance(part, (list, tuple)):
        h.update(b"[")
        for item in part:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(part).encode())
    h.update(b"\x00")


@dataclass(frozen=True)
class ArrayLoader:
    """`_load` over an (N, H, W) uint8 array: item i as a grayscale PIL image. Picklable."""

    images: np.ndarray = field(repr=False)

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])  # 2-D uint8 -> mode "L"


@dataclass(frozen=True)
class FileLoader:
    """`_load` over image files: item i decoded from paths[i], EXIF-rotated, RGB. Picklable."""

    paths: list[Path] = field(repr=False)

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return ImageOps.exif_transpose(im).convert("RGB")
        except (OSError, ValueError) as e:  # PIL decode errors, permissions, a vanished file
            raise GenbaError(f"cannot decode image '{path}' ({e}): replace or remove the file") from None
