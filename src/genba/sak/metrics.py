"""Metrics of multi-task dense prediction (as in MTI-Net / PASCAL-Context / NYUD-v2 papers).

    mIoU      semantic: confusion matrix over the test set, IoU_c = TP / (TP + FP + FN), mean
              over the classes present (incl. background), in %.
    bF1       boundary: F1 at the FIXED threshold 0.5 on sigmoid(logit) (not odsF: no threshold
              sweep), with a 1-pixel tolerance: a predicted edge pixel is correct when a true edge
              lies within its 3x3 neighbourhood and vice versa; counts summed over the test set, in %.
    maxF      saliency: F_beta (beta^2 = 0.3) of mean precision and mean recall over images,
              maximised over 101 thresholds in [0, 1], in %.
    RMSE      depth: root mean squared error over all test pixels (lower is better).
    Delta-m   (1/T) sum_t (-1)^{l_t} (M_t - M_single,t) / M_single,t * 100, l_t = 1 when lower is
              better (Maninis et al. 2019; Vandenhende et al. 2021).
    paired    a - b per seed (same scenes, same seed for both): mean, sample std, the paired
              t-test (t = mean / (std / sqrt(n)), n - 1 degrees of freedom, two-sided p) and the
              exact sign-flip permutation p over all 2^n sign patterns (two-sided).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOWER_IS_BETTER = {"depth_rmse"}
TASK_METRIC = {"semantic": "miou", "boundary": "boundary_f1", "saliency": "maxf", "depth": "depth_rmse"}


def miou(pred: torch.Tensor, label: torch.Tensor, classes: int) -> float:
    confusion = torch.bincount(label.flatten() * classes + pred.flatten(), minlength=classes * classes)
    confusion = confusion.reshape(classes, classes).double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = confusion.sum(1) > 0
    return float((tp[present] / union[present].clamp_min(1)).mean() * 100)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x.float().unsqueeze(1), 3, 1, 1).squeeze(1) > 0


def boundary_f1(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> float:
    pred = prob >= threshold
    gt = label.bool()
    precise = (pred & _dilate(gt)).sum().item()
    recalled = (gt & _dilate(pred)).sum().item()
    p = precise / max(1, pred.sum().item())
    r = recalled / max(1, gt.sum().item())
    return 0.0 if p + r == 0 else 200 * p * r / (p + r)


def max_f(prob: torch.Tensor, label: torch.Tensor, beta2: float = 0.3, steps: int = 101) -> float:
    gt = label.bool().flatten(1)
    prob = prob.flatten(1)
    best = 0.0
    for t in torch.linspace(0, 1, steps):
        pred = prob >= t
        tp = (pred & gt).sum(1).double()
        precision = (tp / pred.sum(1).clamp_min(1)).mean()
        recall = (tp / gt.sum(1).clamp_min(1)).mean()
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall).clamp_min(1e-12)
        best = max(best, float(f))
    return best * 100


def depth_rmse(pred: torch.Tensor, label: torch.Tensor) -> float:
    return float(((pred.float() - label.float()) ** 2).mean().sqrt())


def task_metrics(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], classes: int) -> dict[str, float]:
    """outputs: task -> raw head output over the whole test set (N, C, H, W)."""
    out = {}
    if "semantic" in outputs:
        out["miou"] = miou(outputs["semantic"].argmax(1), labels["semantic"].long(), classes)
    if "boundary" in outputs:
        out["boundary_f1"] = boundary_f1(outputs["boundary"][:, 0].sigmoid(), labels["boundary"])
    if "saliency" in outputs:
        out["maxf"] = max_f(outputs["saliency"][:, 0].sigmoid(), labels["saliency"])
    if "depth" in outputs and "depth" in labels:
        out["depth_rmse"] = depth_rmse(outputs["depth"][:, 0], labels["depth"])
    return out


def delta_m(metrics: dict[str, float], single: dict[str, float]) -> float:
    """Mean signed relative change (%) over the metrics both have, sign flipped where lower is better."""
    keys = [k for k in metrics if k in single]
    if not keys:
        raise ValueError("no common metric for Delta-m")
    changes = [(-1 if k in LOWER_IS_BETTER else 1) * (metrics[k] - single[k]) / single[k] * 100 for k in keys]
    return sum(changes) / len(changes)


def paired_test(a: list[float], b: list[float]) -> dict:
    """Paired comparison of a and b over seeds (see module docstring)."""
    import itertools
    import math

    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired test needs two equally long lists of at least 2 values")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if std == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        from scipy.stats import t as student_t

        t = mean / (std / math.sqrt(n))
        p = float(2 * student_t.sf(abs(t), n - 1))
    flips = [abs(sum(s * x for s, x in zip(signs, d))) for signs in itertools.product((1, -1), repeat=n)]
    p_flip = sum(f >= abs(sum(d)) - 1e-12 for f in flips) / len(flips)
    return {"n": n, "mean": mean, "std": std, "t": t, "p_t": p, "p_sign_flip": p_flip,
            "wins": sum(x > 0 for x in d), "differences": d}
