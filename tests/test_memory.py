"""Memory read, dynamic memory writes and their validation, static memory, views, collapse guard."""

import math

import pytest
import torch

from genba.errors import GenbaError
from genba.memory import DynamicMemory, StaticMemory, affinity_read, memory_read
from genba.memory.guard import CollapseGuard
from genba.memory.read import gram_of, l2_normalize
from genba.methods.views import confident_views

E = math.exp


pytestmark = pytest.mark.usefixtures("one_thread")


def two_class_rows():
    """Class 0 rows (1, 0) and (0, 1); class 1 row (-1, 0) and an empty slot."""
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    return rows, mask


@pytest.mark.parametrize("order", ["gram", "direct"])
def test_read_hand_computed(order):
    rows, mask = two_class_rows()
    gram = gram_of(rows) if order == "gram" else None
    q = torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]])
    logits = memory_read(q, rows, mask, beta=1.0, scale=100.0, gram=gram)
    # q = (1, 0). Class 0: cos = (1, 0), w = (1, e^-1), p = (1, e^-1), cos(q, p) = 1 / sqrt(1 + e^-2).
    # Class 1: one row (-1, 0), cos = -1, p = e^-2 (-1, 0), cos(q, p) = -1.
    assert logits[0, 0].item() == pytest.approx(100 / math.sqrt(1 + E(-2)), abs=1e-4)  # 93.8508
    assert logits[0, 1].item() == pytest.approx(-100.0, abs=1e-4)
    # q at 45 degrees: equal weights on (1, 0) and (0, 1), p ~ (1, 1), cos = 1; class 1: cos = -1/sqrt(2).
    assert logits[1, 0].item() == pytest.approx(100.0, abs=1e-4)
    assert logits[1, 1].item() == pytest.approx(-100 * 2**-0.5, abs=1e-4)


def test_read_empty_class_is_zero_and_orders_agree():
    g = torch.Generator().manual_seed(0)
    rows = l2_normalize(torch.randn(4, 6, 8, generator=g))
    mask = torch.rand(4, 6, generator=g) > 0.4
    mask[2] = False  # an empty class
    rows = rows * mask[..., None]
    q = l2_normalize(torch.randn(5, 8, generator=g))
    a = memory_read(q, rows, mask, gram=gram_of(rows))
    b = memory_read(q, rows, mask)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.all(a[:, 2] == 0)


def test_affinity_read_hand_computed():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # one-hot labels 0, 1
    a = affinity_read(torch.tensor([[1.0, 0.0]]), keys, values, beta=2.0)
    assert a[0].tolist() == pytest.approx([1.0, E(-2)])


def test_dynamic_read_matches_kernel_and_gram_stays_exact():
    g = torch.Generator().manual_seed(1)
    mem = DynamicMemory(3, 4, 8, dtype="float32", pinned=torch.randn(3, 1, 8, generator=g))
    mem.write_batch(torch.randn(20, 8, generator=g), torch.randint(0, 3, (20,), generator=g), torch.rand(20, generator=g))
    assert torch.allclose(mem.gram, gram_of(mem.rows), atol=1e-5)
    q = l2_normalize(torch.randn(2, 8, generator=g))
    assert torch.allclose(mem.read(q), memory_read(q, mem.rows, mem.valid), atol=1e-4)
    half = DynamicMemory(3, 4, 8, dtype="float16", pinned=torch.randn(3, 1, 8))
    half.load_state_dict({k: v.half() if k in ("rows", "gram") else v for k, v in mem.state_dict().items()})
    assert torch.allclose(half.read(q), mem.read(q), atol=0.2)  # fp16 storage: logits within 0.2 of 100


def test_entropy_replacement():
    mem = DynamicMemory(2, 2, 2, dtype="float32")
    a, b, c, d, e = (torch.tensor(v) for v in ([1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0]))
    assert mem.write(a, 0, 0.5) and mem.write(b, 0, 0.9)  # queue of class 0 is now full
    assert mem.write(c, 0, 0.7)  # replaces b, the highest entropy (0.9)
    assert mem.rows[0].tolist() == [a.tolist(), pytest.approx(c.tolist())]
    before = mem.state_dict()
    assert not mem.write(d, 0, 0.8)  # 0.8 is not lower than the worst kept (0.7): rejected
    assert all(torch.equal(before[k], v) for k, v in mem.state_dict().items())
    assert mem.write(e, 0, 0.1)  # replaces c (0.7)
    assert mem.entropy[0].tolist() == pytest.approx([0.5, 0.1])
    assert mem.rows[0, 1].tolist() == e.tolist()
    assert mem.count.tolist() == [2, 0] and mem.valid[1].sum() == 0


def test_batched_write_equals_sequential():
    g = torch.Generator().manual_seed(2)
    x, y, h = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g), torch.rand(60, generator=g)
    one, many = DynamicMemory(4, 3, 5), DynamicMemory(4, 3, 5)
    for i in range(60):
        one.write(x[i], int(y[i]), float(h[i]))
    many.write_batch(x, y, h)
    assert all(torch.equal(v, many.state_dict()[k]) for k, v in one.state_dict().items())


@pytest.mark.parametrize("bad", ["dim", "nan", "inf", "class", "negative_class", "entropy", "zero", "one_bad_row"])
def test_bad_writes_leave_memory_unchanged(bad):
    g = torch.Generator().manual_seed(3)
    mem = DynamicMemory(3, 2, 4, pinned=torch.randn(3, 1, 4, generator=g))
    mem.write_batch(torch.randn(5, 4, generator=g), [0, 1, 2, 0, 0], [0.3, 0.2, 0.1, 0.5, 0.4])
    before = mem.state_dict()
    x, cls, ent = torch.randn(3, 4, generator=g), [0, 1, 2], [0.1, 0.1, 0.1]
    if bad == "dim":
        x = torch.randn(3, 5)
    elif bad == "nan":
        x[1, 2] = float("nan")
    elif bad == "inf":
        x[0, 0] = float("inf")
    elif bad == "class":
        cls = [0, 3, 1]
    elif bad == "negative_class":
        cls = [0, -1, 1]
    elif bad == "entropy":
        ent = [0.1, float("nan"), 0.1]
    elif bad == "zero":
        x[2] = 0
    else:
        x[2, 1] = float("nan")  # the first two rows are fine, and still must not be written
    with pytest.raises(GenbaError):
        mem.write_batch(x, cls, ent)
    after = mem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("x, cls, ent", [(torch.randn(5), 0, 0.1), (torch.tensor([1.0, float("nan"), 0, 0]), 0, 0.1),
                                         (torch.randn(4), 3, 0.1), (torch.randn(4), 0, -1.0)])
def test_bad_single_write_leaves_memory_unchanged(x, cls, ent):
    mem = DynamicMemory(3, 2, 4)
    mem.write(torch.randn(4), 0, 0.5)
    before = mem.state_dict()
    with pytest.raises(GenbaError):
        mem.write(x, cls, ent)
    assert all(torch.equal(v, mem.state_dict()[k]) for k, v in before.items())


def test_imagenet_scale_memory_fits_budget():
    mem = DynamicMemory(1000, 50, 512, pinned=l2_normalize(torch.randn(1000, 1, 512)))
    assert mem.rows.dtype == torch.float16
    assert mem.nbytes <= 60e6, mem.nbytes / 1e6


def test_static_memory_groups_by_class():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([1, 0, 1, 1, 0])
    text = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    mem = StaticMemory(feats, labels, 2, text=text)
    assert mem.shots.tolist() == [2, 3]
    assert mem.rows.shape == (2, 4, 2)
    assert mem.valid.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert mem.rows[0, :3].tolist() == [[0.0, 1.0], [0.0, 1.0], [0.0, -1.0]]  # text, then shots in input order
    assert mem.rows[1, 2].tolist() == pytest.approx([2**-0.5, 2**-0.5])
    for bad_labels in ([0, 1, 2, 0, 1], [0, 1, 1]):
        with pytest.raises(GenbaError):
            StaticMemory(feats, torch.tensor(bad_labels), 2)
    with pytest.raises(GenbaError):
        StaticMemory(torch.tensor([[1.0, float("nan")]]), [0], 2)


def test_confident_views_keeps_lowest_entropy_fraction():
    logits = torch.zeros(32, 4)
    logits[[5, 9, 17], 2] = 10.0  # three confident views for class 2
    logits[0, 1] = 1.0  # the original view leans to class 1
    mean, idx = confident_views(logits.softmax(-1), keep=0.1)  # int(32 * 0.1) = 3 views
    assert sorted(idx.tolist()) == [5, 9, 17]
    assert mean.argmax().item() == 2
    assert torch.allclose(mean, logits[[5, 9, 17]].softmax(-1).mean(0))
    _, idx = confident_views(torch.full((4, 3), 1 / 3), keep=0.1)
    assert len(idx) == 1  # at least one view


def test_guard_balanced_admission_caps_a_dominant_class():
    mem = DynamicMemory(3, 5, 2, dtype="float32")
    x = l2_normalize(torch.randn(10, 2))
    mem.write_batch(x, [0] * 10, torch.linspace(1.0, 0.1, 10), balance=1.0)
    assert mem.count.tolist() == [2, 0, 0]  # 2 < mean + 1 fails once class 0 holds 2 of 2 entries
    assert mem.entropy[0, :2].tolist() == pytest.approx([0.2, 0.1])  # still refreshed by lower entropy
    free = DynamicMemory(3, 5, 2, dtype="float32")
    free.write_batch(x, [0] * 10, torch.linspace(1.0, 0.1, 10))
    assert free.count.tolist() == [5, 0, 0]


def test_guard_prior_correction_and_confidence_gate():
    p = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.0, 0.4]]).repeat(50, 1)  # always leans to class 0
    plain, _, _ = CollapseGuard().pseudo_labels(p)
    assert set(plain.tolist()) == {0}
    corrected, _, _ = CollapseGuard(prior_momentum=0.1).pseudo_labels(p)
    assert set(corrected[-10:].tolist()) == {1, 2}
    _, _, admit = CollapseGuard(max_entropy=0.5).pseudo_labels(torch.tensor([[1 / 3] * 3, [0.98, 0.01, 0.01]]))
    assert admit.tolist() == [False, True]
    with pytest.raises(GenbaError):
        CollapseGuard(max_entropy=0.0)


def test_fused_read_matches_the_torch_read():
    """The opt-in compiled one-pass read gives the logits of the torch read (skipped where it cannot build)."""
    from genba.memory.fused import load

    if load() is None:
        pytest.skip("the fused kernel cannot be compiled here (needs a C++ compiler and ninja)")
    g = torch.Generator().manual_seed(0)
    C, L, D = 7, 5, 64
    text = l2_normalize(torch.randn(C, 1, D, generator=g))
    plain = DynamicMemory(C, L, D, pinned=text)
    fused = DynamicMemory(C, L, D, pinned=text, kernel="fused")
    x = l2_normalize(torch.randn(20, D, generator=g))
    cls, ent = torch.randint(0, C, (20,), generator=g), torch.rand(20, generator=g)
    for m in (plain, fused):
        m.write_batch(x, cls, ent)  # some classes stay partly empty: the mask matters
    q = l2_normalize(torch.randn(1, D, generator=g))
    assert torch.allclose(fused.read(q), plain.read(q), atol=2e-2)
    assert torch.allclose(fused.read(q.repeat(3, 1)), plain.read(q.repeat(3, 1)))  # batches use torch
    with pytest.raises(GenbaError, match="kernel"):
        DynamicMemory(C, L, D, kernel="cuda")
