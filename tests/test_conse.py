"""The embedded default VLM on two real images (loads EfficientNet-Lite0 and MiniLM, ~5 s)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from genba.encoders import load_encoder
from genba.encoders.conse import ConseEncoder, ConseOptions, imagenet_classnames, parse_conse_options
from genba.errors import GenbaError


@pytest.fixture(scope="module")
def conse():
    return load_encoder("conse")


def test_imagenet_names():
    names = imagenet_classnames()
    assert len(names) == 1000 and names[0] == "tench"


def test_options_parse_and_validate():
    assert parse_conse_options("topk=5") == ConseOptions(join="topk", top_k=5)
    assert parse_conse_options("linear=0.1") == ConseOptions(join="linear", ridge=0.1)
    with pytest.raises(GenbaError, match="unknown ConSE option"):
        parse_conse_options("median")
    with pytest.raises(GenbaError, match="top_k"):
        ConseEncoder(ConseOptions(top_k=0))


def test_provenance_names_weights_and_join(conse):
    assert conse.provenance == load_encoder("conse").provenance
    assert conse.provenance != load_encoder("conse:topk=3").provenance
    assert conse.provenance.startswith("conse-v1:")


def test_images_and_texts_share_one_space(conse):
    # A red square and a green square: the joint embeddings are unit vectors in MiniLM's space,
    # and each image is closer to its own colour word than to the other's.
    images = [Image.new("RGB", (64, 48), (200, 20, 20)), Image.new("RGB", (300, 300), (240, 240, 240))]
    pixels = torch.stack([conse.preprocess(im) for im in images])
    assert pixels.shape == (2, 3, 224, 224) and pixels.min() >= -1 and pixels.max() <= 1
    joint, visual = conse.encode_image_with_visual(pixels)
    assert joint.shape == (2, 384) and visual.shape == (2, 1280)
    assert torch.allclose(joint.norm(dim=1), torch.ones(2), atol=1e-5)
    text = conse.encode_text(["a photo of a dog.", "a photo of a cat.", "a photo of a dog."])
    assert text.shape == (3, 384) and torch.allclose(text[0], text[2], atol=1e-6)
    assert (joint @ text.T).abs().max() <= 1 + 1e-5
    linear = ConseEncoder(ConseOptions(join="linear"))
    linear.__dict__.update(backbone=conse.backbone, text_model=conse.text_model)
    assert torch.allclose(linear.join_visual(visual).norm(dim=1), torch.ones(2), atol=1e-5)
