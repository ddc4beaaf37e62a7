"""Classification metrics that survive class imbalance, beside top-1.

    top1               = 100 * mean_i [pred_i == y_i]
    per_class_recall_c = 100 * |{i : y_i = c, pred_i = c}| / |{i : y_i = c}|   (None if class c has no test rows)
    balanced_accuracy  = mean of per_class_recall over the classes present in the test labels
    confusion[t][p]    = |{i : y_i = t, pred_i = p}|   (rows: true class, columns: predicted class)
A method that predicts the majority class for everything scores the majority share in top-1
but 100 / (number of classes present) in balanced accuracy (scikit-learn's
balanced_accuracy_score, which also averages over the classes present).
"""

from __future__ import annotations

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
