"""Teachers: the registry, tiny hf: DINOv2 / CLIP / SAM towers, cached targets, and bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genba.cache import TensorCache
from genba.errors import GenbaError
from genba.sak.folder import load_mask_folder
from genba.sak.teacher_models import ppocr_model_path
from genba.sak.teachers import load_teacher, teacher_kinds, teacher_targets

transformers = pytest.importorskip("transformers")

@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Leave torch's global RNG as found (later tests draw from it unseeded)."""
    with torch.random.fork_rng():
        yield



def _vision():
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)


def build_tiny(kind: str, directory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _build_tiny(kind, directory)


def _build_tiny(kind: str, directory):
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                                   mlp_ratio=2, image_size=32, patch_size=8))
    elif kind == "clip":
        text = dict(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    max_position_embeddings=16)
        model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=_vision(), projection_dim=16))
    else:
        vision = dict(hidden_size=32, output_channels=16, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                      patch_size=8, mlp_dim=64, global_attn_indexes=[0], window_size=0, num_pos_feats=8)
        model = transformers.SamModel(transformers.SamConfig(
            vision_config=vision, prompt_encoder_config=dict(hidden_size=16, image_size=32, patch_size=8, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)))
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sak_hf")
    return {kind: build_tiny(kind, root / kind) for kind in ("dinov2", "clip", "sam")}


@pytest.mark.parametrize("kind, dim, grid", [("dinov2", 32, 4), ("clip", 32, 4), ("sam", 16, 4)])
def test_hf_teachers_give_a_map_and_a_vector(tiny_dirs, kind, dim, grid):
    teacher = load_teacher(f"hf:{tiny_dirs[kind]}")
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    dense, pooled = teacher(images)
    assert dense.shape == (3, dim, grid, grid) and pooled.shape == (3, dim)
    assert teacher.dim == dim and "licence=" in teacher.provenance and kind in teacher.provenance
    assert teacher.parameter_count() > 0


def test_targets_are_cached_once(tiny_dirs, tmp_path):
    teacher = load_teacher(f"hf:{tiny_dirs['dinov2']}")
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    cache = TensorCache(tmp_path)
    first = teacher_targets(teacher, images, "fp-1", cache, grid=2, batch_size=2)
    assert first["dense"].shape == (5, 32, 2, 2) and first["dense"].dtype == torch.float16
    assert len(list((tmp_path / "sak-teacher").iterdir())) == 1
    teacher.features = None  # a cache hit must not run the teacher
    again = teacher_targets(teacher, images, "fp-1", cache, grid=2)
    assert torch.equal(again["dense"], first["dense"]) and torch.equal(again["pooled"], first["pooled"])


def test_registry_and_bad_teachers(tmp_path):
    assert {"efficientnet-lite0", "conse-dense", "ppocr-det", "hf"} <= set(teacher_kinds())
    with pytest.raises(GenbaError, match="unknown teacher 'dino'"):
        load_teacher("dino")
    with pytest.raises(GenbaError, match="no config.json"):
        load_teacher(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(GenbaError, match="'bert' checkpoint; SAK teachers must be one of dinov2, clip, sam"):
        load_teacher(f"hf:{tmp_path}")
    with pytest.raises(GenbaError, match="needs a directory"):
        load_teacher("hf")


@pytest.mark.skipif(ppocr_model_path() is None, reason="rapidocr-onnxruntime (extra genba[sak]) is not installed")
def test_ppocr_teacher_fine_map():
    teacher = load_teacher("ppocr-det")
    dense, pooled = teacher(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert dense.shape == (2, 96, 32, 32) and pooled.shape == (2, 96)
    assert "Apache-2.0" in teacher.provenance


def _mask_folder(root, sizes):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (image_size, mask_size) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (*image_size[::-1], 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros(mask_size[::-1], dtype=np.uint8)
        mask[2:10, 3:12] = 1 + i % 2
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_mask_folder_and_a_mask_of_the_wrong_size(tmp_path):
    good = load_mask_folder(_mask_folder(tmp_path / "good", [((40, 30), (40, 30))] * 3), size=32)
    assert good.images.shape == (3, 3, 32, 32) and good.depth is None and good.tasks == ["semantic", "boundary", "saliency"]
    assert torch.equal(good.saliency.bool(), good.semantic > 0) and good.classnames[0] == "background"
    bad = _mask_folder(tmp_path / "bad", [((40, 30), (40, 30)), ((40, 30), (20, 30))])
    with pytest.raises(GenbaError, match=r"mask '1.png' is 20x30 but its image '1.png' is 40x30"):
        load_mask_folder(bad)
    (tmp_path / "none").mkdir()
    with pytest.raises(GenbaError, match="images/ and masks/"):
        load_mask_folder(tmp_path / "none")
