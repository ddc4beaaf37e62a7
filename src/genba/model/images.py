"""Unsorted images to classify: folders (recursive), files and glob patterns, decoded one at a time.

    paths = image_paths(["site/new", "extra/*.jpg", "one.png"])     # sorted, de-duplicated
    for path, image in decode_images(paths, skipped):               # bad files: warning + counted
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageOps

from genba.data.user import IMAGE_EXTENSIONS
from genba.errors import GenbaError


class SkippedImageWarning(UserWarning):
    """An image file could not be decoded; it was skipped and counted."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_paths(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named by folders (searched recursively), files or glob patterns, in sorted order."""
    found: dict[str, Path] = {}
    for spec in specs:
        text = str(spec)
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        if not matches:
            raise GenbaError(f"--images {text}: the pattern matches no file")
        for path in matches:
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in files:
                        if _is_image(Path(name)):
                            found.setdefault(str(Path(root) / name), Path(root) / name)
            elif path.is_file():
                found.setdefault(str(path), path)
            elif not glob.has_magic(text):
                raise GenbaError(f"--images {text}: no such file or folder")
    paths = [found[k] for k in sorted(found)]
    if not paths:
        raise GenbaError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, specs))}")
    return paths


def decode(path: Path) -> Image.Image:
    """One image as RGB (EXIF-rotated); GenbaError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise GenbaError(f"cannot decode image '{path}' ({str(error).splitlines()[0][:80]})") from None


def decode_images(paths: Iterable[Path], skipped: list[Path]) -> Iterator[tuple[Path, Image.Image]]:
    """(path, RGB image) for every decodable file; the others are warned about, appended to `skipped`."""
    for path in paths:
        try:
            yield path, decode(path)
        except GenbaError as error:
            warnings.warn(f"skipped: {error}", SkippedImageWarning, stacklevel=2)
            skipped.append(path)
