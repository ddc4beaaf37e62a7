"""Learner variant (b): the trunk's last stage trains from cached activations (genba.backbones)."""

import pytest
import torch

from conftest import make_color_folder
from genba.backbones import load_backbone
from genba.cache import TensorCache
from genba.continual.protocol import ContinualSpec, make_learner, run_continual
from genba.continual.reference import load_reference
from genba.continual.stream import TaskSpec, build_stream
from genba.encoders import load_encoder
from genba.train import TrainConfig
from genba.zeroshot import LOGIT_SCALE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trunk")
    a = make_color_folder(root / "a", per_class=6)
    b = make_color_folder(root / "b", per_class=6, seed=3)
    trunk = (load_backbone("efficientnet-lite0"), "block15", 32)
    cache = TensorCache(root / "cache")
    encoder = load_encoder("tiny")
    stream = build_stream([TaskSpec(f"folder:{a}"), TaskSpec(f"folder:{b}")], encoder, cache, val_per_class=1,
                          trunk=trunk)
    return stream, load_reference(encoder, cache, crops=16, trunk=trunk), trunk


def test_trunk_learner_starts_at_zero_shot_and_trains_the_last_stage(setup, one_thread):
    stream, reference, trunk = setup
    task = stream.tasks[0]
    assert task.train.visual.dim() == 4  # cached activations, not pooled features
    learner = make_learner(stream, reference, trunk=trunk)
    learner.set_known(stream.num_classes)
    with torch.no_grad():
        assert torch.equal(learner.logits(task.batch(task.test, 0)), LOGIT_SCALE * task.test.image @ stream.text.T)
    trainable = {n for n, p in learner.named_parameters() if p.requires_grad}
    assert any(n.startswith("trunk._conv_head") for n in trainable) and "delta.out.weight" in trainable
    assert not any(n.startswith("trunk._blocks.0.") for n in trainable)
    result = run_continual(stream, reference, ContinualSpec(method="finetune", trunk=trunk,
                                                            train=TrainConfig(lr=1e-2, epochs=2, batch_size=8)))
    assert result["cost"]["trainable_parameters"] > 320 * 1280  # the head conv trains
