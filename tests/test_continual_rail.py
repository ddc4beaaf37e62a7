"""RAIL (gradient-free, recursive ridge regression fused with zero-shot) and the merge baseline."""

import pytest
import torch

from continual_helpers import make_reference, make_stream
from genba.continual.protocol import ContinualSpec, run_continual
from genba.continual.strategies.rail import RailConfig, RailHead
from genba.errors import GenbaError
from genba.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = TrainConfig(lr=1e-2, epochs=1, batch_size=32)


def test_recursive_solution_equals_joint_ridge_on_all_rows():
    g = torch.Generator().manual_seed(0)
    head = RailHead(6, RailConfig(hidden=40, gamma=0.1, batch=7))
    tasks = [(torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g), 3),
             (torch.randn(25, 6, generator=g), torch.randint(3, 5, (25,), generator=g), 5),
             (torch.randn(19, 6, generator=g), torch.randint(5, 9, (19,), generator=g), 9)]
    for f, y, known in tasks:
        head.add_rows(f, y, known)
    phi = head.expand(torch.cat([t[0] for t in tasks]))
    Y = torch.nn.functional.one_hot(torch.cat([t[1] for t in tasks]), 9).double()
    joint = torch.linalg.solve(phi.T @ phi + 0.1 * torch.eye(40, dtype=torch.float64), phi.T @ Y)
    assert head.W.shape == (40, 9) and torch.allclose(head.W, joint, atol=1e-8)  # no row was kept, same solution
    with pytest.raises(GenbaError, match="shrink"):
        head.add_rows(tasks[0][0], tasks[0][1], 3)


def test_fusion_keeps_zero_shot_outside_learned_domains():
    head = RailHead(4, RailConfig(hidden=16, fusion_weight=0.8))
    g = torch.Generator().manual_seed(1)
    head.add_rows(torch.randn(20, 4, generator=g), torch.randint(0, 2, (20,), generator=g), 2)  # classes 0, 1 learned
    zs = torch.tensor([[5.0, 0.0, 0.0, 1.0], [0.0, 0.0, 4.0, 1.0]])  # row 0 -> learned class 0, row 1 -> class 2
    v = torch.randn(2, 4, generator=g)
    out = head(v, None, zs, torch.arange(4))
    assert torch.equal(out[1], zs[1])  # an unseen domain keeps the zero-shot logits
    p0 = zs[0].softmax(-1)
    ridge = (head.expand(v[:1]) @ head.W).float()[0]
    expected = 0.2 * p0 + 0.8 * torch.cat([ridge, torch.zeros(2)])
    assert torch.allclose(out[0], expected.clamp_min(1e-8).log(), atol=1e-5)


def test_rail_and_merge_run_the_protocol_with_calibration_and_cost():
    stream, reference = make_stream(), make_reference()
    zs = run_continual(stream, reference, ContinualSpec(method="zeroshot", settings=("mtil", "xtail"), train=FAST))
    rail = run_continual(stream, reference, ContinualSpec(method="rail", settings=("mtil", "xtail"), train=FAST,
                                                          hyperparameters={"hidden": 64}))
    assert rail["cost"]["trainable_parameters"] == 0 and rail["cost"]["extra_bytes"] > 64 * 64 * 8
    for s in ("mtil", "xtail"):
        m = rail["settings"][s]["metrics"]
        assert 0 <= m["ece"] <= 100 and m["ms_per_image"] > 0
    # a task not learned yet keeps the zero-shot accuracy in MTIL (its classes are never "learned")
    A, Z = rail["settings"]["mtil"]["accuracy_matrix"], zs["settings"]["mtil"]["accuracy_matrix"]
    assert A[1][1:] == Z[1][1:] and A[1][0] > Z[1][0]  # the first task is learned by the ridge head
    merge = run_continual(stream, reference, ContinualSpec(method="merge", settings=("mtil",), train=FAST))
    assert merge["cost"]["extra_bytes"] > 0 and merge["cost"]["learn_ms_per_image"] > 0
    with pytest.raises(GenbaError, match="fusion_weight"):
        run_continual(stream, reference, ContinualSpec(method="rail", hyperparameters={"fusion_weight": 2.0}))
