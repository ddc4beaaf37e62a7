"""Contract tests, parametrised over every registered method: a method registered today is covered
today. Shapes, input-order equivalence, reset, untouched state after bad input, seeded training
reproducible, learned state round-trips, metadata present."""

import sys

import numpy as np
import pytest
import torch

from genba.errors import GenbaError
from genba.methods import Feats, create_method, get_method, make_config, method_names
from genba.tensors import l2_normalize

pytestmark = pytest.mark.usefixtures("one_thread")
C, D = 4, 32
FAST = {"train.epochs": 2}  # trained methods: a short run keeps the suite fast


def overrides(name):
    return FAST if "train" in {f for f in make_config(name).__dataclass_fields__} else {}


def data(seed=0, n=24, shots=3):
    g = torch.Generator().manual_seed(seed)
    text = l2_normalize(torch.randn(C, D, generator=g))
    y = torch.arange(shots * C) % C
    support = l2_normalize(text[y] + 0.3 * torch.randn(len(y), D, generator=g))
    queries = l2_normalize(text[torch.arange(n) % C] + 0.3 * torch.randn(n, D, generator=g))
    return text, support, y, queries


def fitted(name, seed=0):
    text, support, y, queries = data(seed)
    method = create_method(name, **overrides(name))
    if get_method(name).needs_support:
        method.fit(text, Feats(support), y)
    else:
        method.fit(text)
    return method, queries


@pytest.mark.parametrize("name", method_names())
def test_metadata_is_declared(name):
    cls = get_method(name)
    assert cls.name == name and isinstance(cls.selection_grid, dict)
    config = make_config(name)
    assert all(k in config.__dataclass_fields__ for k in cls.selection_grid), "grid keys must be hyperparameters"
    assert all(k in config.__dataclass_fields__ for k in cls.shown_hyperparameters)


@pytest.mark.parametrize("name", method_names())
def test_shapes_probabilities_and_reproducible_fit(name):
    a, q = fitted(name)
    b, _ = fitted(name)
    pa, pb = a.predict_stream(Feats(q)), b.predict_stream(Feats(q))
    assert pa.shape == (len(q), C) and torch.allclose(pa.sum(1), torch.ones(len(q)), atol=1e-4)
    assert torch.equal(pa, pb)  # same data, same seed: the same fit and the same stream


@pytest.mark.parametrize("name", method_names())
def test_stream_order_is_the_order_given_and_reset_restores_the_fit(name):
    m, q = fitted(name)
    perm = np.random.default_rng(1).permutation(len(q))
    first = m.predict_stream(Feats(q), perm)
    m.reset()
    assert torch.equal(m.predict_stream(Feats(q), perm), first)
    m.reset()
    in_order = m.predict_stream(Feats(q[perm]))  # streaming q[perm] in input order is the same stream
    assert torch.allclose(in_order, first[perm], atol=1e-5)


@pytest.mark.parametrize("name", method_names())
def test_bad_input_changes_nothing(name):
    m, q = fitted(name)
    m.predict_stream(Feats(q[:6]))
    bad = q.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(GenbaError):
        m.predict_stream(Feats(bad))
    with pytest.raises(GenbaError):
        m.predict_stream(Feats(q[:, : D // 2]))
    fresh, _ = fitted(name)
    fresh.predict_stream(Feats(q[:6]))
    assert torch.equal(m.predict_stream(Feats(q[6:])), fresh.predict_stream(Feats(q[6:])))


@pytest.mark.parametrize("name", method_names())
def test_learned_state_round_trips(name):
    trained, q = fitted(name)
    state = trained.state_dict()
    text, support, y, _ = data(0)
    other = create_method(name, **({"train.epochs": 1, "train.lr": 0.05} if overrides(name) else {}))
    other.fit(text, Feats(support), y) if get_method(name).needs_support else other.fit(text)
    if state:  # trained differently, so restoring the state is what makes the two agree
        assert any(not torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    other.load_state_dict(state)
    assert torch.equal(other.predict_stream(Feats(q)), trained.predict_stream(Feats(q)))
    if state:
        with pytest.raises(GenbaError, match="keys"):
            other.load_state_dict({})


@pytest.mark.parametrize("name", method_names())
def test_fit_with_learned_state_does_not_train(name, monkeypatch):
    trained, q = fitted(name)
    state = trained.state_dict()
    text, support, y, _ = data(0)

    def no_training(*args, **kwargs):
        raise AssertionError("fit(learned=...) must not train")

    monkeypatch.setattr(sys.modules[type(trained).__module__], "fit", no_training, raising=False)
    restored = create_method(name, **overrides(name))
    if get_method(name).needs_support:
        restored.fit(text, Feats(support), y, learned=state)
    else:
        restored.fit(text, learned=state)
    assert torch.equal(restored.predict_stream(Feats(q)), trained.predict_stream(Feats(q)))


@pytest.mark.parametrize("name", method_names())
def test_learns_tensors_matches_state_dict(name):
    trained, _ = fitted(name)
    assert get_method(name).learns_tensors() == bool(trained.state_dict())
