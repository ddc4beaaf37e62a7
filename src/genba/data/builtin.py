"""The built-in offline datasets: one table row each (name, summary, loader, availability).

All four read files already on disk (Python packages or a Debian package); none downloads.
Splits are seeded (seed 0) and stratified; the `source` line of each Dataset says how.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
from genba.data.safe_pickle import load_arrays
from genba.data.splits import stratified_split
from genba.data.table import ArrayLoader, Dataset, DatasetEntry, FileLoader, fingerprint
from genba.errors import GenbaError

SPLIT_SEED = 0


def _package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _require(check: Callable[[], tuple[bool, str]], name: str) -> None:
    ok, reason = check()
    if not ok:
        raise GenbaError(f"{name} is not installed: {reason}")


def _array_dataset(
    name: str,
    classnames: list[str],
    templates: list[str],
    images: np.ndarray,  # (N, H, W) uint8
    labels: np.ndarray,  # (N,) int64
    splits: dict[str, np.ndarray],
    source: str,
    class_ids: list[str] | None = None,
) -> Dataset:
    return Dataset(
        name=name,
        classnames=classnames,
        templates=templates,
        labels=labels,
        splits=splits,
        fingerprint=fingerprint(name, classnames, images, labels, splits),
        source=source,
        _load=ArrayLoader(images),
        class_ids=class_ids or [],
    )


def _halves(labels: np.ndarray) -> dict[str, np.ndarray]:
    train, test = stratified_split(labels, 0.5, SPLIT_SEED)
    return {"train": train, "test": test}


# --- textile (conformal-clip-data) ---------------------------------------------------------

_TEXTILE_CLASSES = [  # (folder = id, natural-language name)
    ("nominal", "nominal fabric"),
    ("local", "fabric with a local defect"),
    ("global", "fabric with a global defect"),
]


def _check_textile() -> tuple[bool, str]:
    if _package_dir("conformal_clip_data") is None:
        return False, "run `pip install conformal-clip-data`"
    return True, ""


def _load_textile() -> Dataset:
    _require(_check_textile, "textile")
    import conformal_clip_data

    root = Path(conformal_clip_data.textile_simulated_root())
    paths: list[Path] = []
    labels: list[int] = []
    for c, (folder, _) in enumerate(_TEXTILE_CLASSES):
        files = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() == ".jpg")
        paths += files
        labels += [c] * len(files)
    y = np.asarray(labels, dtype=np.int64)
    splits = _halves(y)
    stats = [(str(p.relative_to(root)), p.stat().st_size) for p in paths]

    return Dataset(
        name="textile",
        classnames=[name for _, name in _TEXTILE_CLASSES],
        templates=[
            "a photo of a {}.",
            "a close-up photo of a {}.",
            "a macro photo of a {}.",
            "an inspection photo of a {}.",
            "a photo of a piece of {}.",
        ],
        labels=y,
        splits=splits,
        fingerprint=fingerprint("textile", _TEXTILE_CLASSES, stats, y, splits),
        source=f"conformal-clip-data simulated textiles ({root}); seeded stratified 50/50 train/test",
        _load=FileLoader(paths),
        class_ids=[folder for folder, _ in _TEXTILE_CLASSES],
    )


# --- animal-mnist -------------------------------------------------------------------------

_ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def _animal_files() -> tuple[Path, Path] | None:
    pkg = _package_dir("animal_mnist")  # its __init__ may import tensorflow: never import it
    if pkg is None:
        return None
    d = pkg / "data" / "Animal_MNIST"
    x, y = d / "animal_data_version_3.gz", d / "animal_label_version_3.gz"
    return (x, y) if x.is_file() and y.is_file() else None


def _check_animal() -> tuple[bool, str]:
    if _animal_files() is None:
        return False, "run `pip install animal-mnist`"
    return True, ""


def _load_animal() -> Dataset:
    _require(_check_animal, "animal-mnist")
    x_path, y_path = _animal_files()
    damaged = GenbaError(
        f"animal-mnist files under {x_path.parent} look damaged: "
        "reinstall with `pip install --force-reinstall animal-mnist`"
    )
    try:
        with gzip.open(x_path, "rb") as f:
            images = np.asarray(load_arrays(f), dtype=np.uint8)
        with gzip.open(y_path, "rb") as f:
            labels = np.asarray(load_arrays(f), dtype=np.int64)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError):  # incl. UnsafePickleError
        raise damaged from None
    if labels.ndim != 1 or images.shape != (len(labels), 28, 28) or not np.isin(labels, range(10)).all():
        raise damaged
    return _array_dataset(
        "animal-mnist",
        list(_ANIMALS),
        [
            "a silhouette of a {}.",
            "a black and white silhouette of a {}.",
            "a white silhouette of a {} on a black background.",
            "a low resolution photo of a {}.",
            "a photo of a {}.",
        ],
        images,
        labels,
        _halves(labels),
        f"animal-mnist package ({x_path.parent}); seeded stratified 50/50 train/test",
    )


# --- fashion-mnist (Debian package dataset-fashion-mnist) ---------------------------------

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_CLASSES = [
    "T-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
_FASHION_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
FASHION_TRAIN_SIZE = 5000


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file: magic (0, 0, dtype code, ndim), big-endian int32 dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code != 0x08:  # 0x08 = unsigned byte, the only type MNIST-style sets use
        raise GenbaError(f"{path} is not an unsigned-byte IDX file: reinstall the dataset package")
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _check_fashion() -> tuple[bool, str]:
    if not all((FASHION_DIR / f).is_file() for f in _FASHION_FILES):
        return False, "run `sudo apt-get install dataset-fashion-mnist`"
    return True, ""


def _load_fashion() -> Dataset:
    _require(_check_fashion, "fashion-mnist")
    x_train, y_train, x_test, y_test = (read_idx(FASHION_DIR / f) for f in _FASHION_FILES)
    fraction = FASHION_TRAIN_SIZE / len(y_train)
    sub, _ = stratified_split(y_train.astype(np.int64), fraction, SPLIT_SEED)
    images = np.concatenate([x_train[sub], x_test])  # (5000 + 10000, 28, 28)
    labels = np.concatenate([y_train[sub], y_test]).astype(np.int64)
    n_train = len(sub)
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, len(labels))}
    return _array_dataset(
        "fashion-mnist",
        list(_FASHION_CLASSES),
        [
            "a photo of a {}.",
            "a black and white photo of a {}.",
            "a low resolution photo of a {}.",
            "a photo of the {}, a type of clothing.",
            "a product photo of a {}.",
        ],
        images,
        labels,
        splits,
        f"Fashion-MNIST ({FASHION_DIR}); train = seeded stratified subsample of {n_train} of the "
        f"official {len(y_train)} train images, test = the official {len(y_test)} test images",
    )


# --- digits (scikit-learn) ----------------------------------------------------------------

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _check_digits() -> tuple[bool, str]:
    if importlib.util.find_spec("sklearn") is None:
        return False, "run `pip install scikit-learn`"
    return True, ""


def _load_digits() -> Dataset:
    _require(_check_digits, "digits")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    return _array_dataset(
        "digits",
        list(_DIGITS),
        [
            "a handwritten digit {}.",
            "a photo of the number {}.",
            "a low resolution image of the digit {}.",
            "the handwritten number {}.",
        ],
        images,
        labels,
        _halves(labels),
        "scikit-learn load_digits (bundled, 8x8, ink 0..16 scaled to 0..255); "
        "seeded stratified 50/50 train/test",
        class_ids=[str(d) for d in range(10)],
    )


DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            "textile",
            "simulated textile inspection: nominal / local / global defect; 3 classes, 2000 RGB 250x250",
            _load_textile,
            _check_textile,
        ),
        DatasetEntry(
            "animal-mnist",
            "animal silhouettes, white on black; 10 classes, 10000 gray 28x28",
            _load_animal,
            _check_animal,
        ),
        DatasetEntry(
            "fashion-mnist",
            "Zalando clothing; 10 classes, gray 28x28, 5000 train / official 10000 test",
            _load_fashion,
            _check_fashion,
        ),
        DatasetEntry(
            "digits",
            "scikit-learn handwritten digits; 10 classes, 1797 gray 8x8",
            _load_digits,
            _check_digits,
        ),
    ]
}
