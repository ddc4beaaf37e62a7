"""The tasks of a CVM stream: images of one dataset at the student's resolution, in one label space.

A stream is an ordered list of TaskSpecs. Every class gets a global id: the classes with images
in stream order, then the classes that enter by name only (TaskSpec.name_only), so that "the
classes seen so far" is always a prefix of the label space. A later TaskSpec with `only` = those
names and `shots` = K brings their first images (classes improve once a few images arrive).

Per task (fixed split seed 0, the same for every method and run seed): validation =
`val_per_class` train images per class, at most a quarter of the smallest class (genba.data.splits.shrunk_val; train split only);
training pool = the rest, capped at `max_train` rows (seeded, stratified); test = at most
`max_test` rows of the test split (seeded, stratified). `imbalance` = m > 0 keeps all training
rows of the task's first class and m rows of every other class (one class holds most images).
Pixels are decoded once by genba.cvm.pixels.resize_rgb and cached as uint8 in the TensorCache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from genba.cache import TensorCache
from genba.cvm.pixels import resize_rgb
from genba.data.splits import shrunk_val, stratified_split, train_val_split
from genba.errors import GenbaError

SPLIT_SEED = 0
PIXELS_VERSION = "1"


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    name_only: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    shots: int = 0

    @property
    def label(self) -> str:
        extra = f"[{'|'.join(self.only)}]x{self.shots}" if self.only else ""
        return self.dataset + extra + ("-name-only:" + "|".join(self.name_only) if self.name_only else "")


@dataclass
class Task:
    spec: TaskSpec
    classnames: list[str]          # this task's classes (dataset order)
    class_ids: list[int]           # their global ids
    templates: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor          # global ids
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    trained_ids: list[int] = field(default_factory=list)  # ids with training images in this task
    dataset: object = None                                # the genba Dataset the task was cut from
    test_indices: np.ndarray | None = None                # dataset indices of the test rows (for other models)
    train_indices: np.ndarray | None = None               # dataset indices of the training rows (train_x order)
    val_indices: np.ndarray | None = None                 # dataset indices of the validation rows (val_x order)

    @property
    def name(self) -> str:
        return self.spec.label


def parse_stream(text: str) -> list[TaskSpec]:
    """'a,b' -> tasks; 'name[c1|c2]xK' = only classes c1, c2 of dataset `name`, K training images each
    (e.g. the first images of classes that entered the stream by name only). Read with the one task
    grammar (genba.continual.stream.parse_stream); CVM takes its class-name-and-shots form."""
    from genba.continual.stream import parse_stream as parse_tasks

    if not text or not text.strip(","):
        raise GenbaError("empty stream: pass --stream a,b (dataset names, see `genba datasets`)")
    specs = []
    for task in parse_tasks(text):
        if task.classes is not None or (task.names and not task.shots) or (task.shots and not task.names):
            raise GenbaError(f"cannot read task '{task.name}': write dataset or dataset[class|class]xK")
        specs.append(TaskSpec(task.dataset, only=task.names, shots=task.shots) if task.names else TaskSpec(task.dataset))
    return specs


def _subsample(labels: np.ndarray, rows: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` of `rows`, stratified by label, seeded."""
    if cap <= 0 or len(rows) <= cap:
        return rows
    keep, _ = stratified_split(labels[rows], cap / len(rows), SPLIT_SEED)
    return rows[keep]


def decode_pixels(dataset, indices: np.ndarray, size: int, cache: TensorCache | None) -> torch.Tensor:
    """(N, 3, S, S) uint8 pixels of dataset items `indices`, cached by content."""
    indices = np.asarray(indices, dtype=np.int64)
    key = {"version": PIXELS_VERSION, "dataset": dataset.name, "fingerprint": dataset.fingerprint, "size": str(size),
           "indices": hashlib.sha256(indices.tobytes()).hexdigest()}

    def compute():
        if len(indices) == 0:
            return {"pixels": torch.zeros(0, 3, size, size, dtype=torch.uint8)}
        arrays = np.stack([resize_rgb(dataset.image(int(i)), size) for i in indices])  # (N, S, S, 3)
        return {"pixels": torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()}

    if cache is None:
        return compute()["pixels"]
    return cache.get_or_compute("cvm-pixels", key, compute)["pixels"]


def label_space(specs: list[TaskSpec], datasets: dict) -> tuple[list[str], list[list[str]], dict]:
    """Global class names (with images first, then name-only), their templates, and (dataset, name) -> id."""
    ids: dict[tuple[str, str], int] = {}
    names: list[str] = []
    templates: list[list[str]] = []
    pending = []
    for spec in specs:
        ds = datasets[spec.dataset]
        unknown = [n for n in spec.name_only + spec.only if n not in ds.classnames]
        if unknown:
            raise GenbaError(f"class(es) {', '.join(unknown)} are not in {spec.dataset} ({', '.join(ds.classnames)})")
        chosen = spec.only or tuple(ds.classnames)
        for name in chosen:
            key = (spec.dataset, name)
            if key in ids or key in pending:
                continue
            if name in spec.name_only:
                pending.append(key)
            else:
                ids[key] = len(names)
                names.append(name)
                templates.append(list(ds.templates))
    for key in pending:
        if key not in ids:
            ids[key] = len(names)
            names.append(key[1])
            templates.append(list(datasets[key[0]].templates))
    return names, templates, ids


def build_tasks(specs: list[TaskSpec], size: int, cache: TensorCache | None, *, max_train: int = 1500,
                max_test: int = 500, val_per_class: int = 20, imbalance: int = 0) -> tuple[list[Task], list[str], list[list[str]]]:
    """Load every dataset once and cut its tasks (see module docstring)."""
    from genba.data import load_dataset

    datasets = {s.dataset: load_dataset(s.dataset) for s in specs}
    names, templates, ids = label_space(specs, datasets)
    tasks = []
    for spec in specs:
        ds = datasets[spec.dataset]
        chosen = list(spec.only or ds.classnames)
        local = [ds.classnames.index(n) for n in chosen]
        with_images = [ds.classnames.index(n) for n in chosen if n not in spec.name_only]
        # validation shrinks with small folders (genba.data.splits.shrunk_val: at most a quarter of a class)
        pool, val = train_val_split(ds, val_per_class=shrunk_val(ds, val_per_class), seed=SPLIT_SEED)
        pool = pool[np.isin(ds.labels[pool], with_images)]
        val = val[np.isin(ds.labels[val], with_images)]
        if spec.shots:
            pool = np.concatenate([pool[ds.labels[pool] == c][: spec.shots] for c in with_images])
        pool = _subsample(ds.labels, pool, max_train)
        if imbalance > 0 and not spec.shots and len(with_images) > 1:
            major = with_images[0]
            pool = np.concatenate([pool[ds.labels[pool] == major]] +
                                  [pool[ds.labels[pool] == c][:imbalance] for c in with_images[1:]])
        test = ds.splits["test"]
        test = _subsample(ds.labels, test[np.isin(ds.labels[test], local)], max_test)
        if len(pool) == 0:
            raise GenbaError(f"task {spec.label} has no training images: give it classes with images")
        to_global = np.full(ds.num_classes, -1, dtype=np.int64)
        for c in local:
            to_global[c] = ids[(spec.dataset, ds.classnames[c])]
        y = lambda rows: torch.from_numpy(to_global[ds.labels[rows]])
        tasks.append(Task(spec, chosen, [int(to_global[c]) for c in local], list(ds.templates),
                          decode_pixels(ds, np.sort(pool), size, cache), y(np.sort(pool)),
                          decode_pixels(ds, val, size, cache), y(val),
                          decode_pixels(ds, test, size, cache), y(test),
                          trained_ids=[int(to_global[c]) for c in with_images], dataset=ds, test_indices=test,
                          train_indices=np.sort(pool), val_indices=val))
    return tasks, names, templates
