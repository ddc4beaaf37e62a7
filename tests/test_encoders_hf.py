"""The 'hf:<dir>' encoder on tiny random CLIP / SigLIP / DINOv2 checkpoints built offline.

Checkpoints are written with save_pretrained (safetensors) plus an offline-built tokenizer and a
preprocessor_config.json, then loaded through `load_encoder("hf:<dir>")`: the user's code path.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from genba.encoders import encoder_kinds, load_encoder  # noqa: E402
from genba.encoders.base import Encoder, ImageEncoder, TextEncoder, VisionLanguageEncoder  # noqa: E402
from genba.errors import GenbaError  # noqa: E402

WORDS = "a an the photo picture of cat dog car bird tree house small big red blue green".split()
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]  # ids 0..3
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
TEXT_LEN = 16

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

PREPROCESSORS = {
    "clip": {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_convert_rgb": True,
    },
    "siglip": {
        "image_processor_type": "SiglipImageProcessor",
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    },
    "dinov2": {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 36},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    },
}


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    try:  # huggingface_hub reads the variable at import time
        import huggingface_hub.constants as hub_constants

        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    _offline(monkeypatch)


def _save_tokenizer(directory) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", VOCAB["<bos>"]), ("<eos>", VOCAB["<eos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=TEXT_LEN,
    )
    tokenizer.save_pretrained(str(directory))


def _text_config() -> dict:
    return dict(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TEXT_LEN,
        pad_token_id=VOCAB["<pad>"],
        bos_token_id=VOCAB["<bos>"],
        eos_token_id=VOCAB["<eos>"],
    )


def _vision_config() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)


def _build(model_type: str, directory, seed: int = 0, safe: bool = True):
    import transformers

    torch.manual_seed(seed)
    if model_type == "clip":
        config = transformers.CLIPConfig(text_config=_text_config(), vision_config=_vision_config(), projection_dim=16)
        model = transformers.CLIPModel(config)
    elif model_type == "siglip":
        config = transformers.SiglipConfig(text_config=_text_config(), vision_config=_vision_config())
        model = transformers.SiglipModel(config)
    else:
        config = transformers.Dinov2Config(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8
        )
        model = transformers.Dinov2Model(config)
    model.save_pretrained(str(directory))
    if not safe:  # a legacy pickle checkpoint (transformers >= 5 always saves safetensors)
        (directory / "model.safetensors").unlink()
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "pytorch_model.bin")
    if model_type != "dinov2":
        _save_tokenizer(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSORS[model_type], indent=2))
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        _offline(patch)
        root = tmp_path_factory.mktemp("hf")
        return {kind: _build(kind, root / kind) for kind in ("clip", "siglip", "dinov2")}


def _images(count: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(45, 61), (70, 40), (32, 32), (100, 90)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:count]]


def _batch(encoder: Encoder, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([encoder.preprocess(image) for image in images])


def _assert_unit_rows(x: torch.Tensor) -> None:
    assert torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)


# ----------------------------------------------------------------------------- CLIP / SigLIP


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_vision_language_checkpoint(checkpoints, kind):
    encoder = load_encoder(f"hf:{checkpoints[kind]}")
    assert isinstance(encoder, Encoder) and isinstance(encoder, VisionLanguageEncoder)
    assert encoder.has_text and encoder.has_image
    expected_dim = 16 if kind == "clip" else 32
    assert (encoder.embed_dim, encoder.visual_dim) == (expected_dim, 32)

    pixels = _batch(encoder, _images(3))
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    joint, visual = encoder.encode_image_with_visual(pixels)
    assert joint.shape == (3, expected_dim) and visual.shape == (3, 32)
    _assert_unit_rows(joint)
    assert torch.equal(encoder.encode_image(pixels), joint)

    texts = ["a photo of a cat", "a red car", "the big blue house near a tree"]
    text = encoder.encode_text(texts)
    assert text.shape == (3, expected_dim)
    _assert_unit_rows(text)
    cos = joint @ text.T
    assert cos.min() >= -1 - 1e-5 and cos.max() <= 1 + 1e-5
    assert not text.requires_grad and not text.is_inference()  # ordinary tensors for callers

    # Deterministic, within one encoder and across loads; text is independent of batch company.
    assert torch.equal(encoder.encode_text(texts), text)
    again = load_encoder(f"hf:{checkpoints[kind]}")
    assert torch.allclose(again.encode_image_with_visual(pixels)[0], joint, atol=1e-6)
    assert torch.allclose(again.encode_text(texts), text, atol=1e-6)
    assert torch.allclose(encoder.encode_text(texts[:1]), text[:1], atol=1e-5)
    assert encoder.encode_text([]).shape == (0, expected_dim)


def test_clip_matches_transformers_forward(checkpoints):
    """Our joint embeddings are exactly CLIPModel's normalized image/text embeds."""
    import transformers

    encoder = load_encoder(f"hf:{checkpoints['clip']}")
    model = transformers.CLIPModel.from_pretrained(str(checkpoints["clip"]), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoints["clip"]), local_files_only=True)
    texts = ["a photo of a cat", "dog"]
    pixels = _batch(encoder, _images(2))
    with torch.no_grad():
        out = model(pixel_values=pixels, **tokenizer(texts, padding=True, return_tensors="pt"))
    assert torch.allclose(encoder.encode_image(pixels), out.image_embeds, atol=1e-5)
    assert torch.allclose(encoder.encode_text(texts), out.text_embeds, atol=1e-5)


# ----------------------------------------------------------------------------- DINOv2


def test_dinov2_is_vision_only(checkpoints):
    encoder = load_encoder(f"hf:{checkpoints['dinov2']}")
    assert isinstance(encoder, ImageEncoder) and not isinstance(encoder, TextEncoder)
    assert not encoder.has_text and not hasattr(encoder, "encode_text")
    assert encoder.embed_dim == encoder.visual_dim == 32
    pixels = _batch(encoder, _images(3))
    assert pixels.shape == (3, 3, 32, 32)
    joint, visual = encoder.encode_image_with_visual(pixels)
    assert joint.shape == visual.shape == (3, 32)
    _assert_unit_rows(joint)
    assert torch.allclose(joint, visual / visual.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(encoder.encode_image(pixels), joint)
    from genba.zeroshot import text_classifier

    with pytest.raises(GenbaError, match="no text tower.*CLIP or SigLIP"):
        text_classifier(encoder, ["cat"], ["a photo of a {}."])


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "kind, processor_name",
    [("clip", "CLIPImageProcessorPil"), ("siglip", "SiglipImageProcessorPil"), ("dinov2", "BitImageProcessorPil")],
)
def test_preprocess_matches_transformers_pil_processor(checkpoints, kind, processor_name):
    import transformers

    processor_class = getattr(transformers, processor_name, None)
    if processor_class is None:
        pytest.skip(f"transformers {transformers.__version__} has no {processor_name}")
    settings = {k: v for k, v in PREPROCESSORS[kind].items() if k != "image_processor_type"}
    processor = processor_class(**settings)
    encoder = load_encoder(f"hf:{checkpoints[kind]}")
    for image in _images(4):
        expected = processor(images=image, return_tensors="np")["pixel_values"][0]
        ours = encoder.preprocess(image)
        assert ours.shape == (3, 32, 32)
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4)


def test_preprocess_falls_back_to_config_without_preprocessor_config(checkpoints, tmp_path):
    directory = tmp_path / "clip"
    shutil.copytree(checkpoints["clip"], directory)
    (directory / "preprocessor_config.json").unlink()
    encoder = load_encoder(f"hf:{directory}")
    rgba = Image.new("RGBA", (50, 40), (10, 20, 30, 128))
    assert encoder.preprocess(rgba).shape == (3, 32, 32)  # vision_config.image_size, CLIP mean/std


# ----------------------------------------------------------------------------- provenance


def test_provenance_stable_and_tracks_weights(checkpoints, tmp_path):
    first = load_encoder(f"hf:{checkpoints['clip']}").provenance
    assert first == load_encoder(f"hf:{checkpoints['clip']}").provenance
    assert first.startswith("hf:clip:") and len(first.split(":")[-1]) == 64
    assert load_encoder(f"hf:{checkpoints['siglip']}").provenance.startswith("hf:siglip:")

    # A byte-identical copy elsewhere computes the same function: same provenance.
    copy = tmp_path / "copy"
    shutil.copytree(checkpoints["clip"], copy)
    assert load_encoder(f"hf:{copy}").provenance == first

    # Different weights (rewritten in place, same path): different provenance.
    _build("clip", copy, seed=1)
    changed = load_encoder(f"hf:{copy}").provenance
    assert changed != first and changed.startswith("hf:clip:")

    # Different preprocessing also changes the computed features, so the provenance too.
    settings = dict(PREPROCESSORS["clip"], image_mean=[0.5, 0.5, 0.5])
    (copy / "preprocessor_config.json").write_text(json.dumps(settings))
    assert load_encoder(f"hf:{copy}").provenance not in (first, changed)


# ----------------------------------------------------------------------------- pytorch_model.bin


def test_bin_checkpoint_loads_with_weights_only(checkpoints, tmp_path):
    directory = _build("clip", tmp_path / "bin", safe=False)
    assert (directory / "pytorch_model.bin").is_file() and not (directory / "model.safetensors").exists()
    from_bin = load_encoder(f"hf:{directory}")
    from_safetensors = load_encoder(f"hf:{checkpoints['clip']}")  # same seed: same weights
    pixels = _batch(from_bin, _images(2))
    assert torch.allclose(from_bin.encode_image(pixels), from_safetensors.encode_image(pixels), atol=1e-6)
    assert torch.allclose(from_bin.encode_text(["a cat"]), from_safetensors.encode_text(["a cat"]), atol=1e-6)


class _NotATensor:
    pass


def test_bin_with_pickled_objects_is_refused(checkpoints, tmp_path):
    directory = tmp_path / "evil"
    shutil.copytree(checkpoints["dinov2"], directory)
    (directory / "model.safetensors").unlink()
    torch.save({"payload": _NotATensor()}, directory / "pytorch_model.bin")
    with pytest.raises(GenbaError, match="refusing to load"):
        load_encoder(f"hf:{directory}")


# ----------------------------------------------------------------------------- errors


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_registered():
    assert "hf" in encoder_kinds()


def test_missing_directory(tmp_path):
    with pytest.raises(GenbaError, match="does not exist") as error:
        load_encoder(f"hf:{tmp_path / 'nope'}")
    _one_line(error)


def test_not_a_directory(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(GenbaError, match="is not a directory") as error:
        load_encoder(f"hf:{path}")
    _one_line(error)


def test_no_argument():
    with pytest.raises(GenbaError, match="hf:/path/to/checkpoint"):
        load_encoder("hf")


def test_no_config_json(tmp_path):
    with pytest.raises(GenbaError) as error:
        load_encoder(f"hf:{tmp_path}")
    assert _one_line(error) == f"'{tmp_path}' is not a Hugging Face checkpoint directory: no config.json"


def test_wrong_kind_of_checkpoint(tmp_path):
    import transformers

    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(str(tmp_path))
    with pytest.raises(GenbaError, match="model_type 'bert'.*clip, siglip, dinov2") as error:
        load_encoder(f"hf:{tmp_path}")
    _one_line(error)


def test_missing_weights(checkpoints, tmp_path):
    shutil.copy(checkpoints["clip"] / "config.json", tmp_path / "config.json")
    with pytest.raises(GenbaError, match="no model weights") as error:
        load_encoder(f"hf:{tmp_path}")
    _one_line(error)


def test_weights_from_another_model_are_rejected(checkpoints, tmp_path):
    directory = tmp_path / "mixed"
    shutil.copytree(checkpoints["clip"], directory)
    shutil.copy(checkpoints["dinov2"] / "model.safetensors", directory / "model.safetensors")
    with pytest.raises(GenbaError, match="do not fit a clip model") as error:
        load_encoder(f"hf:{directory}")
    _one_line(error)


def test_missing_tokenizer(checkpoints, tmp_path):
    directory = tmp_path / "notok"
    shutil.copytree(checkpoints["clip"], directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    with pytest.raises(GenbaError, match="tokenizer") as error:
        load_encoder(f"hf:{directory}")
    _one_line(error)


# ----------------------------------------------------------------------------- backbone surface
@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2"])
def test_hf_backbone_cut_points_give_the_encoders_visual_features(checkpoints, kind):
    from genba.encoders import load_backbone

    backbone = load_backbone(f"hf:{checkpoints[kind]}")
    encoder = load_encoder(f"hf:{checkpoints[kind]}")
    pixels = _batch(encoder, _images(2))
    with torch.no_grad():
        tokens = backbone.forward_features(pixels)
        mid = backbone.forward_features(pixels, until="layer0")
        assert torch.allclose(backbone.forward_from(mid, "layer0"), tokens, atol=1e-6)
        visual = backbone.forward_head(tokens)
    assert tokens.dim() == 3 and backbone.stages[0] == "embeddings" and backbone.stages[-1] == "norm"
    assert torch.allclose(visual, encoder.encode_image_with_visual(pixels)[1], atol=1e-5)
    names = {n.rsplit(".", 1)[-1] for n, _ in backbone.module.named_modules()}
    assert set(backbone.adapter_targets()) <= names  # what peft's target_modules would match


def test_capability_protocols():
    """Encoders are split by what they embed; has_text / has_image follow the class, not a flag."""
    tiny = load_encoder("tiny")
    assert isinstance(tiny, VisionLanguageEncoder) and tiny.has_text and tiny.has_image

    class Words(TextEncoder):
        name, embed_dim = "words", 3

        def encode_text(self, texts):
            return torch.eye(3)[: len(texts)]

    words = Words()
    assert words.has_text and not words.has_image and not isinstance(words, ImageEncoder)
    from genba.zeroshot import text_classifier

    assert text_classifier(words, ["a", "b"], ["{}"]).shape == (2, 3)  # a text encoder is all zero-shot text needs
