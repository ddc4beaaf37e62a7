"""Model kinds of the adapt methods: one kind per genba.methods method, named `adapt:<method>`.

State: the text classifier (C, Dt), the support features (joint, and cache in the visual space
with the centre they were centred on), their labels, the method's configuration and its learned
tensors (`Method.state_dict`). The method is rebuilt with `fit(..., learned=...)`: nothing is
trained again. Predictions encode each image with the same encoder (its provenance is checked)
and stream the features through the method; test-time methods adapt over one call's images.
"""

from __future__ import annotations


import torch

from genba.errors import GenbaError
from genba.metaschema import Dict, Float, Int, List, Nullable, OneOf, Str, dataclass_spec
from genba.model.base import MODEL_KINDS, Model, ModelKind, prefixed
from genba.model.io import COUNT, IDS, PERCENT

PREFIX = "adapt:"
CHOICES = ("given (--set)", "validation grid", "default")  # how_chosen; a model from a served memory:
SERVED = "set on the served memory"                         # genba.model.memory.get_model
# the two writers: an adapt run (from_fitted) and a served memory (genba.model.memory.get_model)
RUN_SOURCE = Dict({"dataset": Str(max_len=4000), "fingerprint": Str(max_len=200), "support_ids": IDS,
                   "validation_ids": IDS})
SERVED_SOURCE = Dict({"memory": Str(max_len=200), "memory_name": Str(max_len=1000),
                      "support_source_ids": List(Str(max_len=1000), max_len=10**7)})
RUN_METRICS = Dict({"top1": PERCENT, "balanced_accuracy": PERCENT, "val_top1": PERCENT, "n_test": COUNT,
                    "n_val": Int(min=0, max=10**7), "per_class_recall": List(Nullable(PERCENT), max_len=1_000_000),
                    "evaluated_on": Str(max_len=5000)})
STATE = Dict({"space": Str(choices=("joint", "visual")), "shots": Nullable(Int(min=0, max=10**7)),
              "seed": Int(min=0, max=2**63 - 1), "val_per_class": Int(min=0, max=2**63 - 1),
              "num_classes": Int(min=1, max=1_000_000), "templates": List(Str(max_len=500), min_len=1, max_len=1000)})
TENSORS = ("text", "centre", "support/joint", "support/cache", "support/labels")


def kind_name(method: str) -> str:
    return PREFIX + method


def load_checked_encoder(encoder_meta: dict):
    """The model's encoder, refused when its provenance differs from the one the model was made with."""
    from genba.encoders import load_encoder

    encoder = load_encoder(encoder_meta["spec"])
    if encoder.provenance != encoder_meta["provenance"]:
        raise GenbaError(f"the model was made with encoder {encoder_meta['provenance']!r}, but "
                         f"'{encoder_meta['spec']}' now gives {encoder.provenance!r} (other weights?): "
                         "use the encoder it was made with, or adapt again")
    return encoder


def how_chosen(method: str, hyperparameters: dict, selected_on: str, overrides: dict) -> dict:
    """For each hyperparameter: 'given (--set)', 'validation grid' or 'default'."""
    from genba.methods import get_method

    grid = get_method(method).selection_grid if selected_on == "val" else {}
    out = {}
    for key in hyperparameters:
        given = key in overrides or (key == "train" and any(k.startswith("train.") for k in overrides))
        out[key] = "given (--set)" if given else ("validation grid" if key in grid else "default")
    return out


def from_fitted(fitted, spec, *, dataset, encoder, encoder_spec: str, metrics: dict) -> Model:
    """The model of an adapt run (genba.adapt.fit_adapt + its evaluation)."""
    method = fitted.method
    args = fitted.fit_args
    tensors: dict[str, torch.Tensor] = {}
    if args.get("text_classifier") is not None:
        tensors["text"] = args["text_classifier"]
    if "support" in args:
        tensors["support/joint"] = args["support"].joint
        if args["support"].cache is not None:
            tensors["support/cache"] = args["support"].cache
        tensors["support/labels"] = torch.as_tensor(args["labels"]).long()
    if spec.space == "visual" and fitted.centre is not None:
        tensors["centre"] = fitted.centre
    tensors.update({f"learned/{k}": v for k, v in method.state_dict().items()})
    hp = method.hyperparameters()
    return Model.create(
        kind_name(spec.method), classes=list(dataset.classnames), tensors=tensors,
        encoder={"spec": encoder_spec, "provenance": encoder.provenance}, method=spec.method, hyperparameters=hp,
        chosen=how_chosen(spec.method, hp, fitted.selected_on, spec.overrides),
        data={"sources": [{"dataset": dataset.name, "fingerprint": dataset.fingerprint,
                           "support_ids": fitted.support_ids, "validation_ids": fitted.val_ids}]},
        metrics=metrics,
        state={"space": spec.space, "shots": spec.shots, "seed": spec.seed, "val_per_class": spec.val_per_class,
               "num_classes": len(dataset.classnames), "templates": list(dataset.templates)})


def rebuild_method(model: Model):
    """The fitted genba.methods Method of an adapt model (learned tensors restored, not retrained)."""
    from genba.methods import Feats, get_method, make_config

    t = model.tensors
    config = make_config(model.meta["method"], {k: v for k, v in model.meta["hyperparameters"].items()})
    method = get_method(model.meta["method"])(config)
    fit_args: dict = {"num_classes": int(model.meta["state"]["num_classes"])}
    if "support/joint" in t:
        fit_args.update(support=Feats(t["support/joint"], t.get("support/cache")), labels=t["support/labels"])
    method.fit(t.get("text"), **fit_args, learned=prefixed(t, "learned"))
    return method


class AdaptPredictor:
    def __init__(self, model: Model, encoder=None) -> None:
        self.classes = model.classes
        self.encoder = encoder or load_checked_encoder(model.meta["encoder"])
        self.method = rebuild_method(model)
        self.space = model.meta["state"]["space"]
        self.centre = model.tensors.get("centre")

    def features(self, images):
        from genba.encoders.base import l2_normalize
        from genba.features import encode_images
        from genba.methods import Feats

        joint, visual = encode_images(self.encoder, images)
        if self.space == "joint":
            return Feats(joint)
        return Feats(joint, l2_normalize(visual - self.centre))

    def probabilities(self, images) -> torch.Tensor:
        return self.method.predict_stream(self.features(images))


def static_graph(predictor):
    """pixels -> probabilities: encoder, the joint / cache features, the method's static read."""
    from genba.encoders.base import l2_normalize
    from genba.model.export import ProbabilityGraph

    import copy

    encoder, space, centre = predictor.encoder, predictor.space, predictor.centre
    method = copy.copy(predictor.method)  # its half-precision memories read in float32 (the exact values, upcast):
    for name, value in vars(predictor.method).items():  # the same arithmetic as its batched CPU read
        if torch.is_tensor(value) and value.dtype in (torch.float16, torch.bfloat16):
            setattr(method, name, value.float())

    def forward(pixels):
        joint, visual = encoder.encode_image_with_visual(pixels)
        qj = l2_normalize(joint.float())[:, None]
        qc = qj if space == "joint" else l2_normalize(visual.float() - centre)[:, None]
        return method._predict(qj, qc, torch.arange(pixels.shape[0]))

    return ProbabilityGraph(forward, [encoder])


def meta_schema(method_cls) -> dict:
    """The metadata an adapt:<method> model is rebuilt from: the method's config dataclass, field by
    field, ranged as genba.methods documents it (a missing hyperparameter is refused, not defaulted)."""
    from genba.methods.config import RANGES
    from genba.train.config import RANGES as TRAIN_RANGES, TrainConfig

    config = dataclass_spec(method_cls.config_cls, RANGES, {TrainConfig: dataclass_spec(TrainConfig, TRAIN_RANGES)})
    return {"hyperparameters": config, "chosen": Dict(values=Str(choices=CHOICES + (SERVED,)), max_len=1000),
            "data": Dict({"sources": List(OneOf((RUN_SOURCE, SERVED_SOURCE)), min_len=1, max_len=1)}),
            "metrics": OneOf((RUN_METRICS, Dict({}))), "state": STATE}


def _increasing(ids: list[int]) -> bool:
    return all(a < b for a, b in zip(ids, ids[1:]))


def meta_problem(method_name: str, meta: dict, tensors: dict) -> str | None:
    """Counts and shapes that must agree: classes, text rows, support rows and their ids and labels,
    shots, validation ids and metrics; what genba.data's splits guarantee (sorted, disjoint ids)."""
    from genba.methods import make_config
    from genba.store.spec import check_template

    C, state, hp, t = len(meta["classes"]), meta["state"], meta["hyperparameters"], tensors
    if meta["method"] != method_name:
        return f"meta.method: {meta['method'][:40]!r} is not this kind's method {method_name!r}"
    try:
        make_config(method_name, hp)
        for template in state["templates"]:
            check_template(template)
    except GenbaError as error:
        return f"meta: {str(error).splitlines()[0][:200]}"
    odd = sorted(k for k in t if k not in TENSORS and not k.startswith("learned/"))
    if odd:
        return f"unexpected tensor {odd[0][:60]!r}"
    if state["num_classes"] != C:
        return f"meta.state.num_classes: {state['num_classes']} for {C} classes"
    if "text" in t and (t["text"].dim() != 2 or t["text"].shape[0] != C):
        return f"tensor 'text' has shape {tuple(t['text'].shape)}, expected ({C}, dim)"
    rows = 0
    if "support/joint" in t:
        labels, rows = t.get("support/labels"), t["support/joint"].shape[0]
        if labels is None or labels.dtype != torch.int64 or tuple(labels.shape) != (rows,) or (
                rows and not 0 <= int(labels.min()) <= int(labels.max()) < C):
            return f"tensor 'support/labels' is not {rows} class indices below {C}"
    if ("centre" in t or "support/cache" in t) and state["space"] != "visual":
        return "meta.state.space: a visual-space cache (centre, support/cache) in a model of the joint space"
    source, metrics = meta["data"]["sources"][0], meta["metrics"]
    ids = source.get("support_ids", source.get("support_source_ids"))
    if len(ids) != rows:
        return f"meta.data.sources[0]: {len(ids)} support ids for {rows} support rows"
    if "support_source_ids" in source:  # from a served memory: no run, no metrics
        return None if metrics == {} and all(v == SERVED for v in meta["chosen"].values()) else \
            "meta: a model from a served memory carries no run metrics or choices"
    val = source["validation_ids"]
    if state["shots"] is None or state["shots"] * C != rows:
        return f"meta.state.shots: {state['shots']} per class for {C} classes is not the {rows} support rows"
    if not (_increasing(ids) and _increasing(val)) or set(ids) & set(val):
        return "meta.data.sources[0]: support and validation ids must be sorted and disjoint (as genba.data splits them)"
    if set(meta["chosen"]) != set(hp) or SERVED in meta["chosen"].values():
        return "meta.chosen: not one 'how chosen' per hyperparameter"
    if metrics == {} or len(metrics["per_class_recall"]) != C or metrics["n_val"] != len(val):
        return f"meta.metrics: not the run's metrics of {C} classes and {len(val)} validation images"
    return None


def _make_kind(method_name: str, method_cls) -> type:
    caps = {"predict", "test_time_writes"} if method_cls.test_time else {"predict", "export"}

    class AdaptKind(ModelKind):
        capabilities = frozenset(caps)
        summary = f"adapt method {method_name} on a frozen encoder's features"
        method = method_name
        @classmethod
        def meta_problem(cls, meta, tensors):
            return meta_problem(method_name, meta, tensors)

        @classmethod
        def predictor(cls, model, *, cache=None, progress=False, encoder=None):
            return AdaptPredictor(model, encoder)

        @classmethod
        def onnx_graph(cls, model, predictor):
            return static_graph(predictor), predictor.encoder.preprocess

        @classmethod
        def describe(cls, model):
            state, t = model.meta["state"], model.tensors
            n = int(t["support/labels"].numel()) if "support/labels" in t else 0
            return [f"support: {n} images ({state['shots']} per class), cache space {state['space']}, seed {state['seed']}",
                    f"learned tensors: {', '.join(sorted(prefixed(t, 'learned'))) or 'none'}"]

    AdaptKind.meta_schema = meta_schema(method_cls)
    AdaptKind.__name__ = f"AdaptKind_{method_name.replace('-', '_')}"
    return AdaptKind


def _register_all() -> None:
    from genba.methods import get_method, method_names

    for name in method_names():
        MODEL_KINDS.register(kind_name(name), summary=f"adapt method {name}")(_make_kind(name, get_method(name)))


_register_all()
