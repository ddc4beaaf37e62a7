"""The one training engine: schedule, determinism, early stop, resume after a real kill,
2-process torchrun DDP equal to 1 process, clear errors."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genba.errors import GenbaError
from genba.train import Callback, Objective, TensorData, TrainConfig, fit, lr_factor

WORKER = Path(__file__).parent / "helpers" / "train_worker.py"
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")


class Quadratic(Objective):
    """loss = mean_i ||w - x_i||^2: the optimum is the mean row; validation = -distance to it."""

    def __init__(self, target=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.target = target

    def forward(self, batch):
        return ((self.w - batch["x"]) ** 2).sum(1).mean()

    def validate(self):
        return None if self.target is None else -float((self.w - self.target).norm())


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(lr=1.0, warmup=0.2, min_lr=0.1)
    factors = [lr_factor(s, 10, cfg) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]  # 2 warmup steps, linear
    assert factors[2] == pytest.approx(1.0) and factors[-1] > 0.1
    t = 7 - 2
    assert factors[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 8)))


def test_training_converges_and_is_deterministic(one_thread):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) + torch.tensor([1.0, -2.0, 0.5])
    runs = []
    for _ in range(2):
        objective = Quadratic()
        result = fit(objective, TensorData(x=x), TrainConfig(lr=0.1, epochs=30, batch_size=16), progress=False)
        runs.append(objective.w.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - x.mean(0)).norm() < 0.1
    assert result.steps == 30 * 4 and len(result.history) == 30


def test_early_stop_restores_the_best_validation_state(one_thread):
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0)) - 1.0
    far = torch.full((3,), 5.0)  # the data mean is near -1: moving towards it moves away from this target
    objective = Quadratic(target=far)
    result = fit(objective, TensorData(x=x), TrainConfig(lr=0.1, epochs=50, batch_size=8, patience=3), progress=False)
    assert result.stopped_early and result.epochs == 4 and result.best_epoch == 0
    vals = [h["val"] for h in result.history]
    assert all(v < vals[0] for v in vals[1:])
    assert -float((objective.w.detach() - far).norm()) == pytest.approx(result.best_score)


def test_penalty_callback_changes_the_optimum(one_thread):
    class PullToZero(Callback):
        def before_backward(self, engine, batch, loss):
            return loss + 3.0 * (engine.objective.w ** 2).sum()

    x = torch.ones(16, 3)
    objective = Quadratic()
    fit(objective, TensorData(x=x), TrainConfig(lr=0.05, epochs=200, batch_size=16), callbacks=[PullToZero()], progress=False)
    assert torch.allclose(objective.w.detach(), torch.full((3,), 0.25), atol=1e-3)  # argmin (w-1)^2 + 3 w^2


def test_resume_after_a_real_kill_gives_the_same_final_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(WORKER), str(straight)], env=ENV, check=True)
    crash = subprocess.run([sys.executable, str(WORKER), str(killed), "--kill-at", "11"], env=ENV)
    assert crash.returncode == -9 and not (killed / "final.safetensors").exists()
    state = json.loads((killed / "ckpt" / "state.json").read_text())
    assert state["step"] == 10 and not state["finished"]  # last checkpoint before the kill (every 2 steps)
    subprocess.run([sys.executable, str(WORKER), str(killed), "--resume"], env=ENV, check=True)
    a, b = load_file(straight / "final.safetensors"), load_file(killed / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_ddp_equals_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun ships with torch"
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(WORKER), str(one)], env=ENV, check=True)
    subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", str(WORKER), str(two)],
                   env=ENV, check=True, capture_output=True)
    a, b = load_file(one / "final.safetensors"), load_file(two / "final.safetensors")
    for k in a:  # same global batch of 16 split 8 + 8: gradients agree up to float32 summation order
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, (a[k] - b[k]).abs().max())


def test_bad_settings_and_data_are_clear_errors(tmp_path):
    with pytest.raises(GenbaError, match="train.lr"):
        TrainConfig(lr=-1)
    with pytest.raises(GenbaError, match="train.epochs"):
        TrainConfig(epochs=10**9)
    with pytest.raises(GenbaError, match="unknown training setting"):
        TrainConfig().replace(learning_rate=1)
    with pytest.raises(GenbaError, match="NaN"):
        TensorData(x=torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(GenbaError, match="no training data"):
        fit(Quadratic(), TensorData(x=torch.zeros(0, 3)), progress=False)
    ckpt = tmp_path / "ckpt"
    fit(Quadratic(), TensorData(x=torch.zeros(4, 3)), TrainConfig(epochs=1), checkpoint_dir=ckpt, progress=False)
    with pytest.raises(GenbaError, match="--resume"):
        fit(Quadratic(), TensorData(x=torch.zeros(4, 3)), TrainConfig(epochs=1), checkpoint_dir=ckpt, progress=False)
    with pytest.raises(GenbaError, match="another run"):
        fit(Quadratic(), TensorData(x=torch.zeros(4, 3)), TrainConfig(epochs=2), checkpoint_dir=ckpt, resume=True,
            progress=False)
    (ckpt / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(GenbaError, match="cannot be read|not a genba|bogus header"):
        fit(Quadratic(), TensorData(x=torch.zeros(4, 3)), TrainConfig(epochs=1), checkpoint_dir=ckpt, resume=True,
            progress=False)
