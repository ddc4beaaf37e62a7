"""The one validation rule (genba.data.splits.plan_split): shrinks with small folders, --shots all,
an error naming the split and the fix before any feature is extracted."""

from __future__ import annotations

import numpy as np
import pytest

from genba.data.splits import plan_split
from genba.data.table import Dataset
from genba.errors import GenbaError


def _dataset(per_class_train: list[int]) -> Dataset:
    labels = np.concatenate([np.full(2 * n, c) for c, n in enumerate(per_class_train)])
    train = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(per_class_train)])
    test = np.setdiff1d(np.arange(len(labels)), train)
    return Dataset("folder:/site", [f"c{i}" for i in range(len(per_class_train))], ["a {}."], labels,
                   {"train": np.sort(train), "test": test}, "f", "test", lambda i: None)


def test_auto_validation_shrinks_with_the_smallest_class():
    assert plan_split(_dataset([20, 30]), 8).val_per_class == 5  # a quarter of 20
    assert plan_split(_dataset([200, 300]), 8).val_per_class == 16  # capped at 16
    assert plan_split(_dataset([2, 9]), 1).val_per_class == 1
    plan = plan_split(_dataset([20, 30]), "all")
    assert plan.shots == 15 and plan.line() == ("training 15 / validation 5 images per class (the smallest class, "
                                                "'c0', has 20 in the train split)")
    assert plan_split(_dataset([20, 30]), "all", 2).shots == 18


def test_too_few_images_for_the_shots_names_the_split_and_the_fix():
    with pytest.raises(GenbaError, match=r"--shots 16 is more than .*'c0' has 20 images in the train split.*"
                                         r"5 go to validation, 15 are left; use --shots 15 \(or --shots all\)"):
        plan_split(_dataset([20, 30]), 16)
    with pytest.raises(GenbaError, match="validation would take 3"):
        plan_split(_dataset([3, 30]), 1, 3)
