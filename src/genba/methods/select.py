"""Hyperparameter selection on a validation split: the honest replacement for test-set search.

Every combination of a grid is fit on the support set and scored by top-1 on validation
features; the best (first in grid order on ties) is returned with the whole table. The
function never sees test data; callers record `selected_on="val"` with the chosen values.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

import torch

from genba.errors import GenbaError
from genba.methods.base import Feats
from genba.methods.registry import get_method, make_config


def grid_search(points: Iterable[dict], score: Callable[[dict], float]) -> tuple[dict, list[dict]]:
    """The one validation selection of genba (few-shot methods here, the continual protocol's
    first-task lr, CVM's first-task loss): score(point) for every grid point in order, computed on
    a validation split only; returns (the best point, first in grid order on ties; the table of
    points with their "val_top1")."""
    table = [{**point, "val_top1": score(point)} for point in points]
    if not table:
        raise GenbaError("the selection grid is empty")
    best = max(range(len(table)), key=lambda i: table[i]["val_top1"])  # max keeps the first on ties
    return {k: v for k, v in table[best].items() if k != "val_top1"}, table


def select_on_val(method_name: str, grid: dict[str, list], fit_args: dict, val_feats: Feats, val_labels, *,
                  base: dict | None = None, order=None) -> tuple[object, list[dict]]:
    """Grid search on validation.

    Args:
        method_name: registered method.
        grid: hyperparameter -> candidate values, e.g. {"alpha": [1, 10], "beta": [1, 5.5]}.
        fit_args: keyword arguments of `Method.fit` (text_classifier, support, labels).
        val_feats: validation features (the test-time methods stream through them in `order`).
        val_labels: (N,) validation labels.
        base: fixed overrides applied under every grid point.
        order: stream order of the validation queries (None: as given).

    Returns:
        (best config, table): one dict per grid point with its values and "val_top1" (percent).
    """
    cls = get_method(method_name)
    if not grid or any(not isinstance(v, (list, tuple)) or not v for v in grid.values()):
        raise GenbaError("grid must map each hyperparameter to a non-empty list of values")
    make_config(method_name, {**(base or {}), **{k: v[0] for k, v in grid.items()}})  # keys checked first
    y = torch.as_tensor(val_labels).long()

    def score(point: dict) -> float:
        method = cls(make_config(method_name, {**(base or {}), **point}))
        method.fit(**fit_args)
        return 100.0 * (method.predict_stream(val_feats, order).argmax(1) == y).float().mean().item()

    best, table = grid_search((dict(zip(grid, values)) for values in itertools.product(*grid.values())), score)
    return make_config(method_name, {**(base or {}), **best}), table
