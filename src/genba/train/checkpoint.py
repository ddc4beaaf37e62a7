"""Training checkpoints: one artefact (genba.artefact, kind "train-checkpoint": weights, optimiser
moments, best weights) whose metadata holds the loop state, plus a readable state.json mirror
that nothing reads back. Both are written atomically (temp file, fsync, rename); the artefact is
the source of truth, so a kill at any moment leaves the previous checkpoint or the new one, never
a mix. Loading verifies the checksum (metadata and tensors), the state against SCHEMA (types,
ranges: no step -5, no epoch beyond the configured epochs), the tensor names and finite values;
nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from genba.artefact import atomic_write_bytes, read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import Bool, Dict, Float, Int, List, Nullable, Schema, Str, dataclass_spec
from genba.train.config import RANGES, TrainConfig

CHECKPOINT = "checkpoint.safetensors"
STATE_JSON = "state.json"
KIND = "train-checkpoint"
BIG = 10**15


_STATE = Dict({
    "step": Int(min=0, max=BIG), "epoch": Int(min=0, max=100_000), "finished": Bool(),
    "config": dataclass_spec(TrainConfig, RANGES),  # exactly its fields, typed and ranged as it documents them
    "objective": Str(max_len=200), "rows": Int(min=1, max=BIG), "best_score": Nullable(Float()),
    "best_epoch": Nullable(Int(min=0, max=100_000)), "evals_since_best": Int(min=0, max=100_000), "stopped_early": Bool(),
    "loss_sum": Float(), "loss_rows": Int(min=0, max=BIG),
    "history": List(Dict({"epoch": Int(min=0, max=100_000), "step": Int(min=0, max=BIG), "loss": Nullable(Float()),
                          "val": Nullable(Float())}, optional=("val",)), max_len=100_000),
})


def _check(meta: dict, tensors: dict) -> str | None:
    state = meta["state"]
    try:
        config = TrainConfig(**state["config"])
    except (GenbaError, TypeError) as error:
        return f"meta.state.config: {str(error).splitlines()[0][:200]}"
    if state["epoch"] > config.epochs:
        return f"meta.state.epoch: {state['epoch']} is beyond the configured {config.epochs} epochs"
    if state["step"] > config.epochs * state["rows"]:
        return f"meta.state.step: {state['step']} is more steps than {config.epochs} epochs of {state['rows']} rows"
    if state["loss_rows"] > state["rows"] or (state["best_epoch"] or 0) > state["epoch"]:
        return "meta.state: loss_rows or best_epoch beyond the rows and epochs done"
    if [h["epoch"] for h in state["history"]] != list(range(state["epoch"])) or any(
            h["step"] > state["step"] for h in state["history"]):
        return "meta.state.history: not one entry per finished epoch up to the checkpoint's step"
    for name, value in tensors.items():
        if name.startswith("optim/") and name.endswith(("/exp_avg_sq", "/step")) and bool((value < 0).any()):
            return f"tensor {name[:60]!r} holds negative values (an AdamW second moment or step count never is)"
    for name in tensors:
        parts = name.split("/")
        if parts[0] in ("model", "best") and len(parts) > 1:
            continue
        if parts[0] == "optim" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < 10**8:
            continue
        return f"tensor name {name[:60]!r} is not model/*, best/* or optim/<index>/<slot>"
    return None


SCHEMA = Schema({"state": _STATE}, check=_check)


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def save_checkpoint(directory: Path, state: dict, model: dict[str, torch.Tensor],
                    optimizer: dict, best: dict[str, torch.Tensor] | None) -> None:
    """Write the checkpoint atomically. `optimizer` is torch's optimizer.state_dict()."""
    tensors = {f"model/{k}": v for k, v in model.items()}
    if best is not None:
        tensors.update({f"best/{k}": v for k, v in best.items()})
    for index, slots in optimizer["state"].items():
        for name, value in slots.items():
            tensors[f"optim/{index}/{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    history = [{k: _finite_or_none(v) for k, v in entry.items()} for entry in state.get("history", [])]
    full_state = dict(state, history=history, best_score=_finite_or_none(state.get("best_score")))
    directory.mkdir(parents=True, exist_ok=True)
    write_artefact(directory / CHECKPOINT, kind=KIND, meta={"state": full_state}, tensors=tensors)
    atomic_write_bytes(directory / STATE_JSON, (json.dumps(state, indent=2) + "\n").encode())


def load_checkpoint(directory: Path) -> tuple[dict, dict, dict, dict | None] | None:
    """(state, model tensors, optimizer per-parameter state {"state": {index: slots}}, best tensors
    or None), or None when absent; an unusable checkpoint is one genba.artefact.ArtefactError naming
    the file. The optimizer's param groups (learning rates, betas, ...) are not in the file: the
    resuming engine takes them from its own configuration, never from disk."""
    path = directory / CHECKPOINT
    if not path.exists():
        return None
    artefact = read_artefact(path, kind=KIND, schema=SCHEMA)
    tensors, state = artefact.tensors, dict(artefact.meta["state"])
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    slots: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, index, name = k.split("/", 2)
            slots.setdefault(int(index), {})[name] = v
    return state, model, {"state": slots}, best
