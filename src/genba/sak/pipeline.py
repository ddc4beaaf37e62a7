"""SAK end to end: teacher targets, the student variants, training through genba.train.fit,
evaluation and model files.

Teacher targets are standardised per channel with the TRAIN split's mean and std (dense and
pooled separately; RADIO-style feature standardisation), so teachers of different scales weigh
alike in the loss. Variants (all the same stem size, trained with the same TrainConfig):
    sak           TSAP + learned MoR routers, linear distillation heads
    no-router     TSAP + fixed average gate                      (ablation)
    no-tsap       every teacher distilled from the stem, linear heads (ablation)
    many-to-one   every teacher distilled from the stem with 2-layer MLP heads (RADIO-style)
    stage1-only   sak after stage 1; stage 2 trains only routers + task heads on the frozen student
    single:<task> many-to-one's stage-1 student trained on one task (distillation kept): the Delta-m reference
    teacher:<t>   one head per task on teacher t's frozen cached map (the teachers' oracle)
Stems: 'vit' (from scratch) or a genba.backbones name, a FROZEN pretrained stem; the latter trains
on its cached activations (`model_tensors` adds them to a split's tensors; genba.sak.frozen_stem).
"""

from __future__ import annotations

from pathlib import Path

import torch

from genba.artefact import module_problem, read_artefact, write_artefact
from genba.cache import TensorCache
from genba.errors import GenbaError
from genba.metaschema import AnyJSON, Bool, Dict, Float, Int, List, Schema, Str
from genba.sak.metrics import task_metrics
from genba.sak.objectives import SAKObjective
from genba.sak.scenes import SceneSet
from genba.sak.student import SAKStudent, StudentConfig, TeacherHeadModel
from genba.sak.teachers import load_teacher, teacher_targets
from genba.train import TensorData, TrainConfig, fit

VARIANTS = {
    "sak": dict(tsap=True, router="learned", distill_head="linear"),
    "no-router": dict(tsap=True, router="average", distill_head="linear"),
    "no-tsap": dict(tsap=False, router="learned", distill_head="linear"),
    "many-to-one": dict(tsap=False, router="learned", distill_head="mlp"),
}
MODEL_FILE = "model.safetensors"
MODEL_KIND = "sak-model"
_CONFIG = Dict({"image_size": Int(min=1, max=1024), "patch": Int(min=1, max=1024), "dim": Int(min=4, max=1 << 13),
                "depth": Int(min=1, max=64), "heads": Int(min=1, max=256), "mlp_ratio": Float(min=0.0, max=64.0),
                "teachers": Dict(values=List(Int(min=1, max=1 << 14), min_len=3, max_len=3), max_len=64),
                "tasks": Dict(values=Int(min=1, max=100_000), max_len=16), "tsap": Bool(),
                "router": Str(choices=("learned", "average")), "distill_head": Str(choices=("linear", "mlp")),
                "stem": Str(max_len=200), "stem_input": Int(min=8, max=1024),
                "stem_levels": List(Str(max_len=64), max_len=64), "stem_channels": List(Int(min=1, max=1 << 14), max_len=64),
                "stem_provenance": Str(max_len=1000)})
MODEL_SCHEMA = Schema({"config": _CONFIG, "extra": Dict(values=AnyJSON(), max_len=1000)},
                      check=lambda meta, tensors: module_problem(lambda: SAKStudent(StudentConfig(**meta["config"])), tensors))


def task_channels(scenes: SceneSet) -> dict[str, int]:
    return {t: (len(scenes.classnames) if t == "semantic" else 1) for t in scenes.tasks}


def prepare_targets(splits: dict[str, SceneSet], teacher_specs: list[str], cache: TensorCache | None,
                    grid: int = 8) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, list[int]], dict]:
    """(per split: {'t/dense', 't/pooled'} standardised float16, teacher info {t: [dim, h, w]}, provenance)."""
    if "train" not in splits:
        raise GenbaError("teacher targets need a 'train' split to standardise with")
    out: dict[str, dict[str, torch.Tensor]] = {s: {} for s in splits}
    info, provenance = {}, {}
    for spec in teacher_specs:
        teacher = load_teacher(spec)
        raw = {s: teacher_targets(teacher, sc.images, sc.fingerprint, cache, grid) for s, sc in splits.items()}
        d_mean = raw["train"]["dense"].float().mean(dim=(0, 2, 3), keepdim=True)
        d_std = raw["train"]["dense"].float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4)
        p_mean = raw["train"]["pooled"].float().mean(dim=0, keepdim=True)
        p_std = raw["train"]["pooled"].float().std(dim=0, keepdim=True).clamp_min(1e-4)
        for s in splits:
            out[s][f"{spec}/dense"] = ((raw[s]["dense"].float() - d_mean) / d_std).half()
            out[s][f"{spec}/pooled"] = ((raw[s]["pooled"].float() - p_mean) / p_std).half()
        dense = raw["train"]["dense"]
        info[spec] = [int(dense.shape[1]), int(dense.shape[2]), int(dense.shape[3])]
        provenance[spec] = {"provenance": teacher.provenance, "licence": teacher.licence, "role": teacher.role}
    return out, info, provenance


def class_weights(scenes: SceneSet) -> torch.Tensor:
    """Median-frequency semantic cross-entropy weights of a train split (losses.median_frequency_weights)."""
    from genba.sak.losses import median_frequency_weights

    return median_frequency_weights(scenes.semantic, len(scenes.classnames))


def split_tensors(scenes: SceneSet, targets: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    return {**scenes.tensors(), **(targets or {})}


FROZEN_PATCH = 8  # a frozen stem's token grid is image_size / 8 (8 x 8 on 64 px scenes, as the ViT stem's)


def stem_config(stem: str, input_size: int = 128, backbone=None) -> tuple[dict, object | None]:
    """(StudentConfig fields of a stem, the loaded backbone or None): 'vit' or a genba.backbones name."""
    if stem == "vit":
        return {"stem": "vit"}, None
    from genba.backbones import load_backbone
    from genba.sak.frozen_stem import cut_points

    backbone = backbone or load_backbone(stem)
    for p in backbone.module.parameters():
        p.requires_grad_(False)
    stages, channels = cut_points(backbone, input_size)
    return {"stem": stem, "stem_input": input_size, "stem_levels": stages, "stem_channels": channels,
            "stem_provenance": backbone.provenance, "patch": FROZEN_PATCH}, backbone


def build_student(variant: str, teachers: dict, tasks: dict, stem: str = "vit", backbone=None,
                  **overrides) -> SAKStudent:
    """A student of `variant` on `stem` ('vit' or a frozen genba.backbones name; `backbone` reuses a loaded one)."""
    if variant not in VARIANTS:
        raise GenbaError(f"unknown SAK variant '{variant}': choose one of {', '.join(VARIANTS)}")
    fields, backbone = stem_config(stem, overrides.pop("stem_input", 128), backbone)
    return SAKStudent(StudentConfig(teachers=teachers, tasks=tasks, **{**VARIANTS[variant], **fields, **overrides}),
                      backbone=backbone)


def model_tensors(model: torch.nn.Module, scenes: SceneSet, targets: dict | None, cache: TensorCache | None) -> dict:
    """split_tensors plus, for a frozen-stem student, its cached stem activations (computed once per scene set)."""
    tensors = split_tensors(scenes, targets)
    if isinstance(model, SAKStudent) and model.cfg.stem != "vit":
        from genba.sak.frozen_stem import stem_activations

        cfg = model.cfg
        tensors.update(stem_activations(model.stem.backbone, scenes.images, scenes.fingerprint, cfg.stem_levels,
                                        cfg.stem_input, cfg.grid, cache))
    return tensors


def model_inputs(model: torch.nn.Module, tensors: dict):
    """What model(...) reads from a split's tensors: the images or the cached frozen-stem level maps."""
    keys = getattr(model, "input_keys", None)
    return [tensors[k] for k in keys] if keys else tensors["image"]


def train_stage(model: torch.nn.Module, train: dict, val: dict, config: TrainConfig, *, stage: int,
                teachers: list[str], tasks: list[str], distill_weight: float = 1.0, input_key: str = "image",
                checkpoint_dir: Path | None = None, resume: bool = False, progress: bool = False, desc: str = "sak",
                class_weights: torch.Tensor | None = None):
    """Stage 1: distil only; stage 2: tasks (+ distill_weight * distillation). Returns the TrainResult.
    class_weights: semantic cross-entropy weights (losses.median_frequency_weights of the train labels)."""
    objective = SAKObjective(model, teachers if distill_weight > 0 or stage == 1 else [],
                             tasks if stage == 2 else [], distill_weight if stage == 2 else 1.0,
                             val=val, input_key=input_key, class_weights=class_weights)
    return fit(objective, TensorData(**train), config, checkpoint_dir=checkpoint_dir, resume=resume,
               progress=progress, desc=desc)


def freeze_student(model: SAKStudent) -> None:
    """Stage-1-only ablation: keep stem, paths and distillation heads fixed; routers and heads train."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("routers.", "heads.")))


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, inputs, batch: int = 128) -> dict:
    """Task outputs over all rows: {task: (N, C, H, W)}, {task: gates (N, R)}. `inputs`: images, a
    teacher map, or a frozen stem's cached level maps (a list)."""
    model.eval()
    tasks: dict[str, list] = {}
    gates: dict[str, list] = {}
    rows = len(inputs[0]) if isinstance(inputs, list) else len(inputs)
    for start in range(0, rows, batch):
        x = [t[start:start + batch] for t in inputs] if isinstance(inputs, list) else inputs[start:start + batch]
        out = model(x, with_teachers=False) if isinstance(model, SAKStudent) else model(x)
        for k, v in out["tasks"].items():
            tasks.setdefault(k, []).append(v)
        for k, v in out["gates"].items():
            gates.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in tasks.items()}, {k: torch.cat(v) for k, v in gates.items()}


def evaluate(model: torch.nn.Module, scenes: SceneSet, inputs=None) -> tuple[dict, dict]:
    """(metrics, mean gate per task) of a model on a scene set."""
    outputs, gates = predict_outputs(model, scenes.images if inputs is None else inputs)
    metrics = task_metrics(outputs, scenes.tensors(), len(scenes.classnames))
    return metrics, {k: [float(x) for x in v.mean(0)] for k, v in gates.items()}


def save_student(directory: Path, model: SAKStudent, extra: dict | None = None) -> Path:
    """model.safetensors with the StudentConfig (and `extra`, e.g. class names, teacher provenance) as metadata."""
    path = Path(directory) / MODEL_FILE
    write_artefact(path, kind=MODEL_KIND, meta={"config": model.cfg.to_dict(), "extra": dict(extra or {})},
                   tensors=model.state_dict())
    return path


def load_student(directory: Path) -> tuple[SAKStudent, dict]:
    """The student and its `extra` from model.safetensors, verified (genba.artefact, MODEL_SCHEMA:
    the config bounded; a frozen stem's backbone is read from its weight package by name and built on the meta device against the file's tensors before allocation)."""
    found = read_artefact(Path(directory) / MODEL_FILE, kind=MODEL_KIND, schema=MODEL_SCHEMA,
                          fix="run `genba sak distill` / `genba sak train` first")
    model = SAKStudent(StudentConfig(**found.meta["config"]))
    model.load_state_dict(found.tensors)
    return model.eval(), found.meta["extra"]


def teacher_head_model(teacher: str, info: dict, tasks: dict, cfg: StudentConfig | None = None,
                       probe: str = "mlp") -> TeacherHeadModel:
    """Heads on teacher `teacher`'s cached map at the student's grid: probe 'mlp' (oracle) or 'linear' (bias table)."""
    base = cfg or StudentConfig()
    return TeacherHeadModel(info[teacher][0], StudentConfig(image_size=base.image_size, patch=base.patch, dim=base.dim,
                                                             depth=base.depth, heads=base.heads, tasks=tasks), probe)
