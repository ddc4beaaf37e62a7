"""SAK student parts: adapter paths and routers start as the identity / the uniform average."""

import pytest
import torch

from genba.errors import GenbaError
from genba.sak.student import AdapterPath, DenseHead, Router, SAKStudent, StudentConfig, TeacherHeadModel

TEACHERS = {"a": [12, 2, 2], "hf:/x/y.z": [5, 8, 8]}
TASKS = {"semantic": 4, "boundary": 1, "saliency": 1, "depth": 1}

@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Leave torch's global RNG as found (later tests draw from it unseeded)."""
    with torch.random.fork_rng():
        yield



def test_adapter_path_starts_as_the_stem_and_keeps_shapes():
    torch.manual_seed(0)
    path = AdapterPath(dim=16, depth=3)
    stem = [torch.randn(2, 9, 16) for _ in range(3)]
    outs = path(stem)
    assert [o.shape for o in outs] == [(2, 9, 16)] * 3
    assert all(torch.equal(o, x) for o, x in zip(outs, stem))  # scale 0: identity / skip
    assert all(a.scale.item() == 0 and a.down.out_features == 4 and a.up.out_features == 16 for a in path.adapters)
    with torch.no_grad():
        path.adapters[0].scale.fill_(0.5)
    moved = path(stem)
    assert not torch.equal(moved[0], stem[0])
    # the residual of block 1 is carried along the chain to later blocks
    delta0 = moved[0] - stem[0]
    assert torch.allclose(moved[2] - stem[2], delta0, atol=1e-6)
    with pytest.raises(ValueError):
        path(stem[:2])


def test_adapter_scale_receives_gradient_at_zero_init():
    path = AdapterPath(dim=8, depth=2)
    stem = [torch.randn(3, 4, 8) for _ in range(2)]
    path(stem)[-1].pow(2).sum().backward()
    assert path.adapters[0].scale.grad is not None and path.adapters[0].scale.grad.abs() > 0
    assert path.adapters[0].down.weight.grad.abs().sum() == 0  # only the scale moves first


def test_router_is_uniform_at_init_and_a_softmax_after():
    router = Router(dim=16, representations=4)
    tokens = torch.randn(5, 9, 16)
    gate = router(tokens)
    assert gate.shape == (5, 4)
    assert torch.allclose(gate, torch.full((5, 4), 0.25))
    with torch.no_grad():
        router.mlp[2].weight.normal_()
    gate = router(tokens)
    assert torch.allclose(gate.sum(1), torch.ones(5)) and (gate > 0).all()
    assert not torch.allclose(gate, torch.full((5, 4), 0.25))
    fixed = Router(dim=16, representations=3, learned=False)
    assert torch.allclose(fixed(tokens), torch.full((5, 3), 1 / 3))


def test_student_forward_shapes_and_variants():
    torch.manual_seed(0)
    cfg = StudentConfig(image_size=32, patch=8, dim=16, depth=2, heads=2, teachers=TEACHERS, tasks=TASKS)
    model = SAKStudent(cfg)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = model(images)
    assert out["tasks"]["semantic"].shape == (3, 4, 32, 32)
    assert all(out["tasks"][t].shape == (3, 1, 32, 32) for t in ("boundary", "saliency", "depth"))
    assert out["teachers"]["a"][0].shape == (3, 12, 2, 2) and out["teachers"]["a"][1].shape == (3, 12)
    assert out["teachers"]["hf:/x/y.z"][0].shape == (3, 5, 8, 8)  # upsampled from the 4x4 token grid
    assert all(g.shape == (3, 3) for g in out["gates"].values())  # stem + 2 paths
    # at init every path equals the stem, so the mixture is the stem whatever the gate
    stem_final, reps = model.representations(images)
    assert all(torch.equal(r, stem_final) for r in reps)
    assert set(model(images, tasks=["depth"])["tasks"]) == {"depth"}
    m2o = SAKStudent(StudentConfig(image_size=32, patch=8, dim=16, depth=2, heads=2, teachers=TEACHERS, tasks=TASKS,
                                   tsap=False, distill_head="mlp"))
    assert len(m2o.paths) == 0 and m2o(images)["gates"]["depth"].shape == (3, 1)
    assert m2o.deployed_parameters() < model.deployed_parameters()


def test_heads_and_config_errors():
    head = DenseHead(dim=16, channels=2, patch=4)
    assert head(torch.randn(2, 16, 16)).shape == (2, 2, 16, 16)
    oracle = TeacherHeadModel(7, StudentConfig(image_size=32, patch=8, dim=16, heads=2, tasks={"saliency": 1}))
    assert oracle(torch.randn(2, 7, 2, 2))["tasks"]["saliency"].shape == (2, 1, 32, 32)
    with pytest.raises(GenbaError, match="unknown task"):
        StudentConfig(tasks={"normals": 3})
    with pytest.raises(GenbaError, match="multiple of the patch"):
        StudentConfig(image_size=30)
