"""The trainable backbone surface: cut points compose to the library's own forward; cached activations."""

import pytest
import torch

from genba.backbones import backbone_names, extract_activations, load_backbone
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.errors import GenbaError


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


def test_cut_points_compose_to_the_full_forward(lite0, one_thread):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = lite0.net.extract_features(x)  # the library's own forward
        mid = lite0.forward_features(x, until="block12")
        assert torch.equal(lite0.forward_features(x), full)
        assert torch.equal(lite0.forward_from(mid, "block12"), full)
        assert lite0.forward_head(full).shape == (2, 1280)
    assert lite0.stages[0] == "stem" and lite0.stages[-1] == "head"
    trainable = {id(p) for m in lite0.trainable_modules(after="block14") for p in m.parameters()}
    assert trainable == {id(p) for m in (lite0.net._blocks[15], lite0.net._conv_head, lite0.net._bn1) for p in m.parameters()}


def test_every_registered_backbone_kind_builds_and_cuts():
    from genba.backbones import BACKBONES

    names = backbone_names()
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(names)
    for kind in [n for n in names if n in BACKBONES and n != "hf"]:
        bb = load_backbone(kind, pretrained=False)
        assert bb.stages and bb.feature_dim > 0 and bb.provenance
    with pytest.raises(GenbaError, match="takes no argument"):
        load_backbone("efficientnet-lite0:x")


def test_unknown_stage_and_backbone_are_clear_errors(lite0):
    with pytest.raises(GenbaError, match="cut points"):
        lite0.forward_features(torch.zeros(1, 3, 32, 32), until="block99")
    with pytest.raises(GenbaError, match="unknown backbone"):
        load_backbone("resnet-9000")


def test_activations_are_cached_by_stage_and_size(tmp_path, color_folder, lite0, one_thread):
    dataset = load_dataset(f"folder:{color_folder}")
    cache = TensorCache(tmp_path / "cache")
    acts = extract_activations(lite0, dataset, "train", stage="block12", image_size=32, cache=cache, progress=False)
    assert acts.x.dtype == torch.float16 and acts.x.shape[1] == 192 and len(acts) == len(dataset.splits["train"])
    files = list((tmp_path / "cache" / "activations").glob("*.safetensors"))
    again = extract_activations(lite0, dataset, "train", stage="block12", image_size=32, cache=cache, progress=False)
    assert torch.equal(again.x, acts.x) and len(files) == 1
    extract_activations(lite0, dataset, "train", stage="head", image_size=32, cache=cache, progress=False)
    assert len(list((tmp_path / "cache" / "activations").glob("*.safetensors"))) == 2
