"""Learner variant (b): the last stage(s) of the image trunk train too, from cached activations.

    learner = TrunkLearner(text, backbone, stage="block14", reference_acts=...)
    batch = {"x": activations after `stage` (B, C, h, w), "z": joint (B, D), "y": ..., "task": ...}

v(x) = forward_head(forward_from(acts, start=stage)) runs the stages after the cut (their weights
trainable, BatchNorm statistics frozen as in the usual fine-tuning of pretrained CNNs), then the
learner of genba.continual.learner: e = normalize(z + delta(normalize(v - c))). The trunk is
shared by every task, so updates for task B can break task A: this is where parameter
interference shows. The frozen joint z (conse's ConSE join) stays as cached; the trunk reaches
the prediction through the residual adapter. Untrained, v equals the cached visual feature of the
same backbone (the activations are float16, so up to that rounding) and delta = 0, so the
learner is the zero-shot model exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from genba.continual.learner import Learner


class TrunkLearner(Learner):
    def __init__(self, text: torch.Tensor, backbone, stage: str, reference_acts: torch.Tensor, hidden: int = 0) -> None:
        self.backbone = copy.deepcopy(backbone)
        self.stage = stage
        with torch.no_grad():
            self.backbone.module.eval()
            centre = self._pooled(reference_acts.float()).mean(0)
        super().__init__(text, centre, hidden=hidden)
        self.trunk = self.backbone.module  # registered: its trainable stages are checkpointed with the learner
        self.backbone.train_after(stage)
        self.backbone.apply_norm_policy("frozen")

    def _pooled(self, acts: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_trunk(acts, self.stage)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "backbone"):  # pretrained BatchNorm statistics, trainable stages included
            self.backbone.apply_norm_policy("frozen")
        return self

    def visual(self, batch: dict) -> torch.Tensor:
        return F.normalize(self._pooled(batch["x"].float()) - self.centre, dim=-1)
