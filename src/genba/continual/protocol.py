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
from genba.continual.loop import LEARNER_FILE, TaskStep, load_learner_state, run_tasks
from genba.continual.reference import Reference
from genba.continual.strategies import check_compatible, make_config, make_strategy
from genba.continual.stream import Stream, Task
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig, seeded

SETTINGS = ("mtil", "xtail")
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
        check_compatible(self.method, learner_class(self.trunk, self.lora))  # e.g. memory needs a cache slot
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


def calibration(learner: Learner, stream: Stream, setting: str) -> tuple[float, float]:
    """(ECE %, ms per image) of the learner on every task's test rows pooled, in `setting`: confidence =
    the max of softmax(scores) over the candidate classes (genba.metrics, 15 bins); the time is
    that of scoring (features cached: the encoder's cost is not in it)."""
    from genba.metrics import calibration_error

    confidence, correct, n, start = [], [], 0, time.perf_counter()
    for i, task in enumerate(stream.tasks):
        batch = task.batch(task.test, i if setting == "mtil" else -1)
        classes = (torch.arange(task.offset, task.offset + task.num_classes) if setting == "mtil"
                   else torch.arange(stream.num_classes))
        with torch.no_grad():
            p = learner.scores(batch, classes).softmax(-1)
        top, pos = p.max(1)
        confidence.append(top)
        correct.append(classes[pos] == batch["y"])
        n += len(batch["y"])
    ms = 1000.0 * (time.perf_counter() - start) / max(1, n)
    return calibration_error(torch.cat(confidence), torch.cat(correct)), ms


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
def learner_class(trunk: tuple | None = None, lora: tuple | None = None) -> type:
    """The learner class a spec builds (what make_strategy checks a method against)."""
    if lora is not None:
        from genba.continual.peft_lora import LoraCLIPLearner

        return LoraCLIPLearner
    if trunk is not None:
        from genba.continual.trunk import TrunkLearner

        return TrunkLearner
    return Learner


def verify_resume(out: Path, tasks: int, replay_path: str | None) -> None:
    """Read every file a resumed run will trust (finished tasks' learners, checkpoints, the replay
    buffer and its snapshots) before anything runs, so a damaged one is reported before any file
    is rewritten."""
    from genba.continual.buffer import ReplayBuffer
    from genba.train.checkpoint import CHECKPOINT, load_checkpoint

    for t in range(tasks):
        if (out / f"task-{t}" / LEARNER_FILE).exists():
            load_learner_state(out / f"task-{t}" / LEARNER_FILE)
        if (out / f"task-{t}" / CHECKPOINT).exists():
            load_checkpoint(out / f"task-{t}")
    if replay_path:
        path = Path(replay_path)
        for found in sorted(path.parent.glob(f"{path.stem}*{path.suffix}")):
            ReplayBuffer.load(found)


def make_learner(stream: Stream, reference: Reference, hidden: int = 0, trunk: tuple | None = None,
                 lora: tuple | None = None) -> Learner:
    """The zero-shot-initialised learner; with trunk = (backbone, stage, size) variant (b), with
    lora = (hf CLIP encoder, rank) variant (c)."""
    cls = learner_class(trunk, lora)
    if lora is not None:
        learner = cls(lora[0], stream.text, r=lora[1], alpha=2.0 * lora[1])
    elif trunk is not None:
        learner = cls(stream.text, trunk[0], trunk[1], reference.visual, hidden=hidden)
    else:
        learner = cls(stream.text, reference.centre, hidden=hidden)
    n = reference.visual.shape[0]
    learner.reference = {"x": reference.visual, "z": reference.joint, "task": torch.full((n,), -1, dtype=torch.long)}
    learner.reference_vocab = reference.vocab
    return learner


def task_steps(learner: Learner, stream: Stream, upto: int | None = None) -> list[TaskStep]:
    """The stream's tasks for genba.continual.loop.run_tasks: entering task t tells the learner
    the classes of tasks 0..t and task t's validation split."""
    def step(t: int, task: Task) -> TaskStep:
        def enter() -> None:
            learner.set_known(task.offset + task.num_classes)
            learner.val_batch = task.batch(task.val, t)
        return TaskStep(task.name, TensorData(**task.batch(task.train, t)), enter)

    return [step(t, task) for t, task in enumerate(stream.tasks[:upto])]


def select_lr(stream: Stream, reference: Reference, spec: ContinualSpec) -> tuple[float, list[dict]]:
    """train.lr from LR_GRID by the first task's validation accuracy (trained on the first task only)."""
    from genba.methods.select import grid_search

    def score(point: dict) -> float:
        learner = make_learner(stream, reference, spec.hidden, spec.trunk, spec.lora)
        strategy = make_strategy(spec.method, seed=spec.seed, learner=learner, **spec.hyperparameters)
        run_tasks(learner, task_steps(learner, stream, upto=1), strategy, spec.train.replace(lr=point["lr"]))
        return 100.0 * learner.validate()

    best, table = grid_search([{"lr": lr} for lr in LR_GRID], score)
    return best["lr"], table


def run_continual(stream: Stream, reference: Reference, spec: ContinualSpec, *, out_dir: str | Path | None = None,
                  resume: bool = False, progress: bool = False, keep: dict | None = None) -> dict:
    """Run one method over the stream; returns the result dict (see the module docstring).

    Every random initialisation (e.g. MoE-Adapters' experts) draws from torch's CPU generator
    seeded with `spec.seed` here (genba.train.seeded), and the caller's generator state is
    restored afterwards: the same spec gives the same result wherever in a process it runs. The
    strategy's own draws (replay's reservoir, memory's shots) use generators from `spec.seed`.
    """
    with seeded(spec.seed):
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
    strategy = make_strategy(spec.method, seed=spec.seed, learner=learner_class(spec.trunk, spec.lora), **hp)
    train, selection = spec.train.replace(seed=spec.seed), []
    selected_on = "fixed"
    if spec.select == "first-task" and strategy.trains:
        lr, selection = select_lr(stream, reference, spec)
        train, selected_on = train.replace(lr=lr), "first-task validation (train.lr)"
    learner = make_learner(stream, reference, spec.hidden, spec.trunk, spec.lora)
    if resume and out is not None:
        verify_resume(out, len(stream.tasks), hp.get("path"))
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # torch's one-off optimiser import, kept out of the cost
    probes = {s: probe_set(stream, spec.probe_per_task, s) for s in spec.settings}
    control_before = control_accuracy(learner, stream.control)

    def evaluate_all() -> dict:
        return {s: (evaluate(learner, stream, s), drift(learner, probes[s])) for s in spec.settings}

    records, rows = run_tasks(learner, task_steps(learner, stream), strategy, train, evaluate=evaluate_all,
                              out_dir=out, resume=resume, progress=progress, desc=spec.method)
    matrices = {s: [r[s][0] for r in rows] for s in spec.settings}
    drifts = {s: [r[s][1] for r in rows] for s in spec.settings}
    seconds = sum(r.seconds for r in records)
    trainable = max([r.trainable for r in records] + [0])
    fits = [{"task": r.name, "resumed": True} if r.resumed else
            {"task": r.name, "epochs": r.fit.epochs, "best_epoch": r.fit.best_epoch,
             "val_top1": None if r.fit.best_score is None else 100.0 * r.fit.best_score}
            for r in records if r.resumed or r.fit is not None]
    control_after = control_accuracy(learner, stream.control)
    if keep is not None:
        keep["learner"] = learner
    adapter_bytes = learner.adapter_bytes() if strategy.trains else 0  # an untrained adapter is not kept
    cache_bytes = 0 if learner.cache is None else learner.cache.nbytes
    settings = {}
    for s in spec.settings:
        m = metrics.summary(matrices[s])
        ece, ms = calibration(learner, stream, s)
        m.update(control_before=control_before, control_after=control_after, ece=ece, ms_per_image=ms)
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
                 "learn_ms_per_image": 1000.0 * seconds / max(1, sum(len(t.train) for t in stream.tasks)),
                 "extra_bytes": strategy.extra_bytes() + adapter_bytes + cache_bytes,
                 "strategy_bytes": strategy.extra_bytes(), "adapter_bytes": adapter_bytes, "cache_bytes": cache_bytes},
        "rows": {"train": [len(t.train) for t in stream.tasks], "val": [len(t.val) for t in stream.tasks],
                 "test": [len(t.test) for t in stream.tasks]},
    }
