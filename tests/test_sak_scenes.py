"""The composite-scene generator: seeded, split-disjoint, and its labels agree with each other."""

import numpy as np
import pytest
import torch

from genba.data import available_datasets
from genba.errors import GenbaError
from genba.sak.scenes import SceneSpec, boundaries_of, check_consistency, depth_of, make_scenes, make_splits

_OK = {name for name, ok, _ in available_datasets() if ok}
needs_sources = pytest.mark.skipif(not {"textile", "fashion-mnist", "animal-mnist"} <= _OK,
                                   reason="the scenes need the textile, fashion-mnist and animal-mnist datasets installed")

@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Leave torch's global RNG as found (later tests draw from it unseeded)."""
    with torch.random.fork_rng():
        yield



@pytest.fixture(scope="module")
def sources():
    return {}


@needs_sources
def test_scenes_are_deterministic_and_prefix_stable(sources):
    a = make_scenes("train", 6, SceneSpec(size=48), sources)
    b = make_scenes("train", 4, SceneSpec(size=48), sources)
    assert torch.equal(a.images[:4], b.images) and torch.equal(a.semantic[:4], b.semantic)
    assert a.images.shape == (6, 3, 48, 48) and a.images.dtype == torch.uint8
    other = make_scenes("train", 4, SceneSpec(size=48, seed=1), sources)
    assert not torch.equal(other.images, b.images)
    assert "NOT real scenes" in a.source


@needs_sources
def test_labels_agree(sources):
    splits = make_splits({"train": 8, "val": 4, "test": 8}, SceneSpec(size=48))
    for scenes in splits.values():
        check_consistency(scenes)
        assert scenes.semantic.max() <= 6 and scenes.saliency.any()
        ins = scenes.instance
        # depth is the layer order: nearer (smaller) where a later object lies
        for k in range(1, 4):
            if (ins == k).any():
                assert torch.allclose(scenes.depth[ins == k], torch.tensor(1 - k / 4))
        assert (scenes.boundary.bool() <= (torch.from_numpy(np.stack([boundaries_of(m) for m in ins.numpy()])) > 0)).all()
    assert splits["test"].fingerprint != splits["train"].fingerprint
    broken = make_scenes("val", 2, SceneSpec(size=48), sources)
    broken.saliency[0, 0, 0] ^= 1
    with pytest.raises(GenbaError, match="saliency"):
        check_consistency(broken)


def test_boundaries_and_depth_of_a_known_map():
    ins = np.zeros((5, 5), dtype=np.uint8)
    ins[1:3, 1:3] = 1
    ins[2:4, 2:4] = 2  # occludes part of object 1
    b = boundaries_of(ins)
    assert b[0, 0] == 0 and b[1, 1] == 1 and b[2, 2] == 1 and b[4, 4] == 0
    d = depth_of(ins, 3)
    assert d[0, 0] == 1.0 and d[1, 1] == pytest.approx(0.75) and d[3, 3] == pytest.approx(0.5)


def test_bad_scene_settings():
    with pytest.raises(GenbaError, match="scene size"):
        SceneSpec(size=4)
    with pytest.raises(GenbaError, match="unknown scene split"):
        make_scenes("holdout", 3)
