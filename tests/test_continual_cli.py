"""`genba continual` end to end on the tiny encoder and image folders, and every bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_color_folder
from genba.cli import main
from genba.continual.stream import TaskSpec, parse_stream
from genba.errors import GenbaError


def make_shapes_folder(root, per_class=8, seed=1):
    """root/<stripes|dots>/<i>.png: two pattern classes."""
    rng = np.random.default_rng(seed)
    for name in ("stripes", "dots"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, size=(20, 20, 3))
            if name == "stripes":
                a[::3] += 180
            else:
                a[::4, ::4] += 190
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("continual")
    return (make_color_folder(root / "colors", per_class=8), make_shapes_folder(root / "shapes"),
            make_color_folder(root / "control", per_class=6, seed=5))


def run(args, capsys):
    code = main(["continual", "--encoder", "tiny", "--quiet", "--val-per-class", "1", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_matrix_and_writes_the_issue_json(folders, tmp_path, capsys, one_thread):
    colors, shapes, control = folders
    out, js = tmp_path / "run", tmp_path / "r.json"
    code, text, err = run(["--stream", f"folder:{colors},folder:{shapes}", "--method", "replay", "--setting", "xtail",
                           "--control", f"folder:{control}", "--set", "buffer_size=4", "--set", "train.epochs=2",
                           "--out", str(out), "--json", str(js)], capsys)
    assert code == 0, err
    assert "| zero-shot |" in text and "transfer" in text
    result = json.loads(js.read_text())
    assert len(result["accuracy_matrix"]) == 3 and len(result["accuracy_matrix"][0]) == 2
    assert set(result["metrics"]) >= {"transfer", "avg", "last", "bwt", "fwt", "forgetting", "control_before",
                                      "control_after"}
    assert result["hyperparameters"]["method"]["buffer_size"] == 4 and result["selected_on"] == "fixed"
    assert (out / "replay.safetensors").exists() and (out / "task-1" / "checkpoint.safetensors").exists()
    # resume of the finished run: same matrix, buffer read back
    code, _, err = run(["--stream", f"folder:{colors},folder:{shapes}", "--method", "replay", "--setting", "xtail",
                        "--control", f"folder:{control}", "--set", "buffer_size=4", "--set", "train.epochs=2",
                        "--out", str(out), "--resume", "--json", str(tmp_path / "again.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "again.json").read_text())["accuracy_matrix"] == result["accuracy_matrix"]
    # a run killed during the last task: its learner file and checkpoint are gone, resume retrains it
    import shutil
    shutil.rmtree(out / "task-1")
    code, _, err = run(["--stream", f"folder:{colors},folder:{shapes}", "--method", "replay", "--setting", "xtail",
                        "--control", f"folder:{control}", "--set", "buffer_size=4", "--set", "train.epochs=2",
                        "--out", str(out), "--resume", "--json", str(tmp_path / "third.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "third.json").read_text())["accuracy_matrix"] == result["accuracy_matrix"]
    # a damaged checkpoint: reported (exit 2, one line naming it) before any file is rewritten
    ckpt = out / "task-1" / "checkpoint.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run(["--stream", f"folder:{colors},folder:{shapes}", "--method", "replay", "--setting", "xtail",
                        "--control", f"folder:{control}", "--set", "buffer_size=4", "--set", "train.epochs=2",
                        "--out", str(out), "--resume"], capsys)
    assert code == 2 and str(ckpt) in err and "checksum" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_class_incremental_split_and_first_task_selection(folders, capsys, one_thread):
    colors, _, control = folders
    code, text, err = run(["--stream", f"folder:{colors}[0-1],folder:{colors}[2]", "--method", "finetune",
                           "--control", "none", "--select", "first-task", "--set", "train.epochs=1"], capsys)
    assert code == 0, err
    assert "selected_on: first-task validation (train.lr)" in text


def test_parse_stream_forms():
    specs = parse_stream("a,b[0-2,5],c#2", lambda name: 4)
    assert [s.name for s in specs] == ["a", "b[0-2,5]", "c[0-1]", "c[2-3]"]
    assert specs[1].classes == (0, 1, 2, 5)


@pytest.mark.parametrize("args, message", [
    (["--stream", "COLORS,no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    (["--stream", "COLORS"], "has one task"),
    (["--stream", "COLORS#2,SHAPES"], "3 classes do not split into 2 tasks"),
    (["--stream", "COLORS[0-4],SHAPES"], "class indices \\[3, 4\\] do not exist"),
    (["--stream", "COLORS,SHAPES", "--method", "sgd"], "unknown continual method 'sgd'"),
    (["--stream", "COLORS,SHAPES", "--set", "buffer=3"], "unknown hyperparameter\\(s\\) buffer .*buffer_size"),
    (["--stream", "COLORS,SHAPES", "--set", "train.lrr=3"], "unknown training setting"),
    (["--stream", "COLORS,COLORS[1]"], "classes \\[1\\] of .* are in two tasks"),
    (["--stream", "COLORS,SHAPES", "--control", "SHAPES"], "control task .* shares classes"),
])
def test_bad_input_is_one_clear_error_and_leaves_nothing(folders, tmp_path, capsys, args, message):
    colors, shapes, _ = folders
    args = [a.replace("COLORS", f"folder:{colors}").replace("SHAPES", f"folder:{shapes}") for a in args]
    if "--method" not in args:
        args += ["--method", "replay"]
    if "--control" not in args:
        args += ["--control", "none"]
    out = tmp_path / "out"
    code, _, err = run(args + ["--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genba: error: ")
    import re
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_nan_features_are_refused_before_training(folders, tmp_path, capsys, monkeypatch):
    import genba.continual.stream as stream_module

    real = stream_module.extract_features

    def poisoned(*a, **k):
        f = real(*a, **k)
        visual = f.visual.clone()
        visual[0, 0] = float("nan")
        return type(f)(f.image, visual, f.labels, f.indices)

    monkeypatch.setattr(stream_module, "extract_features", poisoned)
    colors, shapes, _ = folders
    out = tmp_path / "out"
    code, _, err = run(["--stream", f"folder:{colors},folder:{shapes}", "--method", "replay", "--control", "none",
                        "--out", str(out)], capsys)
    assert code == 2 and "NaN" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_one_task_grammar_reads_class_names_and_shots():
    """CVM's `name[c1|c2]xK` is a form of the continual grammar (genba.cvm.tasks reads it through it)."""
    from genba.cvm.tasks import parse_stream as parse_cvm

    a, b, c = parse_stream("a[cat|dog]x4,b[1-2]x3,c[cat]", lambda name: 4)
    assert (a.names, a.shots, a.classes) == (("cat", "dog"), 4, None) and (b.classes, b.shots) == ((1, 2), 3)
    assert c.class_indices(["dog", "cat"]) == [1]
    assert parse_cvm("a,b[cat|dog]x4")[1].only == ("cat", "dog")
    with pytest.raises(GenbaError, match="no class 'cow'"):
        TaskSpec("a", names=("cow",)).class_indices(["cat", "dog"])
    with pytest.raises(GenbaError, match=">= 1"):
        parse_stream("a[cat]x0")


def test_a_stream_of_class_names_with_shots(folders, tmp_path, capsys, one_thread):
    colors, shapes, _ = folders
    js = tmp_path / "r.json"
    code, _, err = run(["--stream", f"folder:{colors}[red|green]x3,folder:{shapes}", "--method", "finetune",
                        "--control", "none", "--set", "train.epochs=1", "--json", str(js)], capsys)
    assert code == 0, err
    result = json.loads(js.read_text())
    assert result["rows"]["train"][0] == 2 * 3  # 3 training images of each named class (after 1 validation image)
    code, _, err = run(["--stream", f"folder:{colors}[red|cow],folder:{shapes}", "--method", "finetune"], capsys)
    assert code == 2 and "no class 'cow'" in err
