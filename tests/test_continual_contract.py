"""The strategy <-> learner contract: a strategy x learner matrix, and seeds that reach every draw.

Every registered strategy is run on every learner kind that provides what it `requires`
(two tasks through genba.continual.loop.run_tasks), and refused with a clear GenbaError by
every one that does not. No strategy assigns into a learner: what it adds comes back from
begin_task and the learner installs it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from continual_helpers import make_reference, make_stream
from cvm_helpers import tiny_objective
from genba.continual.learner import Learner
from genba.continual.loop import TaskStep, run_tasks
from genba.continual.objective import CAPABILITIES
from genba.continual.protocol import make_learner, task_steps
from genba.continual.strategies import STRATEGIES_REGISTRY, make_strategy, strategy_names
from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.objective import StreamObjective
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig

FAST = TrainConfig(lr=1e-2, epochs=1, batch_size=8)


def _features_learner():
    stream = make_stream(sizes=(2, 2))
    learner = make_learner(stream, make_reference())
    return learner, task_steps(learner, stream)


def _cvm_objective():
    bank = ConceptBank.build(["a", "b", "c", "d"], ["{}"], TextEmbedder("tiny"))
    objective = tiny_objective(bank)
    g = torch.Generator().manual_seed(0)
    steps = []
    for t in range(2):
        x = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8, generator=g)
        y = torch.tensor([2 * t, 2 * t + 1] * 4)
        steps.append(TaskStep(f"t{t}", TensorData(x=x, y=y), lambda t=t: objective.set_known(2 * t + 2)))
    return objective, steps


LEARNERS = {"features": _features_learner, "cvm": _cvm_objective}


def _slots(objective) -> dict:
    """What a strategy could replace on the objective: its submodules and its slot attributes."""
    return {**{k: id(v) for k, v in objective._modules.items()},
            **{s: id(getattr(objective, s, None)) for s in getattr(objective, "slots", ())}}


def test_capabilities_are_declared_from_one_vocabulary():
    from genba.continual.peft_lora import LoraCLIPLearner
    from genba.continual.trunk import TrunkLearner

    for cls in (Learner, TrunkLearner, LoraCLIPLearner, StreamObjective):
        assert cls.provides <= set(CAPABILITIES) and "logits" in cls.provides, cls
        assert set(cls.slots) <= cls.provides, cls
    for name in strategy_names():
        assert STRATEGIES_REGISTRY.get(name).requires <= set(CAPABILITIES), name


@pytest.mark.parametrize("kind", sorted(LEARNERS))
@pytest.mark.parametrize("name", strategy_names())
def test_strategy_x_learner(name, kind, one_thread):
    objective, steps = LEARNERS[kind]()
    if name not in strategy_names(objective):
        with pytest.raises(GenbaError, match=f"method '{name}' needs a learner with .*Methods that work with"):
            make_strategy(name, learner=objective)
        return
    strategy = make_strategy(name, learner=objective, seed=3)
    for t, step in enumerate(steps):  # begin_task alone: nothing may be assigned into the objective
        step.enter()
        before = _slots(objective)
        added = strategy.begin_task(objective, t) or {}
        assert _slots(objective) == before, f"{name} assigned into the objective instead of returning {set(added)}"
        assert set(added) <= set(objective.slots) and all(isinstance(m, nn.Module) for m in added.values())
        objective.install(added)
        strategy.end_task(objective, step.data, t)
    objective, steps = LEARNERS[kind]()  # and the whole loop, with an evaluation after every task
    strategy = make_strategy(name, learner=objective, seed=3)
    records, rows = run_tasks(objective, steps, strategy, FAST,
                              evaluate=lambda: sum(float(p.detach().abs().sum()) for p in objective.parameters()))
    assert len(records) == 2 and len(rows) == 3
    assert all((r.fit is not None) == strategy.trains for r in records)


def test_lora_learner_refuses_methods_that_need_a_cache_or_a_delta():
    from genba.continual.peft_lora import LoraCLIPLearner

    assert "memory" not in strategy_names(LoraCLIPLearner) and "moe-adapters" not in strategy_names(LoraCLIPLearner)
    with pytest.raises(GenbaError, match="method 'memory' needs a learner with cache"):
        make_strategy("memory", learner=LoraCLIPLearner)


def _reservoir(seed: int) -> torch.Tensor:
    stream = make_stream(sizes=(2, 2))
    learner = make_learner(stream, make_reference())
    replay = make_strategy("replay", seed=seed, buffer_size=5)
    for t, step in enumerate(task_steps(learner, stream)):
        replay.end_task(learner, step.data, t)
    return replay.buffer.rows["x"]


def _shots(seed: int) -> torch.Tensor:
    stream = make_stream(sizes=(2, 2))
    learner = make_learner(stream, make_reference())
    memory = make_strategy("memory", seed=seed, shots=2)
    for t, step in enumerate(task_steps(learner, stream)):
        learner.install(memory.begin_task(learner, t))
        memory.end_task(learner, step.data, t)
    return learner.cache.keys


@pytest.mark.parametrize("draw", [_reservoir, _shots], ids=["replay-reservoir", "memory-shots"])
def test_the_runs_seed_reaches_the_strategys_draws(draw):
    assert torch.equal(draw(0), draw(0))          # the same seed: the same rows
    assert not torch.equal(draw(0), draw(1))      # another seed: other rows (seeds 0-4 used to share one)


def test_run_continual_passes_its_seed_to_the_strategy():
    from genba.continual.protocol import ContinualSpec, run_continual

    stream, reference = make_stream(sizes=(2, 2)), make_reference()
    spec = lambda seed: ContinualSpec(method="replay", hyperparameters={"buffer_size": 5}, seed=seed,  # noqa: E731
                                      train=TrainConfig(lr=1e-2, epochs=2, batch_size=8))
    a, b = run_continual(stream, reference, spec(0)), run_continual(stream, reference, spec(1))
    assert "seed" not in a["hyperparameters"]["method"]  # one seed per run, not one per strategy
    assert a["settings"]["mtil"]["accuracy_matrix"] != b["settings"]["mtil"]["accuracy_matrix"] or \
        a["fits"] != b["fits"]
