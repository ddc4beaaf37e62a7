"""Seeded, stratified index splits: train/test, validation carved from train, few-shot pools.

Every function is pure over integer label arrays: same inputs and seed -> same indices.
Per-class draws use their own generator `default_rng([seed, class, stream])` (one stream per
purpose: split, validation, shots), so one class's draw does not depend on how many items
other classes have, and the K-shot sample is the first K items of a fixed per-class
permutation: sample(K) is a subset of sample(K + 1) for the same seed.
Returned index arrays are sorted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence
from dataclasses import dataclass

import numpy as np

from genba.errors import GenbaError

if TYPE_CHECKING:
    from genba.data.table import Dataset


_SPLIT, _VAL, _SHOTS = 0, 1, 2  # generator streams


def _class_permutation(indices: np.ndarray, seed: int, cls: int, stream: int) -> np.ndarray:
    """A seeded permutation of one class's (sorted) indices."""
    return np.random.default_rng([seed, cls, stream]).permutation(np.sort(indices))


def _class_members(labels: np.ndarray, indices: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """indices grouped by class: out[c] = the entries i of indices with labels[i] == c."""
    lab = labels[indices]
    return [indices[lab == c] for c in range(num_classes)]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split all items into (a, b) with about `fraction` of every class in a.

    Classes with at least 2 items get at least one item on each side.

    Args:
        labels: (N,) class ids.
        fraction: share of each class that goes to a, in (0, 1).
        seed: generator seed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    num_classes = int(labels.max()) + 1 if labels.size else 0
    for c, members in enumerate(_class_members(labels, np.arange(len(labels)), num_classes)):
        n = len(members)
        k = int(round(fraction * n))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        perm = _class_permutation(members, seed, c, _SPLIT)
        a.append(perm[:k])
        b.append(perm[k:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(a or [empty])), np.sort(np.concatenate(b or [empty]))


def _labels_and_names(data: "Dataset | np.ndarray") -> tuple[np.ndarray, Sequence[str] | None]:
    if isinstance(data, np.ndarray):
        return data.astype(np.int64, copy=False), None
    return data.labels, data.classnames


def train_val_split(
    data: "Dataset | np.ndarray",
    train_indices: np.ndarray | None = None,
    val_per_class: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation set out of the train split; the test split is never touched.

    Each class gives min(val_per_class, n_c - 1) items to validation, so at least one item of
    every class present in the train split stays in the pool.

    Args:
        data: a Dataset or its (N,) labels.
        train_indices: indices to carve from; default: the Dataset's "train" split.
        val_per_class: at most this many validation items per class.
        seed: generator seed.

    Returns:
        (pool, val): disjoint sorted index arrays whose union is train_indices.
    """
    labels, _ = _labels_and_names(data)
    if train_indices is None:
        if isinstance(data, np.ndarray):
            raise ValueError("train_indices is required when passing a label array")
        train_indices = data.splits["train"]
    if val_per_class < 0:
        raise GenbaError(f"validation size per class must be 0 or more, got {val_per_class}")
    train_indices = np.unique(np.asarray(train_indices, dtype=np.int64))
    num_classes = int(labels.max()) + 1 if labels.size else 0
    pool: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    val: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for c, members in enumerate(_class_members(labels, train_indices, num_classes)):
        k = min(val_per_class, max(len(members) - 1, 0))
        perm = _class_permutation(members, seed, c, _VAL)
        val.append(perm[:k])
        pool.append(perm[k:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(val))


def sample_few_shot(
    data: "Dataset | np.ndarray",
    pool_indices: np.ndarray,
    shots: int,
    seed: int = 0,
    classnames: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw `shots` items of every class from the pool (nested in `shots` for a fixed seed).

    Args:
        data: a Dataset or its (N,) labels; every class 0..C-1 must be in the pool.
        pool_indices: indices to draw from (e.g. the pool from `train_val_split`).
        shots: K, items per class.
        seed: generator seed.
        classnames: names for error messages; default: the Dataset's, else class ids.

    Returns:
        (C * K,) sorted indices.

    Raises:
        GenbaError: shots < 1, or a class has fewer than K items in the pool.
    """
    labels, names = _labels_and_names(data)
    names = classnames if classnames is not None else names
    if shots < 1:
        raise GenbaError(f"shots must be at least 1, got {shots}: use --shots 1 or more")
    num_classes = len(names) if names is not None else (int(labels.max()) + 1 if labels.size else 0)
    pool_indices = np.unique(np.asarray(pool_indices, dtype=np.int64))
    picked = []
    for c, members in enumerate(_class_members(labels, pool_indices, num_classes)):
        name = names[c] if names is not None else str(c)
        if len(members) == 0:
            raise GenbaError(f"class '{name}' has no images in the training pool: add images of it")
        if len(members) < shots:
            raise GenbaError(
                f"class '{name}' has only {len(members)} images in the training pool; "
                f"use --shots {len(members)} or fewer"
            )
        picked.append(_class_permutation(members, seed, c, _SHOTS)[:shots])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


VAL_CAP = 16
"""The validation images per class that `auto` takes from a large train split."""


@dataclass(frozen=True)
class SplitPlan:
    """How a dataset's train split is shared out, per class: validation first, then the shots."""

    val_per_class: int
    shots: int
    train_smallest: int
    smallest_class: str

    def line(self) -> str:
        return (f"training {self.shots} / validation {self.val_per_class} images per class "
                f"(the smallest class, '{self.smallest_class}', has {self.train_smallest} in the train split)")


def shrunk_val(data: "Dataset", requested: int) -> int:
    """Validation images per class under the one rule: at most a quarter of the smallest class's
    train-split images (at least 1), so a small folder keeps three quarters for training."""
    counts = np.bincount(np.asarray(data.labels)[data.splits["train"]], minlength=len(data.classnames))
    return min(int(requested), max(1, int(counts[counts > 0].min()) // 4)) if counts.any() else int(requested)


def plan_split(data: "Dataset", shots: int | str, val_per_class: int | str = "auto") -> SplitPlan:
    """The one validation rule, checked before any feature is extracted.

    val_per_class "auto" = min(16, max(1, n // 4)) for n the smallest class's train-split count
    (a quarter of a small folder, 16 from a large one); shots "all" = every remaining image.
    A request that does not fit is one GenbaError naming the split and the fix.
    """
    labels = np.asarray(data.labels)[data.splits["train"]]
    counts = np.bincount(labels, minlength=len(data.classnames))
    smallest = int(np.argmin(counts))
    n = int(counts[smallest])
    name = data.classnames[smallest]
    if val_per_class == "auto":
        val = min(VAL_CAP, max(1, n // 4))
    else:
        val = int(val_per_class)
        if val < 0:
            raise GenbaError(f"--val-per-class must be 0 or more (or auto), got {val}")
    if n - val < 1:
        raise GenbaError(f"{data.name}: class '{name}' has {n} images in the train split (half of each class; the "
                         f"other half is the test split), and validation would take {val}: use --val-per-class auto "
                         "or a smaller number, or add images")
    available = n - min(val, n - 1)
    k = available if shots == "all" else int(shots)
    if k < 0:
        raise GenbaError(f"--shots must be 0 or more (or all), got {k}")
    if k > available:
        raise GenbaError(f"--shots {k} is more than {data.name} can give: class '{name}' has {n} images in the train "
                         f"split (half of each class), {min(val, n - 1)} go to validation, {available} are left; use "
                         f"--shots {available} (or --shots all), a smaller --val-per-class, or add images")
    return SplitPlan(min(val, n - 1), k, n, name)
