"""Continual metrics on hand-made accuracy matrices (values worked out by hand)."""

import numpy as np
import pytest
import torch

from genba.continual import metrics
from genba.errors import GenbaError

# rows: zero-shot, after task 1, after task 2, after task 3; columns: tasks 1..3
A = np.array([
    [10.0, 20.0, 30.0],
    [80.0, 25.0, 35.0],
    [60.0, 90.0, 40.0],
    [50.0, 70.0, 95.0],
])


def test_transfer_avg_last_by_hand():
    # Transfer: task 2 -> mean(A[1][2]) = 25; task 3 -> mean(A[1][3], A[2][3]) = 37.5; mean = 31.25
    assert metrics.transfer(A) == pytest.approx(31.25)
    assert metrics.avg(A) == pytest.approx((80 + 25 + 35 + 60 + 90 + 40 + 50 + 70 + 95) / 9)
    assert metrics.last(A) == pytest.approx((50 + 70 + 95) / 3)


def test_bwt_fwt_forgetting_by_hand():
    # BWT: ((50 - 80) + (70 - 90)) / 2 = -25
    assert metrics.bwt(A) == pytest.approx(-25.0)
    # FWT: ((A[1][2] - A[0][2]) + (A[2][3] - A[0][3])) / 2 = ((25 - 20) + (40 - 30)) / 2 = 7.5
    assert metrics.fwt(A) == pytest.approx(7.5)
    # Forgetting: task 1: max(80, 60) - 50 = 30; task 2: max(90) - 70 = 20; mean 25
    assert metrics.forgetting(A) == pytest.approx(25.0)


def test_zero_shot_matrix_has_no_forgetting_and_transfer_equals_zero_shot():
    Z = np.tile([[40.0, 50.0, 60.0]], (4, 1))
    s = metrics.summary(Z)
    assert s["bwt"] == 0 and s["forgetting"] == 0 and s["fwt"] == 0
    assert s["transfer"] == pytest.approx((50 + 60) / 2)
    assert s["avg"] == pytest.approx(50.0) and s["last"] == pytest.approx(50.0)


def test_forgetting_ignores_steps_before_the_task_was_learned():
    B = np.array([[99.0, 0.0], [10.0, 0.0], [5.0, 50.0]])
    assert metrics.forgetting(B) == pytest.approx(5.0)  # 10 - 5, not 99 - 5


def test_one_task_stream_and_bad_shapes_are_refused():
    one = np.array([[10.0], [80.0]])
    assert metrics.last(one) == 80.0
    for fn in (metrics.transfer, metrics.bwt, metrics.fwt, metrics.forgetting):
        with pytest.raises(GenbaError, match="at least two tasks"):
            fn(one)
    with pytest.raises(GenbaError, match="T \\+ 1 rows"):
        metrics.avg(np.zeros((3, 3)))
    with pytest.raises(GenbaError, match="NaN"):
        metrics.avg(np.array([[np.nan], [1.0]]))


def test_linear_cka():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 8, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert metrics.linear_cka(X, 3.0 * X @ Q + 1.0) == pytest.approx(1.0)  # rotation, scale, shift
    Y = torch.randn(50, 8, generator=g)
    assert metrics.linear_cka(X, Y) < 0.5


def test_alignment():
    e = torch.eye(3)
    assert metrics.alignment(e, e) == pytest.approx(1.0)
    assert metrics.alignment(e, torch.roll(e, 1, 0)) == pytest.approx(0.0)
