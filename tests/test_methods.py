"""Methods on pre-computed features: known answers, TDA's caches, DMN's fusion, the contract, selection."""

import math

import numpy as np
import pytest
import torch

from genba.errors import GenbaError
from genba.memory.read import affinity_read, l2_normalize
from genba.methods import Feats, create_method, make_config, method_names, select_on_val

N_ = l2_normalize


pytestmark = pytest.mark.usefixtures("one_thread")


def problem(C=5, D=128, shots=4, n=200, seed=0):
    """Gaussian class clusters around the text vectors, pushed by a shared offset m and a class offset u_c.

    x = normalize(m + 0.7 u_y + 0.05 t_y + 0.02 noise). The text signal (0.05) is small next to the
    chance overlap of u_y with other classes' texts, so zero-shot is weak; the clusters themselves are
    tight and far apart, so a few labelled shots identify them. The right label of every sample is known.
    """
    g = torch.Generator().manual_seed(seed)
    text = N_(torch.randn(C, D, generator=g))
    m, u = N_(torch.randn(D, generator=g)), N_(torch.randn(C, D, generator=g))

    def draw(k):
        y = torch.arange(k) % C
        return N_(m + 0.7 * u[y] + 0.05 * text[y] + 0.02 * torch.randn(k, D, generator=g)), y

    return text, draw(shots * C), draw(n), draw(n)


def top1(probs, y):
    return 100.0 * (probs.argmax(1) == y).float().mean().item()


def test_registry_and_config_errors():
    assert method_names() == ["zeroshot", "tip-adapter", "tip-adapter-f", "tip-adapter-f-legacy", "tda", "dmn-zs", "dmn-tf", "dmn", "linear-probe"]
    assert make_config("tip-adapter").alpha == 1.0 and make_config("tip-adapter").beta == 5.5
    assert make_config("tip-adapter-f").train.epochs == 20 and make_config("tip-adapter-f").train.lr == 1e-3
    assert make_config("dmn", {"train.lr": 5e-4}).train.lr == 5e-4 and make_config("dmn").train.min_lr == 1e-7
    with pytest.raises(GenbaError, match="takes no train"):
        make_config("tip-adapter", {"train.lr": 1e-3})
    with pytest.raises(GenbaError, match="unknown training setting"):
        make_config("dmn", {"train.learning_rate": 1e-3})
    assert make_config("dmn-tf", {"beta": 3}).beta == 3.0
    with pytest.raises(GenbaError, match="valid: alpha, beta"):
        make_config("tip-adapter", {"alpah": 1})
    with pytest.raises(GenbaError, match="unknown method"):
        create_method("dmm")
    with pytest.raises(GenbaError):
        make_config("dmn", {"epochs": "many"})
    with pytest.raises(GenbaError):
        make_config("dmn-zs", {"capacity": 0})


def test_analytic_problem_memories_beat_zeroshot():
    text, (sx, sy), _, (tx, ty) = problem()
    order = np.random.default_rng(0).permutation(len(ty))
    acc = {}
    for name in ["zeroshot", "tip-adapter", "dmn-tf"]:
        m = create_method(name)
        m.fit(text, Feats(sx), sy)
        probs = m.predict_stream(Feats(tx), order)
        assert torch.allclose(probs.sum(1), torch.ones(len(ty)), atol=1e-5)
        acc[name] = top1(probs, ty)
    assert acc["tip-adapter"] > acc["zeroshot"] + 5, acc
    assert acc["dmn-tf"] > acc["zeroshot"] + 20, acc


def test_tip_adapter_logits_match_formula():
    g = torch.Generator().manual_seed(1)
    W, K, Q = N_(torch.randn(4, 8, generator=g)), N_(torch.randn(12, 8, generator=g)), N_(torch.randn(10, 8, generator=g))
    y = torch.arange(12) % 4
    m = create_method("tip-adapter", alpha=3.0, beta=2.0)
    m.fit(W, Feats(K), y)
    onehot = torch.nn.functional.one_hot(y, 4).float()
    expected = (100 * Q @ W.T + 3.0 * torch.exp(-2.0 * (1 - Q @ K.T)) @ onehot).softmax(-1)
    assert torch.allclose(m.predict_stream(Feats(Q)), expected, atol=1e-5)
    assert torch.allclose(affinity_read(Q, K, onehot, beta=2.0), torch.exp(-2.0 * (1 - Q @ K.T)) @ onehot)


def test_tip_adapter_f_trains_keys_only():
    text, (sx, sy), (vx, vy), _ = problem(seed=1)
    m = create_method("tip-adapter-f", **{"train.epochs": 5})
    m.fit(text, Feats(sx), sy, val=(Feats(vx), vy))
    assert not torch.allclose(m.keys, N_(sx)) and torch.allclose(m.text, text)
    assert torch.isfinite(m.predict_stream(Feats(vx))).all()


def test_tda_two_caches():
    text = torch.eye(3)
    qa, qb, qc = torch.tensor([1.0, 0, 0]), N_(torch.tensor([1.0, 0.99, 0])), N_(torch.tensor([1.0, 0.999, 0.998]))
    qd, qe = N_(torch.tensor([0.2, 1.0, 0])), N_(torch.tensor([1.0, 0.05, 0]))
    Q = torch.stack([qa, qb, qc, qd, qe])
    p = (100 * Q @ text.T).softmax(-1)
    h_norm = -(p * p.clamp_min(1e-30).log()).sum(1) / math.log2(3)  # TDA's normalisation
    assert h_norm[1] == pytest.approx(0.400, abs=0.01) and h_norm[2] > 0.5 and h_norm[[0, 3, 4]].max() < 0.01
    m = create_method("tda")
    m.fit(text)
    probs = m.predict_stream(Feats(Q))
    # positive: class 0 took a, b, c, then e (entropy ~0) evicted c (highest entropy); class 1 holds d.
    assert m.pos.count.tolist() == [3, 1, 0]
    kept = {tuple(r) for r in m.pos.rows[0].round(decimals=4).tolist()}
    assert kept == {tuple(v) for v in torch.stack([qa, qb, qe]).round(decimals=4).tolist()}
    # negative: only b has 0.2 < h_norm < 0.5; it is stored with its probabilities.
    assert m.neg.count.tolist() == [1, 0, 0]
    assert torch.allclose(m.neg.payload[0, 0], p[1], atol=1e-5)
    # the last query's logits, by the formula
    pos_k, neg_k = torch.stack([qa, qb, qe]), qb[None]
    logits = 100 * qe @ text.T + 2.0 * torch.exp(-5.0 * (1 - pos_k @ qe)).sum() * torch.tensor([1.0, 0, 0])
    logits = logits + 2.0 * torch.exp(-5.0 * (1 - qd @ qe)) * torch.tensor([0, 1.0, 0])
    logits = logits - 0.117 * torch.exp(-1.0 * (1 - neg_k @ qe)) * torch.tensor([1.0, 1.0, 0])  # mask p > 0.03
    assert torch.allclose(probs[4], logits.softmax(-1), atol=1e-5)


@pytest.mark.parametrize("name", ["dmn-zs", "dmn-tf"])
def test_dmn_fusion_of_last_query(name):
    text, (sx, sy), _, (tx, _) = problem(n=40)
    m = create_method(name)
    m.fit(text, Feats(sx), sy)
    probs = m.predict_stream(Feats(tx))
    q = tx[-1:]  # the last query was read after its own write: the memory now is what it saw
    parts = [(100 * q @ text.T).softmax(-1), m.dynamic.read(q).softmax(-1)]
    if name == "dmn-tf":
        parts.append(m.static.read(q).softmax(-1))
    assert torch.allclose(probs[-1], sum(parts)[0] / len(parts), atol=1e-5)
    assert m.dynamic.count.sum() == 40 and m.dynamic.num_pinned == (1 if name == "dmn-zs" else 5)


def test_dmn_trained_starts_as_dmn_tf_and_learns_biases():
    text, (sx, sy), _, (tx, _) = problem(n=30)
    tf, dmn = create_method("dmn-tf", memory_dtype="float32"), create_method("dmn", train={"epochs": 3}, memory_dtype="float32")
    tf.fit(text, Feats(sx), sy)
    dmn.fit(text, Feats(sx), sy)
    assert all(p.abs().sum() > 0 for p in dmn.biases.parameters())
    assert torch.allclose(dmn.text, tf.text)
    for p in dmn.biases.parameters():
        p.data.zero_()
    assert torch.allclose(dmn.predict_stream(Feats(tx)), tf.predict_stream(Feats(tx)), atol=1e-4)


def test_dmn_trained_incremental_keys_equal_a_full_recompute():
    """The trained DMN caches its biased dynamic keys/values and refreshes only written classes."""
    text, (sx, sy), _, (tx, _) = problem(n=60)
    dmn = create_method("dmn", **{"train.epochs": 3})
    dmn.fit(text, Feats(sx), sy)
    dmn.predict_stream(Feats(tx[:30]))  # fills the cache as the stream writes
    dmn.predict_stream(Feats(tx[30:]))
    keys, values = dmn._dynamic_rows(dmn.dynamic)
    full_keys, full_values = dmn._biased_rows(dmn.dynamic)
    assert torch.equal(keys, full_keys) and torch.equal(values, full_values)
    dmn.reset()  # a fresh memory object invalidates the cache
    assert dmn._dynamic_rows(dmn.dynamic)[0].abs().sum() < keys.abs().sum()


def test_stream_order_and_input_order():
    text, (sx, sy), _, (tx, _) = problem(n=50)
    perm = np.random.default_rng(3).permutation(50)
    a, b = create_method("dmn-zs"), create_method("dmn-zs")
    a.fit(text)
    b.fit(text)
    out_a = a.predict_stream(Feats(tx), perm)
    out_b = b.predict_stream(Feats(tx[perm]))
    assert torch.allclose(out_a[perm], out_b, atol=1e-6)
    a.reset()
    assert a.dynamic is None  # back to the state after fit; rebuilt by the next stream
    assert torch.equal(a.predict_stream(Feats(tx), perm), out_a)
    with pytest.raises(GenbaError, match="permutation"):
        a.predict_stream(Feats(tx), np.arange(49))


def test_bad_queries_leave_memory_untouched():
    text, (sx, sy), _, (tx, _) = problem(n=20)
    m = create_method("dmn-tf")
    m.fit(text, Feats(sx), sy)
    m.predict_stream(Feats(tx[:10]))
    before = m.dynamic.state_dict()
    bad = tx.clone()
    bad[15, 3] = float("nan")
    for queries in (Feats(bad), Feats(tx[:, :64]), Feats(tx, cache=tx[:, :64])):
        with pytest.raises(GenbaError):
            m.predict_stream(queries)
        assert all(torch.equal(v, m.dynamic.state_dict()[k]) for k, v in before.items())
    with pytest.raises(GenbaError, match="support"):
        create_method("dmn-tf").fit(text)


def test_separate_cache_space():
    text, (sx, sy), _, (tx, ty) = problem(n=40)
    g = torch.Generator().manual_seed(5)
    proj = torch.randn(128, 48, generator=g)  # a "visual" space of another dimension
    m = create_method("dmn-tf")
    m.fit(text, Feats(sx, cache=sx @ proj), sy)
    assert m.dynamic.dim == 48 and m.dynamic.num_pinned == 4  # shots only: no text rows in this space
    probs = m.predict_stream(Feats(tx, cache=tx @ proj))
    assert top1(probs, ty) > 50
    with pytest.raises(GenbaError, match="memory space"):
        m.predict_stream(Feats(tx))


def test_views_give_the_pseudo_label_and_view_zero_is_written():
    text = torch.eye(2)
    views = torch.tensor([[1.0, 1.001]] + [[1.0, 0.0]] * 9)[None]  # (1, V=10, 2): view 0 ambiguous
    m = create_method("dmn-zs")
    m.fit(text)
    m.predict_stream(Feats(views))
    assert m.dynamic.count.tolist() == [1, 0]  # confident views say class 0
    assert torch.allclose(m.dynamic.rows[0, 0].float(), N_(views[0, 0]), atol=1e-3)


def test_collapse_guard_balances_the_memory():
    text, _, _, (tx, _) = problem(n=100)
    counts = {}
    for balance in (0.0, 1.0):
        m = create_method("dmn-zs", guard_balance=balance)
        m.fit(text)
        m.predict_stream(Feats(tx))
        counts[balance] = m.dynamic.count.float()
    assert counts[0.0].max() > 2 * counts[0.0].mean()  # zero-shot is biased: its memory is lopsided
    assert counts[1.0].max() <= counts[1.0].mean() + 1


def test_select_on_val_is_a_grid_on_validation():
    text, (sx, sy), (vx, vy), _ = problem()
    fit_args = {"text_classifier": text, "support": Feats(sx), "labels": sy}
    best, table = select_on_val("tip-adapter", {"alpha": [0.0, 1.0, 10.0], "beta": [5.5]}, fit_args, Feats(vx), vy)
    assert [row["alpha"] for row in table] == [0.0, 1.0, 10.0]
    assert best.alpha == max(table, key=lambda r: r["val_top1"])["alpha"]
    zs = create_method("zeroshot")
    zs.fit(text)
    assert table[0]["val_top1"] == pytest.approx(top1(zs.predict_stream(Feats(vx)), vy))
    with pytest.raises(GenbaError, match="valid"):
        select_on_val("tip-adapter", {"gamma": [1]}, fit_args, Feats(vx), vy)


def test_batched_stream_writes_every_query():
    text, (sx, sy), _, (tx, ty) = problem(n=60)
    exact, batched = create_method("dmn-tf"), create_method("dmn-tf", stream_batch=16)
    for m in (exact, batched):
        m.fit(text, Feats(sx), sy)
    a, b = exact.predict_stream(Feats(tx)), batched.predict_stream(Feats(tx))
    assert torch.equal(exact.dynamic.count, batched.dynamic.count)  # same writes: pseudo-labels are text-only
    assert abs(top1(a, ty) - top1(b, ty)) <= 5
    assert batched.hyperparameters()["stream_batch"] == 16


def test_grid_search_is_the_one_selection_first_on_ties():
    from genba.methods.select import grid_search

    best, table = grid_search([{"lr": 1}, {"lr": 2}, {"lr": 3}], lambda p: {1: 50.0, 2: 70.0, 3: 70.0}[p["lr"]])
    assert best == {"lr": 2} and [r["val_top1"] for r in table] == [50.0, 70.0, 70.0]
