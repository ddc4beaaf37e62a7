"""Keep learning: a continual model learns one more task (new classes from a folder) with its
continual strategy (genba.continual's, run as genba.continual.protocol runs a task) and becomes
the next version; the earlier file is never touched.

    report = learn_task("site.genba", "folder:new_classes", "site-v2.genba", cache=cache)

An adapt:tip-adapter (or zeroshot) model in the visual space is first read as the continual
learner it equals (genba.model.kinds.continual.from_adapt: zero adapter + the `memory` strategy's
cache holding its support), so it grows with that strategy.

1. The model's earlier tasks are rebuilt from its data sources (features from the cache), with
   the seed and validation rule it was trained with; the new task is appended (its classes take
   the next global indices, its class texts join the learner's).
2. Strategies whose state lives outside the learner (replay's buffer, EWC's Fisher, LwF's and
   ZSCL's teacher) get it back as a resumed run does: begin_task / end_task replayed on every
   earlier task with the current learner (EWC's Fisher is thus taken at the current weights).
   Strategies whose state is in the learner (task-adapters, moe-adapters: adapters and router;
   memory: the cache) need nothing replayed.
3. The new task trains through genba.train.fit with the strategy's data and callbacks; accuracy on
   every task (the model's setting) is measured before and after: the continual metrics on the
   user's own tasks.
"""

from __future__ import annotations

import re
from pathlib import Path

from genba.errors import GenbaError
from genba.model.base import MODEL_KINDS, load_model, save_model


def absolute_item(item: str) -> str:
    """A stream item with its folder: / csv: path made absolute (so a model can find its data again)."""
    m = re.fullmatch(r"(folder|csv):(.+?)(\[.*\]|#\d+)?", item)
    if not m:
        return item
    return f"{m.group(1)}:{Path(m.group(2)).expanduser().absolute()}{m.group(3) or ''}"


class StateOnly:
    """A strategy's hooks replayed on tasks the model already learned, nothing trained and nothing
    installed: it rebuilds the state the strategy keeps outside the learner (replay's buffer, EWC's
    Fisher, LwF's and ZSCL's teacher), as a resumed run does."""

    trains = False

    def __init__(self, strategy) -> None:
        self.strategy = strategy

    def begin_task(self, objective, task_index: int) -> None:
        self.strategy.begin_task(objective, task_index)  # modules it returns belong to the learner already

    def task_data(self, data, task_index: int):
        return data

    def callbacks(self, objective) -> list:
        return []

    def end_task(self, objective, data, task_index: int) -> None:
        self.strategy.end_task(objective, data, task_index)


def learn_task(model_path, task: str, out, *, cache=None, progress: bool = False) -> dict:
    """Train model `model_path` (kind with `learn_task`) on one more task; write version n+1 to `out`."""
    from genba.continual.loop import run_tasks
    from genba.continual.protocol import evaluate, task_steps
    from genba.continual.strategies import make_strategy
    from genba.continual.stream import build_stream, parse_stream
    from genba.data import load_dataset
    from genba.model import kinds  # noqa: F401
    from genba.model.kinds.adapt import load_checked_encoder
    from genba.model.kinds.continual import from_run, rebuild_learner
    from genba.train import TrainConfig

    model = load_model(model_path)
    source_version = model.meta.get("version", 1)
    if model.kind.startswith("adapt:"):  # a zero-shot / Tip-Adapter model is the continual memory learner
        from genba.model.kinds.continual import from_adapt

        model, model.path = from_adapt(model), model.path
    MODEL_KINDS.get(model.kind).require("learn_task")
    out = Path(out)
    if out.exists() and out.resolve() == Path(model.path).resolve():
        raise GenbaError(f"--out {out} is the model being extended: write the next version to a new file "
                         "(the earlier version stays as it is)")
    state = model.meta["state"]
    setting = model.meta["metrics"].get("setting", "mtil")
    items = [absolute_item(i) for i in state["stream"]] + [absolute_item(t) for t in task.split(",")]
    datasets: dict = {}

    def num_classes(name: str) -> int:
        datasets.setdefault(name, load_dataset(name))
        return datasets[name].num_classes

    specs = parse_stream(",".join(items), num_classes)
    encoder = load_checked_encoder(model.meta["encoder"])
    caps = state.get("caps") or [None, None]
    stream = build_stream(specs, encoder, cache, seed=state["seed"], val_per_class=state["val_per_class"],
                          max_train_per_class=caps[0], max_test_per_class=caps[1], progress=progress, datasets=datasets)
    old = len(state["tasks"])
    if len(stream.tasks) <= old:
        raise GenbaError("--task adds no task to the model")
    learner = rebuild_learner(model)
    learner.text = stream.text.float()  # earlier classes keep their rows; the new ones follow
    if learner.cache is not None:
        learner.cache.num_classes = stream.num_classes
    hp = model.meta["hyperparameters"]
    method_hp = {k: v for k, v in hp["method"].items() if k not in ("path", "seed")}  # buffer in memory; the seed is the stream's
    strategy = make_strategy(model.meta["method"], seed=state["seed"], learner=learner, **method_hp)
    train = TrainConfig().replace(**hp["train"])
    before = evaluate(learner, stream, setting)
    steps = task_steps(learner, stream)
    if not hasattr(learner.delta, "router") and learner.cache is None:  # strategy state outside the learner
        run_tasks(learner, steps[:old], StateOnly(strategy), train)
    records, _ = run_tasks(learner, steps[old:], strategy, train, progress=progress, desc=model.meta["method"], first=old)
    fits = [{"task": r.name, "epochs": r.fit.epochs, "best_epoch": r.fit.best_epoch} for r in records if r.fit is not None]
    learner.eval()
    after = evaluate(learner, stream, setting)
    matrix = model.meta["metrics"].get("accuracy_matrix", [])
    run = {"method": model.meta["method"], "selected_on": f"kept from version {source_version}",
           "hyperparameters": {**hp, "method": method_hp},
           "settings": {setting: {"accuracy_matrix": [r + [None] * (len(after) - len(r)) for r in matrix] + [after],
                                  "metrics": {"before": before, "after": after,
                                              "earlier_tasks_change": [a - b for a, b in zip(after[:old], before[:old])]}}}}
    parent = {"path": str(model.path), "version": source_version}
    nxt = from_run(run, learner, stream, encoder=encoder, encoder_spec=model.meta["encoder"]["spec"],
                   stream_items=items, setting=setting, seed=state["seed"], val_per_class=state["val_per_class"],
                   caps=tuple(caps), parent=parent)
    path = save_model(nxt, out)
    return {"path": str(path), "version": nxt.meta["version"], "setting": setting, "tasks": [t.name for t in stream.tasks],
            "old_tasks": old, "before": before, "after": after, "fits": fits}
