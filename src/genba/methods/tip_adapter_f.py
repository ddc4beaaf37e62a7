"""Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned on the few-shot set.

The keys K (N, D), initialised from the cache, become parameters; values stay one-hot.
Training minimises cross-entropy of the Tip-Adapter logits on the support set with AdamW
(eps 1e-4, torch's default weight decay 0.01) and a cosine schedule, as the reference code
does, through genba's one training engine (`train` holds lr, epochs, batch size, seed; set
them with `--set train.lr=...`). Each step a support image contributes one of its views (the
reference re-augments each epoch). The reference code keeps the epoch with the best TEST
accuracy; genba keeps the last epoch, or the best on `val` if given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import check_labels
from genba.methods.config import non_negative, positive
from genba.methods.registry import register_method
from genba.methods.tip_adapter import TipAdapter
from genba.methods.training import SupportData, check_train
from genba.device import CPU
from genba.train import Objective, TrainConfig, fit


def _paper_training() -> TrainConfig:
    return TrainConfig(lr=1e-3, epochs=20, batch_size=256, eps=1e-4, weight_decay=0.01)


@dataclass
class TipAdapterFConfig:
    alpha: float = 1.0
    """alpha, residual ratio of the cache logits."""
    beta: float = 5.5
    """beta, sharpness of the affinities."""
    scale: float = 100.0
    """CLIP's logit scale for the text logits."""
    train: TrainConfig = field(default_factory=_paper_training)
    """Training settings (paper: lr 0.001, 20 epochs; reference code: batch 256)."""

    def __post_init__(self) -> None:
        non_negative(self, "alpha")
        positive(self, "beta", "scale")
        check_train(self)


class CacheKeysObjective(Objective):
    """Cross-entropy of Tip-Adapter's logits with learnable keys, one random view per image."""

    def __init__(self, method: "TipAdapterF", support: SupportData, val) -> None:
        super().__init__()
        self.method, self.support, self.val = method, support, val
        self.keys = torch.nn.Parameter(method.keys.clone())  # (N, Dc)

    def forward(self, batch) -> torch.Tensor:
        sj, sc, y = self.support.one_view(batch["i"])
        return torch.nn.functional.cross_entropy(self.method.logits(sj, sc, self.keys), y)

    def validate(self) -> float | None:
        if self.val is None:
            return None
        vj, vc, vy = self.val
        return (self.method.logits(vj[:, 0], vc[:, 0], self.keys).argmax(1) == vy).float().mean().item()


@register_method("tip-adapter-f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter with learnable cache keys."""

    config_cls = TipAdapterFConfig

    def _train(self, sj, sc, y, val) -> None:
        checked_val = None
        if val is not None:
            vj, vc, vspace = self._split(val[0], self.text.shape[1], "validation features")
            if vspace != self.space:
                raise GenbaError(f"validation features are in the {vspace} space, the support in {self.space}")
            checked_val = (vj, vc, check_labels(val[1], len(val[0]), self.num_classes, "validation labels"))
        support = SupportData(sj, sc, y)
        objective = CacheKeysObjective(self, support, checked_val)
        # few-shot support rows: trained on the CPU whatever --device says (the method's tensors live there)
        fit(objective, support.rows(), self.config.train, progress=False, desc="tip-adapter-f", hardware=CPU)
        self.keys = objective.keys.detach()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys} if getattr(self, "keys", None) is not None else {}

    def _load_state(self, state) -> None:
        self.keys = state["keys"].clone().float()
