"""genba export --model: one ONNX graph per exportable kind, parity with PyTorch (max |delta p| < 1e-4
in fp32), int8 with its measured change, `genba predict` on the ONNX file; non-static kinds refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genba.cli import main
from model_helpers import NEW, pattern_folder, split_files


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    return pattern_folder(root / "site", per_class=16), pattern_folder(root / "new", NEW, per_class=16, seed=1)


def _rows(out):
    return {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}


def _parity(model, onnx, paths, tmp_path):
    """genba predict with the model and with its ONNX file agree (class, and probability within 1e-4)."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for m, out in ((model, a), (onnx, b)):
        assert main(["predict", "--model", str(m), "--images", *map(str, paths), "--format", "jsonl", "--out", str(out),
                     "--quiet", "--top-k", "2"]) == 0
    ra, rb = _rows(a), _rows(b)
    assert ra.keys() == rb.keys() and len(ra) == len(paths)
    assert all(ra[k]["class"] == rb[k]["class"] and abs(ra[k]["probability"] - rb[k]["probability"]) < 1e-4 for k in ra)


@pytest.mark.parametrize("method", ["tip-adapter", "linear-probe", "zeroshot"])
def test_adapt_export_parity_and_int8(folders, tmp_path, method, capsys, one_thread):
    from genba.model.export import export_model

    site = folders[0]
    model = tmp_path / "m.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", method, "--encoder", "tiny", "--shots", "4",
                 "--val-per-class", "2", "--out", str(model), "--quiet", "--no-cache"]) == 0
    report = export_model(model, tmp_path / "m.onnx", int8=True)
    assert report["parity_max_abs_dp"] < 1e-4 and report["parity_images"] == 24
    assert 0.0 <= report["int8_agreement"] <= 100.0 and (tmp_path / "m.int8.onnx").is_file()
    assert report["int8_top1_change"] == pytest.approx(report["int8_top1"] - report["fp32_top1"])
    paths, _ = split_files(f"folder:{site}")
    _parity(model, tmp_path / "m.onnx", paths, tmp_path)


def test_continual_export_and_refusals(folders, tmp_path, capsys, one_thread):
    site, new = folders
    stream = f"folder:{site},folder:{new}"
    common = ["--stream", stream, "--encoder", "tiny", "--control", "none", "--val-per-class", "2",
              "--set", "train.epochs=2", "--quiet", "--no-cache"]
    assert main(["continual", "--method", "replay", "--out", str(tmp_path / "replay"), *common]) == 0
    assert main(["export", "--model", str(tmp_path / "replay"), "--onnx", str(tmp_path / "c.onnx")]) == 0
    paths, _ = split_files(f"folder:{new}")
    _parity(tmp_path / "replay", tmp_path / "c.onnx", paths, tmp_path)
    capsys.readouterr()
    assert main(["continual", "--method", "task-adapters", "--out", str(tmp_path / "routed"), *common]) == 0
    assert main(["export", "--model", str(tmp_path / "routed"), "--onnx", str(tmp_path / "r.onnx")]) == 2
    assert "not a static graph" in capsys.readouterr().err and not (tmp_path / "r.onnx").exists()
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tda", "--encoder", "tiny", "--shots", "2",
                 "--val-per-class", "2", "--out", str(tmp_path / "tda.genba"), "--quiet", "--no-cache"]) == 0
    capsys.readouterr()
    assert main(["export", "--model", str(tmp_path / "tda.genba"), "--onnx", str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot export" in err and "adapt:tip-adapter" in err


def test_cvm_model_exports_its_own_graph(folders, tmp_path, one_thread):
    from genba.cvm.predict import predict_folder
    from genba.model.export import export_model

    site, new = folders
    out = tmp_path / "cvm"
    assert main(["cvm", "train", "--stream", f"folder:{site},folder:{new}", "--out", str(out), "--text-model", "tiny",
                 "--loss", "contrastive", "--set", "train.epochs=1", "--set", "train.batch_size=8", "--quiet",
                 "--no-cache"]) == 0
    paths, _ = split_files(f"folder:{site}")
    report = export_model(out, tmp_path / "cvm.onnx", images=[str(site)])
    assert report["parity_max_abs_dp"] < 1e-4
    rows = predict_folder(tmp_path / "cvm.onnx", site)  # the torch-free runner reads it
    assert len(rows) == 48 and np.isfinite([p for _, _, p in rows]).all()


def test_movit_export_parity_and_onnx_predict(folders, tmp_path, one_thread):
    from genba.model.export import export_model

    site = folders[0]
    out = tmp_path / "movit"
    tiny = ["--steps", "6", "--set", "model.dim=8", "--set", "model.depth=1", "--set", "model.heads=2",
            "--set", "mem.capacity=64", "--set", "mem.prototypes=4", "--set", "mem.topk=4"]
    assert main(["movit", "train", "--dataset", f"folder:{site}", "--fraction", "1", "--out", str(out), "--quiet",
                 "--no-cache", *tiny]) == 0
    report = export_model(out, tmp_path / "mv.onnx")
    assert report["parity_max_abs_dp"] < 1e-4
    paths, _ = split_files(f"folder:{site}")
    _parity(out, tmp_path / "mv.onnx", paths, tmp_path)
