"""Training MoViT (and its memory-free twin) through genba's one engine, `genba.train.fit`.

The Objective is cross-entropy of the transformer's logits, L = -1/B sum_i log softmax(f(x_i))_{y_i},
on images randomly shifted by up to `shift` pixels (zero fill; drawn from the engine's per-step
seed, so resumed runs replay them). The memory is written inside the forward pass (see
memory.py), so no Callback is needed; it lives in the model's buffers, which the engine's
checkpoints and best-state restore carry. After `fit`, the memory is summarised into prototypes.

Budget, the same for MoViT and the memory-free ViT at one fraction: `steps` optimiser steps, by
default 20 epochs clamped to [100, 200] steps (`step_budget`); epochs = ceil(steps / batches per
epoch). Small fractions thus get many epochs, the full split a few (fixed in advance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genba.device import module_device, to_device
from genba.train import Objective, TensorData, TrainConfig, TrainResult, fit, seeded
from genba.movit.vit import MoViT, MoViTConfig

# Fixed in advance: AdamW with decoupled decay, 10% warmup, cosine, clipping. lr 3e-3 (over 1e-3) was
# picked once during development on train images outside the fraction (digits 10%, fashion-mnist 3%,
# seed 0; ViT and MoViT both better), never on test; everything else is a common ViT default.
DEFAULT_TRAIN = dict(lr=3e-3, batch_size=64, weight_decay=0.05, warmup=0.1, min_lr=1e-5, clip_norm=1.0)
BUDGET_EPOCHS, MIN_STEPS, MAX_STEPS = 20, 100, 200


def step_budget(n: int, batch_size: int = DEFAULT_TRAIN["batch_size"], epochs: int = BUDGET_EPOCHS,
                lo: int = MIN_STEPS, hi: int = MAX_STEPS) -> int:
    """Optimiser steps of a run on n training images: epochs x batches per epoch, clamped to [lo, hi]."""
    return min(hi, max(lo, epochs * math.ceil(n / min(batch_size, n))))


def random_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Each image moved by (dy, dx) ~ U{-shift..shift}^2, zero fill: (B, C, H, W) -> same shape."""
    if shift <= 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    off = torch.randint(0, 2 * shift + 1, (B, 2))
    return torch.stack([padded[i, :, off[i, 0]:off[i, 0] + H, off[i, 1]:off[i, 1] + W] for i in range(B)])


class MoViTObjective(Objective):
    """Cross-entropy of MoViT; validate() = accuracy on a validation split carved from the fraction."""

    def __init__(self, model: MoViT, shift: int = 2, val: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        self.shift = shift if model.cfg.stem == "patch" else 0
        self.val = val

    def forward(self, batch) -> torch.Tensor:
        x = random_shift(batch["x"], self.shift)
        return F.cross_entropy(self.model(x, ids=batch["ids"]), batch["y"])

    def validate(self) -> float | None:
        if self.val is None:
            return None
        x, y = to_device(self.val, module_device(self))  # the engine may have moved the model
        return float((self.model.predict_logits(x).argmax(1) == y).float().mean())


def train_config(n: int, steps: int, seed: int, overrides: dict | None = None) -> TrainConfig:
    """The run's TrainConfig: DEFAULT_TRAIN, epochs from the step budget, then user overrides."""
    cfg = TrainConfig(**DEFAULT_TRAIN, seed=seed, epochs=1)
    batches = math.ceil(n / min(cfg.batch_size, n))
    cfg = cfg.replace(epochs=max(1, math.ceil(steps / batches)))
    return cfg.replace(**overrides) if overrides else cfg


@dataclass
class Trained:
    model: MoViT
    result: TrainResult
    train_seconds: float
    summarise_seconds: float


def train_movit(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, model_cfg: MoViTConfig, train: TrainConfig, *,
                val: tuple[torch.Tensor, torch.Tensor] | None = None, checkpoint_dir=None, resume: bool = False,
                progress: bool = False) -> Trained:
    """Build MoViT with the run's seed, fit it with the engine, summarise its memory."""
    import time

    with seeded(train.seed):
        model = MoViT(model_cfg)
    objective = MoViTObjective(model, val=val)
    result = fit(objective, TensorData(x=x, y=y.long(), ids=ids.long()), train, checkpoint_dir=checkpoint_dir,
                 resume=resume, progress=progress, desc="movit" if model_cfg.memory else "vit")
    t0 = time.perf_counter()
    if model.memories:
        model.summarise(seed=train.seed)
        model.use_prototypes(True)
    return Trained(model, result, result.seconds, time.perf_counter() - t0)


def accuracy(model: MoViT, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict_logits(x).argmax(1) == y).float().mean())
