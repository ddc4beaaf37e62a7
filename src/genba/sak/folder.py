"""User dense data: `folder:<dir>` with `<dir>/images/<name>.<ext>` and `<dir>/masks/<name>.png`.

A mask is a single-channel PNG of class ids (0 = background, 1..C = classes); it must have the
size of its image. Optional `<dir>/classes.txt`: one class name per line, background first.
From a mask: semantic = the ids, saliency = id > 0, boundary = a 4-neighbour has another id.
There is no depth (the depth task is skipped for user data). Images are resized to `size`
(bilinear; masks nearest) after the size check. Every problem is one GenbaError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genba.data.user import IMAGE_EXTENSIONS
from genba.errors import GenbaError
from genba.sak.scenes import SceneSet, boundaries_of


def _image_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def load_mask_folder(root: str | Path, size: int = 64) -> SceneSet:
    """Images and class-id masks of a user folder (see module docstring) as a SceneSet."""
    root = Path(root).expanduser().absolute()
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise GenbaError(f"'{root}' needs sub-folders images/ and masks/ (a class-id PNG mask per image, same file stem)")
    masks = {p.stem: p for p in _image_files(masks_dir)}
    files = _image_files(images_dir)
    if not files:
        raise GenbaError(f"'{images_dir}' holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    images, semantic = [], []
    for path in files:
        if path.stem not in masks:
            raise GenbaError(f"image '{path.name}' has no mask: add masks/{path.stem}.png (class ids, 0 = background)")
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
            with Image.open(masks[path.stem]) as m:
                mask = m.copy()
        except OSError as error:
            raise GenbaError(f"cannot read '{path.name}' or its mask ({error}); replace the file") from None
        if mask.size != image.size:
            raise GenbaError(f"mask '{masks[path.stem].name}' is {mask.size[0]}x{mask.size[1]} but its image "
                             f"'{path.name}' is {image.size[0]}x{image.size[1]}: masks must have their image's size")
        if mask.mode not in ("L", "P", "I", "I;16", "1"):
            raise GenbaError(f"mask '{masks[path.stem].name}' is {mask.mode}: save it as a single-channel PNG of class ids")
        images.append(np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8))
        semantic.append(np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.int64))
    sem = np.stack(semantic)
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = ["background"] + [f"class {c}" for c in range(1, int(sem.max()) + 1)]
    if sem.max() >= len(names):
        raise GenbaError(f"masks hold class id {int(sem.max())} but classes.txt names only {len(names)} classes (background first)")
    return SceneSet(
        name=f"folder:{root}",
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        semantic=torch.from_numpy(sem),
        boundary=torch.from_numpy(np.stack([boundaries_of(m) for m in sem])),
        saliency=torch.from_numpy((sem > 0).astype(np.uint8)),
        depth=None,
        classnames=names,
        source=f"user folder {root}: {len(files)} images with class-id masks, resized to {size}px",
    )
