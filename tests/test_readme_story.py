"""README's story, walked on a small generated site folder with the tiny encoder: the fenced block
under "From a folder of site images to the edge box" is read from README.md and every command in
it runs as written (adapt gets `--encoder tiny` so that it runs in seconds; every other
command reads the encoder from the model). Then: predictions on unsorted images, the new classes
learned without losing the earlier ones, and ONNX predictions equal to PyTorch's."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from genba.cli import main
from model_helpers import NEW, SITE, pattern_folder, split_files

README = Path(__file__).parents[1] / "README.md"


def story_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"## From a folder of site images to the edge box.*?```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith(".venv/bin/genba ")]


@pytest.mark.filterwarnings("ignore:skipped. cannot decode image")
def test_readme_story_runs_as_written(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    pattern_folder(tmp_path / "site", SITE, per_class=40)
    pattern_folder(tmp_path / "site-new", NEW, per_class=40, seed=1)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    picked = {}
    for folder in ("site", "site-new"):
        paths, labels = split_files(f"folder:{tmp_path / folder}")
        for i, (p, y) in enumerate(zip(paths[::8], labels[::8])):
            name = f"{folder}-{i:02d}{p.suffix}"  # unsorted: no class in the path
            shutil.copy(p, incoming / name)
            picked[name] = y
    (incoming / "broken.jpg").write_bytes(b"not an image")
    commands = story_commands()
    assert [c[0] for c in commands] == ["adapt", "model", "predict", "learn", "export", "predict"]
    outputs = {}
    for command in commands:
        if command[0] == "adapt":
            command = command + ["--encoder", "tiny"]
        code = main(command + (["--quiet"] if command[0] in ("adapt", "predict", "learn", "export") else []))
        out, err = capsys.readouterr()
        assert code == 0, f"{shlex.join(command)} failed: {err}"
        outputs[command[0]] = outputs.get(command[0], []) + [out]
    assert "kind adapt:tip-adapter" in outputs["model"][0]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(rows) == len(picked) and "broken.jpg" not in {Path(r["path"]).name for r in rows}
    first = [r for r in rows if not Path(r["path"]).name.startswith("site-new")]
    assert sum(r["class"] == picked[Path(r["path"]).name] for r in first) / len(first) > 0.8  # 3 classes: chance 1/3
    learned = outputs["learn"][0]
    before_after = re.findall(r"\| folder:\S+site \| earlier \| ([\d.]+) \| ([\d.]+) \|", learned)
    assert before_after, learned
    assert float(before_after[0][1]) >= float(before_after[0][0]) - 10.0  # the earlier classes are kept
    onnx_rows = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "predictions.jsonl").read_text().splitlines())}
    torch_out = tmp_path / "torch.jsonl"
    assert main(["predict", "--model", "site-v2.genba", "--images", "incoming/", "--format", "jsonl", "--out",
                 str(torch_out), "--quiet"]) == 0
    torch_rows = {Path(r["path"]).name: r for r in map(json.loads, torch_out.read_text().splitlines())}
    assert onnx_rows.keys() == torch_rows.keys() == set(picked)
    for name, r in torch_rows.items():
        assert onnx_rows[name]["class"] == r["class"] and abs(onnx_rows[name]["probability"] - r["probability"]) < 1e-4
    accuracy = sum(r["class"] == picked[name] for name, r in torch_rows.items()) / len(picked)
    assert accuracy > 0.5, accuracy  # 5 classes: chance is 0.2
    assert (tmp_path / "site.genba").is_file() and (tmp_path / "site.int8.onnx").is_file()
