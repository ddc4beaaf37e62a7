"""Encode once, adapt many: extract a dataset split's features and cache them on disk.

The cache key records everything that determines the features: encoder provenance (name,
weights hash, options), dataset name and content fingerprint, split, and the image
transform applied before the encoder's own preprocessing (e.g. a corruption). A second run
with the same key loads the tensors and never loads the image model.

Extraction decodes and preprocesses images in DataLoader worker processes (`workers`; by default
one per spare core for splits of 256 images or more) while the encoder runs in the main process;
the batches are the same as without workers, so are the features. Under `torchrun
--nproc-per-node N` the split's batches are dealt out in N contiguous runs, each process encodes
its run, and the rows are gathered in order: every batch is the one a single process would have
encoded, and the cache entry equals the single-process one.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
import os
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from genba.cache import TensorCache
from genba.data.transforms import ImageTransform
from genba.encoders.base import ImageEncoder
from genba.errors import GenbaError

if TYPE_CHECKING:
    from genba.data import Dataset

FEATURES_VERSION = "1"


@dataclass
class Features:
    """Cached features of one dataset split."""

    image: torch.Tensor  # (N, D) joint-space embeddings, L2-normalized
    visual: torch.Tensor | None  # (N, Dv) visual features of the same pass, or None
    labels: torch.Tensor  # (N,) int64
    indices: torch.Tensor  # (N,) int64 indices into the dataset

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, rows) -> "Features":
        """Rows `rows` (positions in this split, not dataset indices)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        visual = None if self.visual is None else self.visual[rows]
        return Features(self.image[rows], visual, self.labels[rows], self.indices[rows])

    def rows_of(self, dataset_indices) -> torch.Tensor:
        """Positions in this split of the given dataset indices, in their order."""
        position = {int(i): r for r, i in enumerate(self.indices.tolist())}
        return torch.as_tensor([position[int(i)] for i in np.asarray(dataset_indices)], dtype=torch.long)


def feature_key(encoder: ImageEncoder, dataset: "Dataset", split: str, transform: ImageTransform | None) -> dict[str, str]:
    """The cache key: every input that determines the features. A reduced precision (bf16/fp16
    autocast) and a runtime other than torch (ONNX Runtime) compute other numbers, so they enter
    the key; fp32 torch on any device does not (the same function up to float rounding), which
    keeps every fp32 torch key exactly as it always was."""
    key = {
        "version": FEATURES_VERSION,
        "encoder": encoder.provenance,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "split": split,
        "transform": transform.name if transform else "none",
    }
    precision = encoder.hardware.precision
    if precision != "fp32":
        key["precision"] = precision
    if encoder.runtime != "torch":  # features of different runtimes never mix; torch keys stay as they were
        key["runtime"] = encoder.runtime
    return key


def encode_images(encoder: ImageEncoder, images: Iterable[Image.Image], *, transform: ImageTransform | None = None,
                  bar=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RGB PIL images -> (joint (N, D), visual (N, Dv) or None), encoded `encoder.batch_size` at a
    time under inference_mode; `images` may be a lazy iterable (only one batch is decoded at once).
    The live memories use it; feature extraction decodes in worker processes (encode_pixel_batches)."""
    batch_size = max(1, encoder.batch_size)
    iterator = iter(images)

    def batches():
        while batch := list(itertools.islice(iterator, batch_size)):
            if transform is not None:
                batch = [transform.apply(image) for image in batch]
            yield torch.stack([encoder.preprocess(image) for image in batch])  # (B, 3, H, W)

    return encode_pixel_batches(encoder, batches(), bar=bar)


class _Pixels(torch.utils.data.Dataset):
    """Item k: the encoder's preprocessed pixels of dataset image indices[k] (decoded in a worker)."""

    def __init__(self, encoder: ImageEncoder, dataset: "Dataset", indices, transform: ImageTransform | None):
        self.preprocess, self.dataset, self.indices, self.transform = encoder.preprocess, dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        image = self.dataset.image(int(self.indices[k]))
        return self.preprocess(self.transform.apply(image) if self.transform is not None else image)


def default_workers(n: int) -> int:
    """Decoding processes for n images: none for small splits, else one per core but one (the encoder's)."""
    return 0 if n < 256 else max(1, min(8, (os.cpu_count() or 1) - 1))


def encode_pixel_batches(encoder: ImageEncoder, batches: Iterable[torch.Tensor], *,
                         bar=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Preprocessed (B, 3, H, W) batches -> (joint (N, D), visual (N, Dv) or None) under inference_mode."""
    joint_rows, visual_rows = [], []
    with torch.inference_mode():
        for pixels in batches:
            joint, visual = encoder.encode_image_with_visual(pixels)
            joint_rows.append(joint.float())
            if visual is not None:
                visual_rows.append(visual.float())
            if bar is not None:
                bar.update(pixels.shape[0])
    if not joint_rows:
        return torch.zeros(0, encoder.embed_dim), None
    return torch.cat(joint_rows), (torch.cat(visual_rows) if visual_rows else None)


def _encode_indices(encoder: ImageEncoder, dataset: "Dataset", indices, transform, progress: bool, label: str,
                    workers: int | None = None):
    bar = tqdm(total=len(indices), desc=label, unit="img", disable=not progress, leave=False)
    workers = default_workers(len(indices)) if workers is None else workers
    loader = torch.utils.data.DataLoader(_Pixels(encoder, dataset, indices, transform), batch_size=max(1, encoder.batch_size),
                                         num_workers=workers, prefetch_factor=4 if workers else None,
                                         persistent_workers=False)
    try:
        return encode_pixel_batches(encoder, loader, bar=bar)
    finally:
        bar.close()


def _encode_sharded(encoder, dataset, indices, transform, progress, label, workers):
    """This process's contiguous run of whole batches, then every process's rows gathered in order."""
    import torch.distributed as dist

    from genba.train import distributed

    rank, world = distributed.rank_and_world()
    size = max(1, encoder.batch_size)
    batches = torch.arange(len(indices)).split(size)
    runs = [torch.cat(run) if len(run) else torch.zeros(0, dtype=torch.long) for run in _deal(batches, world)]
    mine = indices[runs[rank]]
    joint, visual = _encode_indices(encoder, dataset, mine, transform, progress and rank == 0, label, workers)
    parts: list = [None] * world
    dist.all_gather_object(parts, (joint, visual))
    joint = torch.cat([p[0] for p in parts])
    visual = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
    return joint, visual


def _deal(batches: tuple, world: int) -> list[tuple]:
    """`batches` in `world` contiguous runs of as equal a count as possible."""
    bounds = torch.tensor_split(torch.arange(len(batches)), world)
    return [tuple(batches[int(i)] for i in b) for b in bounds]


def extract_features(
    encoder: ImageEncoder,
    dataset: "Dataset",
    split: str,
    *,
    cache: TensorCache | None = None,
    transform: ImageTransform | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Features:
    """Features of `dataset`'s `split`, from the cache when present, else encoded and stored
    (`workers` decoding processes; None: default_workers; sharded across torchrun's processes)."""
    if split not in dataset.splits:
        raise GenbaError(f"dataset '{dataset.name}' has no split '{split}': it has {', '.join(sorted(dataset.splits))}")
    indices = torch.as_tensor(dataset.splits[split], dtype=torch.long)
    if len(indices) == 0:
        raise GenbaError(f"split '{split}' of dataset '{dataset.name}' is empty: add images to it")

    def compute() -> dict[str, torch.Tensor]:
        from genba.train import distributed

        label = f"{encoder.name} {dataset.name}/{split}"
        distributed.init_from_env(encoder.hardware.for_rank().distributed_backend)
        encode = _encode_sharded if distributed.rank_and_world()[1] > 1 else _encode_indices
        joint, visual = encode(encoder, dataset, indices, transform, progress, label, workers)
        tensors = {"image": joint, "labels": torch.as_tensor(dataset.labels, dtype=torch.long)[indices], "indices": indices}
        if visual is not None:
            tensors["visual"] = visual
        return tensors

    key = feature_key(encoder, dataset, split, transform)
    tensors = cache.get_or_compute("features", key, compute) if cache is not None else compute()
    return Features(tensors["image"], tensors.get("visual"), tensors["labels"], tensors["indices"])
