"""Model kind `continual`: the continual learner of genba.continual on a frozen encoder's features.

    logit_k = 100 cos(normalize(z + delta(normalize(v - c))), t_k)    (genba.continual.learner)

State: the learner's state dict (class texts t of every learned class, centre c, the adapter(s)
delta, the task router and the Tip cache when the strategy has them). The adapter structure is
rebuilt from the strategy named in the model (task-adapters: one adapter per task; moe-adapters:
experts + one gate per task; memory: a TipCache), then every tensor is loaded with its saved
shape. Predictions run without a task id (the X-TAIL setting: every learned class competes; the
router, when present, sends an image to the task it resembles or the zero-shot path).
"""

from __future__ import annotations

import torch

from genba.errors import GenbaError
from genba.metaschema import Bool, Dict, Float, Int, List, Nullable, OneOf, Str, dataclass_spec
from genba.model.base import MODEL_KINDS, Model, ModelKind, prefixed
from genba.model.io import COUNT, IDS, PERCENT
from genba.model.kinds.adapt import load_checked_encoder

WIDTH = Int(min=0, max=1 << 20)  # an adapter's width (meta_problem: a dimension of the file's tensors)
SIZES = ("hidden", "experts", "top_k")  # what sizes the rebuilt adapters before any tensor is loaded
# a strategy's config (genba.continual.strategies: dataclasses checked by their own __post_init__,
# run by meta_problem); numbers bounded here, sizes against the tensors in meta_problem
STRATEGY_VALUE = OneOf((Bool(), Int(min=0, max=10**7), Float(min=0.0, max=1e6), Str(max_len=4096)))
STRATEGY_CONFIG = Dict(values=STRATEGY_VALUE, max_len=100)
ITEM = Str(max_len=4096)  # a stream item (folder:<dir>, a dataset name)
TASK = Dict({"name": ITEM, "offset": Int(min=0, max=1_000_000), "classes": List(Str(min_len=1, max_len=1000), min_len=1,
                                                                                  max_len=1_000_000),
             "train_rows": Int(min=0, max=10**7), "val_rows": Int(min=0, max=10**7), "test_rows": COUNT})
SCORE = Float(min=-100.0, max=100.0)  # a difference of two accuracies (%)
RUN_METRICS = Dict({"transfer": PERCENT, "avg": PERCENT, "last": PERCENT, "bwt": SCORE, "fwt": SCORE, "forgetting": SCORE,
                    "control_before": Nullable(PERCENT), "control_after": Nullable(PERCENT), "ece": PERCENT,
                    "ms_per_image": Float(min=0.0, max=1e9)})  # genba.continual.protocol (its summary of the matrix)
ROW = List(Nullable(PERCENT), max_len=10_000)
LEARN_METRICS = Dict({"before": ROW, "after": ROW, "earlier_tasks_change": List(SCORE, max_len=10_000)})  # learn_task


def _meta_schema() -> dict:
    from genba.train.config import RANGES, TrainConfig

    return {"hyperparameters": Dict({"method": STRATEGY_CONFIG, "train": dataclass_spec(TrainConfig, RANGES), "hidden": WIDTH}),
            "chosen": Dict({"method": Str(max_len=10_000), "train": Str(max_len=10_000)}),
            "data": Dict({"sources": List(Dict({"task": ITEM, "train_ids": IDS, "validation_ids": IDS}), min_len=1,
                                          max_len=10_000)}),
            "metrics": Dict({"setting": Str(choices=("mtil", "xtail")), "accuracy_matrix": List(ROW, min_len=2, max_len=10_001),
                             "metrics": OneOf((RUN_METRICS, LEARN_METRICS))}),
            "state": Dict({"stream": List(ITEM, min_len=1, max_len=10_000), "tasks": List(TASK, min_len=1, max_len=10_000),
                           "seed": Int(min=0, max=2**63 - 1), "val_per_class": Int(min=0, max=2**63 - 1),
                           "caps": List(Nullable(Int(min=1, max=10**9)), min_len=2, max_len=2), "hidden": WIDTH,
                           "strategy_config": STRATEGY_CONFIG})}


def meta_problem(meta: dict, tensors: dict) -> str | None:
    """The strategy's own config checks; tasks, classes, sources and text rows that must agree."""
    import dataclasses

    from genba.continual.strategies import STRATEGIES_REGISTRY, make_config

    state, hp = meta["state"], meta["hyperparameters"]
    cfg = state["strategy_config"]
    try:
        fields = {f.name for f in dataclasses.fields(STRATEGIES_REGISTRY.get(meta["method"]).config_cls)}
        make_config(meta["method"], cfg)
    except GenbaError as error:
        return f"meta.state.strategy_config: {str(error).splitlines()[0][:200]}"
    if set(cfg) != fields - ({"path"} if "path" not in cfg else set()) or hp["method"] != cfg:
        return "meta.state.strategy_config: not exactly the strategy's fields, or not its hyperparameters"
    widest = max((d for t in tensors.values() for d in t.shape), default=0)
    bound = {"hidden": widest, "experts": len(tensors), "top_k": len(tensors)}  # a width is a tensor dimension
    if state["hidden"] > widest or any(v > bound[k] for k, v in cfg.items() if k in SIZES):
        return f"meta.state: an adapter width or expert count beyond what the file's tensors hold ({widest})"
    tasks, C = state["tasks"], len(meta["classes"])
    if [c for t in tasks for c in t["classes"]] != meta["classes"] or [t["offset"] for t in tasks] != \
            [sum(len(t["classes"]) for t in tasks[:i]) for i in range(len(tasks))]:
        return "meta.state.tasks: their classes and offsets are not the model's classes"
    if not len(tasks) == len(state["stream"]) == len(meta["data"]["sources"]) or state["hidden"] != hp["hidden"]:
        return f"meta.state: {len(tasks)} tasks but {len(state['stream'])} stream items and " \
               f"{len(meta['data']['sources'])} data sources (or hidden differs from the hyperparameters)"
    text = tensors.get("learner/text")
    if text is None or text.dim() != 2 or text.shape[0] != C:
        return f"tensor 'learner/text' is not ({C}, dim): one text row per class"
    for i, (task, source) in enumerate(zip(tasks, meta["data"]["sources"])):
        train, val = source["train_ids"], source["validation_ids"]
        if (len(train), len(val)) != (task["train_rows"], task["val_rows"]) or not (_increasing(train) and _increasing(val)) \
                or set(train) & set(val):
            return f"meta.data.sources[{i}]: not {task['train_rows']} training and {task['val_rows']} validation ids, " \
                   "sorted and disjoint (as genba.continual.stream splits them)"
    return _metrics_problem(meta["metrics"], len(tasks), learned=meta["parent"] is not None)


def _increasing(ids: list[int]) -> bool:
    return all(a < b for a, b in zip(ids, ids[1:]))


def _metrics_problem(metrics: dict, tasks: int, learned: bool) -> str | None:
    """A run's matrix has one row before training and one per task; a model that learned more tasks
    (genba learn) appends one row per call. Its summary is recomputed from the matrix."""
    import math

    from genba.continual.metrics import summary

    A, m = metrics["accuracy_matrix"], metrics["metrics"]
    if any(len(row) != tasks for row in A) or not (len(A) <= tasks + 1 if learned else len(A) == tasks + 1):
        return f"meta.metrics.accuracy_matrix: not one row of {tasks} accuracies before and after each task"
    if learned != ("after" in m):
        return "meta.metrics.metrics: not the summary its writer (a run, or genba learn) records"
    close = lambda a, b: a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6)  # noqa: E731
    if learned:
        change = [a - b if a is not None and b is not None else None for a, b in zip(m["after"], m["before"])]
        ok = m["after"] == A[-1] and len(m["before"]) == tasks and all(
            close(c, d) for c, d in zip(m["earlier_tasks_change"], change)) and len(m["earlier_tasks_change"]) < tasks
    else:
        ok = not any(v is None for row in A for v in row) and all(close(m[k], v) for k, v in summary(A).items())
    return None if ok else "meta.metrics.metrics: not the summary of its accuracy matrix"


def from_run(result: dict, learner, stream, *, encoder, encoder_spec: str, stream_items: list[str], setting: str,
             seed: int, val_per_class: int, caps: tuple, parent: dict | None = None) -> Model:
    """The model of a `genba continual` run (its final learner)."""
    if type(learner).__name__ != "Learner":
        raise GenbaError("only the feature learner can be written as a model (not --trunk or --lora): "
                         "drop those options to write --out's model")
    from genba.model.learn import absolute_item

    stream_items = [absolute_item(i) for i in stream_items]
    block = result["settings"][setting]
    hp = result["hyperparameters"]
    classes = [c for t in stream.tasks for c in t.classnames]
    tasks = [{"name": t.name, "offset": t.offset, "classes": t.classnames, "train_rows": len(t.train),
              "val_rows": len(t.val), "test_rows": len(t.test)} for t in stream.tasks]
    chosen = {"method": "given (--set) or the strategy's defaults", "train": result["selected_on"]}
    return Model.create(
        "continual", classes=classes, tensors={f"learner/{k}": v for k, v in learner.state_dict().items()},
        encoder={"spec": encoder_spec, "provenance": encoder.provenance}, method=result["method"],
        hyperparameters=hp, chosen=chosen,
        data={"sources": [{"task": item, "train_ids": [int(i) for i in t.train.indices],
                           "validation_ids": [int(i) for i in t.val.indices]} for item, t in zip(stream_items, stream.tasks)]},
        metrics={"setting": setting, "accuracy_matrix": block["accuracy_matrix"], "metrics": block["metrics"]},
        state={"stream": stream_items, "tasks": tasks, "seed": seed, "val_per_class": val_per_class,
               "caps": list(caps), "hidden": hp.get("hidden", 0), "strategy_config": hp["method"]},
        parent=parent)


def _load_resizing(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """load_state_dict(strict=True) after giving every buffer the saved shape (routers and caches grow)."""
    for key, value in state.items():
        path, _, name = key.rpartition(".")
        owner = module.get_submodule(path) if path else module
        if name in owner._buffers and owner._buffers[name] is not None and owner._buffers[name].shape != value.shape:
            owner._buffers[name] = value.clone()
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GenbaError(f"the continual model does not match its strategy (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): re-create it with this genba")


def rebuild_learner(model: Model):
    """The trained genba.continual Learner of a continual model."""
    from genba.continual.learner import Learner, MixtureAdapters, TaskAdapters, TipCache

    state = prefixed(model.tensors, "learner")
    meta = model.meta["state"]
    cfg = meta["strategy_config"]
    learner = Learner(state["text"], state["centre"], hidden=int(meta.get("hidden", 0)))
    n_tasks = len(meta["tasks"])
    if model.meta["method"] == "task-adapters":
        learner.delta = TaskAdapters(learner.dim_visual, learner.dim, int(cfg.get("hidden", 0)), cfg.get("quantile", 0.05))
        for _ in range(n_tasks):
            learner.delta.add_task()
    elif model.meta["method"] == "moe-adapters":
        learner.delta = MixtureAdapters(learner.dim_visual, learner.dim, int(cfg["experts"]), int(cfg["hidden"]),
                                        int(cfg["top_k"]), cfg.get("quantile", 0.05))
        for _ in range(n_tasks):
            learner.delta.add_task()
    if "cache.keys" in state:
        learner.cache = TipCache(state["text"].shape[0], float(cfg["alpha"]), float(cfg["beta"]))
    _load_resizing(learner, state)
    learner.set_known(state["text"].shape[0])
    return learner.eval()


class ContinualPredictor:
    def __init__(self, model: Model, encoder=None) -> None:
        self.classes = model.classes
        self.encoder = encoder or load_checked_encoder(model.meta["encoder"])
        self.learner = rebuild_learner(model)

    def batch(self, images) -> dict:
        from genba.features import encode_images

        joint, visual = encode_images(self.encoder, images)
        return {"x": visual, "z": joint, "task": torch.full((len(joint),), -1, dtype=torch.long)}

    def logits(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.learner.scores(batch, torch.arange(self.learner.known))

    def probabilities(self, images) -> torch.Tensor:
        return torch.softmax(self.logits(self.batch(images)), dim=1)


@MODEL_KINDS.register("continual", summary="continual learner: class-text adapter(s) on a frozen encoder")
class ContinualKind(ModelKind):
    capabilities = frozenset({"predict", "learn_task", "export"})
    meta_schema = _meta_schema()

    @classmethod
    def meta_problem(cls, meta, tensors):
        return meta_problem(meta, tensors)

    @classmethod
    def onnx_graph(cls, model, predictor):
        from genba.model.export import ProbabilityGraph

        learner, encoder = predictor.learner, predictor.encoder
        if hasattr(learner.delta, "router"):
            raise GenbaError(f"a {model.meta['method']} learner routes each image to a task adapter (a per-image "
                             "branch), which is not a static graph; export a learner with one shared adapter")

        def forward(pixels):
            joint, visual = encoder.encode_image_with_visual(pixels)
            return torch.softmax(predictor.logits({"x": visual.float(), "z": joint.float(), "task": None}), dim=1)

        return ProbabilityGraph(forward, [learner] + [encoder]), \
            encoder.preprocess

    @classmethod
    def predictor(cls, model, *, cache=None, progress=False, encoder=None):
        return ContinualPredictor(model, encoder)

    @classmethod
    def describe(cls, model):
        tasks = model.meta["state"]["tasks"]
        return [f"tasks: {', '.join(t['name'] for t in tasks)} ({sum(len(t['classes']) for t in tasks)} classes)",
                f"accuracy matrix ({model.meta['metrics']['setting']}): {model.meta['metrics']['accuracy_matrix'][-1]}"]


CONVERTIBLE = ("zeroshot", "tip-adapter")


def from_adapt(model: Model) -> Model:
    """A zero-shot or Tip-Adapter model (visual cache space) as the continual learner it equals:
    zero adapter (the zero-shot path) + the continual `memory` strategy's TipCache holding the
    support rows: 100 cos(z, t) + alpha exp(-beta (1 - v K^T)) L, the Tip-Adapter logits when the
    method's scale is 100. So that model can learn new tasks with the continual memory strategy.
    It lives in memory only: genba learn writes the next version (from_run), never this one."""
    from genba.continual.learner import Learner
    from genba.continual.protocol import DEFAULT_TRAIN

    method, t, state = model.meta["method"], model.tensors, model.meta["state"]
    hp = model.meta["hyperparameters"]
    if method not in CONVERTIBLE or state.get("space") != "visual" or "text" not in t or "centre" not in t \
            or float(hp.get("scale", 100.0)) != 100.0:
        raise GenbaError(f"an adapt:{method} model ({state.get('space')} space) cannot learn new tasks; adapt with "
                         f"--method tip-adapter (or zeroshot) in the visual space, or train with `genba continual`")
    learner = Learner(torch.nn.functional.normalize(t["text"].float(), dim=1), t["centre"].float())
    tensors = {f"learner/{k}": v for k, v in learner.state_dict().items()}
    alpha, beta = float(hp.get("alpha", 1.0)), float(hp.get("beta", 5.5))
    if "support/cache" in t:
        tensors["learner/cache.keys"] = torch.nn.functional.normalize(t["support/cache"].float(), dim=-1)
        tensors["learner/cache.labels"] = t["support/labels"].long()
    source = model.meta["data"]["sources"][0]
    cfg = {"shots": int(state.get("shots") or 16), "alpha": alpha, "beta": beta}  # the memory strategy's fields (seed: state)
    return Model.create(
        "continual", classes=model.classes, tensors=tensors, encoder=model.meta["encoder"], method="memory",
        hyperparameters={"method": cfg, "train": DEFAULT_TRAIN.to_dict(), "hidden": 0},
        chosen={"method": f"from the adapt:{method} model ({model.meta['chosen']})"},
        data={"sources": [{"task": source["dataset"], "train_ids": source.get("support_ids", []),
                           "validation_ids": source.get("validation_ids", [])}]},
        metrics={"setting": "xtail", "accuracy_matrix": [[model.meta["metrics"].get("top1")]]},
        state={"stream": [source["dataset"]], "tasks": [{"name": source["dataset"], "offset": 0, "classes": model.classes}],
               "seed": int(state.get("seed", 0)), "val_per_class": int(state.get("val_per_class", 16)),
               "caps": [None, None], "hidden": 0, "strategy_config": cfg},
        command=model.meta["command"], parent=None)
