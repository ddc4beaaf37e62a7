"""One MoViT experiment end to end: data fraction -> inputs -> fit -> prototypes -> test -> artefact.

    result, model = run_movit(RunSpec(dataset="digits", fraction=0.03, setting="scratch"), cache=cache)

Everything is validated before training (fraction, settings), and the artefact is written only
after the run succeeded. Hyperparameters are fixed in advance (DEFAULT_TRAIN, MoViTConfig
defaults) unless `val_per_class` > 0, in which case a validation split is carved from the
training fraction (genba.data.splits.train_val_split) and the engine keeps the epoch with the best
validation accuracy. The test split is only ever used for the final score.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from genba.cache import TensorCache
from genba.data import load_dataset
from genba.data.splits import train_val_split
from genba.errors import GenbaError
from genba.movit.data import check_fraction, default_image_size, fraction_indices, is_gray, load_pixels
from genba.movit.train import accuracy, step_budget, train_config, train_movit
from genba.movit.vit import MemoryConfig, MoViTConfig

SETTINGS = ("scratch", "head")
# Defaults picked once during development on a split of TRAIN images outside the fraction (digits
# 10%, fashion-mnist 3%, animal-mnist 10%; seed 0), never on test; then fixed for every run.
DEV_PICKED = {
    "train.lr": "fixed in advance; 3e-3 picked over 1e-3 on a development split of train images outside the fraction (never test)",
    "mem.write": "fixed in advance; 'image' picked over 'all' and 'cls' on a development split of train images outside the fraction (never test)",
    "mem.count_weight": "fixed in advance; off picked over on, on a development split of train images outside the fraction (never test)",
}
MODEL_KEYS = {f for f in MoViTConfig.__dataclass_fields__ if f not in ("mem", "num_classes", "stem")}
MEM_KEYS = set(MemoryConfig.__dataclass_fields__)


@dataclass
class RunSpec:
    dataset: str
    fraction: float
    setting: str = "scratch"
    seed: int = 0
    memory: bool = True
    steps: int | None = None
    """optimiser steps; None: train.step_budget (20 epochs clamped to [100, 200])."""
    val_per_class: int = 0
    overrides: dict = field(default_factory=dict)
    """'train.lr', 'model.dim', 'mem.alpha', ... -> value."""
    backbone: str = "efficientnet-lite0"
    head_image_size: int = 96

    def __post_init__(self) -> None:
        check_fraction(self.fraction)
        if self.setting not in SETTINGS:
            raise GenbaError(f"--setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        if self.steps is not None and self.steps < 1:
            raise GenbaError(f"--steps must be >= 1, got {self.steps}")
        for key in self.overrides:
            group, _, name = key.partition(".")
            ok = (group == "model" and name in MODEL_KEYS) or (group == "mem" and name in MEM_KEYS) or group == "train"
            if not ok:
                raise GenbaError(f"unknown setting {key!r}: use train.<name>, model.<one of {', '.join(sorted(MODEL_KEYS))}> "
                                 f"or mem.<one of {', '.join(sorted(MEM_KEYS))}>")


@dataclass
class Inputs:
    """What the model reads for the fraction and the test split, and the input's provenance string."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    input: str
    model_fields: dict
    licences: dict


def scratch_inputs(dataset, train_ids: np.ndarray, cache: TensorCache | None, size: int | None = None) -> Inputs:
    """uint8 pixels at the scratch ViT's size (data.default_image_size)."""
    s, patch = default_image_size(dataset)
    if size is not None:
        s, patch = size, max(1, size // 4)
    channels = 1 if is_gray(dataset, dataset.splits["train"]) else 3
    x_train = load_pixels(dataset, train_ids, s, channels, cache, split="train-fraction")
    x_test = load_pixels(dataset, dataset.splits["test"], s, channels, cache, split="test")
    return Inputs(x_train, x_test, f"pixels:{s}x{s}x{channels}",
                  dict(stem="patch", image_size=s, patch=patch, channels=channels), {})


def build_inputs(spec: RunSpec, dataset, train_ids: np.ndarray, cache: TensorCache | None, progress: bool) -> Inputs:
    if spec.setting == "scratch":
        return scratch_inputs(dataset, train_ids, cache)
    from genba.movit.head import head_inputs

    return head_inputs(dataset, train_ids, spec.backbone, spec.head_image_size, cache, progress)


def split_overrides(overrides: dict) -> tuple[dict, dict, dict]:
    train, model, mem = {}, {}, {}
    for key, value in overrides.items():
        group, _, name = key.partition(".")
        {"train": train, "model": model, "mem": mem}[group][name] = value
    return train, model, mem


def run_movit(spec: RunSpec, *, cache: TensorCache | None = None, dataset=None, progress: bool = False,
              inputs: Inputs | None = None, checkpoint_dir=None) -> tuple[dict, "object"]:
    """Train and test one configuration; returns (result dict, trained model)."""
    dataset = dataset if dataset is not None else load_dataset(spec.dataset)
    train_ids = fraction_indices(dataset.labels, dataset.splits["train"], spec.fraction, spec.seed, dataset.classnames)
    t_over, m_over, mem_over = split_overrides(spec.overrides)
    inputs = inputs if inputs is not None else build_inputs(spec, dataset, train_ids, cache, progress)
    mem_cfg = MemoryConfig(**{**asdict(MemoryConfig()), **mem_over})
    model_cfg = MoViTConfig(num_classes=dataset.num_classes, memory=spec.memory, mem=mem_cfg,
                            **{**inputs.model_fields, **m_over})
    labels = torch.as_tensor(dataset.labels)
    rows = np.arange(len(train_ids))
    val = None
    if spec.val_per_class > 0:
        pool, val_rows = train_val_split(dataset.labels[train_ids], rows, spec.val_per_class, spec.seed)
        if len(val_rows) == 0:
            raise GenbaError("the training fraction is too small to carve a validation split; use --val-per-class 0")
        val = (inputs.x_train[val_rows], labels[train_ids[val_rows]])
        rows = pool
    ids = torch.as_tensor(train_ids[rows])
    steps = spec.steps or step_budget(len(rows), int(t_over.get("batch_size", 64)))
    train = train_config(len(rows), steps, spec.seed, t_over)
    trained = train_movit(inputs.x_train[rows], labels[ids], ids, model_cfg, train, val=val,
                          checkpoint_dir=checkpoint_dir, progress=progress)
    model = trained.model
    y_test = labels[torch.as_tensor(dataset.splits["test"])]
    t0 = time.perf_counter()
    acc = accuracy(model, inputs.x_test, y_test)
    seconds_test = time.perf_counter() - t0
    result = {
        "dataset": dataset.name, "fingerprint": dataset.fingerprint, "setting": spec.setting,
        "fraction": spec.fraction, "seed": spec.seed, "memory": spec.memory, "input": inputs.input,
        "n_train": int(len(rows)), "n_val": 0 if val is None else int(len(val[1])), "n_test": int(len(y_test)),
        "test_accuracy": acc, "inference": "prototypes" if model.memories else "no memory",
        "seconds_train": trained.train_seconds, "seconds_summarise": trained.summarise_seconds,
        "seconds_test": seconds_test, "steps": trained.result.steps, "epochs": trained.result.epochs,
        "best_epoch": trained.result.best_epoch,
        "memory_slots_filled": [m.filled for m in model.memories],
        "memory_bytes_full": sum(m.nbytes(False) for m in model.memories),
        "memory_bytes_prototypes": sum(m.nbytes(True) for m in model.memories),
        "hyperparameters": hyperparameters(spec, steps, model_cfg, train, val is not None),
    }
    return result, model


def hyperparameters(spec: RunSpec, steps: int, model_cfg: MoViTConfig, train, on_val: bool) -> dict:
    """Every setting with how it was chosen."""
    user = set(spec.overrides)
    how_fixed = "fixed in advance (genba default, not tuned)"

    def how(key: str) -> str:
        return "set by the user (--set)" if key in user else how_fixed

    out = {f"train.{k}": {"value": v, "chosen": how(f"train.{k}")} for k, v in train.to_dict().items()}
    for key, text in DEV_PICKED.items():
        if key in out and key not in user:
            out[key]["chosen"] = text
    out["train.seed"]["chosen"] = "the run's seed (fraction, initialisation, batch order)"
    out["train.epochs"]["chosen"] = ("set by the user (--set)" if "train.epochs" in user else
                                     f"ceil(steps budget {steps} / batches per epoch), fixed in advance")
    cfg = model_cfg.to_dict()
    mem = cfg.pop("mem")
    out.update({f"model.{k}": {"value": v, "chosen": how(f"model.{k}")} for k, v in cfg.items()})
    out.update({f"mem.{k}": {"value": v, "chosen": how(f"mem.{k}")} for k, v in mem.items()})
    for k in ("model.num_classes", "model.stem", "model.image_size", "model.patch", "model.channels",
              "model.token_dim", "model.num_tokens"):
        if k not in user:
            out[k]["chosen"] = "from the data / input (not a free choice)"
    out["steps"] = {"value": steps, "chosen": "set by the user (--steps)" if spec.steps else
                    "20 epochs clamped to [100, 200] steps, fixed in advance (train.step_budget)"}
    out["best_epoch"] = {"chosen": (f"on a validation split carved from the training fraction "
                                    f"({spec.val_per_class} per class)") if on_val else "last epoch (no validation)"}
    out["shift_augmentation_px"] = {"value": 2 if model_cfg.stem == "patch" else 0, "chosen": how_fixed}
    return out


def provenance(result: dict, spec: RunSpec, train_ids: np.ndarray, dataset, licences: dict) -> dict:
    head = {"backbone": spec.backbone, "image_size": spec.head_image_size} if spec.setting == "head" else {}
    return {**head, "input": result["input"], "setting": spec.setting, "dataset": dataset.name,
            "fingerprint": dataset.fingerprint, "classnames": list(dataset.classnames),
            "fraction": spec.fraction, "seed": spec.seed, "train_ids": [int(i) for i in train_ids],
            "weights_licences": licences, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": "MoViT (Shen et al., arXiv 2303.15553), genba's interpretation (genba.movit.memory)"}
