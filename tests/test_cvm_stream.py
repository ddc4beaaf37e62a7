"""A CVM stream end to end on tiny colour datasets: CLI, JSON shape, strategies, metrics, name-only classes."""

from __future__ import annotations

import json

import pytest
import torch

from cvm_helpers import COOL, WARM, colour_folder
from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.stream import CVMConfig, run_stream
from genba.continual.strategies import make_strategy
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


def test_cli_train_json_then_export_predict_and_add_class(tmp_path, two_tasks, capsys, one_thread):
    from genba.cli import main

    out, js = tmp_path / "model", tmp_path / "run.json"
    code = main(["cvm", "train", "--stream", ",".join(two_tasks), "--out", str(out), "--text-model", "tiny",
                 "--loss", "contrastive", "--strategy", "replay", "--set", "train.epochs=2", "--set", "train.batch_size=8",
                 "--set", "strategy.buffer_size=6", "--json", str(js), "--quiet", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(js.read_text())
    for setting in ("mtil", "xtail"):
        block = result["settings"][setting]
        assert len(block["accuracy_matrix"]) == 3 and all(len(r) == 2 for r in block["accuracy_matrix"])
        assert set(block["metrics"]) >= {"transfer", "avg", "last", "bwt", "fwt", "forgetting", "control_before", "control_after"}
    assert result["hyperparameters"]["method"]["buffer_size"] == 6 and result["selected_on"]
    assert result["cost"]["strategy_bytes"] > 0  # the replay buffer holds rows after the first task
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "concepts.safetensors", "cvm.json", "model.genba"}
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), "--images", two_tasks[0][7:]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-36:]
    assert len(lines) == 36 and all(line.split("\t")[1] in set(WARM) | set(COOL) for line in lines)
    assert main(["cvm", "add-class", str(out), "--name", "teal", "--template", "a photo of {}."]) == 0
    assert ConceptBank.load(out / "concepts.safetensors").names[-1] == "teal"
    from genba.model import load

    assert load(out).classes[-1] == "teal"  # the run folder's model.genba follows add-class
    assert main(["cvm", "add-class", str(out), "--name", "Teal"]) == 2
    assert "duplicate class name" in capsys.readouterr().err


def test_name_only_class_is_in_the_label_space_and_scored(two_tasks, one_thread):
    from genba.cvm.tasks import parse_stream

    specs = [TaskSpec(two_tasks[0], name_only=("yellow",)), TaskSpec(two_tasks[1]),
             TaskSpec(two_tasks[0], only=("yellow",), shots=3)]
    assert parse_stream(f"{two_tasks[1]},{two_tasks[0]}[yellow]x3")[1] == specs[2]
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
def test_genba_continual_penalties_compose_with_the_cvm_objective(strategy, one_thread):
    from cvm_helpers import tiny_objective

    bank = ConceptBank.build(["a", "b", "c", "d"], ["{}"], TextEmbedder("tiny"))
    objective = tiny_objective(bank)
    objective.set_known(2)
    data = TensorData(x=torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8), y=torch.tensor([0, 1] * 4))
    s = make_strategy(strategy)
    assert s.callbacks(objective) == []
    objective.eval()  # as after fit
    s.end_task(objective, data, 0)
    [penalty] = s.callbacks(objective)
    with torch.no_grad():  # move the weights so the penalty is positive
        for p in objective.parameters():
            p.add_(0.05)
    objective.set_known(4)
    batch = data.take(torch.arange(8))
    engine = type("E", (), {"objective": objective})()
    assert penalty.before_backward(engine, batch, torch.tensor(0.0)).item() > 0


def test_bad_stream_inputs(two_tasks):
    with pytest.raises(GenbaError, match="unknown continual method 'magic'"):
        run_stream(_cfg(two_tasks, strategy="magic", loss="contrastive", concept_scale=25.0, center=True))
    with pytest.raises(GenbaError, match="method 'memory' needs a learner with cache"):  # the contract, not a name list
        run_stream(_cfg(two_tasks, strategy="memory", loss="contrastive", concept_scale=25.0, center=True))
    with pytest.raises(GenbaError, match="unknown hyperparameter"):
        run_stream(_cfg(two_tasks, strategy="replay", strategy_hp={"size": 3}, loss="contrastive",
                        concept_scale=25.0, center=True))
    with pytest.raises(GenbaError, match="not in"):
        run_stream(_cfg([TaskSpec(two_tasks[0], name_only=("black",))]))
    with pytest.raises(GenbaError, match="duplicate class name"):
        run_stream(_cfg([two_tasks[0], two_tasks[0] + "/"], loss="contrastive"))  # the same class names twice
