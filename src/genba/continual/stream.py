"""Task streams: an ordered list of tasks, each a dataset or a class subset of one.

    parse_stream("textile,animal-mnist,fashion-mnist,digits")   # four dataset tasks
    parse_stream("fashion-mnist#5")        # class-incremental: 5 tasks of 2 classes (class order)
    parse_stream("digits[0-4],digits[5-9],folder:/data/parts")  # class subsets, user folders
    parse_stream("textile,animal-mnist[cat|dog]x8")   # classes by name, 8 training images each

The one task grammar of genba (CVM reads it too, genba.cvm.tasks): `name`, `name[0-4]` /
`name[0,2,5]` (class indices), `name[c1|c2]` (class names), either with `xK` (K training
images per class), and `name#N` (N class-incremental tasks).

Global class indices follow the stream: task t's classes are offset_t .. offset_t + c_t - 1,
so the classes known after task t are a prefix. Splits: each task's test split is the
dataset's, optionally capped at `max_test_per_class` (the same seeded subset for every seed);
validation (`val_per_class`, at most a quarter of the smallest class: genba.data.splits.shrunk_val) is carved from its train split with the seed
(genba.data.train_val_split), and training rows are the rest, optionally capped at
`max_train_per_class` (with the seed). The control task never enters the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from genba.cache import TensorCache
from genba.data import load_dataset, train_val_split
from genba.data.splits import shrunk_val
from genba.encoders.base import Encoder
from genba.errors import GenbaError
from genba.features import Features, extract_features
from genba.zeroshot import cached_text_classifier


TEST_CAP_SEED = 0  # the capped test subset is the same for every seed and method


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    classes: tuple[int, ...] | None = None  # original class indices; None = all (or `names`)
    label: str = ""
    names: tuple[str, ...] = ()             # classes by name (resolved against the dataset)
    shots: int = 0                          # > 0: at most this many training images per class

    @property
    def name(self) -> str:
        return self.label or self.dataset

    def class_indices(self, classnames: list[str]) -> list[int]:
        """The task's original class indices in a dataset with these class names."""
        if self.names:
            missing = [n for n in self.names if n not in classnames]
            if missing:
                raise GenbaError(f"task '{self.name}': no class {', '.join(map(repr, missing))} in "
                                 f"'{self.dataset}' (classes: {', '.join(classnames)})")
            return [classnames.index(n) for n in self.names]
        return list(self.classes) if self.classes is not None else list(range(len(classnames)))


def _split_items(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    return [i for i in items if i]


def _parse_classes(body: str, item: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in body.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise GenbaError(f"bad class list in '{item}': use indices and ranges, e.g. name[0-4] or name[0,2,5]")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise GenbaError(f"bad class range {lo}-{hi} in '{item}'")
        out += range(lo, hi + 1)
    if len(set(out)) != len(out):
        raise GenbaError(f"a class is listed twice in '{item}'")
    return tuple(out)


def parse_stream(text: str, num_classes=None) -> list[TaskSpec]:
    """Task specs of a stream string; `num_classes(dataset) -> C` resolves `name#N` splits."""
    items = _split_items(text or "")
    if not items:
        raise GenbaError("the stream is empty: give --stream a,b,c (datasets, name[0-4] subsets or name#N splits)")
    specs: list[TaskSpec] = []
    for item in items:
        m = re.fullmatch(r"(.+?)\[(.*)\](?:x(\d+))?", item)
        if m:
            body, shots = m.group(2), int(m.group(3) or 0)
            if m.group(3) is not None and shots < 1:
                raise GenbaError(f"'{item}': K training images per class must be >= 1 (name[...]xK)")
            if re.fullmatch(r"[\d\s,\-]*", body):
                specs.append(TaskSpec(m.group(1), _parse_classes(body, item), item, shots=shots))
            else:
                names = tuple(c.strip() for c in body.split("|") if c.strip())
                if not names or len(set(names)) != len(names):
                    raise GenbaError(f"'{item}': list class names once each, e.g. name[cat|dog]")
                specs.append(TaskSpec(m.group(1), None, item, names=names, shots=shots))
            continue
        if "[" in item or "]" in item:
            raise GenbaError(f"cannot read task '{item}': write name, name[0-4], name[c1|c2], name[...]xK or name#N")
        m = re.fullmatch(r"(.+?)#(\d+)", item)
        if m:
            name, n = m.group(1), int(m.group(2))
            c = num_classes(name) if num_classes else None
            if c is None:
                raise GenbaError(f"cannot split '{name}' without its class count")
            if n < 1 or c % n:
                raise GenbaError(f"'{item}': {c} classes do not split into {n} tasks of equal size; "
                                 f"choose N dividing {c}")
            size = c // n
            specs += [TaskSpec(name, tuple(range(k * size, (k + 1) * size)), f"{name}[{k * size}-{(k + 1) * size - 1}]")
                      for k in range(n)]
            continue
        specs.append(TaskSpec(item))
    return specs


@dataclass
class Task:
    """One task's cached features (labels local 0..c-1) and class texts."""

    name: str
    classnames: list[str]
    offset: int
    text: torch.Tensor  # (c, D)
    train: Features
    val: Features
    test: Features

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def batch(self, features: Features, task_id: int) -> dict[str, torch.Tensor]:
        """A batch dict: x visual (or trunk activations), z joint, y global class, task id (-1 = unknown)."""
        return {"x": features.visual.float(), "z": features.image.float(), "y": features.labels + self.offset,
                "task": torch.full((len(features),), task_id, dtype=torch.long)}


@dataclass
class Stream:
    tasks: list[Task]
    control: Task | None

    @property
    def num_classes(self) -> int:
        return sum(t.num_classes for t in self.tasks)

    @property
    def text(self) -> torch.Tensor:
        """(C_all, D) class texts of every stream class, in global order."""
        return torch.cat([t.text for t in self.tasks])


def _cap(labels: np.ndarray, indices: np.ndarray, cap: int | None, seed: int, stream: int) -> np.ndarray:
    if not cap:
        return indices
    keep = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        keep.append(np.random.default_rng([seed, int(c), stream]).permutation(members)[:cap])
    return np.sort(np.concatenate(keep))


def _check_finite(task: str, features: Features, split: str) -> None:
    for name, t in (("joint", features.image), ("visual", features.visual)):
        if t is not None and not torch.isfinite(t).all():
            raise GenbaError(f"task '{task}': the cached {name} features of the {split} split hold NaN or "
                             "infinite values; delete the feature cache entry (or --no-cache) and re-extract")


def build_task(spec: TaskSpec, dataset, encoder: Encoder, cache: TensorCache | None, offset: int, *, seed: int,
               val_per_class: int, max_train_per_class: int | None, max_test_per_class: int | None,
               progress: bool = False, trunk: tuple | None = None, pixels=None) -> Task:
    C = dataset.num_classes
    classes = spec.class_indices(dataset.classnames)
    bad = [c for c in classes if not 0 <= c < C]
    if bad:
        raise GenbaError(f"task '{spec.name}': class indices {bad} do not exist; '{dataset.name}' has {C} classes (0-{C - 1})")
    text_all = cached_text_classifier(encoder, dataset.classnames, dataset.templates, cache)
    if text_all.shape[0] != C:
        raise GenbaError(f"task '{spec.name}': {text_all.shape[0]} class texts for {C} classes")
    labels = dataset.labels
    local = np.full(C, -1, dtype=np.int64)
    local[classes] = np.arange(len(classes))
    in_task = lambda idx: idx[np.isin(labels[idx], classes)]  # noqa: E731
    train_idx = in_task(dataset.splits["train"])
    test_idx = _cap(labels, in_task(dataset.splits["test"]), max_test_per_class, TEST_CAP_SEED, 11)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise GenbaError(f"task '{spec.name}' has no train or no test images of its classes")
    pool, val_idx = train_val_split(dataset, train_idx, val_per_class=shrunk_val(dataset, val_per_class), seed=seed)
    cap = min(c for c in (max_train_per_class, spec.shots) if c) if (max_train_per_class or spec.shots) else None
    pool = _cap(labels, pool, cap, seed, 12)
    feats = {}
    for split in ("train", "test"):
        f = extract_features(encoder, dataset, split, cache=cache, progress=progress)
        if f.visual is None:
            raise GenbaError(f"encoder '{encoder.name}' gives no visual features: the continual learner needs them")
        _check_finite(spec.name, f, split)
        feats[split] = f

    def part(split: str, idx: np.ndarray) -> Features:
        f = feats[split].subset(feats[split].rows_of(idx))
        visual = f.visual
        if trunk is not None:
            visual = trunk_activations(trunk, dataset, split, idx, cache, progress)
        elif pixels is not None:
            visual = image_pixels(pixels, dataset, idx)
        return Features(f.image, visual, torch.as_tensor(local[f.labels.numpy()]), f.indices)

    return Task(spec.name, [dataset.classnames[c] for c in classes], offset, text_all[classes].float(),
                part("train", pool), part("train", val_idx), part("test", test_idx))


def build_stream(specs: list[TaskSpec], encoder: Encoder, cache: TensorCache | None, *, seed: int = 0,
                 control: TaskSpec | None = None, val_per_class: int = 16, max_train_per_class: int | None = None,
                 max_test_per_class: int | None = None, progress: bool = False, datasets: dict | None = None,
                 trunk: tuple | None = None, pixels=None) -> Stream:
    """Load every task (and the control) and check the stream before anything is trained.

    trunk: (backbone, stage, image_size) for learner variant (b): each task's `visual` then holds
    the backbone's cached activations after `stage` for exactly its rows (genba.backbones).
    pixels: an encoder; each task's `visual` then holds its rows' preprocessed images (for the LoRA
    learner on hf: CLIP, which trains on images; keep the stream small with the caps)."""
    datasets = dict(datasets or {})

    def dataset(name: str):
        if name not in datasets:
            datasets[name] = load_dataset(name)
        return datasets[name]

    used: dict[str, set[int]] = {}
    for spec in specs:
        ds = dataset(spec.dataset)
        classes = set(spec.class_indices(ds.classnames))
        overlap = used.setdefault(spec.dataset, set()) & classes
        if overlap:
            raise GenbaError(f"classes {sorted(overlap)} of '{spec.dataset}' are in two tasks of the stream")
        used[spec.dataset] |= classes
    if control is not None:
        ds = dataset(control.dataset)
        classes = set(control.class_indices(ds.classnames))
        if used.get(control.dataset, set()) & classes:
            raise GenbaError(f"the control task '{control.name}' shares classes with the stream: "
                             "it must never enter the stream; choose another --control")
    kwargs = dict(seed=seed, val_per_class=val_per_class, max_train_per_class=max_train_per_class,
                  max_test_per_class=max_test_per_class, progress=progress, trunk=trunk, pixels=pixels)
    tasks, offset = [], 0
    for spec in specs:
        task = build_task(spec, dataset(spec.dataset), encoder, cache, offset, **kwargs)
        tasks.append(task)
        offset += task.num_classes
    ctrl = None if control is None else build_task(control, dataset(control.dataset), encoder, cache, 0, **kwargs)
    return Stream(tasks, ctrl)


def trunk_activations(trunk: tuple, dataset, split: str, idx: np.ndarray, cache: TensorCache | None,
                      progress: bool = False) -> torch.Tensor:
    """Activations after the trunk's cut for dataset indices `idx` of `split`, in that order (only
    those images are encoded, through a digest-named subset split)."""
    from genba.backbones import extract_activations

    backbone, stage, size = trunk
    subset, name = dataset.with_subset_split(split, np.asarray(idx))
    acts = extract_activations(backbone, subset, name, stage=stage, image_size=size, cache=cache, progress=progress)
    position = {int(i): r for r, i in enumerate(acts.indices.tolist())}
    return acts.x[torch.as_tensor([position[int(i)] for i in np.asarray(idx)], dtype=torch.long)]


def image_pixels(encoder: Encoder, dataset, idx: np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) images of dataset indices `idx`, preprocessed by the encoder."""
    return torch.stack([encoder.preprocess(dataset.image(int(i))) for i in np.asarray(idx)])
