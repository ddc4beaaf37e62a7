"""Seeded composite scenes for multi-task dense prediction. THESE ARE COMPOSITES, not photographs
of real scenes: no human-labelled dense data ships offline, so every label is known by construction.

Each scene: a random crop of a real textile photograph (conformal-clip-data) as background, then
1..max_objects objects cut from the 28x28 sets (Fashion-MNIST, animal-mnist) pasted one after the
other at random scales and positions, tinted with a random colour; later objects occlude earlier
ones. An object's mask is its resized grey image thresholded at MASK_THRESHOLD. Per pixel:
    semantic  0 = background, c + 1 = object class c (the class of the topmost object)
    instance  0 = background, k = the k-th pasted object that is visible there
    boundary  1 where the instance id differs from a 4-neighbour's (object and occlusion edges)
    saliency  1 where any object is (instance > 0)
    depth     1.0 for the background, 1 - k / (max_objects + 1) for layer k (later = nearer)
so masks, boundaries and depth agree by construction (checked by `check_consistency`).
Splits: train and val scenes draw objects from the source sets' train splits and textiles from
textile's train split; test scenes draw from the test splits, so no object or background image
is shared between train and test. Scene i of a split is a pure function of (seed, split, i).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from genba.errors import GenbaError

GENERATOR_VERSION = "sak-scenes-v1"
MASK_THRESHOLD = 64  # grey level (0..255) above which a resized 28x28 object pixel is object
# (source dataset, class index, class name): six classes, three of each source set.
DEFAULT_CLASSES = (
    ("fashion-mnist", 1, "trouser"), ("fashion-mnist", 8, "bag"), ("fashion-mnist", 9, "ankle boot"),
    ("animal-mnist", 1, "bird"), ("animal-mnist", 5, "elephant"), ("animal-mnist", 6, "giraffe"),
)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SceneSet:
    """Images and per-pixel labels of one split; depth is None when the data has none (user data)."""

    name: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    semantic: torch.Tensor  # (N, S, S) int64, 0 = background
    boundary: torch.Tensor  # (N, S, S) uint8 in {0, 1}
    saliency: torch.Tensor  # (N, S, S) uint8 in {0, 1}
    depth: torch.Tensor | None  # (N, S, S) float32 in (0, 1], larger = farther
    classnames: list[str]  # index 0 = "background"
    source: str
    instance: torch.Tensor | None = None  # (N, S, S) uint8 layer ids (composites only)
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = hashlib.sha256(self.images.numpy().tobytes()).hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def tasks(self) -> list[str]:
        return ["semantic", "boundary", "saliency"] + ([] if self.depth is None else ["depth"])

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"image": self.images, "semantic": self.semantic, "boundary": self.boundary, "saliency": self.saliency}
        if self.depth is not None:
            out["depth"] = self.depth
        return out


@dataclass(frozen=True)
class SceneSpec:
    size: int = 64
    max_objects: int = 3
    scale: tuple[float, float] = (0.3, 0.6)  # object side / scene side
    classes: tuple = DEFAULT_CLASSES
    seed: int = 0

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 512:
            raise GenbaError(f"scene size must be in 16..512 pixels, got {self.size}")
        if not 1 <= self.max_objects <= 8:
            raise GenbaError(f"max_objects must be in 1..8, got {self.max_objects}")
        lo, hi = self.scale
        if not 0.05 <= lo <= hi <= 1.0:
            raise GenbaError(f"object scale must satisfy 0.05 <= low <= high <= 1, got {self.scale}")


def boundaries_of(instance: np.ndarray) -> np.ndarray:
    """(H, W) ids -> uint8 map, 1 where a 4-neighbour has another id."""
    b = np.zeros(instance.shape, dtype=bool)
    dv = instance[1:, :] != instance[:-1, :]
    dh = instance[:, 1:] != instance[:, :-1]
    b[1:, :] |= dv
    b[:-1, :] |= dv
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    return b.astype(np.uint8)


def depth_of(instance: np.ndarray, max_objects: int) -> np.ndarray:
    """Layer ids -> depth: 1.0 background, 1 - k / (max_objects + 1) for layer k."""
    return np.where(instance > 0, 1.0 - instance / (max_objects + 1), 1.0).astype(np.float32)


class _Sources:
    """The object and background pools of one split side ('train' or 'test')."""

    def __init__(self, spec: SceneSpec, side: str):
        from genba.data import load_dataset

        loaded: dict[str, object] = {}
        self.objects: list[np.ndarray] = []  # per class: (n, 28, 28) uint8
        for dataset_name, class_index, _ in spec.classes:
            if dataset_name not in loaded:
                loaded[dataset_name] = load_dataset(dataset_name)
            ds = loaded[dataset_name]
            idx = ds.splits[side][ds.labels[ds.splits[side]] == class_index]
            if len(idx) == 0:
                raise GenbaError(f"{dataset_name} has no images of class {class_index} in its {side} split")
            self.objects.append(np.stack([np.asarray(ds.image(i).convert("L")) for i in idx]))
        self.textile = load_dataset("textile")
        self.backgrounds = self.textile.splits[side]
        self.fingerprints = [loaded[n].fingerprint for n in sorted(loaded)] + [self.textile.fingerprint]


def _scene(spec: SceneSpec, src: _Sources, rng: np.random.Generator):
    s = spec.size
    photo = src.textile.image(int(rng.choice(src.backgrounds)))
    w, h = photo.size
    side = int(rng.integers(min(w, h) // 2, min(w, h) + 1))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    canvas = np.asarray(photo.crop((x0, y0, x0 + side, y0 + side)).resize((s, s), Image.BILINEAR), dtype=np.float32)
    semantic = np.zeros((s, s), dtype=np.int64)
    instance = np.zeros((s, s), dtype=np.uint8)
    for layer in range(1, int(rng.integers(1, spec.max_objects + 1)) + 1):
        c = int(rng.integers(len(src.objects)))
        grey = src.objects[c][int(rng.integers(len(src.objects[c])))]
        size = int(round(s * rng.uniform(*spec.scale)))
        grey = np.asarray(Image.fromarray(grey).resize((size, size), Image.BILINEAR), dtype=np.float32)
        if rng.random() < 0.5:
            grey = grey[:, ::-1]
        mask = grey > MASK_THRESHOLD
        top, left = int(rng.integers(0, s - size + 1)), int(rng.integers(0, s - size + 1))
        tint = rng.uniform(0.35, 1.0, size=3).astype(np.float32) * 255.0
        region = canvas[top:top + size, left:left + size]
        region[mask] = (grey[mask, None] / 255.0) * tint
        semantic[top:top + size, left:left + size][mask] = c + 1
        instance[top:top + size, left:left + size][mask] = layer
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, semantic, instance


def make_scenes(split: str, count: int, spec: SceneSpec = SceneSpec(), sources: dict | None = None) -> SceneSet:
    """`count` composite scenes of `split` ('train', 'val' or 'test'); deterministic in (spec.seed, split, i)."""
    if split not in SPLIT_IDS:
        raise GenbaError(f"unknown scene split {split!r}: use train, val or test")
    if count < 1:
        raise GenbaError(f"scene count must be >= 1, got {count}")
    side = "test" if split == "test" else "train"
    sources = {} if sources is None else sources
    if side not in sources:
        sources[side] = _Sources(spec, side)
    src = sources[side]
    images, semantic, instance = [], [], []
    for i in range(count):
        rng = np.random.default_rng([spec.seed, SPLIT_IDS[split], i])
        img, sem, ins = _scene(spec, src, rng)
        images.append(img)
        semantic.append(sem)
        instance.append(ins)
    ins = np.stack(instance)
    bnd = np.stack([boundaries_of(m) for m in ins])
    names = ["background"] + [name for _, _, name in spec.classes]
    return SceneSet(
        name=f"scenes:{split}",
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        semantic=torch.from_numpy(np.stack(semantic)),
        boundary=torch.from_numpy(bnd),
        saliency=torch.from_numpy((ins > 0).astype(np.uint8)),
        depth=torch.from_numpy(depth_of(ins, spec.max_objects)),
        classnames=names,
        source=(f"{GENERATOR_VERSION} composites (NOT real scenes): {count} {split} scenes of {spec.size}px, "
                f"1..{spec.max_objects} objects of {len(spec.classes)} classes from the 28x28 sets on textile photos, "
                f"seed {spec.seed}; sources {','.join(src.fingerprints)}"),
        instance=torch.from_numpy(ins),
    )


def make_splits(counts: dict[str, int], spec: SceneSpec = SceneSpec()) -> dict[str, SceneSet]:
    """The fixed train / val / test scene sets, e.g. make_splits({'train': 1200, 'val': 200, 'test': 400})."""
    sources: dict = {}
    return {split: make_scenes(split, n, spec, sources) for split, n in counts.items()}


def check_consistency(scenes: SceneSet) -> None:
    """Raise GenbaError unless saliency, semantic, boundary and depth agree with each other."""
    fg = scenes.semantic > 0
    if not torch.equal(fg, scenes.saliency.bool()):
        raise GenbaError(f"{scenes.name}: saliency differs from semantic > 0")
    if scenes.depth is not None and not torch.equal(scenes.depth < 1.0, fg):
        raise GenbaError(f"{scenes.name}: depth < 1 differs from the foreground")
    if scenes.instance is not None:
        if not torch.equal(scenes.instance > 0, fg):
            raise GenbaError(f"{scenes.name}: instance ids differ from the foreground")
        again = np.stack([boundaries_of(m) for m in scenes.instance.numpy()])
        if not np.array_equal(again, scenes.boundary.numpy()):
            raise GenbaError(f"{scenes.name}: boundaries differ from the instance map's edges")
