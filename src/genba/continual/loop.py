"""The one task loop of genba: every part that learns task by task (the continual learner, its
trunk and LoRA variants, CVM's student) supplies an objective, its tasks and an evaluation, and
runs through `run_tasks` (tests/test_layers.py fails on a second loop calling strategy hooks).

    records, evaluations = run_tasks(objective, steps, strategy, train, evaluate=lambda: ...)

Per task t (steps[t]):
  1. step.enter(): the objective learns the task began (known classes, validation split);
  2. objective.install(strategy.begin_task(objective, t)): modules the strategy adds;
  3. if strategy.trains: fit(objective, strategy.task_data(step.data, t), train,
     callbacks=strategy.callbacks(objective)), best epoch on the task's validation split;
     with `out_dir`, the engine checkpoints in out_dir/task-t and the objective after the fit
     in out_dir/task-t/learner.safetensors (a verified artefact), so `resume=True` skips a finished task's fit and
     resumes an interrupted one;
  4. strategy.end_task(objective, step.data, t) on the task's own rows;
  5. evaluate() (also once before the first task: the untrained row).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from genba.train import TrainConfig, TrainData, TrainResult, fit

LEARNER_FILE = "learner.safetensors"


@dataclass
class TaskStep:
    """One task as the loop sees it: a name, its own training rows, and what the objective is told
    when the task begins (e.g. set_known + the validation split)."""

    name: str
    data: TrainData
    enter: Callable[[], None] = lambda: None


@dataclass
class TaskRecord:
    name: str
    rows: int                  # rows trained on (after strategy.task_data; 0 when nothing trains)
    fit: TrainResult | None    # None: nothing trained, or a finished task reloaded on resume
    resumed: bool
    seconds: float             # begin_task .. end_task, without the evaluation
    end_seconds: float         # strategy.end_task alone
    trainable: int             # trainable parameters during this task's fit


def save_learner_state(path: Path, state: dict) -> None:
    """The objective after a task, one artefact (genba.artefact, kind "continual-learner")."""
    from genba.artefact import write_artefact

    write_artefact(path, kind="continual-learner", meta={}, tensors=state)


def load_learner_state(path: Path, expected: dict | None = None) -> dict:
    """The verified state at `path` (checksum, finite tensors); with `expected` (the objective's own
    state_dict) its names and shapes must match. One GenbaError naming the file otherwise."""
    from genba.artefact import read_artefact
    from genba.metaschema import Schema

    def fits(meta, tensors):
        if expected is None:
            return None
        if set(tensors) != set(expected):
            return f"its tensors are not this learner's (missing {sorted(set(expected) - set(tensors))[:3]}, " \
                   f"unexpected {sorted(set(tensors) - set(expected))[:3]})"
        bad = [k for k in tensors if tuple(tensors[k].shape) != tuple(expected[k].shape)]
        return f"tensor {bad[0]!r} has shape {tuple(tensors[bad[0]].shape)}, the learner's {tuple(expected[bad[0]].shape)}" if bad else None

    return read_artefact(path, kind="continual-learner", schema=Schema({}, check=fits)).tensors


def run_tasks(objective, steps: Sequence[TaskStep], strategy, train: TrainConfig, *,
              evaluate: Callable[[], Any] | None = None, out_dir: str | Path | None = None, resume: bool = False,
              progress: bool = False, desc: str = "", first: int = 0) -> tuple[list[TaskRecord], list[Any]]:
    """Train `objective` over `steps` with `strategy`; returns (one record per task, evaluations:
    evaluate() before the first task and after each one, [] without `evaluate`). `first`: the task
    index of steps[0] (a model learning task n+1 of its stream starts there)."""
    out = None if out_dir is None else Path(out_dir)
    evaluations = [] if evaluate is None else [evaluate()]
    records: list[TaskRecord] = []
    for t, step in enumerate(steps, start=first):
        step.enter()
        start = time.perf_counter()
        added = strategy.begin_task(objective, t)
        if added:
            objective.install(added)
        result, resumed, rows, trainable = None, False, 0, 0
        if strategy.trains:
            trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
            mixed = strategy.task_data(step.data, t)
            rows = len(mixed)
            done = None if out is None else out / f"task-{t}" / LEARNER_FILE
            if resume and done is not None and done.exists():  # this task finished before the restart
                objective.load_state_dict(load_learner_state(done, objective.state_dict()))
                resumed = True
            else:
                result = fit(objective, mixed, train, callbacks=strategy.callbacks(objective),
                             checkpoint_dir=None if out is None else out / f"task-{t}", resume=resume,
                             progress=progress, desc=f"{desc} {step.name}".strip())
                if done is not None:  # the objective after fit and its callbacks (e.g. ZSCL's averaging)
                    save_learner_state(done, objective.state_dict())
        end = time.perf_counter()
        strategy.end_task(objective, step.data, t)
        now = time.perf_counter()
        records.append(TaskRecord(step.name, rows, result, resumed, now - start, now - end, trainable))
        if evaluate is not None:
            evaluations.append(evaluate())
    return records, evaluations
