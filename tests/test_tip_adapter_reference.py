"""Tip-Adapter-F against a transcription of its reference code (github.com/gaopengcuhk/Tip-Adapter):
the training step uses the config's init_alpha / init_beta (main.py run_tip_adapter_F), and the
post-training search over beta x alpha on validation with the trained keys is utils.py search_hp."""

from __future__ import annotations

import pytest
import torch

from genba.methods import Feats, create_method
from genba.methods.tip_adapter_f import reference_grid

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ reference code, transcribed
def ref_cls_acc(output, target, topk=1):
    pred = output.topk(topk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    acc = float(correct[:topk].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0])  # [0]: numpy 2 refuses float() of a 1-element array
    return 100 * acc / target.shape[0]


def ref_search_hp(cfg, cache_keys, cache_values, features, labels, clip_weights, adapter=None):
    beta_list = [i * (cfg['search_scale'][0] - 0.1) / cfg['search_step'][0] + 0.1 for i in range(cfg['search_step'][0])]
    alpha_list = [i * (cfg['search_scale'][1] - 0.1) / cfg['search_step'][1] + 0.1 for i in range(cfg['search_step'][1])]
    best_acc = 0
    best_beta, best_alpha = 0, 0
    for beta in beta_list:
        for alpha in alpha_list:
            if adapter:
                affinity = adapter(features)
            else:
                affinity = features @ cache_keys
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
            clip_logits = 100. * features @ clip_weights
            tip_logits = clip_logits + cache_logits * alpha
            acc = ref_cls_acc(tip_logits, labels)
            if acc > best_acc:
                best_acc = acc
                best_beta = beta
                best_alpha = alpha
    return best_beta, best_alpha


def ref_train_step(cfg, cache_keys, cache_values, features, target, clip_weights):
    """One epoch of run_tip_adapter_F with the whole support in one batch (fp32, no augmentation)."""
    adapter = torch.nn.Linear(cache_keys.shape[0], cache_keys.shape[1], bias=False)
    adapter.weight = torch.nn.Parameter(cache_keys.t().clone())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg['lr'], eps=1e-4)
    beta, alpha = cfg['init_beta'], cfg['init_alpha']
    affinity = adapter(features)
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
    clip_logits = 100. * features @ clip_weights
    tip_logits = clip_logits + cache_logits * alpha
    loss = torch.nn.functional.cross_entropy(tip_logits, target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return adapter


# ---------------------------------------------------------------------------------- problems
def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def problem(seed=0, C=5, D=24, shots=4, n_val=60):
    """Class means in D dims, a text classifier that knows them only weakly (so the cache matters)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, D, generator=g)
    text = unit(means + 2.5 * torch.randn(C, D, generator=g))
    sy = torch.arange(C).repeat_interleave(shots)
    vy = torch.arange(C).repeat(n_val // C)
    sx = unit(means[sy] + 1.2 * torch.randn(len(sy), D, generator=g))
    vx = unit(means[vy] + 1.2 * torch.randn(len(vy), D, generator=g))
    return text, sx, sy, vx, vy


def test_training_uses_init_alpha_beta_and_search_matches_search_hp():
    text, sx, sy, vx, vy = problem()
    cfg = {"lr": 1e-3, "init_alpha": 1.17, "init_beta": 1.0, "search_scale": [7, 3], "search_step": [60, 12]}
    m = create_method("tip-adapter-f", search_beta_steps=60, search_alpha_steps=12,
                      **{"train.epochs": 1, "train.batch_size": 4096})
    assert (m.config.init_alpha, m.config.init_beta) == (1.17, 1.0)  # the reference ImageNet config
    m.fit(text, Feats(sx), sy, val=(Feats(vx), vy))

    values = torch.nn.functional.one_hot(sy).float()
    adapter = ref_train_step(cfg, sx.T.contiguous(), values, sx, sy, text.T)
    assert torch.allclose(m.keys, adapter.weight.detach(), atol=2e-6), "one training step differs from the reference's"
    with torch.no_grad():
        beta, alpha = ref_search_hp(cfg, None, values, vx, vy, text.T, adapter=adapter)
    assert (beta, alpha) != (0, 0)
    found_alpha, found_beta = m.found.tolist()
    assert found_beta == pytest.approx(beta, abs=1e-6) and found_alpha == pytest.approx(alpha, abs=1e-6)
    hp = m.hyperparameters()
    assert hp["alpha"] == pytest.approx(alpha, abs=1e-6) and hp["init_alpha"] == 1.17
    # the search is not a no-op on this problem: the pair found differs from the training pair
    assert (round(found_alpha, 4), round(found_beta, 4)) != (1.17, 1.0)


def test_search_grid_is_the_references_and_set_values_skip_it():
    assert reference_grid(7, 200)[:2] == [0.1, 0.1 + 6.9 / 200] and len(reference_grid(3, 20)) == 20
    text, sx, sy, vx, vy = problem(seed=1)
    fixed = create_method("tip-adapter-f", alpha=2.0, beta=3.0, **{"train.epochs": 2})
    fixed.fit(text, Feats(sx), sy, val=(Feats(vx), vy))
    assert fixed.found.tolist() == [2.0, 3.0]
    no_val = create_method("tip-adapter-f", **{"train.epochs": 2})
    no_val.fit(text, Feats(sx), sy)
    assert no_val.found.tolist() == pytest.approx([1.17, 1.0])
    # the learned state carries the keys and the pair found, and restores without training
    searched = create_method("tip-adapter-f", **{"train.epochs": 2})
    searched.fit(text, Feats(sx), sy, val=(Feats(vx), vy))
    restored = create_method("tip-adapter-f", **{"train.epochs": 2})
    restored.fit(text, Feats(sx), sy, learned=searched.state_dict())
    assert torch.equal(restored.predict_stream(Feats(vx)), searched.predict_stream(Feats(vx)))


def test_legacy_variant_trains_and_predicts_with_fixed_alpha_beta():
    text, sx, sy, vx, vy = problem(seed=2)
    legacy = create_method("tip-adapter-f-legacy", **{"train.epochs": 1, "train.batch_size": 4096})
    legacy.fit(text, Feats(sx), sy)
    cfg = {"lr": 1e-3, "init_alpha": 1.0, "init_beta": 5.5}
    adapter = ref_train_step(cfg, sx.T.contiguous(), torch.nn.functional.one_hot(sy).float(), sx, sy, text.T)
    assert torch.allclose(legacy.keys, adapter.weight.detach(), atol=2e-6)
