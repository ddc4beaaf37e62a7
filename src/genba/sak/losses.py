"""Losses of SAK (Lu, Cao, Wang 2024) and of the dense tasks.

Distillation, per teacher t and level (dense map, pooled vector), on standardised teacher
features y and student predictions x (cosine along the feature axis, per cell):
    L_t = 0.9 * mean(1 - cos(x, y)) + 0.1 * SmoothL1(x, y)     (beta = 1, mean over elements)
and the distillation loss is the mean over teachers of (L_dense + L_pooled).
Tasks (the usual multi-task dense choices, e.g. MTI-Net / PASCAL-Context): semantic = cross-
entropy; boundary = binary cross-entropy with positive weight BOUNDARY_POS_WEIGHT (edges are
rare); saliency = binary cross-entropy; depth = L1. All weights 1, fixed in advance.
Semantic may be class-balanced: cross-entropy with per-class weights w_c; `median_frequency_weights`
gives w_c = median_k(f_k) / f_c over the TRAIN pixels' class frequencies f (median frequency
balancing, Eigen & Fergus 2015, ICCV), so the background (86% of the composites' pixels) does not
swamp the six object classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COSINE_WEIGHT, SMOOTH_L1_WEIGHT = 0.9, 0.1
BOUNDARY_POS_WEIGHT = 10.0


def feature_distill_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.9 (1 - cos) + 0.1 smooth-L1; pred/target (B, D, ...) with features on dim 1."""
    target = target.float()
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6)
    return COSINE_WEIGHT * (1 - cos).mean() + SMOOTH_L1_WEIGHT * F.smooth_l1_loss(pred, target)


def distill_loss(student_teachers: dict, targets: dict) -> torch.Tensor:
    """Mean over teachers of dense + pooled losses; targets[t] = (dense, pooled)."""
    losses = [feature_distill_loss(dense, targets[t][0]) + feature_distill_loss(pooled, targets[t][1])
              for t, (dense, pooled) in student_teachers.items()]
    return torch.stack(losses).mean()


def median_frequency_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """w_c = median(f) / f_c over the pixel class frequencies of `labels` (absent classes: weight 1)."""
    counts = torch.bincount(labels.flatten().long(), minlength=classes).double()
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.ones(classes, dtype=torch.float64)
    weights[present] = freq[present].median() / freq[present]
    return weights.float()


def task_loss(task: str, output: torch.Tensor, batch: dict, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one task's output (B, C, H, W) against batch[task]; class_weights: semantic CE weights."""
    label = batch[task]
    if task == "semantic":
        return F.cross_entropy(output, label.long(), weight=class_weights)
    if task == "boundary":
        return F.binary_cross_entropy_with_logits(output[:, 0], label.float(),
                                                  pos_weight=torch.tensor(BOUNDARY_POS_WEIGHT, device=output.device))
    if task == "saliency":
        return F.binary_cross_entropy_with_logits(output[:, 0], label.float())
    if task == "depth":
        return F.l1_loss(output[:, 0], label.float())
    raise KeyError(task)


def total_task_loss(outputs: dict, batch: dict, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    return torch.stack([task_loss(task, out, batch, class_weights) for task, out in outputs.items()]).sum()
