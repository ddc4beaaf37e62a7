"""MoViT's memory equations on hand-made cases: retrieval, attention, EMA, replacement, prototypes."""

from __future__ import annotations

import math

import pytest
import torch

from genba.errors import GenbaError
from genba.movit.memory import AttentionMemory, attend, kmeans_assign
from genba.movit.vit import MemoryConfig, MoViT, MoViTConfig


def _memory(capacity=4, topk=2, alpha=0.5, prototypes=2, heads=1, d=2):
    return AttentionMemory(heads, d, capacity, topk, alpha, prototypes)


def _kv(rows):
    """(B, T, d) nested lists -> (B, 1, T, d) keys (one head)."""
    return torch.tensor(rows, dtype=torch.float32)[:, None]


def test_retrieval_is_topk_cosine_of_the_mean_query_and_skips_own_and_empty_slots():
    mem = _memory(capacity=5, topk=2)
    keys = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.0]]  # slot 4 stays empty
    for img, key in enumerate(keys):
        mem.write(_kv([[key]]), _kv([[[img * 10.0, 0.0]]]), torch.tensor([100 + img]))
    # two tokens whose mean query is (1, 0.2)/2: cosines 0.98, 0.20, 0.90, -0.98 -> slots 0 then 2
    q = _kv([[[1.0, 0.0], [1.0, 0.4]]])
    idx, ok = mem.retrieve(q)
    assert idx[0, 0].tolist() == [0, 2] and ok.all()
    # in training, image 100 (slot 0) may not retrieve its own slot: next best are 2 then 1
    idx, _ = mem.retrieve(q, exclude=torch.tensor([100]))
    assert idx[0, 0].tolist() == [2, 1]
    k, v, weight = mem.gather(idx)
    assert weight is None  # slots enter the softmax unweighted
    assert torch.equal(k[0, 0, 0], torch.tensor([0.8, 0.6])) and torch.equal(v[0, 0, 0], torch.tensor([20.0, 0.0]))
    # fewer allowed entries than k: the padding is flagged
    small = _memory(capacity=3, topk=2)
    small.write(_kv([[[1.0, 0.0]]]), _kv([[[1.0, 0.0]]]), torch.tensor([7]))
    _, ok = small.retrieve(q)
    assert ok[0, 0].tolist() == [True, False]


def test_attention_is_one_softmax_over_own_tokens_and_retrieved_entries():
    q = torch.tensor([[[[1.0, 0.0]]]])  # (B=1, H=1, T=1, d=2)
    k = torch.tensor([[[[2.0, 0.0]]]])
    v = torch.tensor([[[[1.0, 1.0]]]])
    mk = torch.tensor([[[[0.0, 3.0], [4.0, 0.0]]]])  # (B, H, K=2, d)
    mv = torch.tensor([[[[0.0, 10.0], [10.0, 0.0]]]])
    bias = torch.tensor([0.5])
    out = attend(q, k, v, mk, mv, torch.tensor([[[True, True]]]), bias)
    s = 1 / math.sqrt(2)
    logits = torch.tensor([2 * s, 0 * s + 0.5, 4 * s + 0.5])  # q.k/sqrt(d); q.m/sqrt(d) + b
    a = logits.softmax(0)
    expected = a[0] * torch.tensor([1.0, 1.0]) + a[1] * torch.tensor([0.0, 10.0]) + a[2] * torch.tensor([10.0, 0.0])
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-6)
    # a padding entry gets no weight
    out = attend(q, k, v, mk, mv, torch.tensor([[[True, False]]]), bias)
    a = logits[:2].softmax(0)
    assert torch.allclose(out[0, 0, 0], a[0] * torch.tensor([1.0, 1.0]) + a[1] * torch.tensor([0.0, 10.0]), atol=1e-6)
    # without memory it is plain attention
    assert torch.allclose(attend(q, k, v), v)


def test_write_updates_an_existing_source_by_moving_average():
    mem = _memory(capacity=4, alpha=0.25)
    mem.write(_kv([[[1.0, 0.0], [0.0, 1.0]]]), _kv([[[2.0, 2.0], [4.0, 4.0]]]), torch.tensor([5]))
    assert mem.filled == 2 and mem.source[:2].tolist() == [5, 5] and mem.token[:2].tolist() == [0, 1]
    mem.write(_kv([[[0.0, 1.0], [1.0, 1.0]]]), _kv([[[6.0, 2.0], [0.0, 0.0]]]), torch.tensor([5]))
    assert mem.filled == 2  # same sources (image 5, tokens 0 and 1): no new slot
    assert torch.allclose(mem.keys[0, 0], torch.tensor([0.75, 0.25]))  # 0.75 * (1, 0) + 0.25 * (0, 1)
    assert torch.allclose(mem.keys[0, 1], torch.tensor([0.25, 1.0]))
    assert torch.allclose(mem.values[0, 0], torch.tensor([3.0, 2.0]))
    assert mem.written[:2].tolist() == [1, 1]
    over = _memory(alpha=1.0)  # alpha = 1: plain overwrite (the no-EMA ablation)
    over.write(_kv([[[1.0, 0.0]]]), _kv([[[1.0, 0.0]]]), torch.tensor([5]))
    over.write(_kv([[[0.0, 1.0]]]), _kv([[[0.0, 1.0]]]), torch.tensor([5]))
    assert torch.equal(over.keys[0, 0], torch.tensor([0.0, 1.0]))


def test_replacement_fills_empty_slots_first_then_the_least_recently_written():
    mem = _memory(capacity=3, alpha=0.5)
    one = _kv([[[1.0, 0.0]]])
    for img in (1, 2, 3):  # steps 0, 1, 2 fill the three slots
        mem.write(one, one, torch.tensor([img]))
    mem.write(one, one, torch.tensor([1]))  # image 1 refreshed at step 3: image 2 is now the oldest
    mem.write(one * 9, one * 9, torch.tensor([4]))  # step 4: replaces image 2's slot (slot 1)
    assert mem.source.tolist() == [1, 4, 3]
    assert torch.equal(mem.keys[0, 1], torch.tensor([9.0, 0.0])) and mem.written.tolist() == [3, 4, 2]
    # a batch with more new sources than slots writes the first ones in batch order
    mem.write(_kv([[[0.0, 1.0]], [[0.0, 2.0]], [[0.0, 3.0]], [[0.0, 4.0]]]), one.repeat(4, 1, 1, 1), torch.tensor([10, 11, 12, 13]))
    assert sorted(mem.source.tolist()) == [10, 11, 12]
    with pytest.raises(GenbaError, match="alpha"):
        _memory(alpha=0.0)


def test_prototypes_are_kmeans_cluster_means_and_know_their_training_images():
    mem = _memory(capacity=6, topk=1, prototypes=2)
    keys = [[1.0, 0.1], [1.0, -0.1], [0.9, 0.0], [0.1, 1.0], [-0.1, 1.0], [0.0, 0.8]]
    for img, key in enumerate(keys):
        mem.write(_kv([[key]]), _kv([[[float(img), 0.0]]]), torch.tensor([img]))
    mem.summarise(iters=10, seed=0)
    groups = sorted([mem.prototype_sources(0, p) for p in range(2)])
    assert groups == [[0, 1, 2], [3, 4, 5]]
    p_right = int(mem.assign[0, 0])
    assert torch.allclose(mem.proto_keys[0, p_right], torch.tensor([2.9 / 3, 0.0]), atol=1e-6)
    assert torch.allclose(mem.proto_values[0, p_right], torch.tensor([1.0, 0.0]))  # mean of values 0, 1, 2
    mem.use_prototypes = True  # retrieval now runs over the 2 prototypes
    mem.count_weight = True  # the optional size weighting of prototypes
    idx, ok = mem.retrieve(_kv([[[0.0, 1.0]]]))
    assert int(idx[0, 0, 0]) == 1 - p_right and ok.all()
    _, _, weight = mem.gather(idx)
    assert torch.allclose(weight, torch.tensor(math.log(1)))  # log(min(n_p = 3, k = 1))
    mem.topk = 2
    idx, _ = mem.retrieve(_kv([[[0.0, 1.0]]]))
    assert torch.allclose(mem.gather(idx)[2], torch.tensor(math.log(2)))  # log(min(3, 2)) for both prototypes
    assert mem.proto_count[0].tolist() == [3, 3]
    assert kmeans_assign(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [3.0, 0.0]]), 3).tolist() == [1, 0]
    with pytest.raises(GenbaError, match="empty"):
        _memory().summarise()


def test_model_writes_memory_only_in_training_and_prototypes_make_inference_independent_of_slots(one_thread):
    torch.manual_seed(0)
    cfg = MoViTConfig(num_classes=3, image_size=8, patch=4, channels=1, dim=8, depth=2, heads=2,
                      mem=MemoryConfig(capacity=32, topk=3, prototypes=4, layers="last", write="all"))
    model = MoViT(cfg)
    assert len(model.memories) == 1 and model.blocks[0].attn.memory is None
    x = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    model.train()
    model(x, ids=torch.arange(4))
    assert model.memories[0].filled == 4 * 5  # 4 images x (4 patches + cls)
    model(x, ids=torch.arange(4) + 10)
    assert model.memories[0].filled == 32  # bounded
    before = model.memories[0].keys.clone()
    model.eval()
    logits = model(x)
    assert torch.equal(before, model.memories[0].keys) and logits.shape == (4, 3)
    model.summarise()
    model.use_prototypes(True)
    a = model(x)
    model.memories[0].keys.add_(1.0)  # prototypes were built already: slots no longer matter
    assert torch.equal(a, model(x))
    model.use_prototypes(False)
    assert not torch.equal(a, model(x))
    with pytest.raises(GenbaError, match="image ids"):
        model.train()
        model(x)


def test_image_write_mode_keeps_one_mean_snapshot_per_image(one_thread):
    torch.manual_seed(0)
    cfg = MoViTConfig(num_classes=3, image_size=8, patch=4, channels=1, dim=8, depth=1, heads=2, dropout=0.0,
                      mem=MemoryConfig(capacity=8, topk=2, prototypes=2, write="image", alpha=1.0))
    model = MoViT(cfg).train()
    x = torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8)
    model(x, ids=torch.tensor([4, 5, 6]))
    model(x, ids=torch.tensor([4, 5, 6]))  # second epoch: the same three slots (overwritten, alpha = 1)
    mem = model.memories[0]
    assert mem.filled == 3 and sorted(mem.source[:3].tolist()) == [4, 5, 6] and set(mem.token[:3].tolist()) == {0}
    attn = model.blocks[0].attn
    h = model.blocks[0].norm1(torch.cat([model.cls.expand(3, -1, -1), model.tokens(x)], 1) + model.pos)
    k = attn.qkv(h).view(3, 5, 3, 2, 4)[:, :, 1]  # (B, T, H, d) keys
    slot = int((mem.source == 4).nonzero())
    assert torch.allclose(mem.keys[:, slot], k[0].mean(0), atol=1e-5)  # mean over the image's 5 tokens
    with pytest.raises(GenbaError, match="mem.write"):
        MoViTConfig(mem=MemoryConfig(write="patches"))
