"""Each continual strategy on a tiny synthetic stream: its loss term, its hooks, the full protocol."""

import copy

import pytest
import torch

from continual_helpers import make_reference, make_stream
from genba.continual.protocol import ContinualSpec, make_learner, run_continual
from genba.continual.strategies import make_strategy, strategy_names
from genba.continual.strategies.lwf import distillation
from genba.continual.strategies.regularizers import QuadraticPenalty, diagonal_fisher
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig

FAST = TrainConfig(lr=1e-2, epochs=1, batch_size=32)


@pytest.fixture
def setup(one_thread):
    stream = make_stream()
    learner = make_learner(stream, make_reference())
    learner.set_known(2)
    data = TensorData(**stream.tasks[0].batch(stream.tasks[0].train, 0))
    return stream, learner, data


def _move(learner, value=0.1):
    with torch.no_grad():
        learner.delta.out.weight.add_(value)


def test_every_method_runs_the_protocol_and_zero_shot_row_is_shared():
    stream, reference = make_stream(), make_reference()
    rows0 = None
    for name in strategy_names():
        result = run_continual(stream, reference, ContinualSpec(method=name, settings=("mtil", "xtail"), train=FAST))
        for setting in ("mtil", "xtail"):
            A = result["settings"][setting]["accuracy_matrix"]
            assert len(A) == 4 and all(len(r) == 3 for r in A)
            m = result["settings"][setting]["metrics"]
            assert set(m) >= {"transfer", "avg", "last", "bwt", "fwt", "forgetting", "control_before", "control_after"}
        first = [result["settings"][s]["accuracy_matrix"][0] for s in ("mtil", "xtail")]
        rows0 = rows0 or first
        assert first == rows0, name  # every method starts from the same zero-shot model
        if name in ("zeroshot", "memory"):
            assert result["cost"]["trainable_parameters"] == 0
        if name in ("zeroshot", "task-adapters"):  # nothing shared is trained: the control is untouched
            m = result["settings"]["mtil"]["metrics"]
            assert m["control_after"] == m["control_before"]


def test_finetune_forgets_and_task_adapters_do_not():
    stream, reference = make_stream(), make_reference()
    train = TrainConfig(lr=3e-2, epochs=5, batch_size=16)
    ft = run_continual(stream, reference, ContinualSpec(method="finetune", settings=("xtail",), train=train))
    ta = run_continual(stream, reference, ContinualSpec(method="task-adapters", settings=("mtil",), train=train))
    assert ft["settings"]["xtail"]["metrics"]["forgetting"] > 0  # the metric sees the failure mode
    assert ta["settings"]["mtil"]["metrics"]["bwt"] == 0.0 and ta["settings"]["mtil"]["metrics"]["forgetting"] == 0.0


def test_quadratic_penalty_and_l2_anchor(setup):
    _, learner, _ = setup
    l2 = make_strategy("l2", weight=2.0)
    l2.begin_task(learner, 0)
    (cb,) = l2.callbacks(learner)
    assert cb.penalty().item() == 0.0
    _move(learner, 0.1)
    n = learner.delta.out.weight.numel()
    assert cb.penalty().item() == pytest.approx(0.5 * 2.0 * n * 0.01, rel=1e-4)


def test_ewc_fisher_is_positive_and_penalises_moves(setup):
    _, learner, data = setup
    fisher = diagonal_fisher(learner, data, batch_size=8)
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    ewc = make_strategy("ewc", weight=10.0)
    assert ewc.callbacks(learner) == []  # nothing to protect before the first task ends
    ewc.end_task(learner, data, 0)
    (cb,) = ewc.callbacks(learner)
    assert cb.penalty().item() == 0.0
    _move(learner)
    expected = 0.5 * 10.0 * sum((ewc.fisher[k] * 0.01).sum() for k in ewc.fisher if k == "delta.out.weight")
    assert cb.penalty().item() == pytest.approx(float(expected), rel=1e-4)
    assert isinstance(cb, QuadraticPenalty) and ewc.extra_bytes() > 0


def test_lwf_distillation_is_zero_for_the_same_model_and_positive_after_a_move(setup):
    _, learner, data = setup
    lwf = make_strategy("lwf", weight=1.0, temperature=2.0)
    lwf.end_task(learner, data, 0)
    learner.set_known(5)
    batch = data.take(torch.arange(8))
    (cb,) = lwf.callbacks(learner)
    base = torch.tensor(0.0)
    assert cb.before_backward(None, batch, base).item() == pytest.approx(0.0, abs=1e-6)
    _move(learner, 0.05)
    assert cb.before_backward(None, batch, base).item() > 0
    x = torch.randn(4, 3)
    assert distillation(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_zscl_reference_distillation_and_weight_average(setup):
    _, learner, _ = setup
    zscl = make_strategy("zscl", ref_batch=16, average_every=1)
    zscl.begin_task(learner, 0)
    distil, average = zscl.callbacks(learner)
    assert distil.before_backward(None, None, torch.tensor(0.0)).item() == pytest.approx(0.0, abs=1e-5)
    _move(learner, 0.2)
    assert distil.before_backward(None, None, torch.tensor(0.0)).item() > 0
    engine = type("E", (), {"step": 1})()
    average.after_step(engine)  # average of theta0 (0) and theta (0.2): 0.1
    average.on_fit_end(engine)
    assert torch.allclose(learner.delta.out.weight, torch.full_like(learner.delta.out.weight, 0.1))


def test_replay_mixes_buffer_rows_of_earlier_tasks_only(setup, tmp_path):
    stream, learner, data = setup
    replay = make_strategy("replay", buffer_size=10, path=str(tmp_path / "buf.safetensors"))
    assert replay.task_data(data, 0) is data
    replay.end_task(learner, data, 0)
    assert len(replay.buffer) == 10 and (tmp_path / "buf.safetensors").exists()
    second = TensorData(**stream.tasks[1].batch(stream.tasks[1].train, 1))
    mixed = replay.task_data(second, 1)
    assert len(mixed) == len(second) + 10
    replay.end_task(learner, second, 1)
    # a restarted run reads the buffer back, and resuming task 1 rewinds it to its state after task 0
    again = make_strategy("replay", buffer_size=10, path=str(tmp_path / "buf.safetensors"))
    assert again.buffer.tasks_done == 2 and torch.equal(again.buffer.rows["x"], replay.buffer.rows["x"])
    assert torch.equal(again.task_data(second, 1).take(torch.arange(len(mixed)))["x"],
                       mixed.take(torch.arange(len(mixed)))["x"])
    again.end_task(learner, second, 1)
    assert again.buffer.seen == replay.buffer.seen and torch.equal(again.buffer.rows["x"], replay.buffer.rows["x"])


def test_memory_grows_by_shots_per_class(setup):
    stream, learner, data = setup
    memory = make_strategy("memory", shots=3)
    added = memory.begin_task(learner, 0)
    assert learner.cache is None and set(added) == {"cache"}  # returned for the loop to install, not assigned
    learner.install(added)
    memory.end_task(learner, data, 0)
    assert learner.cache.keys.shape[0] == 2 * 3
    before = learner.cache.nbytes
    memory.end_task(learner, TensorData(**stream.tasks[1].batch(stream.tasks[1].train, 1)), 1)
    assert learner.cache.keys.shape[0] == 5 * 3 and learner.cache.nbytes > before


def test_joint_restarts_from_the_initial_model_on_all_tasks_so_far(setup):
    stream, learner, data = setup
    joint = make_strategy("joint")
    joint.begin_task(learner, 0)
    initial = copy.deepcopy(learner.state_dict())
    joint.end_task(learner, data, 0)
    _move(learner)
    joint.begin_task(learner, 1)
    assert all(torch.equal(initial[k], v) for k, v in learner.state_dict().items())
    second = TensorData(**stream.tasks[1].batch(stream.tasks[1].train, 1))
    assert len(joint.task_data(second, 1)) == len(data) + len(second)


def test_unknown_method_and_hyperparameter():
    with pytest.raises(GenbaError, match="unknown continual method 'nope'; choose one of: .*replay"):
        make_strategy("nope")
    with pytest.raises(GenbaError, match="unknown hyperparameter.*buffer_sz.*valid: buffer_size"):
        make_strategy("replay", buffer_sz=3)
    with pytest.raises(GenbaError, match="bad hyperparameter.*buffer_size must be > 0"):
        make_strategy("replay", buffer_size=0)
