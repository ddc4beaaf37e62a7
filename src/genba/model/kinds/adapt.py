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
from genba.model.base import MODEL_KINDS, Model, ModelKind, prefixed

PREFIX = "adapt:"


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


def _state_spec():
    from genba.metaschema import Dict, Int, List, Nullable, Str

    return Dict({"space": Str(choices=("joint", "visual")), "shots": Nullable(Int(min=0, max=10**7)),
                 "seed": Int(min=0, max=2**63 - 1), "val_per_class": Int(min=0, max=10**7),
                 "num_classes": Int(min=1, max=1_000_000), "templates": List(Str(max_len=500), min_len=1, max_len=1000)})


def check_adapt(method_cls, meta: dict, tensors: dict) -> str | None:
    """The adapt model's description against its method and tensors."""
    import dataclasses

    state, classes = meta["state"], meta["classes"]
    if state["num_classes"] != len(classes):
        return f"meta.state.num_classes is {state['num_classes']} but the model lists {len(classes)} classes"
    if any(t.count("{}") != 1 for t in state["templates"]):
        return "meta.state.templates: every template needs exactly one '{}'"
    hp = meta["hyperparameters"]
    fields = {f.name for f in dataclasses.fields(method_cls.config_cls)}
    if not isinstance(hp, dict) or set(hp) != fields:
        got = sorted(hp) if isinstance(hp, dict) else type(hp).__name__
        return f"meta.hyperparameters has {got}, the method {meta['method']!r} takes {sorted(fields)}"
    if meta["method"] != method_cls.name:
        return f"meta.method {meta['method']!r} is not this kind's method {method_cls.name!r}"
    if state["space"] == "visual" and "support/joint" in tensors and "support/cache" not in tensors:
        return "a visual-space model needs its support/cache tensor"
    if "support/labels" in tensors:
        labels = tensors["support/labels"]
        if labels.dim() != 1 or labels.numel() != tensors.get("support/joint", labels).shape[0] or \
                (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
            return "tensor support/labels does not match the support rows or the classes"
    return None


def _make_kind(method_name: str, method_cls) -> type:
    caps = {"predict", "test_time_writes"} if method_cls.test_time else {"predict", "export"}
    state_spec_value = _state_spec()

    class AdaptKind(ModelKind):
        capabilities = frozenset(caps)
        summary = f"adapt method {method_name} on a frozen encoder's features"
        method = method_name
        state_spec = state_spec_value

        @classmethod
        def check(cls, meta, tensors):
            return check_adapt(method_cls, meta, tensors)

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

    AdaptKind.__name__ = f"AdaptKind_{method_name.replace('-', '_')}"
    return AdaptKind


def _register_all() -> None:
    from genba.methods import get_method, method_names

    for name in method_names():
        MODEL_KINDS.register(kind_name(name), summary=f"adapt method {name}")(_make_kind(name, get_method(name)))


_register_all()
