"""A CVM stream end to end on tiny colour datasets: CLI, JSON shape, strategies, metrics, name-only classes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cvm_helpers import COOL, WARM, colour_folder
from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.metrics import stream_metrics
from genba.cvm.stream import CVMConfig, run_stream
from genba.cvm.strategies import make_strategy
from genba.cvm.tasks import TaskSpec
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig


@pytest.fixture
def two_tasks(tmp_path):
    return (f"folder:{colour_folder(tmp_path / 'warm', WARM)}", f"folder:{colour_folder(tmp_path / 'cool', COOL, seed=1)}")


def _cfg(tasks, **kw):
    kw.setdefault("train", TrainConfig(lr=1e-2, epochs=3, batch_size=8, seed=0))
    return CVMConfig(stream=[TaskSpec(t) if isinstance(t, str) else t for t in tasks], image_size=16,
                     text_model="tiny", val_per_class=1, **kw)


def test_metrics_on_a_hand_made_matrix():
    a = [[10, 20, 30],   # untrained
         [80, 25, 35],   # after task 1
         [60, 90, 40],   # after task 2
         [50, 70, 95]]   # after task 3
    m = stream_metrics(a)
    assert m["avg"] == pytest.approx((80 + 25 + 35 + 60 + 90 + 40 + 50 + 70 + 95) / 9)
    assert m["last"] == pytest.approx((50 + 70 + 95) / 3)
    assert m["transfer"] == pytest.approx((25 + (35 + 40) / 2) / 2)
    assert m["bwt"] == pytest.approx(((50 - 80) + (70 - 90)) / 2)
    assert m["fwt"] == pytest.approx(((25 - 20) + (40 - 30)) / 2)
    assert m["forgetting"] == pytest.approx(((80 - 50) + (90 - 70)) / 2)
    assert math.isnan(stream_metrics([[1.0], [2.0]])["bwt"])
    with pytest.raises(GenbaError, match="T \\+ 1 rows"):
        stream_metrics([[1, 2], [3]])


def test_cli_train_json_then_export_predict_and_add_class(tmp_path, two_tasks, capsys, one_thread):
    from genba.cli import main

    out, js = tmp_path / "model", tmp_path / "run.json"
    code = main(["cvm", "train", "--stream", ",".join(two_tasks), "--out", str(out), "--text-model", "tiny",
                 "--loss", "contrastive", "--strategy", "replay", "--set", "train.epochs=2", "--set", "train.batch_size=8",
                 "--set", "strategy.buffer=6", "--json", str(js), "--quiet", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(js.read_text())
    for setting in ("mtil", "xtail"):
        block = result["settings"][setting]
        assert len(block["accuracy_matrix"]) == 3 and all(len(r) == 2 for r in block["accuracy_matrix"])
        assert set(block["metrics"]) >= {"transfer", "avg", "last", "bwt", "fwt", "forgetting", "control_before", "control_after"}
    assert result["hyperparameters"]["strategy"] == {"buffer": 6, "seed": 0} and result["selected_on"]
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "concepts.safetensors", "cvm.json"}
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), "--images", two_tasks[0][7:]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-36:]
    assert len(lines) == 36 and all(line.split("\t")[1] in set(WARM) | set(COOL) for line in lines)
    assert main(["cvm", "add-class", str(out), "--name", "teal", "--template", "a photo of {}."]) == 0
    assert ConceptBank.load(out / "concepts.safetensors").names[-1] == "teal"
    assert main(["cvm", "add-class", str(out), "--name", "Teal"]) == 2
    assert "duplicate class name" in capsys.readouterr().err


def test_name_only_class_is_in_the_label_space_and_scored(two_tasks, one_thread):
    specs = [TaskSpec(two_tasks[0], name_only=("yellow",)), TaskSpec(two_tasks[1]),
             TaskSpec(two_tasks[0], only=("yellow",), shots=3)]
    result = run_stream(_cfg(specs, loss="contrastive"))
    assert result["classes"][-1] == "yellow" and len(result["classes"]) == 6
    mtil = result["settings"]["mtil"]["accuracy_matrix"]
    assert len(mtil) == 4 and all(0.0 <= v <= 100.0 for row in mtil for v in row)
    assert result["per_task"][2]["rows"] == 3  # the few images that arrive for the name-only class


def test_loss_is_chosen_on_the_first_tasks_validation(two_tasks, one_thread):
    result = run_stream(_cfg(two_tasks[:1]))
    sel = result["loss_selection"]
    assert {k.split("@")[0] for k in sel["val_top1"]} == {"contrastive", "cosine"} and len(sel["val_top1"]) == 8
    assert sel["chosen"] == max(sel["val_top1"], key=sel["val_top1"].get) and "validation" in result["selected_on"]
    assert sel["chosen"].startswith(result["loss"]) and result["hyperparameters"]["concept_scale"] == float(sel["chosen"].split("@")[1].split("+")[0])


@pytest.mark.parametrize("strategy", ["lwf", "ewc"])
def test_regularising_strategies_add_a_penalty_after_the_first_task(strategy, one_thread):
    from cvm_helpers import tiny_objective

    bank = ConceptBank.build(["a", "b", "c", "d"], ["{}"], TextEmbedder("tiny"))
    objective = tiny_objective(bank)
    objective.set_known(2)
    data = TensorData(x=torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8), y=torch.tensor([0, 1] * 4))
    s = make_strategy(strategy)
    assert s.callbacks(objective) == []
    s.end_task(objective, data, 0)
    [penalty] = s.callbacks(objective)
    with torch.no_grad():  # move the weights so the penalty is positive
        for p in objective.parameters():
            p.add_(0.05)
    objective.set_known(4)
    batch = data.take(torch.arange(8))
    engine = type("E", (), {"objective": objective})()
    assert penalty.before_backward(engine, batch, torch.tensor(0.0)).item() > 0


def test_replay_buffer_is_bounded_and_class_balanced():
    s = make_strategy("replay", buffer=6)
    first = TensorData(x=torch.zeros(30, 2), y=torch.arange(30) % 3)
    s.end_task(None, first, 0)
    assert len(s.y) == 6 and torch.bincount(s.y).tolist() == [2, 2, 2]
    second = TensorData(x=torch.ones(20, 2), y=3 + torch.arange(20) % 2)
    assert len(s.task_data(second, 1)) == 26
    s.end_task(None, second, 1)
    assert len(s.y) == 5 and torch.bincount(s.y).tolist() == [1, 1, 1, 1, 1]


def test_bad_stream_inputs(two_tasks):
    with pytest.raises(GenbaError, match="unknown continual strategy"):
        make_strategy("magic")
    with pytest.raises(GenbaError, match="unknown replay setting"):
        make_strategy("replay", size=3)
    with pytest.raises(GenbaError, match="not in"):
        run_stream(_cfg([TaskSpec(two_tasks[0], name_only=("black",))]))
    with pytest.raises(GenbaError, match="duplicate class name"):
        run_stream(_cfg([two_tasks[0], two_tasks[0] + "/"], loss="contrastive"))  # the same class names twice
