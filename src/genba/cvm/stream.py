"""One continual CVM (or CE-head) run over a stream of tasks, through genba.train.fit.

The task loop is genba.continual.loop.run_tasks (the one every continual part uses); CVM supplies
its objective, its tasks (`task_steps`) and its evaluation. For task j = 1..T: known = the classes
with images so far (a prefix of the label space); data = strategy.task_data(task j's prepared
training rows, j); fit(objective, data, cfg, callbacks = strategy.callbacks(objective)) with
early-stopping / best-epoch selection on task j's validation split only; strategy.end_task(...).
Any registered strategy whose `requires` the objective provides works here (replay, LwF, EWC, L2,
joint, ...); the draws of the strategy come from the run's seed. After every task (and once before the first: the untrained
row A[0]) every task's test split is scored in both settings:
  MTIL   (task-incremental; ZSCL): the task is known; argmax over that task's own classes;
  X-TAIL (task-agnostic; RAIL): argmax over the whole label space of the stream, seen or not
         (the concept head scores classes without images through their bank row, directly or
         ConSE-style, CVMConfig.unseen / hub, genba.cvm.heads; the CE
         head's rows of classes without images are untrained).
Training is the same for both settings (one run, two readings of it). The loss ("auto") is chosen
on the first task's validation split: the contrastive and the cosine mapping loss each train on
task 1 and the better validation top-1 is kept (`selected_on` says so).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genba.cache import TensorCache
from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.heads import DEFAULT_SCALE, ConceptHead, LinearHead
from genba.cvm.objective import StreamObjective, accuracy
from genba.cvm.student import build_student, count_macs, trainable_parameters
from genba.continual.loop import run_tasks
from genba.cvm.tasks import TaskSpec, build_tasks
from genba.errors import GenbaError
from genba.train import TensorData, TrainConfig, fit, seeded

DEFAULT_SIZE = {"small": 32, "lite0": 64, "lite1": 64, "lite2": 64}


def default_train(student: str) -> TrainConfig:
    """Fixed in advance (not tuned on any test split): AdamW, cosine, a few epochs."""
    return TrainConfig(lr=3e-3 if student == "small" else 1e-3, epochs=6, batch_size=64, weight_decay=1e-4,
                       warmup=0.05, clip_norm=5.0, seed=0)


@dataclass
class CVMConfig:
    stream: list[TaskSpec]
    student: str = "small"
    head: str = "concept"               # "concept" (CVM) or "linear" (the CE baseline)
    strategy: str = "none"
    strategy_hp: dict = field(default_factory=dict)
    loss: str = "auto"                  # auto | contrastive | cosine (concept head); ce (linear head)
    image_size: int = 0                 # 0: DEFAULT_SIZE[student]
    text_model: str = "minilm"
    seed: int = 0
    max_train: int = 1500
    max_test: int = 500
    val_per_class: int = 30
    imbalance: int = 0
    concept_scale: float = 0.0          # s of the concept head; 0 = chosen with the loss on task 1's validation
    center: bool | None = None          # centre the concept targets (genba.cvm.concepts); None = chosen with the loss
    unseen: str = "direct"              # scoring of classes without images: direct | conse (genba.cvm.heads)
    hub: bool = False                   # subtract the bank-only CSLS hubness term from those classes' logits
    train: TrainConfig | None = None

    def resolved(self) -> "CVMConfig":
        c = copy.copy(self)
        if c.head not in ("concept", "linear"):
            raise GenbaError(f"unknown head '{c.head}': choose concept (CVM) or linear (cross-entropy baseline)")
        c.image_size = c.image_size or DEFAULT_SIZE.get(c.student, 32)
        c.train = (c.train or default_train(c.student)).replace(seed=c.seed)
        if c.head == "linear":
            c.loss = "ce"
        elif c.loss == "ce":
            raise GenbaError("loss 'ce' needs --head linear; the concept head takes contrastive, cosine or auto")
        return c


def make_objective(cfg: CVMConfig, bank: ConceptBank, loss: str) -> StreamObjective:
    with seeded(cfg.seed):  # the student's and head's initialisation draw from the run's seed
        student = build_student(cfg.student, image_size=cfg.image_size)
        centered = bool(cfg.center) and bank.center is not None
        head = ConceptHead(student.feature_dim, bank.targets() if centered else bank.embeddings,
                           scale=cfg.concept_scale or DEFAULT_SCALE, centered=centered, unseen=cfg.unseen,
                           hub=cfg.hub) if cfg.head == "concept" else \
            LinearHead(student.feature_dim, len(bank))
    return StreamObjective(student, head, loss)


def prepare_inputs(objective: StreamObjective, pixels: torch.Tensor, cache: TensorCache | None, what: str) -> torch.Tensor:
    """Pixels -> the student's trainable-part inputs (activations of the frozen part, cached), or pixels."""
    student = objective.student
    if student.provenance().startswith("pixels:"):
        return pixels
    from genba.cache import tensors_digest
    from genba.cvm.objective import as_input

    key = {"student": student.provenance(), "pixels": tensors_digest({"p": pixels}), "what": what}

    def compute():
        with torch.no_grad():
            out = [student.prepare(as_input(pixels[i:i + 256])).half() for i in range(0, len(pixels), 256)]
        return {"x": torch.cat(out)}

    return compute()["x"] if cache is None else cache.get_or_compute("cvm-acts", key, compute)["x"]


def evaluate(objective: StreamObjective, tasks, inputs, num_classes: int) -> tuple[list[float], list[float]]:
    mtil, xtail = [], []
    for task, x in zip(tasks, inputs):
        ids = torch.tensor(task.class_ids)
        logits = torch.cat([objective.all_logits(x[i:i + 512]) for i in range(0, len(x), 512)]) if len(x) else torch.zeros(0, num_classes)
        mtil.append(accuracy(ids[logits[:, ids].argmax(-1)], task.test_y))
        xtail.append(accuracy(logits.argmax(-1), task.test_y))
    return mtil, xtail


ALIASES = {"none": "finetune"}  # CVM's name for sequential fine-tuning


def _strategy(name: str, hp: dict, seed: int):
    """genba.continual's strategy (their hyperparameter defaults, fixed in advance), drawing from the
    run's seed; any registered strategy whose requirements the CVM objective meets ("none" = finetune)."""
    from genba.continual.strategies import make_strategy

    return make_strategy(ALIASES.get(name, name), seed=seed, learner=StreamObjective, **hp)


def task_steps(objective: StreamObjective, tasks, train_in, val_in) -> list:
    """CVM's tasks for genba.continual.loop.run_tasks: entering task j makes the classes with images
    so far (a prefix of the label space) known and sets task j's validation split."""
    from genba.continual.loop import TaskStep

    steps, known = [], 0
    for j, task in enumerate(tasks):
        known = max(known, max(task.trained_ids) + 1)

        def enter(known=known, j=j, task=task) -> None:
            objective.set_known(known)
            objective.set_validation(val_in[j], task.val_y)

        steps.append(TaskStep(task.name, TensorData(x=train_in[j], y=task.train_y), enter))
    return steps


def run_stream(cfg: CVMConfig, *, cache: TensorCache | None = None, out_dir: str | Path | None = None,
               progress: bool = False, tasks_and_bank=None) -> dict:
    """Train over the stream; returns the JSON-able result (accuracy matrices, metrics, costs)."""
    cfg = cfg.resolved()
    start_all = time.perf_counter()
    if tasks_and_bank is None:
        tasks, names, templates = build_tasks(cfg.stream, cfg.image_size, cache, max_train=cfg.max_train,
                                              max_test=cfg.max_test, val_per_class=cfg.val_per_class,
                                              imbalance=cfg.imbalance)
        bank = ConceptBank.build(names, templates, TextEmbedder(cfg.text_model))
        bank = bank.with_center()  # mu frozen now; used when cfg.center (see ConceptHead.centered)
    else:
        tasks, bank = tasks_and_bank
    loss, selection = cfg.loss, None
    if cfg.head == "concept" and (loss == "auto" or not cfg.concept_scale or cfg.center is None):
        loss, scale, center, selection = select_loss(cfg, tasks, bank, cache)
        cfg.concept_scale, cfg.center = scale, center
    with torch.no_grad():
        objective = make_objective(cfg, bank, loss)
    prep = lambda px, what: prepare_inputs(objective, px, cache, what)
    train_in = [prep(t.train_x, f"{t.name}:train") for t in tasks]
    val_in = [prep(t.val_x, f"{t.name}:val") for t in tasks]
    test_in = [prep(t.test_x, f"{t.name}:test") for t in tasks]
    strategy = _strategy(cfg.strategy, cfg.strategy_hp, cfg.seed)
    objective.eval()  # the MAC count's forward must not touch BatchNorm statistics
    example = train_in[0][:1]
    fwd_macs = count_macs(objective, lambda x: objective.all_logits(x), example)

    def evaluate_all():
        objective.eval()
        with torch.no_grad():
            return evaluate(objective, tasks, test_in, len(bank))

    records, rows = run_tasks(objective, task_steps(objective, tasks, train_in, val_in), strategy, cfg.train,
                              evaluate=evaluate_all, progress=progress, desc=cfg.head)
    matrix_m, matrix_x = [r[0] for r in rows], [r[1] for r in rows]
    per_task = []
    for j, rec in enumerate(records):
        epochs = rec.fit.epochs if rec.fit else 0
        teacher = 1 if cfg.strategy == "lwf" and j > 0 else 0
        per_task.append({"task": rec.name, "rows": rec.rows, "epochs": epochs,
                         "best_epoch": rec.fit.best_epoch if rec.fit else None,
                         "val_top1": rec.fit.best_score if rec.fit else None,
                         "train_seconds": (rec.fit.seconds if rec.fit else 0.0) + rec.end_seconds,
                         "train_macs": int(rec.rows * epochs * fwd_macs * (3 + 2 * teacher))})
    out = {
        "stream": [t.name for t in tasks],
        "control": None,
        "method": f"cvm-{loss}" if cfg.head == "concept" else "ce-head",
        "head": cfg.head, "student": cfg.student, "strategy": cfg.strategy, "seed": cfg.seed,
        "loss": loss, "loss_selection": selection,
        "settings": {"mtil": _setting(matrix_m), "xtail": _setting(matrix_x)},
        "classes": bank.names,
        "per_task": per_task,
        "cost": {"trainable_parameters": trainable_parameters(objective),
                 "parameters": sum(p.numel() for p in objective.parameters()) + objective.head.num_classes * (bank.dim if cfg.head == "concept" else 0),
                 "forward_macs_trainable_per_image": fwd_macs,
                 "strategy_bytes": strategy.extra_bytes(),
                 "train_seconds_per_task": sum(p["train_seconds"] for p in per_task) / len(per_task),
                 "train_macs_per_task": sum(p["train_macs"] for p in per_task) / len(per_task)},
        "hyperparameters": {"train": cfg.train.to_dict(), "method": strategy.hyperparameters(), "image_size": cfg.image_size,
                            "max_train": cfg.max_train, "max_test": cfg.max_test, "val_per_class": cfg.val_per_class,
                            "imbalance": cfg.imbalance, "text_model": cfg.text_model, "concept_scale": getattr(objective.head, "scale", None),
                            "unseen": cfg.unseen if cfg.head == "concept" else None, "hub": cfg.hub if cfg.head == "concept" else None},
        "selected_on": ("loss: first task's validation split; everything else fixed in advance" if selection
                        else "fixed in advance (no selection)"),
        "rows": {"train": [len(t.train_y) for t in tasks], "val": [len(t.val_y) for t in tasks],
                 "test": [len(t.test_y) for t in tasks]},
        "wall_seconds": time.perf_counter() - start_all,
    }
    if out_dir is not None:
        from genba.cvm.model_dir import save_model_dir

        save_model_dir(out_dir, objective, bank, cfg, out)
    out["_objective"] = objective
    return out


def _setting(matrix: list[list[float]]) -> dict:
    """The `genba continual` block: accuracy_matrix + genba.continual.metrics (no control task in CVM runs)."""
    from genba.continual import metrics

    if len(matrix[0]) >= 2:
        m = metrics.summary(matrix)
    else:  # one task: the metrics that compare tasks are undefined
        m = {"transfer": None, "avg": metrics.avg(matrix), "last": metrics.last(matrix), "bwt": None, "fwt": None,
             "forgetting": None}
    return {"accuracy_matrix": matrix, "metrics": {**m, "control_before": None, "control_after": None}}


SCALES = (25.0, 10.0, 50.0)  # first = the value fixed in advance, kept on ties


def select_loss(cfg: CVMConfig, tasks, bank: ConceptBank, cache) -> tuple[str, float, bool, dict]:
    """Grid on task 1 alone, scored on task 1's validation split only: the loss (contrastive with each
    scale s in SCALES, or cosine) when cfg.loss is "auto", the scale s when cfg.concept_scale is 0, and
    centred or raw concept targets when cfg.center is None. The cosine loss does not depend on s for
    training; it is given the middle scale (LwF's distillation reads it). Ties go to the earlier entry."""
    task = tasks[0]
    losses = ("contrastive", "cosine") if cfg.loss == "auto" else (cfg.loss,)
    scales = SCALES if not cfg.concept_scale else (cfg.concept_scale,)
    centers = (True, False) if cfg.center is None else (bool(cfg.center),)
    from genba.methods.select import grid_search

    grid = [{"loss": loss, "scale": s, "center": c} for c in centers for loss in losses
            for s in (scales if loss == "contrastive" else scales[:1])]
    key = lambda p: f"{p['loss']}@{p['scale']:g}{'+centred' if p['center'] else ''}"  # noqa: E731

    def score(point: dict) -> float:
        with torch.no_grad():
            objective = make_objective(_with(cfg, point["scale"], point["center"]), bank, point["loss"])
        x = prepare_inputs(objective, task.train_x, cache, f"{task.name}:train")
        vx = prepare_inputs(objective, task.val_x, cache, f"{task.name}:val")
        objective.set_known(max(task.trained_ids) + 1)
        objective.set_validation(vx, task.val_y)
        fit(objective, TensorData(x=x, y=task.train_y), cfg.train, progress=False, desc=f"select:{point['loss']}")
        return objective.validate()

    chosen, table = grid_search(grid, score)  # task 1's validation only; ties: the first in grid order
    scores = {key(row): row["val_top1"] for row in table}
    best = key(chosen)
    loss, rest = best.split("@")
    return loss, float(rest.split("+")[0]), rest.endswith("+centred"), \
        {"chosen": best, "val_top1": scores, "task": task.name, "n_val": len(task.val_y)}


def _with(cfg: CVMConfig, scale: float, center: bool) -> CVMConfig:
    c = copy.copy(cfg)
    c.concept_scale, c.center = scale, center
    return c
