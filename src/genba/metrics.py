"""Classification metrics that survive class imbalance, beside top-1.

    top1               = 100 * mean_i [pred_i == y_i]
    per_class_recall_c = 100 * |{i : y_i = c, pred_i = c}| / |{i : y_i = c}|   (None if class c has no test rows)
    balanced_accuracy  = mean of per_class_recall over the classes present in the test labels
    confusion[t][p]    = |{i : y_i = t, pred_i = p}|   (rows: true class, columns: predicted class)
A method that predicts the majority class for everything scores the majority share in top-1
but 100 / (number of classes present) in balanced accuracy (scikit-learn's
balanced_accuracy_score, which also averages over the classes present).

Beside accuracy (what the 2025 test-time-adaptation benchmark for VLMs, TTA-VLM, reports too):
    ECE   = 100 * sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|, conf_i = max_c p_ic, the confidences
            split into 15 equal-width bins (lower, upper] of [0, 1] (Guo et al., ICML 2017, "On
            Calibration of Modern Neural Networks"; the binning of their code and TTA-VLM's)
    AUROC = 100 * P(s_in > s_out) + 50 * P(s_in = s_out) over in- / out-of-distribution pairs, the
            Mann-Whitney statistic; with s = max softmax probability (MSP, Hendrycks & Gimpel 2017)
            it scores out-of-distribution detection (50: no better than chance).
"""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """{"top1", "balanced_accuracy", "per_class_recall", "confusion"} of (N,) predictions against (N,) labels."""
    p, y = torch.as_tensor(predictions).long(), torch.as_tensor(labels).long()
    confusion = torch.bincount(y * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)
    support = confusion.sum(1)  # (C,) test rows per true class
    recall = [None if int(n) == 0 else 100.0 * float(confusion[c, c]) / float(n) for c, n in enumerate(support)]
    present = [r for r in recall if r is not None]
    return {
        "top1": 100.0 * float((p == y).float().mean()) if len(y) else 0.0,
        "balanced_accuracy": sum(present) / len(present) if present else 0.0,
        "per_class_recall": recall,
        "confusion": confusion.tolist(),
    }


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE in percent of (N, C) class probabilities against (N,) labels, `bins` equal-width bins."""
    p = torch.as_tensor(probs).float()
    y = torch.as_tensor(labels).long()
    if len(y) == 0:
        return 0.0
    confidence, prediction = p.max(dim=1)  # (N,), (N,)
    return calibration_error(confidence, prediction == y, bins)


def calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE in percent from (N,) confidences (max probability) and (N,) correctness (pools tasks of any width)."""
    confidence, correct = torch.as_tensor(confidence).float(), torch.as_tensor(correct).float()
    if len(confidence) == 0:
        return 0.0
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1].tolist(), edges[1:].tolist()):
        inside = (confidence > lower) & (confidence <= upper)  # (N,)
        if inside.any():
            share = inside.float().mean().item()
            ece += share * abs(correct[inside].mean().item() - confidence[inside].mean().item())
    return 100.0 * ece


def auroc(scores_in, scores_out) -> float:
    """AUROC in percent of in-distribution scores (higher = more in-distribution) against
    out-of-distribution ones: the Mann-Whitney U over both counts, ties counted half."""
    s_in = np.asarray(torch.as_tensor(scores_in).double())
    s_out = np.asarray(torch.as_tensor(scores_out).double())
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError("AUROC needs at least one in- and one out-of-distribution score")
    ordered = np.sort(s_out)
    below = np.searchsorted(ordered, s_in, side="left")  # out scores < each in score
    ties = np.searchsorted(ordered, s_in, side="right") - below
    return 100.0 * float((below + 0.5 * ties).sum()) / (len(s_in) * len(s_out))


def max_softmax(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) probabilities -> (N,) maximum softmax probability, the MSP detection score."""
    return torch.as_tensor(probs).float().max(dim=1).values
