"""Zero-shot with an analytic encoder whose right answer is known, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import COLORS, make_color_folder
from genba.cli import main
from genba.data import load_dataset
from genba.encoders.base import Encoder, l2_normalize
from genba.zeroshot import evaluate_zeroshot, text_classifier


class ColorEncoder(Encoder):
    """Image -> its mean RGB; text -> the RGB of the colour word it names. Zero-shot is exact."""

    name = "color"
    embed_dim = 3
    provenance = "color-v1"

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)

    def encode_image_with_visual(self, pixels):
        mean = pixels.mean(dim=(2, 3))  # (N, 3)
        return l2_normalize(mean - 0.4), None

    def encode_text(self, texts):
        rows = [next(torch.tensor(rgb, dtype=torch.float32) / 255 for word, rgb in COLORS.items() if word in t) for t in texts]
        return l2_normalize(torch.stack(rows) - 0.4)


def test_text_classifier_averages_templates():
    encoder = ColorEncoder()
    weights = text_classifier(encoder, ["red", "blue"], ["a {} thing", "the colour {}"])
    assert weights.shape == (2, 3)
    assert torch.allclose(weights.norm(dim=1), torch.ones(2))
    assert torch.allclose(weights[0], encoder.encode_text(["red"])[0], atol=1e-6)


def test_known_answer_zeroshot_is_perfect(color_folder):
    dataset = load_dataset(f"folder:{color_folder}")
    result = evaluate_zeroshot(ColorEncoder(), dataset, "test", progress=False)
    assert result["top1"] == 100.0
    assert result["chance"] == pytest.approx(100 / 3)
    assert sum(result["predicted_count"]) == result["n"] == len(dataset.splits["test"])


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_zeroshot_writes_json_and_hits_cache(tmp_path, color_folder, capsys):
    out = tmp_path / "r.json"
    cache = tmp_path / "cache"
    code, stdout, _ = run(capsys, "zeroshot", "--dataset", str(color_folder), "--encoder", "tiny", "--json", str(out), "--cache-dir", str(cache), "--quiet")
    assert code == 0 and "top-1" in stdout
    result = json.loads(out.read_text())
    assert {"dataset", "encoder", "split", "n", "top1"} <= set(result)
    assert result["split"] == "test" and result["n"] == 6 and 0 <= result["top1"] <= 100
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == 2  # test features + text classifier
    stamps = [p.stat().st_mtime_ns for p in entries]
    code, _, _ = run(capsys, "zeroshot", "--dataset", str(color_folder), "--encoder", "tiny", "--cache-dir", str(cache), "--quiet")
    assert code == 0 and [p.stat().st_mtime_ns for p in entries] == stamps


def test_cli_lists(capsys):
    code, stdout, _ = run(capsys, "datasets")
    assert code == 0 and "textile" in stdout and "folder:" in stdout
    code, stdout, _ = run(capsys, "encoders")
    assert code == 0 and {"conse", "hf", "tiny"} <= set(line.split()[0] for line in stdout.splitlines())


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genba: error: "), err
    return lines[0]


def assert_no_cache(cache_dir):
    assert not list(cache_dir.rglob("*.safetensors")) and not list(cache_dir.rglob("*.tmp"))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--dataset", "no-such-set"], ["unknown dataset", "textile"]),
        (["--dataset", "textile", "--encoder", "nope"], ["unknown encoder", "conse"]),
    ],
)
def test_cli_unknown_names(tmp_path, capsys, argv, words):
    message = one_line_error(capsys, "zeroshot", *argv, "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert all(w in message for w in words), message
    assert_no_cache(tmp_path / "c")


def test_cli_bad_folders(tmp_path, capsys):
    cache = tmp_path / "c"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no class sub-folders" in one_line_error(capsys, "zeroshot", "--dataset", f"folder:{empty}", "--encoder", "tiny", "--cache-dir", str(cache))
    assert "does not exist" in one_line_error(capsys, "zeroshot", "--dataset", f"folder:{tmp_path / 'missing'}", "--encoder", "tiny", "--cache-dir", str(cache))
    folder = make_color_folder(tmp_path / "f")
    (folder / "purple").mkdir()
    message = one_line_error(capsys, "zeroshot", "--dataset", f"folder:{folder}", "--encoder", "tiny", "--cache-dir", str(cache))
    assert "purple" in message
    assert_no_cache(cache)


def test_cli_corrupt_image_warns_and_continues(tmp_path, capsys):
    folder = make_color_folder(tmp_path / "f")
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        code, stdout, _ = run(capsys, "zeroshot", "--dataset", f"folder:{folder}", "--encoder", "tiny", "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 0 and "top-1" in stdout


def test_cli_wrong_checkpoint_kind(tmp_path, capsys):
    ckpt = tmp_path / "bert"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "bert"}))
    folder = make_color_folder(tmp_path / "f")
    message = one_line_error(capsys, "zeroshot", "--dataset", str(folder), "--encoder", f"hf:{ckpt}", "--cache-dir", str(tmp_path / "c"))
    assert "bert" in message
    assert_no_cache(tmp_path / "c")
