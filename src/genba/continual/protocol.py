"""The continual protocol: train task by task through genba.train.fit, evaluate after every step.

    result = run_continual(stream, reference, ContinualSpec(method="replay", settings=("mtil", "xtail")))

1. The learner starts as the zero-shot model (zero-initialised adapter); row 0 of every
   accuracy matrix is measured before any training.
2. For task t: the learner knows the classes of tasks 0..t (a prefix of the global classes);
   strategy.begin_task; fit(learner, strategy.task_data(rows_t), train, callbacks) with the
   task's validation split (carved from its train split) picking the best epoch;
   strategy.end_task; then every task's test split is evaluated (row t + 1).
   With `out_dir`, each task's engine checkpoints live in out_dir/task-t and the learner after
   the fit (and its callbacks) in out_dir/task-t/learner.safetensors; `resume=True` reloads
   finished tasks, re-runs their end_task (deterministic), and resumes the interrupted fit.
3. Settings. MTIL (Zheng et al. 2023): the task id is given; task i is classified among its
   own classes. X-TAIL (Xu et al., RAIL 2024): no task id; every test image is classified among
   the union of all classes of the stream, learned or not yet.
4. Control: a task that never enters the stream, classified among its own classes without a
   task id, before the stream (control_before) and after it (control_after).
5. Drift after each step on a fixed probe set (the first `probe_per_task` test rows of every
   task and of the control): alignment = mean cos(image embedding, its class text), and
   linear CKA of the probe embeddings against the initial model's.
6. Hyperparameters: `select="fixed"` (given in advance, the defaults' sources in each strategy's
   docstring) or `select="first-task"`: train.lr is picked from LR_GRID by the accuracy on the
   FIRST task's validation split after training on that task alone; nothing looks at test
   labels or at later tasks. The result records `selected_on`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genba.continual import metrics
from genba.continual.learner import Learner
from genba.continual.reference import Reference
from genba.continual.strategies import make_config, make_strategy
from genba.continual.stream import Stream, Task
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig, fit

SETTINGS = ("mtil", "xtail")
LEARNER_FILE = "learner.safetensors"
LORA_UNSUPPORTED = ("memory", "moe-adapters")
SELECTIONS = ("fixed", "first-task")
LR_GRID = (1e-4, 1e-3, 1e-2)
DEFAULT_TRAIN = TrainConfig(lr=1e-3, epochs=5, batch_size=64, weight_decay=0.0, warmup=0.1, clip_norm=1.0)


@dataclass
class ContinualSpec:
    method: str
    hyperparameters: dict = field(default_factory=dict)
    settings: tuple[str, ...] = ("mtil",)
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: copy.deepcopy(DEFAULT_TRAIN))
    hidden: int = 0
    select: str = "fixed"
    probe_per_task: int = 100
    trunk: tuple | None = None
    """(backbone, stage, image_size): train the trunk's stages after `stage` too (variant b); the
    stream must then be built with the same trunk."""
    lora: tuple | None = None
    """(hf CLIP encoder, rank): LoRA through peft on the image tower (variant c); the stream and
    the reference must then carry pixels (build_stream(pixels=encoder))."""

    def validate(self) -> None:
        make_config(self.method, self.hyperparameters)  # unknown method / hyperparameter -> GenbaError
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad or not self.settings:
            raise GenbaError(f"unknown setting {', '.join(bad) or '(none)'}: choose {' or '.join(SETTINGS)}")
        if self.lora is not None and self.method in LORA_UNSUPPORTED:
            raise GenbaError(f"method '{self.method}' works on cached features, not with --lora; "
                             f"use one of the others (not {', '.join(LORA_UNSUPPORTED)})")
        if self.select not in SELECTIONS:
            raise GenbaError(f"unknown selection '{self.select}': choose {' or '.join(SELECTIONS)}")
        if not isinstance(self.train, TrainConfig):
            raise GenbaError("train must be a genba.train.TrainConfig")


# ---------------------------------------------------------------------- evaluation
def _accuracy(learner: Learner, batch: dict, classes: torch.Tensor) -> float:
    with torch.no_grad():
        pred = classes[learner.scores(batch, classes).argmax(1)]
    return 100.0 * (pred == batch["y"]).float().mean().item()


def evaluate(learner: Learner, stream: Stream, setting: str) -> list[float]:
    """Accuracy (%) on every task's test split in `setting`."""
    row = []
    for i, task in enumerate(stream.tasks):
        if setting == "mtil":
            batch = task.batch(task.test, i)
            classes = torch.arange(task.offset, task.offset + task.num_classes)
        else:
            batch = task.batch(task.test, -1)
            classes = torch.arange(stream.num_classes)
        row.append(_accuracy(learner, batch, classes))
    return row


def control_accuracy(learner: Learner, control: Task | None) -> float | None:
    if control is None:
        return None
    batch = control.batch(control.test, -1)
    with torch.no_grad():
        scores = learner.scale * learner.embed(batch) @ control.text.T
    return 100.0 * (scores.argmax(1) == control.test.labels).float().mean().item()


def probe_set(stream: Stream, per_task: int, setting: str) -> tuple[dict, torch.Tensor]:
    """(batch, class texts) of the first `per_task` test rows of every task and the control."""
    parts, texts = [], []
    tasks = list(enumerate(stream.tasks)) + ([(-1, stream.control)] if stream.control is not None else [])
    for i, task in tasks:
        f = task.test.subset(torch.arange(min(per_task, len(task.test))))
        parts.append(task.batch(f, i if setting == "mtil" else -1))
        texts.append(task.text[f.labels])
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, torch.cat(texts)


def drift(learner: Learner, probe: tuple[dict, torch.Tensor]) -> dict[str, float]:
    batch, text = probe
    with torch.no_grad():
        e = learner.embed(batch)
    return {"alignment": metrics.alignment(e, text), "cka": metrics.linear_cka(e, batch["z"])}


# ---------------------------------------------------------------------- the run
def save_learner_state(path: Path, state: dict) -> None:
    from safetensors.torch import save as save_bytes

    from genba.cache import atomic_write_bytes

    atomic_write_bytes(path, save_bytes({k: v.detach().contiguous().clone() for k, v in state.items()}))


def load_learner_state(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise GenbaError(f"{path} cannot be read ({error}); delete it to retrain that task") from error



def make_learner(stream: Stream, reference: Reference, hidden: int = 0, trunk: tuple | None = None,
                 lora: tuple | None = None) -> Learner:
    """The zero-shot-initialised learner; with trunk = (backbone, stage, size) variant (b), with
    lora = (hf CLIP encoder, rank) variant (c)."""
    if lora is not None:
        from genba.continual.peft_lora import LoraCLIPLearner

        learner = LoraCLIPLearner(lora[0], stream.text, r=lora[1], alpha=2.0 * lora[1])
    elif trunk is not None:
        from genba.continual.trunk import TrunkLearner

        learner = TrunkLearner(stream.text, trunk[0], trunk[1], reference.visual, hidden=hidden)
    else:
        learner = Learner(stream.text, reference.centre, hidden=hidden)
    n = reference.visual.shape[0]
    learner.reference = {"x": reference.visual, "z": reference.joint, "task": torch.full((n,), -1, dtype=torch.long)}
    learner.reference_vocab = reference.vocab
    return learner


def _task_rows(task: Task, t: int, split: str = "train") -> TensorData:
    return TensorData(**task.batch(getattr(task, split), t))


def select_lr(stream: Stream, reference: Reference, spec: ContinualSpec) -> tuple[float, list[dict]]:
    """train.lr from LR_GRID by the first task's validation accuracy (trained on the first task only)."""
    table = []
    for lr in LR_GRID:
        learner = make_learner(stream, reference, spec.hidden, spec.trunk, spec.lora)
        strategy = make_strategy(spec.method, **spec.hyperparameters)
        first = stream.tasks[0]
        learner.set_known(first.num_classes)
        learner.val_batch = first.batch(first.val, 0)
        strategy.begin_task(learner, 0)
        data = _task_rows(first, 0)
        fit(learner, strategy.task_data(data, 0), spec.train.replace(lr=lr), callbacks=strategy.callbacks(learner),
            progress=False)
        strategy.end_task(learner, data, 0)
        table.append({"lr": lr, "val_top1": 100.0 * learner.validate()})
    best = max(table, key=lambda r: r["val_top1"])
    return best["lr"], table


def run_continual(stream: Stream, reference: Reference, spec: ContinualSpec, *, out_dir: str | Path | None = None,
                  resume: bool = False, progress: bool = False, keep: dict | None = None) -> dict:
    """Run one method over the stream; returns the result dict (see the module docstring).

    Every random initialisation (e.g. MoE-Adapters' experts) draws from torch's CPU generator
    seeded with `spec.seed` here, and the caller's generator state is restored afterwards: the
    same spec gives the same result wherever in a process it runs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return _run_continual(stream, reference, spec, out_dir=out_dir, resume=resume, progress=progress, keep=keep)


def _run_continual(stream: Stream, reference: Reference, spec: ContinualSpec, *, out_dir, resume, progress,
                   keep: dict | None = None) -> dict:
    """run_continual's body; `keep` (a dict) receives the trained learner under "learner" (genba.model)."""
    spec.validate()
    if len(stream.tasks) < 2:
        raise GenbaError("a continual stream needs at least two tasks (Transfer, BWT, FWT and Forgetting compare "
                         "tasks); add a task to --stream")
    hp = dict(spec.hyperparameters)
    out = None if out_dir is None else Path(out_dir)
    if spec.method == "replay" and out is not None and not hp.get("path"):
        hp["path"] = str(out / "replay.safetensors")
    strategy = make_strategy(spec.method, **hp)
    train, selection = spec.train.replace(seed=spec.seed), []
    selected_on = "fixed"
    if spec.select == "first-task" and strategy.trains:
        lr, selection = select_lr(stream, reference, spec)
        train, selected_on = train.replace(lr=lr), "first-task validation (train.lr)"
    learner = make_learner(stream, reference, spec.hidden, spec.trunk, spec.lora)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # torch's one-off optimiser import, kept out of the cost
    probes = {s: probe_set(stream, spec.probe_per_task, s) for s in spec.settings}
    matrices = {s: [evaluate(learner, stream, s)] for s in spec.settings}
    drifts = {s: [drift(learner, probes[s])] for s in spec.settings}
    control_before = control_accuracy(learner, stream.control)
    seconds, trainable, fits = 0.0, 0, []
    for t, task in enumerate(stream.tasks):
        learner.set_known(task.offset + task.num_classes)
        learner.val_batch = task.batch(task.val, t)
        start = time.perf_counter()
        strategy.begin_task(learner, t)
        data = _task_rows(task, t)
        if strategy.trains:
            trainable = max(trainable, learner.trainable_parameters())
            mixed = strategy.task_data(data, t)
            done = None if out is None else out / f"task-{t}" / LEARNER_FILE
            if resume and done is not None and done.exists():  # this task finished before the restart
                learner.load_state_dict(load_learner_state(done))
                fits.append({"task": task.name, "resumed": True})
            else:
                result = fit(learner, mixed, train, callbacks=strategy.callbacks(learner),
                             checkpoint_dir=None if out is None else out / f"task-{t}", resume=resume,
                             progress=progress, desc=f"{spec.method} {task.name}")
                fits.append({"task": task.name, "epochs": result.epochs, "best_epoch": result.best_epoch,
                             "val_top1": None if result.best_score is None else 100.0 * result.best_score})
                if done is not None:  # the learner after fit and its callbacks (e.g. ZSCL's averaging)
                    save_learner_state(done, learner.state_dict())
        strategy.end_task(learner, data, t)
        seconds += time.perf_counter() - start
        for s in spec.settings:
            matrices[s].append(evaluate(learner, stream, s))
            drifts[s].append(drift(learner, probes[s]))
    control_after = control_accuracy(learner, stream.control)
    if keep is not None:
        keep["learner"] = learner
    adapter_bytes = learner.adapter_bytes() if strategy.trains else 0  # an untrained adapter is not kept
    cache_bytes = 0 if learner.cache is None else learner.cache.nbytes
    settings = {}
    for s in spec.settings:
        m = metrics.summary(matrices[s])
        m.update(control_before=control_before, control_after=control_after)
        settings[s] = {"accuracy_matrix": matrices[s], "metrics": m, "drift": drifts[s]}
    return {
        "stream": [t.name for t in stream.tasks],
        "control": None if stream.control is None else stream.control.name,
        "method": spec.method,
        "seed": spec.seed,
        "settings": settings,
        "hyperparameters": {"method": strategy.hyperparameters(), "train": train.to_dict(), "hidden": spec.hidden},
        "selected_on": selected_on,
        "selection_table": selection,
        "fits": fits,
        "cost": {"seconds": seconds, "trainable_parameters": trainable,
                 "extra_bytes": strategy.extra_bytes() + adapter_bytes + cache_bytes,
                 "strategy_bytes": strategy.extra_bytes(), "adapter_bytes": adapter_bytes, "cache_bytes": cache_bytes},
        "rows": {"train": [len(t.train) for t in stream.tasks], "val": [len(t.val) for t in stream.tasks],
                 "test": [len(t.test) for t in stream.tasks]},
    }
