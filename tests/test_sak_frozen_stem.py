"""SAK on a frozen pretrained stem: the backbone never changes, training reads cached activations
that equal the live forward, and only the neck, paths, routers and heads learn."""

import pytest
import torch

from genba.cache import TensorCache
from genba.errors import GenbaError
from genba.sak import pipeline as P
from genba.sak.frozen_stem import backbone_levels, cut_points, stem_activations
from genba.sak.losses import median_frequency_weights
from genba.sak.scenes import SceneSet
from genba.sak.student import StudentConfig, TeacherHeadModel
from genba.train import TrainConfig

TEACHERS = {"a": [6, 2, 2], "b": [5, 4, 4]}
TASKS = {"semantic": 3, "boundary": 1, "saliency": 1, "depth": 1}
STEM = "efficientnet-lite0"


@pytest.fixture(autouse=True)
def _keep_global_rng():
    with torch.random.fork_rng():
        yield


@pytest.fixture(scope="module")
def backbone():
    from genba.backbones import load_backbone

    return load_backbone(STEM)


def _scenes(n: int, seed: int) -> SceneSet:
    g = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, 3, (n, 32, 32), generator=g)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    fg = (semantic > 0).to(torch.uint8)
    return SceneSet(f"rand{seed}", images, semantic, fg, fg, torch.rand(n, 32, 32, generator=g), ["bg", "x", "y"], "random")


def _targets(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {f"{t}/{k}": torch.randn((n, d, h, w) if k == "dense" else (n, d), generator=g).half()
            for t, (d, h, w) in TEACHERS.items() for k in ("dense", "pooled")}


def test_cut_points_are_the_last_block_of_each_stride(backbone):
    stages, channels = cut_points(backbone, 64)
    assert stages == ["block2", "block4", "block10", "block15"] and channels == [24, 40, 112, 320]
    cfg, _ = P.stem_config(STEM, 64, backbone)
    assert cfg["patch"] == P.FROZEN_PATCH and cfg["stem_provenance"] == backbone.provenance
    with pytest.raises(GenbaError):
        StudentConfig(stem=STEM)  # a frozen stem needs its cut points


def test_cached_activations_equal_the_live_forward(backbone, tmp_path):
    scenes = _scenes(5, 0)
    cache = TensorCache(tmp_path)
    model = P.build_student("sak", TEACHERS, TASKS, stem=STEM, backbone=backbone, image_size=32, dim=16, stem_input=64)
    first = P.model_tensors(model, scenes, None, cache)
    again = P.model_tensors(model, scenes, None, cache)  # read back from the cache
    keys = model.input_keys
    assert keys == ["stem/0", "stem/1", "stem/2", "stem/3"]
    assert all(torch.equal(first[k], again[k]) and first[k].dtype == torch.float16 for k in keys)
    live = backbone_levels(backbone, scenes.images, model.cfg.stem_levels, 64, model.cfg.grid)
    assert [tuple(x.shape[1:]) for x in live] == [(24, 4, 4), (40, 4, 4), (112, 4, 4), (320, 2, 2)]  # pooled to the 4x4 grid
    for k, x in zip(keys, live):
        assert torch.allclose(first[k].float(), x, rtol=2e-3, atol=2e-3)  # float16 storage
    model.eval()
    with torch.no_grad():
        cached_out = model(P.model_inputs(model, first))
        live_out = model(scenes.images)
    for task in TASKS:
        assert torch.allclose(cached_out["tasks"][task], live_out["tasks"][task], atol=1e-2)
    uncached = stem_activations(backbone, scenes.images, scenes.fingerprint, model.cfg.stem_levels, 64, model.cfg.grid, None)
    assert all(torch.equal(uncached[k], first[k]) for k in keys)


def test_training_changes_only_the_neck_paths_routers_and_heads(backbone):
    torch.manual_seed(0)
    model = P.build_student("sak", TEACHERS, TASKS, stem=STEM, backbone=backbone, image_size=32, dim=16, stem_input=64)
    assert not any(k.startswith("stem.") and "proj" not in k and "norm" not in k for k in model.state_dict())
    frozen_before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split = {s: P.model_tensors(model, _scenes(n, i), _targets(n, i), None) for i, (s, n) in enumerate((("train", 16), ("val", 8)))}
    config = TrainConfig(lr=1e-2, epochs=2, batch_size=8, seed=0)
    kw = dict(teachers=list(TEACHERS), tasks=list(TASKS))
    P.train_stage(model, split["train"], split["val"], config, stage=1, **kw)
    weights = median_frequency_weights(split["train"]["semantic"], 3)
    P.train_stage(model, split["train"], split["val"], config, stage=2, **kw, class_weights=weights)
    after_backbone = backbone.module.state_dict()
    assert all(torch.equal(frozen_before[k], after_backbone[k]) for k in frozen_before)  # BN statistics too
    assert not any(p.requires_grad for p in backbone.module.parameters())
    after = model.state_dict()
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("stem.") else "")
               for k in before if not torch.equal(before[k], after[k])}
    assert {"stem.proj", "stem.norm", "paths", "routers", "heads", "distill"} <= changed
    assert model.deployed_parameters() == model.trainable_parameters() + sum(p.numel() for p in backbone.module.parameters())


def test_save_load_rebuilds_the_frozen_stem_by_name(backbone, tmp_path):
    torch.manual_seed(0)
    model = P.build_student("no-tsap", TEACHERS, TASKS, stem=STEM, backbone=backbone, image_size=32, dim=16, stem_input=64)
    P.save_student(tmp_path, model)
    loaded, _ = P.load_student(tmp_path)
    images = _scenes(2, 3).images
    with torch.no_grad():
        assert torch.allclose(model.eval()(images)["tasks"]["depth"], loaded(images)["tasks"]["depth"], atol=1e-6)
    bad = StudentConfig(**{**model.cfg.to_dict(), "stem_provenance": "efficientnet-lite0:other"})
    with pytest.raises(GenbaError, match="differ"):
        P.SAKStudent(bad)(images)


def test_linear_probe_and_median_frequency_weights():
    cfg = StudentConfig(image_size=32, patch=4, dim=16, tasks=TASKS)
    probe = TeacherHeadModel(6, cfg, probe="linear")
    out = probe(torch.randn(2, 6, 2, 2))["tasks"]
    assert out["semantic"].shape == (2, 3, 32, 32) and out["depth"].shape == (2, 1, 32, 32)
    assert sum(p.numel() for p in probe.parameters()) == sum(6 * 16 * c + 16 * c for c in TASKS.values())
    labels = torch.tensor([0] * 8 + [1] * 2 + [2] * 1)
    w = median_frequency_weights(labels, 4)  # freq 8/11, 2/11, 1/11; class 3 absent -> 1
    assert torch.allclose(w, torch.tensor([2 / 8, 1.0, 2.0, 1.0]))
    with pytest.raises(GenbaError):
        TeacherHeadModel(6, cfg, probe="deep")


def test_paired_test_matches_scipy_and_counts_sign_flips():
    from scipy.stats import ttest_rel

    from genba.sak.metrics import paired_test

    a, b = [1.0, 2.0, 3.5, 0.5, 2.0], [0.5, 1.0, 3.0, 1.0, 1.0]
    out = paired_test(a, b)
    ref = ttest_rel(a, b)
    assert abs(out["t"] - ref.statistic) < 1e-9 and abs(out["p_t"] - ref.pvalue) < 1e-9
    assert out["wins"] == 4 and out["n"] == 5
    # d = [.5, 1, .5, -.5, 1], sum 2.5: abs(sum) >= 2.5 when the signs of |d| = [.5, 1, .5, .5, 1] flip at most
    # one 0.5 (4 patterns: 3.5, 2.5, 2.5, 2.5) and for their negatives: 8 of 32
    assert out["p_sign_flip"] == 8 / 32
