"""Cached activations of a backbone at a cut point, per dataset split (train the rest from them).

The key records the backbone provenance, dataset fingerprint, split, cut point, input size and
transform, so a change in any of them recomputes. Stored as float16 (halves the bytes; the
trained stages run in float32 on them), written atomically by TensorCache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from genba.backbones.base import Backbone
from genba.cache import TensorCache
from genba.errors import GenbaError

ACTIVATIONS_VERSION = "1"


@dataclass
class Activations:
    x: torch.Tensor  # (N, ...) float16
    labels: torch.Tensor  # (N,)
    indices: torch.Tensor  # (N,) dataset indices

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def activation_key(backbone: Backbone, dataset, split: str, stage: str, image_size: int, transform: str) -> dict:
    return {"version": ACTIVATIONS_VERSION, "backbone": backbone.provenance, "dataset": dataset.name,
            "fingerprint": dataset.fingerprint, "split": split, "stage": stage, "size": str(image_size),
            "transform": transform}


def extract_activations(backbone: Backbone, dataset, split: str, *, stage: str | None = None, image_size: int = 224,
                        cache: TensorCache | None = None, batch_size: int = 16, progress: bool = True,
                        transform=None) -> Activations:
    """Activations after `stage` (default: the final spatial map) for every image of `split`."""
    if split not in dataset.splits:
        raise GenbaError(f"dataset '{dataset.name}' has no split '{split}': it has {', '.join(sorted(dataset.splits))}")
    stage = stage or backbone.stages[-1]
    backbone.stage_index(stage, 0)  # unknown stage -> GenbaError before any work
    indices = torch.as_tensor(dataset.splits[split], dtype=torch.long)
    if len(indices) == 0:
        raise GenbaError(f"split '{split}' of dataset '{dataset.name}' is empty: add images to it")

    @torch.inference_mode()
    def compute() -> dict[str, torch.Tensor]:
        module = backbone.module.eval()
        rows = []
        bar = tqdm(total=len(indices), desc=f"{backbone.name} {dataset.name}/{split}@{stage}", unit="img",
                   disable=not progress, leave=False)
        for start in range(0, len(indices), batch_size):
            images = [dataset.image(int(i)) for i in indices[start:start + batch_size]]
            if transform is not None:
                images = [transform.apply(im) for im in images]
            pixels = torch.stack([backbone.preprocess(im, image_size) for im in images])
            rows.append(backbone.forward_features(pixels.contiguous(memory_format=torch.channels_last), until=stage)
                        .contiguous().half())
            bar.update(len(images))
        bar.close()
        module.eval()
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)[indices]
        return {"x": torch.cat(rows), "labels": labels, "indices": indices}

    key = activation_key(backbone, dataset, split, stage, image_size, getattr(transform, "name", "none"))
    tensors = cache.get_or_compute("activations", key, compute) if cache is not None else compute()
    return Activations(tensors["x"], tensors["labels"], tensors["indices"])
