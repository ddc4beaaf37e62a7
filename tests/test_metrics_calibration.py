"""ECE (15 equal-width bins, Guo et al. 2017) and the MSP AUROC against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from genba.metrics import auroc, expected_calibration_error, max_softmax


def test_ece_by_hand_and_extremes():
    # confidences 0.95 (bin 15) x2, one right one wrong; 0.55 (bin 9) x2, both right
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    expected = 100 * (0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55))
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-4)
    one_hot = torch.eye(3)[torch.tensor([0, 1, 2])]
    assert expected_calibration_error(one_hot, torch.tensor([0, 1, 2])) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(one_hot, torch.tensor([1, 2, 0])) == pytest.approx(100.0, abs=1e-4)


def test_ece_equals_a_binned_numpy_transcription():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 7, generator=g), 1)
    labels = torch.randint(0, 7, (500,), generator=g)
    conf, pred = probs.max(1)
    conf, correct = conf.numpy(), (pred == labels).numpy()
    edges = np.linspace(0, 1, 16)
    ref = sum(((conf > lo) & (conf <= hi)).mean() * abs(correct[(conf > lo) & (conf <= hi)].mean() - conf[(conf > lo) & (conf <= hi)].mean())
              for lo, hi in zip(edges[:-1], edges[1:]) if ((conf > lo) & (conf <= hi)).any())
    assert expected_calibration_error(probs, labels) == pytest.approx(100 * ref, abs=1e-4)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.integers(0, 5, 200) / 4.0, rng.integers(0, 4, 150) / 4.0  # many ties
    ref = roc_auc_score(np.r_[np.ones(200), np.zeros(150)], np.r_[s_in, s_out])
    assert auroc(s_in, s_out) == pytest.approx(100 * ref, abs=1e-9)
    assert auroc([1.0, 2.0], [0.0]) == 100.0 and auroc([0.0], [1.0, 2.0]) == 0.0
    assert max_softmax(torch.tensor([[0.2, 0.8], [0.6, 0.4]])).tolist() == pytest.approx([0.8, 0.6])
    with pytest.raises(ValueError):
        auroc([], [1.0])
