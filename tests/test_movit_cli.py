"""`genba movit train | predict | prototypes`, the saved artefact and bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from genba.cli import main
from genba.data import load_dataset
from genba.errors import GenbaError
from genba.movit.artefact import load_artefact, prototype_members
from genba.movit.data import fraction_indices, load_pixels
from tests.conftest import make_color_folder

TINY = ["--steps", "6", "--set", "model.dim=8", "--set", "model.depth=1", "--set", "model.heads=2",
        "--set", "mem.capacity=64", "--set", "mem.prototypes=4", "--set", "mem.topk=4", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_color_folder(tmp_path_factory.mktemp("data") / "colors", per_class=8, size=12)
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    assert main(["movit", "train", "--dataset", f"folder:{root}", "--fraction", "1", "--out", str(out),
                 "--cache-dir", str(cache), *TINY]) == 0
    return root, out, cache


def test_train_writes_model_and_results_with_every_hyperparameter(trained):
    _, out, _ = trained
    result = json.loads((out / "results.json").read_text())
    hp = result["hyperparameters"]
    assert {"train.lr", "train.epochs", "mem.alpha", "mem.capacity", "mem.topk", "mem.prototypes", "model.dim"} <= hp.keys()
    assert all("chosen" in v for v in hp.values())
    assert hp["model.dim"] == {"value": 8, "chosen": "set by the user (--set)"}
    assert hp["mem.alpha"]["chosen"].startswith("fixed in advance")
    assert result["inference"] == "prototypes" and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["memory_bytes_prototypes"] < result["memory_bytes_full"]


def test_saved_model_predicts_identically_without_training_data(trained, capsys):
    root, out, cache = trained
    model, meta = load_artefact(out / "movit.safetensors")
    ds = load_dataset(f"folder:{root}")
    size, _, ch = (int(v) for v in meta["provenance"]["input"].split(":")[1].split("x"))
    x = load_pixels(ds, ds.splits["test"], size, ch, None)
    pred = model.predict_logits(x).argmax(1)
    result = json.loads((out / "results.json").read_text())
    acc = float((pred == torch.as_tensor(ds.labels[ds.splits["test"]])).float().mean())
    assert acc == pytest.approx(result["test_accuracy"])  # same numbers as the model right after training
    again, _ = load_artefact(out / "movit.safetensors")
    assert torch.equal(again.predict_logits(x), model.predict_logits(x))
    capsys.readouterr()
    assert main(["movit", "predict", "--model", str(out / "movit.safetensors"), "--dataset", f"folder:{root}",
                 "--cache-dir", str(cache), "--out", str(out / "pred.json"), "--quiet"]) == 0
    pred_json = json.loads((out / "pred.json").read_text())
    assert [p["label"] for p in pred_json["predictions"]] == [ds.classnames[int(p)] for p in pred]
    # prototypes are inspectable: every one names the training images it summarises
    members = prototype_members(model)
    train_ids = set(meta["provenance"]["train_ids"])
    assert members and all(m["images"] and set(m["images"]) <= train_ids for m in members)
    assert main(["movit", "prototypes", "--model", str(out / "movit.safetensors")]) == 0
    assert "prototype 0" in capsys.readouterr().out


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("fraction, message", [("0", "in (0, 1]"), ("1.5", "in (0, 1]"), ("0.01", "without images")])
def test_bad_fraction_is_one_clear_error_and_writes_nothing(trained, tmp_path, capsys, fraction, message):
    root, _, cache = trained
    out = tmp_path / "new"
    assert main(["movit", "train", "--dataset", f"folder:{root}", "--fraction", fraction, "--out", str(out),
                 "--cache-dir", str(cache), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genba: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_memory_of_another_encoder_is_refused_and_left_unchanged(trained, tmp_path, capsys):
    _, out, _ = trained
    before = _digest(out)
    with pytest.raises(GenbaError, match="made for input"):
        load_artefact(out / "movit.safetensors", expect_input="efficientnet-lite0@abc:head:128")
    # an existing model is never overwritten by a new run
    assert main(["movit", "train", "--dataset", "digits", "--fraction", "0.5", "--out", str(out), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    damaged = tmp_path / "damaged.safetensors"
    raw = bytearray((out / "movit.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(GenbaError, match="checksum"):
        load_artefact(damaged)
    assert _digest(out) == before


def test_fractions_are_nested_and_stratified():
    labels = np.repeat(np.arange(3), [100, 50, 20])
    train = np.arange(170)
    small, big = (fraction_indices(labels, train, f, seed=4) for f in (0.1, 0.3))
    assert set(small) <= set(big)
    assert np.bincount(labels[small]).tolist() == [10, 5, 2] and np.bincount(labels[big]).tolist() == [30, 15, 6]
    assert not np.array_equal(small, fraction_indices(labels, train, 0.1, seed=5))
    assert len(fraction_indices(labels, train, 1.0, seed=0)) == 170
    with pytest.raises(GenbaError, match="class '2'"):
        fraction_indices(labels, train, 0.02, seed=0)  # 0.4 of class 2's 20 images rounds to 0


def test_validation_split_carved_from_the_fraction_picks_the_epoch(trained, tmp_path):
    root, _, cache = trained
    out = tmp_path / "val"
    assert main(["movit", "train", "--dataset", f"folder:{root}", "--fraction", "1", "--val-per-class", "1",
                 "--no-memory", "--out", str(out), "--cache-dir", str(cache), *TINY]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["n_val"] == 3 and result["best_epoch"] is not None and result["inference"] == "no memory"
    assert result["hyperparameters"]["best_epoch"]["chosen"].startswith("on a validation split carved from the training fraction")
