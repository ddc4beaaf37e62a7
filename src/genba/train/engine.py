"""The one training loop in genba.

    result = fit(objective, TensorData(x=..., y=...), TrainConfig(lr=1e-3, epochs=20),
                 callbacks=[EWC(...)], checkpoint_dir="runs/a", resume=True)

Each step: the global batch (a seeded permutation of the rows, a pure function of seed and
epoch) is split across processes; loss = objective(shard) reweighted by |shard| * W / |batch| so
that DistributedDataParallel's gradient average is the gradient of the global batch mean;
callbacks may add penalties (before_backward); gradients are clipped to `clip_norm`; AdamW
steps with the warmup + cosine learning rate of TrainConfig. The global torch seed is reset
before every step from (seed, step), so random draws inside a step (views, dropout) replay
exactly on resume. At the end of every epoch the objective's validation score (if any) picks
the best state and drives early stopping; the best state is restored at the end.
Checkpoints (genba.train.checkpoint) hold everything needed so that a killed run resumed with
`resume=True` ends with the same weights as an unkilled one.

Hardware (genba.device): the objective moves to the run's device for the fit (under torchrun
with CUDA, each rank to its own GPU) and back to where it was at the end; every batch moves
with it. bf16/fp16 run the forward pass under autocast with float32 parameters (master weights);
fp16 scales the loss with a GradScaler (unscaled before clipping, steps skipped on overflow).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genba.device import Hardware, current, module_device
from genba.errors import GenbaError
from genba.train import distributed
from genba.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from genba.train.config import TrainConfig
from genba.train.data import TrainData, epoch_order, seed_step, step_seed
from genba.train.objective import Callback, Objective


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then cosine to min_lr/lr."""
    warm = int(round(cfg.warmup * total))
    if step < warm:
        return (step + 1) / warm
    t, span = step - warm, max(1, total - warm)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t / span))


@dataclass
class TrainResult:
    steps: int
    epochs: int
    stopped_early: bool
    best_score: float | None
    best_epoch: int | None
    seconds: float
    samples_per_second: float
    resumed_from_step: int = 0
    history: list[dict] = field(default_factory=list)


class Engine:
    """State of one fit; callbacks read `objective`, `config`, `optimizer`, `step`, `epoch`, `rank`."""

    def __init__(self, objective: Objective, data: TrainData, config: TrainConfig,
                 callbacks: list[Callback], checkpoint_dir: Path | None, progress: bool, desc: str,
                 hardware: Hardware | None = None):
        if not isinstance(objective, Objective):
            raise GenbaError(f"the engine trains genba.train.Objective instances, got {type(objective).__name__}")
        if not isinstance(config, TrainConfig):
            raise GenbaError(f"training settings must be a TrainConfig, got {type(config).__name__}")
        if len(data) == 0:
            raise GenbaError("no training data: the task or split is empty")
        self.objective, self.data, self.config = objective, data, config
        self.callbacks = list(callbacks)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress, self.desc = progress, desc
        self.hardware = (hardware or current()).for_rank()
        distributed.init_from_env(self.hardware.distributed_backend)
        self.rank, self.world = distributed.rank_and_world()
        self.home = module_device(objective)  # where the objective goes back at the end
        objective.to(self.hardware.device)
        self.scaler = self.hardware.grad_scaler()
        groups = []
        for group in objective.param_groups():
            group = dict(group)
            group["params"] = [p for p in group["params"] if p.requires_grad]
            group["base_lr"] = group.pop("lr", config.lr * group.pop("lr_scale", 1.0))
            group.setdefault("weight_decay", config.weight_decay)
            if group["params"]:
                groups.append(group)
        if not groups:
            raise GenbaError(f"{type(objective).__name__} has no trainable parameters")
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay)
        self.model = objective
        if distributed.in_group():  # torchrun (or a caller) joined a process group: gradients all-reduced
            ids = [self.hardware.device] if self.hardware.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(
                objective, device_ids=ids, find_unused_parameters=getattr(objective, "find_unused_parameters", False))
        n = len(data)
        self.batch = min(config.batch_size, n)
        full, rest = divmod(n, self.batch)
        self.steps_per_epoch = full + (1 if rest and not config.drop_last else 0)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.step = self.epoch = 0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.evals_since_best = 0
        self.stopped_early = False
        self.history: list[dict] = []
        self.loss_sum = 0.0
        self.loss_rows = 0
        self.resumed_from = 0

    # ------------------------------------------------------------------ checkpoints
    def _state(self, finished: bool) -> dict:
        return {"step": self.step, "epoch": self.epoch, "finished": finished, "config": self.config.to_dict(),
                "objective": type(self.objective).__name__, "rows": len(self.data),
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "evals_since_best": self.evals_since_best, "stopped_early": self.stopped_early,
                "loss_sum": self.loss_sum, "loss_rows": self.loss_rows, "history": self.history}

    def save(self, finished: bool = False) -> None:
        if self.checkpoint_dir is not None and distributed.is_main():
            save_checkpoint(self.checkpoint_dir, self._state(finished), self.objective.trainable_state(),
                            self.optimizer.state_dict(), self.best_state)
        distributed.barrier()

    def restore(self) -> bool:
        """Load the checkpoint in checkpoint_dir, if any; True when the run had already finished."""
        found = None if self.checkpoint_dir is None else load_checkpoint(self.checkpoint_dir)
        if found is None:
            return False
        state, model, optim, best = found
        if state["config"] != self.config.to_dict() or state["objective"] != type(self.objective).__name__ \
                or state["rows"] != len(self.data):
            raise GenbaError(f"the checkpoint {self.checkpoint_dir / CHECKPOINT} is of another run "
                             f"({state['objective']}, {state['rows']} rows, settings {state['config']}); "
                             "resume with the same settings and data, or use a new output directory")
        try:
            self.objective.load_state_dict(model)
            groups = self.optimizer.state_dict()["param_groups"]  # this run's settings, never the file's
            self.optimizer.load_state_dict({"state": optim["state"], "param_groups": groups})
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise GenbaError(f"{self.checkpoint_dir / CHECKPOINT}: its tensors do not fit this run "
                             f"({str(error).splitlines()[0][:160]}); delete it to start over, or use a new output directory") from None
        for key in ("step", "epoch", "best_score", "best_epoch", "evals_since_best", "stopped_early",
                    "loss_sum", "loss_rows", "history"):
            setattr(self, key, state[key])
        self.best_state = best
        self.resumed_from = self.step
        return bool(state["finished"])

    # ------------------------------------------------------------------ the loop
    def _set_lr(self) -> None:
        factor = lr_factor(self.step, self.total_steps, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _train_step(self, rows: torch.Tensor) -> float:
        seed_step(step_seed(self.config.seed, self.step))
        local = distributed.shard(rows)
        batch = self.hardware.to(self.data.take(local))
        with self.hardware.autocast():
            out = self.model(batch)
        loss, _logs = out if isinstance(out, tuple) else (out, {})
        value = loss.item()
        if not math.isfinite(value):
            raise GenbaError(f"the training loss became {value} at step {self.step}; "
                             "lower train.lr or check the inputs for extreme values")
        weighted = loss * (len(local) * self.world / len(rows))
        for cb in self.callbacks:
            weighted = cb.before_backward(self, batch, weighted)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler
        (weighted if scaler is None else scaler.scale(weighted)).backward()
        if self.config.clip_norm > 0:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.config.clip_norm)
        self._set_lr()
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        self.step += 1
        for cb in self.callbacks:
            cb.after_step(self)
        return distributed.all_sum(value * len(local))

    def _end_epoch(self) -> None:
        mean_loss = self.loss_sum / max(1, self.loss_rows)
        entry = {"epoch": self.epoch, "step": self.step, "loss": mean_loss}
        if (self.epoch + 1) % self.config.eval_every == 0:
            self.objective.eval()
            with torch.no_grad(), self.hardware.autocast():
                score = self.objective.validate()
            self.objective.train()
            if score is not None:
                entry["val"] = float(score)
                if self.best_score is None or score > self.best_score:
                    self.best_score, self.best_epoch, self.evals_since_best = float(score), self.epoch, 0
                    self.best_state = {k: v.detach().clone() for k, v in self.objective.trainable_state().items()}
                else:
                    self.evals_since_best += 1
                    if self.config.patience and self.evals_since_best >= self.config.patience:
                        self.stopped_early = True
        self.history.append(entry)
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch)
        self.epoch += 1
        self.loss_sum, self.loss_rows = 0.0, 0

    def run(self, resume: bool) -> TrainResult:
        finished = self.restore() if resume else False
        if not resume and self.checkpoint_dir is not None and (self.checkpoint_dir / "checkpoint.safetensors").exists():
            raise GenbaError(f"{self.checkpoint_dir} already holds a checkpoint: pass --resume to continue it, "
                             "or choose a new output directory")
        start, rows_seen = time.perf_counter(), 0
        for cb in self.callbacks:
            cb.on_fit_start(self)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, unit="step", leave=False,
                   disable=not (self.progress and distributed.is_main()))
        self.objective.train()
        while not finished and not self.stopped_early and self.epoch < self.config.epochs:
            order = epoch_order(len(self.data), self.config.seed, self.epoch)
            first = self.step - self.epoch * self.steps_per_epoch  # batches of this epoch already done
            for b in range(first, self.steps_per_epoch):
                rows = order[b * self.batch:(b + 1) * self.batch]
                if len(rows) < self.world:  # too few rows to give every process one: skipped everywhere
                    self.step += 1
                    continue
                self.loss_sum += self._train_step(rows)
                self.loss_rows += len(rows)
                rows_seen += len(rows)
                elapsed = max(1e-9, time.perf_counter() - start)
                bar.update(1)
                if not bar.disable:
                    bar.set_postfix(loss=f"{self.loss_sum / max(1, self.loss_rows):.4f}",
                                    rows_s=f"{rows_seen / elapsed:.0f}")
                k = self.config.checkpoint_every
                if k and self.step % k == 0 and b + 1 < self.steps_per_epoch:
                    self.save()
            self._end_epoch()
            if not (self.stopped_early or self.epoch >= self.config.epochs):
                self.save()
        bar.close()
        if not finished:
            if self.best_state is not None:
                self.objective.load_state_dict(self.best_state)
            self.save(finished=True)
        self.objective.eval()
        self.objective.to(self.home)  # results come back where the caller keeps them
        for cb in self.callbacks:
            cb.on_fit_end(self)
        seconds = time.perf_counter() - start
        return TrainResult(self.step, self.epoch, self.stopped_early, self.best_score, self.best_epoch, seconds,
                           rows_seen / max(seconds, 1e-9), self.resumed_from, list(self.history))


def fit(objective: Objective, data: TrainData, config: TrainConfig | None = None, *,
        callbacks: list[Callback] | tuple = (), checkpoint_dir: str | Path | None = None,
        resume: bool = False, progress: bool = True, desc: str = "train",
        hardware: Hardware | None = None) -> TrainResult:
    """Train `objective` on `data` with the one loop (see the module docstring); `hardware`
    defaults to genba.device.current()."""
    engine = Engine(objective, data, config or TrainConfig(), list(callbacks), checkpoint_dir, progress, desc,
                    hardware)
    with torch.random.fork_rng(devices=[]):  # per-step reseeding must not leak into the caller's RNG
        return engine.run(resume)
