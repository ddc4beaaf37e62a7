"""The few-shot / test-time adaptation pipeline on cached features.

    result = run_adapt(encoder, dataset, AdaptSpec(method="dmn-tf", shots=4, seed=0), cache=cache)

Protocol (nothing is chosen on test labels):
1. features of the train and test splits come from the feature cache;
2. a validation set (`val_per_class` per class) is carved from train with `seed`, and the
   K-shot support is drawn from the rest of train with the same seed;
3. hyperparameters are either the paper defaults (`select="fixed"`) or the best point of a
   grid fixed in advance (each method's `selection_grid`) scored on the validation set (`select="val"`);
4. test queries stream through the method in a seeded permutation (`seed`), recorded in the
   result, and test-time memories update as they go.
The cache space is "joint" (the VLM's space) or "visual" (the encoder's visual features,
centred on the mean of the unlabeled train split: these features are far from isotropic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from genba.cache import TensorCache
from genba.data import sample_few_shot, train_val_split
from genba.encoders.base import ImageEncoder, l2_normalize
from genba.errors import GenbaError
from genba.features import Features, encode_images, extract_features
from genba.metrics import auroc, classification_metrics, expected_calibration_error, max_softmax
from genba.methods import Feats, get_method, make_config, method_names, select_on_val
from genba.zeroshot import cached_text_classifier

SPACES = ("joint", "visual")

def selection_grid(method: str) -> dict[str, list]:
    """The validation grid of `method` (fixed in advance; it lives on the method's class)."""
    return get_method(method).selection_grid


@dataclass(frozen=True)
class AdaptSpec:
    """What to run; the CLI and the benchmark build one of these."""

    method: str
    shots: int = 16
    seed: int = 0
    space: str = "visual"
    select: str = "val"  # "val" (grid on validation) or "fixed" (paper defaults + overrides)
    val_per_class: int = 16
    views: int = 1  # test-time views per query (1 = the image only); view 0 is the original
    support_views: int = 1  # >1: the support as that many augmented views (Tip-Adapter's augment_epoch = 10)
    overrides: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in method_names():
            raise GenbaError(f"unknown method '{self.method}': choose one of {', '.join(method_names())}")
        make_config(self.method, self.overrides)  # unknown hyperparameters fail here, listing valid ones
        if self.space not in SPACES:
            raise GenbaError(f"unknown cache space '{self.space}': choose 'joint' or 'visual'")
        if self.select not in ("val", "fixed"):
            raise GenbaError(f"unknown selection '{self.select}': choose 'val' or 'fixed'")
        if self.views < 1:
            raise GenbaError(f"views must be 1 or more, got {self.views}")
        if self.support_views < 1:
            raise GenbaError(f"support views must be 1 or more, got {self.support_views}")
        if self.shots < 0:
            raise GenbaError(f"shots must be 0 or more, got {self.shots}")
        if self.shots == 0 and get_method(self.method).needs_support:
            raise GenbaError(f"method '{self.method}' needs labeled shots: use --shots 1 or more, or a zero-shot method (zeroshot, tda, dmn-zs)")


@dataclass
class PreparedData:
    """Cached features of one dataset, split for one seed."""

    classifier: torch.Tensor | None  # (C, Dt); None for a vision-only encoder (no text tower)
    train: Features
    test: Features
    centre: torch.Tensor | None  # (Dv,) mean visual feature of the train split
    encoder_ms: float | None = None  # encoder milliseconds per image, measured once on this machine (run_adapt)
    ood: Features | None = None  # test features of an out-of-distribution dataset (same encoder), for the MSP AUROC
    view_pool: np.ndarray | None = None  # train indices whose augmented views are encoded together (a superset of supports)


def prepare(encoder: ImageEncoder, dataset, *, cache: TensorCache | None, progress: bool = True) -> PreparedData:
    """Features of train and test and the text classifier (all from the cache when present)."""
    train = extract_features(encoder, dataset, "train", cache=cache, progress=progress)
    test = extract_features(encoder, dataset, "test", cache=cache, progress=progress)
    classifier = (cached_text_classifier(encoder, dataset.classnames, dataset.templates, cache)
                  if getattr(encoder, "has_text", True) else None)
    centre = None if train.visual is None else train.visual.mean(dim=0)
    return PreparedData(classifier, train, test, centre)


def _feats(features: Features, space: str, centre: torch.Tensor | None) -> Feats:
    if space == "joint":
        return Feats(features.image)
    if features.visual is None:
        raise GenbaError("this encoder has no separate visual features: use --space joint")
    return Feats(features.image, l2_normalize(features.visual - centre))


def view_feats(encoder: ImageEncoder, dataset, split: str, feats: Features, views, *, cache: TensorCache | None,
               centre: torch.Tensor | None, space: str, pool=None, progress: bool = True) -> Feats:
    """Features of `feats`' images under the augmented views `views` (0 = the image itself): joint
    (N, V, Dt), cache (N, V, Dc). The images of `pool` (dataset indices, a superset of feats'; default
    feats' own) are encoded, so that nested subsets (few-shot supports) share one cache entry."""
    from genba.data.views import view_transform

    wanted = feats.indices.numpy()
    pool = wanted if pool is None else np.asarray(pool)
    source, source_split = dataset, split
    if len(pool) < len(dataset.splits[split]):  # a subset: encode only those images
        source, source_split = dataset.with_subset_split(split, pool)
    per_view = []
    for v in views:
        f = feats if v == 0 else extract_features(encoder, source, source_split, cache=cache, transform=view_transform(v),
                                                  progress=progress)
        per_view.append(_feats(f.subset(f.rows_of(wanted)), space, centre))  # same images, same order as `feats`
    joint = torch.stack([f.joint for f in per_view], dim=1)  # (N, V, Dt)
    cache_feats = None if per_view[0].cache is None else torch.stack([f.cache for f in per_view], dim=1)  # (N, V, Dc)
    return Feats(joint, cache_feats)


def augmented_test_feats(encoder: ImageEncoder, dataset, test: Features, views: int, *, cache: TensorCache | None,
               centre: torch.Tensor | None, space: str, progress: bool = True) -> Feats:
    """Test features with `views` views per image (view 0 the image, 1.. augmented): (N, V, D) per space."""
    return view_feats(encoder, dataset, "test", test, range(views), cache=cache, centre=centre, space=space,
                      progress=progress)


def encoder_ms_per_image(encoder: ImageEncoder, dataset, images: int = 32) -> float:
    """Milliseconds per image of decoding + preprocessing + encoding `images` test images, batched
    as feature extraction does (the cache hides this cost from a run that reads cached features)."""
    indices = dataset.splits["test"][:images]
    encode_images(encoder, [dataset.image(int(indices[0]))])  # warm-up (lazy weights, allocator)
    start = time.perf_counter()
    encode_images(encoder, (dataset.image(int(i)) for i in indices))
    return 1000.0 * (time.perf_counter() - start) / max(1, len(indices))


@dataclass
class FittedAdapt:
    """A method fitted by the protocol (steps 1-3), before the test stream: what a model keeps."""

    method: object  # the fitted genba.methods.Method
    fit_args: dict  # text_classifier, num_classes, [support, labels]: what `fit` was given
    centre: torch.Tensor | None
    selected_on: str
    table: list[dict]
    n_val: int
    val_top1: float  # top-1 (%) of the fitted method on the validation split (memories reset after)
    support_ids: list[int]  # dataset indices of the support images
    val_ids: list[int]
    fit_seconds: float  # the method's fit alone (after selection)


def fit_adapt(encoder: ImageEncoder, dataset, spec: AdaptSpec, *, cache: TensorCache | None = None,
              data: PreparedData | None = None, progress: bool = True) -> FittedAdapt:
    """Steps 1-3 of the protocol: validation split, shots, hyperparameters, fit (no test label read)."""
    spec.validate()
    if not getattr(encoder, "has_text", True) and not get_method(spec.method).works_without_text():
        able = [n for n in method_names() if get_method(n).works_without_text()]
        raise GenbaError(f"method '{spec.method}' needs class text features, but encoder '{encoder.name}' is vision-only "
                         f"(no text tower); use one of: {', '.join(able)}")
    data = data or prepare(encoder, dataset, cache=cache, progress=progress)
    pool, val_idx = train_val_split(dataset, val_per_class=spec.val_per_class, seed=spec.seed)
    val = data.train.subset(data.train.rows_of(val_idx))
    fit_args: dict = {"text_classifier": data.classifier, "num_classes": len(dataset.classnames)}
    support_ids: list[int] = []
    if spec.shots > 0:
        support_ids = [int(i) for i in sample_few_shot(dataset, pool, spec.shots, spec.seed)]
        support = data.train.subset(data.train.rows_of(support_ids))
        support_feats = _feats(support, spec.space, data.centre)
        if spec.support_views > 1:  # the reference's cache: augmented views 1..V (no plain view), averaged
            support_feats = view_feats(encoder, dataset, "train", support, range(1, spec.support_views + 1), cache=cache,
                                       centre=data.centre, space=spec.space, pool=data.view_pool, progress=progress)
        fit_args.update(support=support_feats, labels=support.labels)
    val_feats = _feats(val, spec.space, data.centre)
    grid = selection_grid(spec.method)
    table: list[dict] = []
    if spec.select == "val" and grid:
        grid = {k: v for k, v in grid.items() if k not in spec.overrides}
        config, table = select_on_val(spec.method, grid, fit_args, val_feats, val.labels, base=spec.overrides)
        selected_on = "val"
    else:
        config, selected_on = make_config(spec.method, spec.overrides), "fixed"
    method = get_method(spec.method)(config)
    fit_start = time.perf_counter()
    method.fit(**fit_args, val=(val_feats, val.labels))  # only methods that select during training read it
    fit_seconds = time.perf_counter() - fit_start
    val_top1 = 0.0
    if len(val):
        val_top1 = 100.0 * float((method.predict_stream(val_feats).argmax(1) == val.labels).float().mean())
        method.reset()  # the validation stream leaves no trace in test-time memories
    return FittedAdapt(method, fit_args, data.centre, selected_on, table, len(val), val_top1,
                       support_ids, [int(i) for i in val_idx], fit_seconds)


def run_adapt(encoder: ImageEncoder, dataset, spec: AdaptSpec, *, cache: TensorCache | None = None,
              data: PreparedData | None = None, progress: bool = True, fitted: FittedAdapt | None = None) -> dict:
    """Run one method on one dataset split as the module docstring describes; returns the result dict.

    `fitted` (from fit_adapt with the same arguments) skips steps 1-3."""
    data = data or prepare(encoder, dataset, cache=cache, progress=progress)
    start = time.perf_counter()
    fitted = fitted or fit_adapt(encoder, dataset, spec, cache=cache, data=data, progress=progress)
    method, table, selected_on, fit_seconds = fitted.method, fitted.table, fitted.selected_on, fitted.fit_seconds
    order = np.random.default_rng(spec.seed).permutation(len(data.test))
    queries = _feats(data.test, spec.space, data.centre)
    if spec.views > 1:
        queries = augmented_test_feats(encoder, dataset, data.test, spec.views, cache=cache, centre=data.centre,
                                       space=spec.space, progress=progress)
    stream_start = time.perf_counter()
    probs = method.predict_stream(queries, order)
    method.reset()
    stream_seconds = time.perf_counter() - stream_start
    predictions = probs.argmax(dim=1)
    ood_auroc = None
    if data.ood is not None and spec.views == 1:  # a separate stream from the fitted state: MSP of ID vs OOD images
        method.reset()
        ood_probs = method.predict_stream(_feats(data.ood, spec.space, data.centre),
                                          np.random.default_rng(spec.seed).permutation(len(data.ood)))
        ood_auroc = auroc(max_softmax(probs), max_softmax(ood_probs))
    if data.encoder_ms is None:
        data.encoder_ms = encoder_ms_per_image(encoder, dataset)
    return {
        "dataset": dataset.name,
        "encoder": encoder.provenance,
        "method": spec.method,
        "shots": spec.shots,
        "seed": spec.seed,
        "space": spec.space,
        "n": len(data.test),
        **classification_metrics(predictions, data.test.labels, len(dataset.classnames)),
        "ece": expected_calibration_error(probs, data.test.labels),
        "ood_auroc": ood_auroc,
        "encoder_ms_per_image": data.encoder_ms,
        "method_ms_per_image": 1000.0 * stream_seconds / max(1, len(data.test)),
        "fit_seconds": fit_seconds,
        "hyperparameters": method.hyperparameters(),
        "selected_on": selected_on,
        "searched_on_val": bool(getattr(method, "searched_on_val", False)),  # a search inside fit (tip-adapter-f)
        "selection_table": table,
        "val_top1": max((row["val_top1"] for row in table), default=None),
        "val_per_class": spec.val_per_class,
        "n_val": fitted.n_val,
        "stream_order_seed": spec.seed,
        "predicted_count": torch.bincount(predictions, minlength=len(dataset.classnames)).tolist(),
        "views": spec.views,
        "support_views": spec.support_views,
        "stream_seconds": stream_seconds,
        "seconds": time.perf_counter() - start,
    }
