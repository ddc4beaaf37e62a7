"""ONNX export of a CVM model, onnxruntime parity, `genba predict` without torch, and bad files."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cvm_helpers import WARM, colour_folder, tiny_objective
from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.export import export_onnx
from genba.cvm.model_dir import load_model_dir, save_model_dir
from genba.cvm.pixels import load_image, normalize, resize_rgb
from genba.cvm.predict import OnnxClassifier, predict_folder
from genba.errors import GenbaError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def model_dir(tmp_path, one_thread):
    bank = ConceptBank.build(list(WARM), ["a photo of {}."], TextEmbedder("tiny"))
    objective = tiny_objective(bank)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in objective.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return save_model_dir(tmp_path / "model", objective.eval(), bank)


@pytest.mark.parametrize("head", ["concept", "linear"])
def test_onnxruntime_matches_pytorch(tmp_path, head, one_thread):
    bank = ConceptBank.build(list(WARM), ["a photo of {}."], TextEmbedder("tiny"))
    directory = save_model_dir(tmp_path / head, tiny_objective(bank, head).eval(), bank)
    onnx_path = export_onnx(directory, tmp_path / f"{head}.onnx")
    objective, _, _ = load_model_dir(directory)
    pixels = np.random.default_rng(0).uniform(-1, 1, size=(5, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = objective.head(objective.student(torch.from_numpy(pixels))).numpy()
    got = OnnxClassifier.load(onnx_path).logits(pixels)
    diff = float(np.abs(got - expected).max())
    print(f"max |logit difference| onnxruntime vs PyTorch ({head}): {diff:.2e}")
    assert got.shape == (5, 3) and diff < 1e-4


BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
TORCH_ABSENT = "assert sys.modules.get('torch') is None, 'torch was imported'\n"


def _run_without_torch(body: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + body + TORCH_ABSENT + "sys.exit(code)\n"],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def exported(tmp_path, model_dir):
    onnx_path = export_onnx(model_dir, tmp_path / "cvm.onnx")
    images = colour_folder(tmp_path / "imgs", WARM, per_class=2)
    return onnx_path, images, predict_folder(onnx_path, images)


def _check_lines(stdout: str, expected) -> None:
    lines = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [(p, c) for p, c, _ in lines] == [(p, c) for p, c, _ in expected] and len(lines) == 6
    assert all(c in WARM and 0.0 < float(q) <= 1.0 for _, c, q in lines)


def test_predict_module_runs_with_torch_blocked(exported):
    onnx_path, images, expected = exported
    done = _run_without_torch("from genba.cvm.cli import predict_main\n"
                              f"code = predict_main(['--model', {str(onnx_path)!r}, '--images', {str(images)!r}])\n")
    assert done.returncode == 0, done.stderr
    _check_lines(done.stdout, expected)


def test_genba_cli_predict_runs_with_torch_blocked(exported):
    onnx_path, images, expected = exported
    done = _run_without_torch("from genba.cli import main\n"
                              f"code = main(['predict', '--model', {str(onnx_path)!r}, '--images', {str(images)!r}])\n")
    assert done.returncode == 0, done.stderr
    _check_lines(done.stdout, expected)


def test_predict_preprocessing_is_the_training_preprocessing(tmp_path):
    from genba.cvm.objective import as_input

    images = colour_folder(tmp_path / "imgs", WARM, per_class=1)
    raw = resize_rgb(load_image(next(images.rglob("*.png"))), 16)  # (16, 16, 3) uint8
    train_side = as_input(torch.from_numpy(raw.copy()).permute(2, 0, 1)[None]).numpy()
    assert np.array_equal(train_side, normalize(raw)[None])


def test_foreign_onnx_and_non_onnx_files_are_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(plain), dynamo=False)
    with pytest.raises(GenbaError, match="not one genba exported"):
        OnnxClassifier.load(plain)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(GenbaError, match="not a loadable ONNX model"):
        OnnxClassifier.load(junk)


def test_bad_images_are_skipped_and_counted(tmp_path, model_dir, capsys):
    from PIL import Image

    from genba.cli import main
    from genba.cvm import pixels

    onnx_path = export_onnx(model_dir, tmp_path / "cvm.onnx")
    images = colour_folder(tmp_path / "imgs", WARM, per_class=1)
    (images / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    Image.new("L", (200, 200)).save(images / "red" / "huge.png")  # over the (lowered) pixel budget
    old = pixels.MAX_PIXELS
    pixels.MAX_PIXELS = 100 * 100
    try:
        assert main(["predict", "--model", str(onnx_path), "--images", str(images)]) == 0
    finally:
        pixels.MAX_PIXELS = old
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == len(WARM) and "broken.png" not in out and "huge.png" not in out
    assert "broken.png" in err and "huge.png" in err and "200x200 pixels, over the budget" in err
    assert "2 image(s) skipped" in err
    (images / "red" / "broken.png").rename(tmp_path / "broken.png")
    assert main(["predict", "--model", str(onnx_path), "--images", str(tmp_path / "broken.png")]) == 2
    assert "none of the 1 image file(s)" in capsys.readouterr().err


@pytest.mark.parametrize("edit,problem", [
    (lambda m: m.pop("genba.classes"), "no readable class list"),
    (lambda m: m.update({"genba.classes": '["a"]'}), "do not match its 1 classes"),
    (lambda m: m.update({"genba.classes": '["a", "\\u001b[31mred"]'}), "control characters"),
    (lambda m: m.update({"genba.classes": "[" * 100_000}), "no readable class list"),
    (lambda m: m.update({"genba.image_size": "-1"}), "image size '-1'"),
    (lambda m: m.update({"genba.image_size": "100000"}), "image size '100000'"),
    (lambda m: m.update({"genba.image_size": "24"}), "input shape"),
])
def test_onnx_metadata_is_validated(tmp_path, model_dir, capsys, edit, problem):
    import onnx

    from genba.cli import main

    path = export_onnx(model_dir, tmp_path / "cvm.onnx")
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    edit(meta)
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    with pytest.raises(GenbaError, match=problem):
        OnnxClassifier.load(path)
    images = colour_folder(tmp_path / "imgs", WARM, per_class=1)
    assert main(["predict", "--model", str(path), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


def test_export_cli_and_bad_model_dir(tmp_path, model_dir, capsys):
    from genba.cli import main

    assert main(["export", str(model_dir), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size < 1_000_000
    assert main(["export", str(tmp_path), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not a CVM model directory" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args,problem", [
    (["--name", "x" * 100_000], "at most 200"),
    (["--name", "red\x1b[2J"], "control characters"),
    (["--name", "teal", "--template", "{} {0}"], "exactly one '{}'"),
    (["--name", "teal", "--template", "{.__class__}"], "exactly one '{}'"),
])
def test_add_class_checks_names_and_templates_like_the_server(model_dir, capsys, args, problem):
    """The CLI uses the server's checks (genba.store.spec.check_classname / check_template)."""
    from genba.cli import main
    from genba.store.spec import MemorySpec

    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    assert main(["cvm", "add-class", str(model_dir), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    names = [args[1]] if args[0] == "--name" else ["a"]
    templates = [args[3]] if len(args) > 2 else ["a photo of a {}."]
    with pytest.raises(GenbaError, match=problem):
        MemorySpec(classnames=names, templates=templates, encoder="tiny", encoder_provenance="p", dim=8,
                   method="zeroshot")
