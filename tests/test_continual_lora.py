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
    ones = torch.ones(len(y), dtype=torch.long)
    fit(learner, TensorData(x=pixels, y=y, task=ones), TrainConfig(lr=1e-2, epochs=1, batch_size=6), progress=False)
    assert all(torch.equal(p, first[n]) for n, p in learner.named_parameters() if n in first)
    with torch.no_grad():  # task 0 still reads its own LoRA; an unknown task with no router entry reads frozen CLIP
        joint, _ = clip.encode_image_with_visual(pixels)
        unseen = learner.embed({"x": pixels, "task": -ones})
        assert torch.allclose(unseen, joint, atol=1e-5)
        assert not torch.allclose(learner.embed({"x": pixels, "task": 0 * ones}), joint, atol=1e-5)


def test_cli_lora_stream_on_the_tiny_clip(clip, tmp_path, capsys, one_thread):
    import json

    from conftest import make_color_folder
    from genba.cli import main

    a = make_color_folder(tmp_path / "a", per_class=4)
    b = make_color_folder(tmp_path / "b", per_class=4, seed=2)
    for method in ("task-adapters", "lwf"):
        out = tmp_path / f"{method}.json"
        code = main(["continual", "--encoder", f"hf:{clip.directory}", "--stream", f"folder:{a},folder:{b}",
                     "--method", method, "--setting", "xtail", "--lora", "2", "--control", "none", "--quiet",
                     "--val-per-class", "1", "--set", "train.epochs=1", "--json", str(out)])
        assert code == 0, capsys.readouterr().err
        result = json.loads(out.read_text())
        assert len(result["accuracy_matrix"]) == 3 and result["cost"]["trainable_parameters"] > 0
    code = main(["continual", "--encoder", "tiny", "--stream", f"folder:{a},folder:{b}", "--method", "replay",
                 "--lora", "2", "--control", "none", "--quiet"])
    assert code == 2 and "--lora needs an hf: CLIP encoder" in capsys.readouterr().err
