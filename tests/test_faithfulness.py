"""Reference behaviours pinned on hand-made streams: TDA with several views, DMN's view entropy,
and the eviction of tied entries. The `ref_*` functions transcribe the reference code (TDA:
github.com/kdiAAA/TDA tda_runner.py; DMN: github.com/YBZh/DMN) in float32 on CPU; see
docs/faithfulness.md for the differences genba keeps on purpose."""

from __future__ import annotations

import math
import operator

import pytest
import torch

from genba.memory.dynamic import DynamicMemory
from genba.methods import Feats, create_method
from genba.methods.views import confident_views

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ reference code, transcribed
def ref_update_cache(cache, pred, item, capacity):
    """TDA's update_cache: per-class list kept sorted by entropy, the last (worst) replaced if better."""
    if pred in cache:
        if len(cache[pred]) < capacity:
            cache[pred].append(item)
        elif item[1] < cache[pred][-1][1]:
            cache[pred][-1] = item
        cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
    else:
        cache[pred] = [item]


def ref_cache_logits(feat, cache, alpha, beta, C, mask=None):
    keys, values = [], []
    for c in sorted(cache):
        for item in cache[c]:
            keys.append(item[0])
            values.append(item[2] if mask else torch.nn.functional.one_hot(torch.tensor([c]), C).float())
    keys, values = torch.cat(keys).T, torch.cat(values)
    if mask:
        values = ((values > mask[0]) & (values < mask[1])).float()
    return alpha * ((-1) * (beta - beta * (feat @ keys))).exp() @ values


def ref_avg_entropy(outputs):
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg = logits.logsumexp(dim=0) - math.log(logits.shape[0])
    return -(avg * avg.exp()).sum(-1)


def ref_tda(text, views):
    """TDA's run_test_tda with get_clip_logits on (N, V, D) unit view features; text (C, D) unit rows."""
    C, pos, neg, out = text.shape[0], {}, {}, []
    for f in views:
        logits = 100.0 * f @ text.T  # (V, C)
        ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
        idx = torch.argsort(ent)[: int(len(f) * 0.1)]
        output = logits[idx]
        feat, clip_logits = f[idx].mean(0, keepdim=True), output.mean(0, keepdim=True)
        loss, prob_map = ref_avg_entropy(output), output.softmax(1).mean(0, keepdim=True)
        pred = int(output.mean(0).argmax())
        ref_update_cache(pos, pred, [feat, float(loss)], 3)
        if 0.2 < float(loss) / math.log2(C) < 0.5:
            ref_update_cache(neg, pred, [feat, float(loss), prob_map], 2)
        final = clip_logits + ref_cache_logits(feat, pos, 2.0, 5.0, C)
        if neg:
            final = final - ref_cache_logits(feat, neg, 0.117, 1.0, C, mask=(0.03, 1.0))
        out.append(final.softmax(1)[0])
    return torch.stack(out), pos


def ref_dmn_select(prob, top):
    """DMN's select_confident_samples on (V, C) probabilities."""
    entropy = -(prob * torch.log(prob + 1e-6)).sum(1)
    return torch.argsort(entropy, descending=False)[: int(entropy.size(0) * top)]


def stream(N=40, V=20, C=4, D=12, seed=0, spread=0.35):
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    labels = torch.randint(0, C, (N,), generator=g)
    views = text[labels][:, None] + spread * torch.randn(N, V, D, generator=g)
    return text, torch.nn.functional.normalize(views, dim=-1)


# ------------------------------------------------------------------------------------ tests
def test_tda_with_views_matches_the_reference_by_default():
    text, views = stream()
    expected, ref_pos = ref_tda(text, views)
    method = create_method("tda")
    method.fit(text)
    got = method.predict_stream(Feats(views))
    assert torch.allclose(got, expected, atol=1e-5) and torch.equal(got.argmax(1), expected.argmax(1))
    for c, items in ref_pos.items():  # final positive cache: same features, un-normalised means
        mine = method.pos.rows[c][method.pos.valid[c]]
        assert len(mine) == len(items)
        for item in items:
            assert (mine - item[0]).abs().amax(1).min() < 1e-6
    genba_rule = create_method("tda", view_rule="genba")  # the option: unit-norm means in the caches
    genba_rule.fit(text)
    genba_rule.predict_stream(Feats(views))
    norms = genba_rule.pos.rows[genba_rule.pos.valid].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (method.pos.rows[method.pos.valid].norm(dim=1) < 0.999).all()


def test_dmn_ranks_views_by_the_reference_entropy():
    g = torch.Generator().manual_seed(0)
    probs = (30 * torch.randn(8, 32, 10, generator=g)).softmax(-1)  # very confident views, some exactly one-hot
    differs = 0
    for p in probs:
        e = -(p * torch.log(p + 1e-6)).sum(1)
        _, mine = confident_views(p, 0.1, eps=1e-6)
        # the same views up to exact ties (the reference's unstable argsort orders those arbitrarily)
        assert sorted(e[mine].tolist()) == sorted(e[ref_dmn_select(p, 0.1)].tolist())
        differs += set(confident_views(p, 0.1)[1].tolist()) != set(mine.tolist())
    assert differs > 0  # plain H(p) keeps other views on such streams
    text, views = stream(N=1, V=32, C=10, D=12, spread=0.3)
    dmn = create_method("dmn-zs")
    dmn.fit(text)
    dmn.predict_stream(Feats(views))
    p = (100.0 * views[0] @ text.T).softmax(-1)
    mean = p[ref_dmn_select(p, 0.1)].mean(0)
    c = int(mean.argmax())
    h = float(-(mean * mean.clamp_min(1e-30).log()).sum())
    assert int(dmn.dynamic.count[c]) == 1 and float(dmn.dynamic.entropy[c, 0]) == pytest.approx(h, rel=1e-5, abs=1e-12)


def test_full_queue_with_tied_entropies_evicts_the_later_entry():
    """A stream whose ties fall on slots in a different order than their writes."""
    D = 4
    x = torch.eye(D)[None].repeat(3, 1, 1).reshape(-1, D)[:7] + 0.01 * torch.arange(7.0)[:, None]
    entropies = [0.5, 0.5, 0.2, 0.4, 0.2, 0.1, 0.15]
    memory = DynamicMemory(1, 2, D, dtype="float32", keep_gram=False)
    cache: dict = {}
    for i, h in enumerate(entropies):
        memory.write(x[i], 0, h)
        ref_update_cache(cache, 0, [i, h], 2)
        stored = {int((memory.rows[0, :2] - torch.nn.functional.normalize(x[j], dim=0)).abs().amax(1).argmin()): j
                  for j in range(i + 1) if (memory.rows[0, :2] - torch.nn.functional.normalize(x[j], dim=0)).abs().amax(1).min() < 1e-6}
        assert sorted(stored.values()) == sorted(item[0] for item in cache[0]), (i, stored, cache[0])


def ref_dmn_update(memory_rows, entropies, count, item, h, capacity):
    """DMN's update_memory_bank (dmn_main.py) for one class: append while not full, else replace
    indice[-1] of torch.sort(entropies) when the new entropy is lower than some stored one."""
    if count == capacity:
        if (h < torch.tensor(entropies)).sum() == 0:
            return count
        _, indice = torch.sort(torch.tensor(entropies))
        j = int(indice[-1])
        memory_rows[j], entropies[j] = item, h
        return count
    memory_rows[count], entropies[count] = item, h
    return count + 1


def test_dmn_reference_evicts_the_highest_tied_slot():
    """The documented difference (memory/dynamic.py, docs/faithfulness.md): with tied worst entropies
    DMN's reference replaces the highest slot, genba (like TDA's reference) the latest written."""
    D = 4
    x = torch.nn.functional.normalize(torch.eye(D) + 0.01, dim=1)
    # slots 0 and 1 tie at 0.5, slot 0 written last: the rules part
    memory = DynamicMemory(1, 2, D, dtype="float32", keep_gram=False)
    rows, ents, count = [None, None], [0.0, 0.0], 0
    for i, h in [(0, 0.9), (1, 0.5), (2, 0.5), (3, 0.1)]:  # item 2 replaces item 0 (0.9) in slot 0: slot 0 is newest
        memory.write(x[i], 0, h)
        count = ref_dmn_update(rows, ents, count, i, h, 2)
    genba_kept = sorted(int((x[:4] @ memory.rows[0, j].float()).argmax()) for j in range(2))
    assert sorted(rows) == [2, 3]  # DMN evicts slot 1 (item 1), the highest of the tied slots
    assert genba_kept == [1, 3]  # genba evicts slot 0 (item 2), the latest written of the tied slots
