"""User data: an image folder with one sub-folder per class, or a CSV of (path, label) rows.

Every file is checked with PIL (open + verify) when the dataset is loaded; unreadable, corrupt
or missing files are dropped with one `CorruptImageWarning` that lists them. Anything that
leaves the data unusable (no classes, an empty class, a class with one image) is a one-line
`GenbaError`. Splits are seeded (seed 0) stratified 50/50 train/test. The fingerprint is a
sha256 over the sorted (relative path, size, mtime_ns, label) of the kept files plus the split.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from genba.data.splits import stratified_split
from genba.data.table import Dataset, FileLoader, fingerprint
from genba.errors import GenbaError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
USER_TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "a close-up photo of a {}."]
SPLIT_SEED = 0
_LISTED = 10  # bad files named in the warning


class CorruptImageWarning(UserWarning):
    """Some image files could not be read and were skipped."""


def load_folder(path: str | os.PathLike) -> Dataset:
    """An image folder: `<dir>/<class>/**/<image>`; class name = sub-folder name, "_" -> " "."""
    root = Path(path).expanduser().absolute()
    _check_readable_dir(root, "folder")
    class_dirs = sorted(p for p in _listdir(root) if p.is_dir() and not _hidden(p))
    if not class_dirs:
        raise GenbaError(f"'{root}' has no class sub-folders: put the images of each class in its own sub-folder")
    items: list[tuple[Path, str]] = []
    for d in class_dirs:
        _check_readable_dir(d, "class folder")
        files = _image_files(d)
        if not files:
            raise GenbaError(
                f"class folder '{d}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
                "add images to it or remove it"
            )
        items += [(f, d.name) for f in files]
    return _build(f"folder:{root}", root, items, f"image folder {root}")


def load_csv(path: str | os.PathLike) -> Dataset:
    """A CSV with header `path,label`; relative paths are relative to the CSV's folder."""
    file = Path(path).expanduser().absolute()
    if not file.exists():
        raise GenbaError(f"'{file}' does not exist: check the path of the CSV file")
    if not file.is_file():
        raise GenbaError(f"'{file}' is not a file: csv: needs a CSV file with header 'path,label'")
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except PermissionError:
        raise GenbaError(f"cannot read '{file}': permission denied; fix its permissions (chmod u+r)") from None
    except UnicodeDecodeError:
        raise GenbaError(f"'{file}' is not UTF-8 text: save it as a UTF-8 CSV with header 'path,label'") from None
    if not rows:
        raise GenbaError(f"'{file}' is empty: it needs a header 'path,label' and one row per image")
    header = [h.strip().lower() for h in rows[0]]
    if sorted(header) != ["label", "path"]:
        raise GenbaError(f"'{file}' has columns {','.join(rows[0])!r}: the header must be 'path,label'")
    col_path, col_label = header.index("path"), header.index("label")
    labels_of: dict[Path, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[col_path].strip() or not row[col_label].strip():
            raise GenbaError(f"line {line} of '{file}' is not 'path,label' with both filled: fix or delete it")
        p = Path(row[col_path].strip()).expanduser()
        p = p if p.is_absolute() else file.parent / p
        label = row[col_label].strip()
        if labels_of.setdefault(p, label) != label:
            raise GenbaError(f"'{p}' is listed with labels '{labels_of[p]}' and '{label}' in '{file}': keep one")
    if not labels_of:
        raise GenbaError(f"'{file}' has a header but no rows: add one 'path,label' row per image")
    return _build(f"csv:{file}", file.parent, list(labels_of.items()), f"CSV {file}")


def _build(name: str, root: Path, items: list[tuple[Path, str]], where: str) -> Dataset:
    """Verify files, order classes, split, fingerprint. items: (absolute path, class id)."""
    class_ids = sorted({label for _, label in items})
    if len(class_ids) < 2:
        raise GenbaError(f"{where} has only 1 class ('{class_ids[0]}'): a classifier needs at least 2 classes")
    kept, bad = [], []
    for p, label in items:
        problem = _verify(p)
        if problem:
            bad.append((p, problem))
        else:
            kept.append((p, label))
    if bad:
        listed = "; ".join(f"{_rel(p, root)} ({why})" for p, why in bad[:_LISTED])
        more = f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
        warnings.warn(
            f"skipped {len(bad)} of {len(items)} image files that could not be read: {listed}{more}",
            CorruptImageWarning,
            stacklevel=3,
        )
    counts = {c: 0 for c in class_ids}
    for _, label in kept:
        counts[label] += 1
    for c, n in counts.items():
        if n == 0:
            raise GenbaError(f"class '{c}' has no readable images: replace its corrupt or missing files")
        if n < 2:
            raise GenbaError(f"class '{c}' has only 1 image: each class needs at least 2 images (train and test)")

    index = {c: i for i, c in enumerate(class_ids)}
    kept.sort(key=lambda item: (index[item[1]], _rel(item[0], root)))
    paths = [p for p, _ in kept]
    labels = np.asarray([index[label] for _, label in kept], dtype=np.int64)
    train, test = stratified_split(labels, 0.5, SPLIT_SEED)
    splits = {"train": train, "test": test}
    stats = []
    for p, label in kept:
        st = p.stat()
        stats.append((_rel(p, root), st.st_size, st.st_mtime_ns, label))
    skipped = f", {len(bad)} unreadable files skipped" if bad else ""
    return Dataset(
        name=name,
        classnames=[c.replace("_", " ") for c in class_ids],
        templates=list(USER_TEMPLATES),
        labels=labels,
        splits=splits,
        fingerprint=fingerprint(sorted(stats), ("stratified", 0.5, SPLIT_SEED), splits),
        source=f"{where}: {len(paths)} images in {len(class_ids)} classes{skipped}; seeded stratified 50/50 train/test",
        _load=FileLoader(paths),
        class_ids=class_ids,
    )


def _verify(path: Path) -> str:
    """'' if PIL can open and verify the file, else a short reason."""
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    try:
        with Image.open(path) as im:
            im.verify()
    except PermissionError:
        return "permission denied"
    except Exception as e:  # PIL raises many types for corrupt data  # noqa: BLE001
        return type(e).__name__ if not str(e) else str(e).splitlines()[0][:80]
    return ""


def _check_readable_dir(d: Path, what: str) -> None:
    if not d.exists():
        raise GenbaError(f"'{d}' does not exist: check the path (a {what} with one sub-folder per class)")
    if not d.is_dir():
        raise GenbaError(
            f"'{d}' is not a directory: pass a folder with one sub-folder per class, or a CSV with csv:<file>"
        )
    if not os.access(d, os.R_OK | os.X_OK):
        raise GenbaError(f"cannot read {what} '{d}': permission denied; fix it with `chmod -R u+rX '{d}'`")


def _listdir(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except PermissionError:
        raise GenbaError(f"cannot read '{d}': permission denied; fix it with `chmod -R u+rX '{d}'`") from None


def _image_files(d: Path) -> list[Path]:
    """Image files under d (recursively), by extension, skipping hidden files and folders."""
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        out += [Path(dirpath) / n for n in filenames
                if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(out)


def _hidden(p: Path) -> bool:
    return p.name.startswith(".") or p.name == "__MACOSX"


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)
