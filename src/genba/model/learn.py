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


def learn_task(model_path, task: str, out, *, cache=None, progress: bool = False) -> dict:
    """Train model `model_path` (kind with `learn_task`) on one more task; write version n+1 to `out`."""
    from genba.continual.protocol import _task_rows, evaluate
    from genba.continual.strategies import make_strategy
    from genba.continual.stream import build_stream, parse_stream
    from genba.data import load_dataset
    from genba.model import kinds  # noqa: F401
    from genba.model.kinds.adapt import load_checked_encoder
    from genba.model.kinds.continual import from_run, rebuild_learner
    from genba.train import TrainConfig, fit

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
    method_hp = {k: v for k, v in hp["method"].items() if k != "path"}  # the replay buffer lives in memory here
    strategy = make_strategy(model.meta["method"], **method_hp)
    train = TrainConfig().replace(**hp["train"])
    before = evaluate(learner, stream, setting)
    if not hasattr(learner.delta, "router") and learner.cache is None:  # strategy state outside the learner
        for t in range(old):
            learner.set_known(stream.tasks[t].offset + stream.tasks[t].num_classes)
            strategy.begin_task(learner, t)
            strategy.end_task(learner, _task_rows(stream.tasks[t], t), t)
    fits = []
    for t in range(old, len(stream.tasks)):
        new = stream.tasks[t]
        learner.set_known(new.offset + new.num_classes)
        learner.val_batch = new.batch(new.val, t)
        strategy.begin_task(learner, t)
        data = _task_rows(new, t)
        if strategy.trains:
            result = fit(learner, strategy.task_data(data, t), train, callbacks=strategy.callbacks(learner),
                         progress=progress, desc=f"{model.meta['method']} {new.name}")
            fits.append({"task": new.name, "epochs": result.epochs, "best_epoch": result.best_epoch})
        strategy.end_task(learner, data, t)
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
