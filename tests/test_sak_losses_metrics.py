"""SAK losses (0.9 cosine + 0.1 smooth-L1) and the multi-task dense metrics."""

import math

import pytest
import torch

from genba.sak.losses import distill_loss, feature_distill_loss, task_loss
from genba.sak.metrics import boundary_f1, delta_m, depth_rmse, max_f, miou, task_metrics

@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Leave torch's global RNG as found (later tests draw from it unseeded)."""
    with torch.random.fork_rng():
        yield



def test_feature_distill_loss_values():
    x = torch.randn(2, 6, 3, 3)
    assert feature_distill_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    # cos = 0 -> 0.9 * 1; smooth-L1 per element: 0.5 * 1^2 = 0.5 -> 0.1 * 0.5
    assert feature_distill_loss(a, b).item() == pytest.approx(0.9 + 0.05)
    assert feature_distill_loss(a, -a).item() == pytest.approx(0.9 * 2 + 0.1 * (1.5 + 0) / 2)
    pred = {"t": (x, x[:, :, 0, 0]), "u": (a, a)}
    target = {"t": (x, x[:, :, 0, 0]), "u": (b, b)}
    assert distill_loss(pred, target).item() == pytest.approx((0 + 2 * 0.95) / 2)


def test_task_losses_decrease_towards_the_label():
    batch = {"semantic": torch.tensor([[[1, 0], [0, 2]]]), "boundary": torch.tensor([[[1, 0], [0, 0]]]),
             "saliency": torch.tensor([[[1, 0], [0, 1]]]), "depth": torch.tensor([[[0.5, 1.0], [1.0, 0.25]]])}
    good = {"semantic": torch.nn.functional.one_hot(batch["semantic"], 3).permute(0, 3, 1, 2).float() * 10,
            "boundary": (batch["boundary"].float() * 20 - 10)[:, None], "saliency": (batch["saliency"].float() * 20 - 10)[:, None],
            "depth": batch["depth"][:, None]}
    for task in batch:
        assert task_loss(task, good[task], batch) < task_loss(task, torch.zeros_like(good[task]), batch)
    assert task_loss("depth", good["depth"], batch).item() == 0.0


def test_metrics_known_values():
    label = torch.tensor([[[0, 1], [1, 2]]])
    assert miou(label, label, 3) == pytest.approx(100.0)
    wrong = torch.tensor([[[0, 1], [1, 1]]])  # class 2 -> 1: IoU 1, 2/3, 0
    assert miou(wrong, label, 3) == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    edges = torch.zeros(1, 8, 8)
    edges[0, 4, :] = 1
    assert boundary_f1(edges, edges) == pytest.approx(100.0)
    shifted = torch.roll(edges, 1, dims=1)  # one pixel off: inside the tolerance
    assert boundary_f1(shifted, edges) == pytest.approx(100.0)
    assert boundary_f1(torch.roll(edges, 3, dims=1), edges) == 0.0
    sal = torch.zeros(2, 4, 4)
    sal[:, :2] = 1
    assert max_f(sal * 0.9, sal) == pytest.approx(100.0)
    assert depth_rmse(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5)) == pytest.approx(0.5)
    out = task_metrics({"saliency": (sal * 20 - 10)[:, None]}, {"saliency": sal}, 2)
    assert out == {"maxf": pytest.approx(100.0)}


def test_delta_m_flips_the_sign_where_lower_is_better():
    single = {"miou": 50.0, "depth_rmse": 0.2}
    assert delta_m(single, single) == 0.0
    better = {"miou": 55.0, "depth_rmse": 0.18}  # +10% and rmse -10% (better) -> +10
    assert delta_m(better, single) == pytest.approx(10.0)
    assert delta_m({"miou": 45.0, "depth_rmse": 0.22}, single) == pytest.approx(-10.0)
    assert math.isclose(delta_m({"miou": 60.0}, single), 20.0)
    with pytest.raises(ValueError):
        delta_m({"maxf": 1.0}, single)
