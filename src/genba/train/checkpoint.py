"""Training checkpoints: one safetensors file (weights, optimiser moments, best weights) whose
metadata holds the loop state as JSON, plus a readable state.json mirror. Both are written
atomically (temp file, fsync, rename); the safetensors file is the source of truth, so a kill
at any moment leaves the previous checkpoint or the new one, never a mix. Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from genba.cache import atomic_write_bytes, tensors_digest
from genba.errors import GenbaError

CHECKPOINT = "checkpoint.safetensors"
STATE_JSON = "state.json"
FORMAT = "genba-train-1"


def save_checkpoint(directory: Path, state: dict, model: dict[str, torch.Tensor],
                    optimizer: dict, best: dict[str, torch.Tensor] | None) -> None:
    """Write the checkpoint atomically. `optimizer` is torch's optimizer.state_dict()."""
    tensors = {f"model/{k}": v for k, v in model.items()}
    if best is not None:
        tensors.update({f"best/{k}": v for k, v in best.items()})
    for index, slots in optimizer["state"].items():
        for name, value in slots.items():
            tensors[f"optim/{index}/{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}  # no shared storage
    groups = [{k: v for k, v in g.items()} for g in optimizer["param_groups"]]
    full_state = dict(state, optimizer_groups=groups)
    meta = {"format": FORMAT, "state": json.dumps(full_state), "sha256": tensors_digest(tensors)}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / CHECKPOINT, save_bytes(tensors, metadata=meta))
    atomic_write_bytes(directory / STATE_JSON, (json.dumps(state, indent=2) + "\n").encode())


def load_checkpoint(directory: Path) -> tuple[dict, dict, dict, dict | None] | None:
    """(state, model tensors, optimizer state_dict, best tensors or None), or None when absent."""
    path = directory / CHECKPOINT
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise GenbaError(f"checkpoint {path} cannot be read ({error}); delete it to start over") from error
    if meta.get("format") != FORMAT:
        raise GenbaError(f"{path} is not a genba training checkpoint; point --out at a new directory")
    if meta.get("sha256") != tensors_digest(tensors):
        raise GenbaError(f"checkpoint {path} fails its checksum (damaged); delete it to start over")
    state = json.loads(meta["state"])
    groups = state.pop("optimizer_groups")
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    slots: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, index, name = k.split("/", 2)
            slots.setdefault(int(index), {})[name] = v
    return state, model, {"state": slots, "param_groups": groups}, best
