"""The head setting: MoViT as a head over a frozen pretrained encoder's patch tokens.

Tokens: EfficientNet-Lite0's final spatial feature map (stage 'head', (1280, h, w)) at input size
`image_size` (default 96 -> 3 x 3 = 9 tokens of 1280), read from genba's activation cache
(`genba.backbones.extract_activations`, float16), flattened row-major to (h*w, 1280). The
transformer's stem is LayerNorm + Linear(1280 -> dim); the encoder is never updated.

Baselines on the same frozen features: a linear probe on the pooled vector (mean of the tokens,
the backbone's own `forward_head`), trained with the one engine, and DMN-TF (genba.methods) with
the pooled vectors as its cache space (see bench/movit.py).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genba.cache import TensorCache
from genba.errors import GenbaError
from genba.train import Objective, TensorData, TrainConfig, fit, seeded

DEFAULT_HEAD_SIZE = 96
STAGE = "head"


def input_name(backbone, image_size: int) -> str:
    """What a head-setting model reads: the backbone's provenance, cut point and input size."""
    return f"{backbone.provenance}:{STAGE}:{image_size}"


@functools.lru_cache(maxsize=2)
def backbone(spec: str):
    """The frozen encoder (loaded once per process)."""
    from genba.encoders import load_backbone

    return load_backbone(spec)


def head_tokens(dataset, split: str, backbone_spec: str, image_size: int, cache: TensorCache | None,
                progress: bool) -> tuple[torch.Tensor, str]:
    """(tokens (N, h*w, C) float16 of the split, in split order; input name)."""
    from genba.backbones import extract_activations

    bb = backbone(backbone_spec)
    acts = extract_activations(bb, dataset, split, stage=STAGE, image_size=image_size, cache=cache, progress=progress)
    return to_tokens(acts.x), input_name(bb, image_size)


def to_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h*w, C)."""
    if fmap.dim() != 4:
        raise GenbaError(f"expected a spatial feature map (N, C, h, w), got shape {tuple(fmap.shape)}")
    return fmap.flatten(2).transpose(1, 2).contiguous()


def head_inputs(dataset, train_ids: np.ndarray, backbone_spec: str, image_size: int, cache: TensorCache | None,
                progress: bool):
    """Inputs (genba.movit.run.Inputs) of the head setting: tokens of the fraction and of the test split."""
    from genba.movit.run import Inputs

    train_tokens, name = head_tokens(dataset, "train", backbone_spec, image_size, cache, progress)
    test_tokens, _ = head_tokens(dataset, "test", backbone_spec, image_size, cache, progress)
    rows = np.searchsorted(dataset.splits["train"], train_ids)  # splits are sorted; fraction ids are a subset
    bb = backbone(backbone_spec)
    return Inputs(train_tokens[torch.as_tensor(rows)], test_tokens, name,
                  dict(stem="tokens", token_dim=int(train_tokens.shape[2]), num_tokens=int(train_tokens.shape[1])),
                  {backbone_spec: bb.licence})


class LinearProbe(Objective):
    """Softmax regression on pooled frozen features: L = CE(W mean_t(z_t) + b, y)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.linear = nn.Linear(dim, num_classes)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(tokens.float().mean(1)))

    def forward(self, batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch["x"]), batch["y"])


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, num_classes: int,
                 train: TrainConfig) -> torch.Tensor:
    """Fit the probe with genba.train.fit; returns test predictions (N,)."""
    with seeded(train.seed):
        probe = LinearProbe(int(x_train.shape[2]), num_classes)
    fit(probe, TensorData(x=x_train, y=y_train.long()), train, progress=False, desc="probe")
    with torch.no_grad():
        return torch.cat([probe.logits(x_test[i:i + 1000]).argmax(1) for i in range(0, len(x_test), 1000)])
