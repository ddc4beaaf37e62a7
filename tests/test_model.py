"""genba.model: every kind writes one model file whose predictions on the labelled test folder
are those its own evaluation reported; the loader refuses what is not a (readable) model."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from genba.cli import main
from model_helpers import NEW, pattern_folder, split_files


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    return pattern_folder(root / "site", per_class=24), pattern_folder(root / "new", NEW, per_class=24, seed=1)


def _predict(model, paths, tmp_path, *extra) -> list[dict]:
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", str(model), "--images", *map(str, paths), "--format", "jsonl",
                 "--out", str(out), "--quiet", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("method", ["tip-adapter", "linear-probe"])
def test_adapt_model_predicts_what_its_evaluation_reported(folders, tmp_path, method, one_thread):
    site = folders[0]
    model, report = tmp_path / "m.genba", tmp_path / "r.json"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", method, "--encoder", "tiny", "--shots", "4",
                 "--val-per-class", "4", "--out", str(model), "--json", str(report), "--quiet", "--no-cache"]) == 0
    result = json.loads(report.read_text())
    paths, labels = split_files(f"folder:{site}")
    rows = _predict(model, paths, tmp_path)
    assert [r["path"] for r in rows] == sorted(map(str, paths))
    by_path = {r["path"]: r["class"] for r in rows}
    predicted = [by_path[str(p)] for p in paths]
    top1 = 100.0 * sum(p == y for p, y in zip(predicted, labels)) / len(labels)
    assert top1 == pytest.approx(result["top1"])
    classes = sorted(set(labels))
    assert [Counter(predicted)[c] for c in classes] == result["predicted_count"]


def test_several_methods_write_the_validation_choice_and_set_reaches_each(folders, tmp_path, capsys, one_thread):
    site = folders[0]
    model = tmp_path / "m.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "zeroshot,tip-adapter", "--encoder", "tiny",
                 "--shots", "4", "--val-per-class", "4", "--out", str(model), "--quiet", "--no-cache",
                 "--set", "scale=50"]) == 0
    out = capsys.readouterr().out
    assert "kind adapt:tip-adapter (best validation top-1 of 2 methods)" in out and "majority 33.3%" in out
    assert main(["model", "show", str(model), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["hyperparameters"]["scale"] == 50.0 and meta["chosen"]["scale"] == "given (--set)"
    assert meta["kind"] == "adapt:tip-adapter" and meta["classes"] == ["bars", "checks", "stripes"]
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "zeroshot,linear-probe", "--encoder", "tiny",
                 "--set", "train.epochs=1", "--quiet", "--no-cache"]) == 2
    assert "does not train" in capsys.readouterr().err  # refused for zeroshot, never silently dropped


def test_continual_model_predicts_its_xtail_accuracies(folders, tmp_path, one_thread):
    site, new = folders
    out = tmp_path / "run"
    assert main(["continual", "--stream", f"folder:{site},folder:{new}", "--method", "task-adapters", "--setting",
                 "xtail", "--encoder", "tiny", "--control", "none", "--val-per-class", "4", "--set", "train.epochs=3",
                 "--out", str(out), "--quiet", "--no-cache"]) == 0
    meta = json.loads(_show_json(out))
    last = meta["metrics"]["accuracy_matrix"][-1]
    for task, folder in enumerate((site, new)):
        paths, labels = split_files(f"folder:{folder}")
        rows = {r["path"]: r["class"] for r in _predict(out, paths, tmp_path)}
        acc = 100.0 * sum(rows[str(p)] == y for p, y in zip(paths, labels)) / len(labels)
        assert acc == pytest.approx(last[task], abs=1e-4)


def test_movit_model_predicts_its_test_accuracy(folders, tmp_path, one_thread):
    site = folders[0]
    out = tmp_path / "movit"
    tiny = ["--steps", "6", "--set", "model.dim=8", "--set", "model.depth=1", "--set", "model.heads=2",
            "--set", "mem.capacity=64", "--set", "mem.prototypes=4", "--set", "mem.topk=4"]
    assert main(["movit", "train", "--dataset", f"folder:{site}", "--fraction", "1", "--out", str(out), "--quiet",
                 "--no-cache", *tiny]) == 0
    result = json.loads((out / "results.json").read_text())
    paths, labels = split_files(f"folder:{site}")
    rows = {r["path"]: r["class"] for r in _predict(out, paths, tmp_path)}
    acc = sum(rows[str(p)] == y for p, y in zip(paths, labels)) / len(labels)
    assert acc == pytest.approx(result["test_accuracy"], abs=1e-6)


def test_cvm_model_predicts_as_its_onnx_graph(folders, tmp_path, one_thread):
    site, new = folders
    out = tmp_path / "cvm"
    assert main(["cvm", "train", "--stream", f"folder:{site},folder:{new}", "--out", str(out), "--text-model", "tiny",
                 "--loss", "contrastive", "--set", "train.epochs=2", "--set", "train.batch_size=8", "--quiet",
                 "--no-cache", "--max-test", "30"]) == 0
    paths, _ = split_files(f"folder:{site}")
    rows = _predict(out, paths, tmp_path, "--top-k", "2")
    assert all(len(r["top_k"]) == 2 and r["top_k"][0][0] == r["class"] for r in rows)
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx")]) == 0
    from genba.cvm.predict import predict_folder

    onnx = {p: (c, q) for p, c, q in predict_folder(tmp_path / "m.onnx", site)}
    assert all(onnx[r["path"]][0] == r["class"] and abs(onnx[r["path"]][1] - r["probability"]) < 1e-4 for r in rows)


def _show_json(model) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["model", "show", str(model), "--json"]) == 0
    return buffer.getvalue()


def test_bad_images_are_skipped_counted_and_foreign_files_refused(folders, tmp_path, capsys, one_thread):
    import torch

    from genba.artefact import write_artefact

    site = folders[0]
    model = tmp_path / "m.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tip-adapter", "--encoder", "tiny", "--shots", "2",
                 "--select", "fixed", "--val-per-class", "2", "--out", str(model), "--quiet", "--no-cache"]) == 0
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="broken.png"):
        code = main(["predict", "--model", str(model), "--images", str(tmp_path / "imgs"),
                     str(site / "bars" / "00*.png"), "--quiet"])
    assert code == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "path,class,probability" and len(out.splitlines()) == 11
    assert "10 images classified, 1 skipped" in err
    foreign = tmp_path / "movit.safetensors"
    write_artefact(foreign, kind="movit-model", meta={}, tensors={"x": torch.zeros(2)})
    edited = tmp_path / "edited.genba"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    edited.write_bytes(bytes(data))
    for bad, why in ((foreign, "not a genba model"), (edited, "checksum"), (tmp_path / "imgs", "without a model.genba")):
        assert main(["model", "show", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err


def test_version_and_kinds_registry(capsys):
    from genba import __version__
    from genba.model import kinds  # noqa: F401
    from genba.model.base import MODEL_KINDS

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"genba {__version__}"
    assert main(["model", "kinds"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in MODEL_KINDS.names())
    assert "test_time_writes" in MODEL_KINDS.get("adapt:dmn-tf").capabilities
    assert "export" not in MODEL_KINDS.get("adapt:tda").capabilities
    assert "test_time_writes" not in MODEL_KINDS.get("cvm").capabilities


@pytest.mark.parametrize("strategy", ["replay", "task-adapters"])
def test_continual_model_learns_a_new_task_as_the_next_version(folders, tmp_path, capsys, strategy, one_thread):
    import shutil

    site, new = folders
    first, second = tmp_path / "a", tmp_path / "b"
    for target, classes in ((first, ("stripes", "bars")), (second, ("checks",))):
        for c in classes:
            shutil.copytree(site / c, target / c)
    shutil.copytree(new / "dots", second / "dots")
    run = tmp_path / "run"
    assert main(["continual", "--stream", f"folder:{first},folder:{second}", "--strategy", strategy, "--setting",
                 "xtail", "--encoder", "tiny", "--control", "none", "--val-per-class", "4", "--set", "train.epochs=2",
                 "--out", str(run), "--quiet", "--no-cache"]) == 0
    before = (run / "model.genba").read_bytes()
    capsys.readouterr()
    diagonal = tmp_path / "c"
    shutil.copytree(new / "diagonal", diagonal / "diagonal")
    shutil.copytree(site / "stripes", diagonal / "stripes_again")
    assert main(["learn", "--model", str(run), "--dataset", f"folder:{diagonal}", "--out", str(tmp_path / "v2.genba"),
                 "--quiet", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert out.count("| earlier |") == 2 and out.count("| new |") == 1 and "model version 2" in out
    assert (run / "model.genba").read_bytes() == before  # the earlier version is kept as it was
    meta = json.loads(_show_json(tmp_path / "v2.genba"))
    assert meta["version"] == 2 and meta["parent"]["version"] == 1 and meta["method"] == strategy
    assert meta["classes"] == ["bars", "stripes", "checks", "dots", "diagonal", "stripes again"]
    assert len(meta["state"]["tasks"]) == 3
