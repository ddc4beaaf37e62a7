"""Encode once, adapt many: extract a dataset split's features and cache them on disk.

The cache key records everything that determines the features: encoder provenance (name,
weights hash, options), dataset name and content fingerprint, split, and the image
transform applied before the encoder's own preprocessing (e.g. a corruption). A second run
with the same key loads the tensors and never loads the image model.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
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
    The one batched encoding loop of genba: feature extraction and the live memories both use it."""
    joint_rows, visual_rows = [], []
    batch_size = max(1, encoder.batch_size)
    iterator = iter(images)
    with torch.inference_mode():
        while batch := list(itertools.islice(iterator, batch_size)):
            if transform is not None:
                batch = [transform.apply(image) for image in batch]
            pixels = torch.stack([encoder.preprocess(image) for image in batch])  # (B, 3, H, W)
            joint, visual = encoder.encode_image_with_visual(pixels)
            joint_rows.append(joint.float())
            if visual is not None:
                visual_rows.append(visual.float())
            if bar is not None:
                bar.update(len(batch))
    if not joint_rows:
        return torch.zeros(0, encoder.embed_dim), None
    return torch.cat(joint_rows), (torch.cat(visual_rows) if visual_rows else None)


def _encode_indices(encoder: ImageEncoder, dataset: "Dataset", indices, transform, progress: bool, label: str):
    bar = tqdm(total=len(indices), desc=label, unit="img", disable=not progress, leave=False)
    try:
        return encode_images(encoder, (dataset.image(int(i)) for i in indices), transform=transform, bar=bar)
    finally:
        bar.close()


def extract_features(
    encoder: ImageEncoder,
    dataset: "Dataset",
    split: str,
    *,
    cache: TensorCache | None = None,
    transform: ImageTransform | None = None,
    progress: bool = True,
) -> Features:
    """Features of `dataset`'s `split`, from the cache when present, else encoded and stored."""
    if split not in dataset.splits:
        raise GenbaError(f"dataset '{dataset.name}' has no split '{split}': it has {', '.join(sorted(dataset.splits))}")
    indices = torch.as_tensor(dataset.splits[split], dtype=torch.long)
    if len(indices) == 0:
        raise GenbaError(f"split '{split}' of dataset '{dataset.name}' is empty: add images to it")

    def compute() -> dict[str, torch.Tensor]:
        label = f"{encoder.name} {dataset.name}/{split}"
        joint, visual = _encode_indices(encoder, dataset, indices, transform, progress, label)
        tensors = {"image": joint, "labels": torch.as_tensor(dataset.labels, dtype=torch.long)[indices], "indices": indices}
        if visual is not None:
            tensors["visual"] = visual
        return tensors

    key = feature_key(encoder, dataset, split, transform)
    tensors = cache.get_or_compute("features", key, compute) if cache is not None else compute()
    return Features(tensors["image"], tensors.get("visual"), tensors["labels"], tensors["indices"])
