"""The continual learner: untrained = zero-shot exactly; adapters, router, Tip cache."""

import torch
import torch.nn.functional as F

from continual_helpers import make_reference, make_stream
from genba.continual.learner import MixtureAdapters, TaskAdapters, TaskRouter, TipCache
from genba.continual.protocol import evaluate, make_learner
from genba.zeroshot import LOGIT_SCALE


def test_untrained_learner_is_the_zero_shot_model_exactly():
    stream = make_stream()
    learner = make_learner(stream, make_reference(), hidden=0)
    task = stream.tasks[1]
    batch = task.batch(task.test, 1)
    learner.set_known(stream.num_classes)
    expected = LOGIT_SCALE * task.test.image @ stream.text.T
    assert torch.equal(learner.logits(batch), expected)
    hidden = make_learner(stream, make_reference(), hidden=16)  # the bottleneck's output layer is zero too
    hidden.set_known(stream.num_classes)
    assert torch.equal(hidden.logits(batch), expected)


def test_training_moves_the_embedding_only_through_the_adapter():
    stream = make_stream()
    learner = make_learner(stream, make_reference())
    learner.set_known(2)
    batch = stream.tasks[0].batch(stream.tasks[0].train, 0)
    loss = learner(batch)
    loss.backward()
    names = {n for n, p in learner.named_parameters() if p.grad is not None}
    assert names == {"delta.out.weight", "delta.out.bias"}  # the class texts are buffers: frozen
    assert learner.text.requires_grad is False


def test_router_sends_unlike_images_to_the_zero_shot_path():
    g = torch.Generator().manual_seed(0)
    router = TaskRouter(4, quantile=0.05)
    v = F.normalize(torch.tensor([[1.0, 0, 0, 0]]) + 0.05 * torch.randn(20, 4, generator=g), dim=1)
    router.add_task(v, torch.zeros(20, dtype=torch.long), task=3)
    assert router(v).eq(3).float().mean() >= 0.9
    assert router(torch.tensor([[0.0, 1.0, 0, 0]])).tolist() == [-1]


def test_task_adapters_freeze_earlier_tasks_and_use_the_task_id():
    adapters = TaskAdapters(4, 3)
    adapters.add_task()
    adapters.add_task()
    assert not any(p.requires_grad for p in adapters.adapters[0].parameters())
    with torch.no_grad():
        adapters.adapters[1].out.bias.fill_(1.0)
    v = torch.randn(2, 4)
    out = adapters(v, torch.tensor([0, 1]))
    assert torch.equal(out[0], torch.zeros(3)) and torch.equal(out[1], torch.ones(3))
    assert torch.equal(adapters(v, torch.tensor([-1, -1])), torch.zeros(2, 3))  # no router entry: zero-shot


def test_mixture_starts_at_zero_and_new_gates_prefer_trainable_experts():
    moe = MixtureAdapters(4, 3, experts=4, hidden=5, top_k=2)
    moe.add_task()
    v = F.normalize(torch.randn(6, 4), dim=1)
    assert torch.equal(moe(v, torch.zeros(6, dtype=torch.long)), torch.zeros(6, 3))
    moe.experts[0].requires_grad_(False)
    moe.experts[1].requires_grad_(False)
    moe.add_task()
    assert moe.weights(v, 1)[:, :2].sum() == 0  # starts on experts 2 and 3


def test_tip_cache_adds_affinity_logits_of_seen_classes():
    cache = TipCache(num_classes=3, alpha=2.0, beta=1.0)
    assert torch.equal(cache(torch.ones(1, 2)), torch.zeros(1, 3))
    cache.add(torch.tensor([[1.0, 0.0]]), torch.tensor([2]))
    out = cache(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(out[:, 2], torch.tensor([2.0, 2.0 * torch.exp(torch.tensor(-1.0))]))
    assert out[:, :2].abs().sum() == 0 and cache.nbytes == 2 * 4 + 8


def test_evaluate_mtil_and_xtail_label_spaces():
    stream = make_stream()
    learner = make_learner(stream, make_reference())
    mtil, xtail = evaluate(learner, stream, "mtil"), evaluate(learner, stream, "xtail")
    assert len(mtil) == len(xtail) == 3
    assert all(x <= m + 1e-9 for m, x in zip(mtil, xtail))  # a larger label space can only lose here


def test_routed_images_predict_among_their_task_classes_only():
    router = TaskRouter(2, quantile=0.0)
    v = torch.tensor([[1.0, 0.0], [0.98, 0.199]])
    router.add_task(F.normalize(v, dim=1), torch.tensor([3, 4]), task=1)
    mask = router.allowed(torch.tensor([1, -1]), torch.arange(6))
    assert mask[0].tolist() == [False, False, False, True, True, False]
    assert mask[1].all()  # the zero-shot path keeps the union label space
