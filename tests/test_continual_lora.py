"""LoRA through peft on the tiny CLIP checkpoint: zero-shot at init, only LoRA trains, strategies reuse it."""

import pytest
import torch

pytest.importorskip("peft")

from genba.continual.peft_lora import LoraCLIPLearner
from genba.continual.strategies import make_strategy
from genba.encoders import load_encoder
from genba.train import TensorData, TrainConfig, fit
from test_encoders_hf import _build, _offline  # the tiny checkpoints of the encoder tests


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        _offline(patch)
        directory = _build("clip", tmp_path_factory.mktemp("lora") / "clip")
        return load_encoder(f"hf:{directory}")


def _data(encoder, n=12):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(n, 3, 32, 32, generator=g)
    text = encoder.encode_text([f"a photo of a {c}." for c in ("cat", "dog", "car")])
    return pixels, torch.arange(n) % 3, text


def test_untrained_lora_learner_is_the_frozen_clip(clip, one_thread):
    pixels, y, text = _data(clip)
    learner = LoraCLIPLearner(clip, text, r=2)
    joint, _ = clip.encode_image_with_visual(pixels)
    with torch.no_grad():
        assert torch.allclose(learner.logits({"x": pixels, "y": y}), 100.0 * joint @ text.T, atol=1e-4)
    trainable = {n for n, p in learner.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_trains_through_the_engine_and_base_stays_frozen(clip, one_thread):
    pixels, y, text = _data(clip)
    learner = LoraCLIPLearner(clip, text, r=2)
    base = {n: p.detach().clone() for n, p in learner.named_parameters() if not p.requires_grad}
    ewc = make_strategy("ewc", weight=1.0, fisher_batch=4)
    data = TensorData(x=pixels, y=y)
    with torch.no_grad():
        before = learner({"x": pixels, "y": y}).item()
    fit(learner, data, TrainConfig(lr=1e-2, epochs=3, batch_size=6), progress=False)
    with torch.no_grad():
        assert learner({"x": pixels, "y": y}).item() < before
    assert all(torch.equal(p, base[n]) for n, p in learner.named_parameters() if n in base)
    ewc.end_task(learner, data, 0)  # the contract's strategies run on this objective unchanged
    (penalty,) = ewc.callbacks(learner)
    assert penalty.penalty().item() == 0.0


def test_one_lora_per_task_keeps_the_earlier_one(clip, one_thread):
    pixels, y, text = _data(clip)
    learner = LoraCLIPLearner(clip, text, r=2)
    fit(learner, TensorData(x=pixels, y=y), TrainConfig(lr=1e-2, epochs=1, batch_size=6), progress=False)
    first = {n: p.detach().clone() for n, p in learner.named_parameters() if ".task-0." in n}
    learner.add_task_adapter(1)
    assert all(".task-1." in n for n, p in learner.named_parameters() if p.requires_grad)
    fit(learner, TensorData(x=pixels, y=y), TrainConfig(lr=1e-2, epochs=1, batch_size=6), progress=False)
    assert all(torch.equal(p, first[n]) for n, p in learner.named_parameters() if n in first)
