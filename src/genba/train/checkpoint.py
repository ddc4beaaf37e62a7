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

from genba.cache import atomic_write_bytes, read_checked, write_checked

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
    full_state = dict(state, optimizer_groups=optimizer["param_groups"])
    directory.mkdir(parents=True, exist_ok=True)
    write_checked(directory / CHECKPOINT, tensors, format=FORMAT, metadata={"state": json.dumps(full_state)})
    atomic_write_bytes(directory / STATE_JSON, (json.dumps(state, indent=2) + "\n").encode())


def load_checkpoint(directory: Path) -> tuple[dict, dict, dict, dict | None] | None:
    """(state, model tensors, optimizer state_dict, best tensors or None), or None when absent."""
    path = directory / CHECKPOINT
    if not path.exists():
        return None
    tensors, meta = read_checked(path, format=FORMAT, what="training checkpoint",
                                 fix="delete it to start over, or point --out at a new directory")
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
