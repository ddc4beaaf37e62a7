"""The text-free prototype classifier: class means of labelled features, and its temperature.

    protos = class_prototypes(x, y, C)            # (C, D) = normalize(mean of class c's unit rows)
    T = calibrate_temperature(x_val @ protos.T, y_val)   # NLL-minimising logit scale on validation
    probs = softmax(T * cos(q, protos))

The prototypes stand in for a text classifier wherever an encoder has no text tower, or a
source classifier is wanted (the shift scenario): any method's `fit(text_classifier=protos)`.
"""

from __future__ import annotations

import torch

from genba.errors import GenbaError
from genba.tensors import l2_normalize


def class_prototypes(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D): normalize(mean of class c's rows of x); every class needs at least one row."""
    counts = torch.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise GenbaError(f"classes {missing} have no labelled features: give every class at least one image")
    return l2_normalize(torch.stack([x[y == c].mean(0) for c in range(num_classes)]))


def calibrate_temperature(cos: torch.Tensor, y: torch.Tensor, low: float = 1.0, high: float = 100.0,
                          points: int = 41) -> float:
    """Temperature scaling (Guo et al. 2017): the logit scale T on a log grid in [low, high]
    minimising the NLL of softmax(T cos) on labelled (validation) rows."""
    grid = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), points)
    nll = torch.stack([torch.nn.functional.cross_entropy(t * cos, y) for t in grid])
    return round(float(grid[int(nll.argmin())]), 3)
