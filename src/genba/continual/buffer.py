"""A bounded multimodal replay buffer, persisted atomically in safetensors.

Rows are batch dicts of the stream (visual features "x", joint "z", global label "y", task
id "task", ...) plus, per row, its class text embedding ("text") so that the buffer alone holds
(image features, label, class text) triples. Two admission policies:

* reservoir (Vitter 1985, Algorithm R; the ER baseline of Chaudhry et al. 2019): the n-th row
  seen replaces a random slot with probability capacity / n, so the buffer is a uniform
  sample of everything seen;
* herding (iCaRL, Rebuffi et al. CVPR 2017, Alg. 4): a class-balanced budget m = capacity //
  classes seen; per class the exemplars are picked greedily so that their running mean of
  unit features stays closest to the class mean; old classes are trimmed to the first m
  (herding order makes every prefix a good exemplar set).

`save(path)` writes one artefact (genba.artefact, kind "replay-buffer") atomically with the
policy, capacity, seen count and RNG state as metadata; `ReplayBuffer.load(path)` verifies it
(checksum over metadata and rows, SCHEMA: ranges, a PCG64 state, rows of equal length within
the capacity) and never unpickles anything, so a restarted run continues with the same buffer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genba.artefact import read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import Dict, Int, Schema, Str

POLICIES = ("reservoir", "herding")
KIND = "replay-buffer"
_U128 = Int(min=0, max=2**128 - 1)
_RNG = Dict({"bit_generator": Str(choices=("PCG64",)), "state": Dict({"state": _U128, "inc": _U128}),
             "has_uint32": Int(min=0, max=1), "uinteger": Int(min=0, max=2**32 - 1)})


def _check(meta: dict, rows: dict) -> str | None:
    lengths = {int(t.shape[0]) if t.dim() else -1 for t in rows.values()}
    if rows and (len(lengths) != 1 or "y" not in rows):
        return "rows have unequal lengths or no labels 'y'"
    n = lengths.pop() if rows else 0
    if n > meta["capacity"] or n > meta["seen"]:
        return f"holds {n} rows, more than its capacity {meta['capacity']} or the {meta['seen']} rows seen"
    return None


SCHEMA = Schema({"capacity": Int(min=1, max=10**9), "policy": Str(choices=POLICIES), "seed": Int(min=0, max=2**63 - 1),
                 "seen": Int(min=0, max=10**15), "tasks_done": Int(min=0, max=10**6), "rng": _RNG}, check=_check)


class ReplayBuffer:
    def __init__(self, capacity: int, policy: str = "reservoir", seed: int = 0) -> None:
        if policy not in POLICIES:
            raise GenbaError(f"unknown replay policy '{policy}': choose {' or '.join(POLICIES)}")
        if int(capacity) != capacity or capacity < 1:
            raise GenbaError(f"the replay buffer size must be a positive integer, got {capacity!r}")
        self.capacity, self.policy, self.seed = int(capacity), policy, int(seed)
        self.rows: dict[str, torch.Tensor] = {}
        self.seen = 0
        self.tasks_done = 0  # tasks whose rows have been offered to the buffer
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return 0 if not self.rows else int(next(iter(self.rows.values())).shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.rows.values())

    def batch(self, keys) -> dict[str, torch.Tensor]:
        """The stored rows restricted to `keys` (e.g. the fields of the task data)."""
        return {k: self.rows[k] for k in keys}

    # ------------------------------------------------------------------ admission
    def add(self, rows: dict[str, torch.Tensor], feature_key: str = "x") -> None:
        """Admit the rows of one task (dict of equal-length tensors, with "y")."""
        n = int(rows["y"].shape[0])
        if self.rows and set(rows) != set(self.rows):
            raise GenbaError(f"replay rows have fields {sorted(rows)}, the buffer {sorted(self.rows)}")
        if self.policy == "reservoir":
            self._reservoir(rows, n)
        else:
            self._herding(rows, feature_key)

    def _reservoir(self, rows: dict, n: int) -> None:
        take: list[int] = []  # rows of `rows` appended while the buffer fills
        replace: dict[int, int] = {}  # slot -> row
        size = len(self)
        for i in range(n):
            self.seen += 1
            if size + len(take) < self.capacity:
                take.append(i)
            else:
                j = int(self.rng.integers(0, self.seen))
                if j < self.capacity:
                    replace[j] = i
        if take:
            idx = torch.as_tensor(take, dtype=torch.long)
            self.rows = {k: torch.cat([self.rows[k], v[idx]]) if self.rows else v[idx].clone() for k, v in rows.items()}
        if replace:
            slots = torch.as_tensor(list(replace), dtype=torch.long)
            src = torch.as_tensor(list(replace.values()), dtype=torch.long)
            for k in self.rows:
                self.rows[k][slots] = rows[k][src]

    def _herding(self, rows: dict, feature_key: str) -> None:
        self.seen += int(rows["y"].shape[0])
        merged = {k: torch.cat([self.rows[k], v]) if self.rows else v for k, v in rows.items()}
        classes = torch.unique(merged["y"])
        m = max(1, self.capacity // len(classes))
        old = set(torch.unique(self.rows["y"]).tolist()) if self.rows else set()
        keep: list[torch.Tensor] = []
        for c in classes.tolist():
            members = (merged["y"] == c).nonzero()[:, 0]
            if c in old:  # already in herding order: keep the first m
                keep.append(members[:m])
            else:
                keep.append(members[herding_order(merged[feature_key][members].float(), m)])
        idx = torch.cat(keep)[: self.capacity]
        self.rows = {k: v[idx].clone() for k, v in merged.items()}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        meta = {"capacity": self.capacity, "policy": self.policy, "seed": self.seed, "seen": self.seen,
                "tasks_done": self.tasks_done, "rng": self.rng.bit_generator.state}
        write_artefact(path, kind=KIND, meta=meta, tensors=self.rows)

    @classmethod
    def load(cls, path: str | Path) -> "ReplayBuffer":
        found = read_artefact(path, kind=KIND, schema=SCHEMA)
        meta = found.meta
        buffer = cls(meta["capacity"], meta["policy"], meta["seed"])
        buffer.rows, buffer.seen, buffer.tasks_done = found.tensors, meta["seen"], meta["tasks_done"]
        buffer.rng.bit_generator.state = meta["rng"]
        return buffer


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's herding: indices p_1..p_m, p_k = argmin_i || mu - (x_i + sum_{j<k} x_pj) / k ||."""
    x = F.normalize(features, dim=1)
    mu = x.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(x.shape[0], dtype=torch.bool)
    for k in range(1, min(m, x.shape[0]) + 1):
        dist = ((mu - (running + x) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += x[i]
    return torch.as_tensor(chosen, dtype=torch.long)
