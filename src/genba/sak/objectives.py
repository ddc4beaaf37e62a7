"""The SAK Objectives for genba.train.fit (no other loop exists).

Stage 1 (distil): loss = distillation loss over every teacher (losses.distill_loss).
Stage 2 (multi-task): loss = sum of task losses + distill_weight * distillation loss (kept, as
in SAK). Teacher heads (the oracle) and the frozen-stem "stage 1 only" ablation use the same
class with their own inputs / frozen parameters. validate() = minus the same loss on the
validation scenes (higher is better), which picks the best epoch.
Parameter groups: the adapter scales s (scalars that start at 0) learn at ADAPTER_SCALE_LR_SCALE
times the base lr without weight decay, so that a path can leave the identity within a few
hundred steps; everything else uses the TrainConfig as is. (Fixed before the 3-seed benchmark,
after a first run in which the paths stayed at the identity and SAK equalled its no-router ablation.)
"""

from __future__ import annotations

import torch

from genba.device import module_device, to_device
from genba.sak.losses import distill_loss, total_task_loss
from genba.train import Objective

ADAPTER_SCALE_LR_SCALE = 10.0


def teacher_batch(batch: dict, teachers: list[str]) -> dict:
    return {t: (batch[f"{t}/dense"].float(), batch[f"{t}/pooled"].float()) for t in teachers}


class SAKObjective(Objective):
    """model: SAKStudent (input = images, or with a frozen stem its cached level maps, the batch
    keys model.input_keys) or TeacherHeadModel (input = batch[input_key]). class_weights: semantic
    cross-entropy weights (None = plain cross-entropy)."""

    def __init__(self, model: torch.nn.Module, teachers: list[str], tasks: list[str], distill_weight: float,
                 val: dict | None = None, input_key: str = "image", eval_batch: int = 128,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model, self.teachers, self.tasks = model, list(teachers), list(tasks)
        self.distill_weight, self.input_key, self.eval_batch = float(distill_weight), input_key, eval_batch
        self._val = val
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float(), persistent=False)

    def _outputs(self, batch: dict) -> dict:
        if self.input_key == "image":
            keys = getattr(self.model, "input_keys", None)
            x = [batch[k] for k in keys] if keys else batch["image"]
            return self.model(x, with_teachers=self.distill_weight > 0, tasks=self.tasks)
        return self.model(batch[self.input_key])

    def forward(self, batch: dict):
        out = self._outputs(batch)
        loss = torch.zeros(())
        logs = {}
        if self.tasks:
            task_part = total_task_loss({t: out["tasks"][t] for t in self.tasks}, batch, self.class_weights)
            loss = loss + task_part
            logs["task"] = float(task_part.detach())
        if self.distill_weight > 0 and self.teachers:
            kd = distill_loss(out["teachers"], teacher_batch(batch, self.teachers))
            loss = loss + self.distill_weight * kd
            logs["distill"] = float(kd.detach())
        return loss, logs

    def param_groups(self) -> list[dict]:
        scales, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (scales if name.startswith("paths.") and name.endswith(".scale") else rest).append(p)
        groups = [{"params": rest}]
        if scales:
            groups.append({"params": scales, "lr_scale": ADAPTER_SCALE_LR_SCALE, "weight_decay": 0.0})
        return groups

    def validate(self) -> float | None:
        if self._val is None:
            return None
        n = next(iter(self._val.values())).shape[0]
        total = 0.0
        for start in range(0, n, self.eval_batch):
            part = to_device({k: v[start:start + self.eval_batch] for k, v in self._val.items()}, module_device(self))
            total += float(self.forward(part)[0].detach()) * len(next(iter(part.values())))
        return -total / n
