"""`genba sak distill | train | predict` end to end on a tiny user folder with a tiny hf: teacher."""

import json

import pytest
import torch

from genba.cli import main
from test_sak_teachers import _mask_folder, build_tiny

pytest.importorskip("transformers")

@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Leave torch's global RNG as found (later tests draw from it unseeded)."""
    with torch.random.fork_rng():
        yield



def test_distill_train_predict(tmp_path, capsys):
    data = _mask_folder(tmp_path / "data", [((48, 40), (48, 40))] * 6)
    teacher = build_tiny("dinov2", tmp_path / "dino")
    common = ["--no-cache", "--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=4"]
    assert main(["sak", "distill", "--data", f"folder:{data}", "--teachers", f"hf:{teacher}",
                 "--out", str(tmp_path / "s1"), *common]) == 0
    assert (tmp_path / "s1" / "model.safetensors").is_file()
    assert main(["sak", "train", "--init", str(tmp_path / "s1"), "--data", f"folder:{data}",
                 "--out", str(tmp_path / "s2"), *common]) == 0
    report = json.loads((tmp_path / "s2" / "report.json").read_text())
    assert set(report["metrics"]) == {"miou", "boundary_f1", "maxf"}  # user data has no depth
    assert "licence=" in report["teachers"][f"hf:{teacher}"]["provenance"]
    assert main(["sak", "eval", "--model", str(tmp_path / "s2"), "--data", f"folder:{data}",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert set(json.loads((tmp_path / "eval.json").read_text())["metrics"]) == {"miou", "boundary_f1", "maxf"}
    assert main(["sak", "predict", "--model", str(tmp_path / "s2"), "--images", str(data / "images"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("0_*.png")) == ["0_boundary.png", "0_saliency.png", "0_semantic.png"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sak", "distill", "--teachers", "clip-b16", "--out", str(tmp_path / "x"), "--no-cache", "--quiet",
                 "--data", "folder:/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genba: error: ") and err.count("\n") == 1
    assert main(["sak", "train", "--init", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "no SAK model" in capsys.readouterr().err
    assert main(["sak", "distill", "--out", str(tmp_path / "z"), "--set", "lr=1", "--quiet"]) == 2
    assert "train.KEY=VALUE" in capsys.readouterr().err
