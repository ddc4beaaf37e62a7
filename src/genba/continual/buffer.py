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

`save(path)` writes one safetensors file atomically (genba.cache.atomic_write_bytes) with a JSON
header (policy, capacity, seen count, RNG state); `ReplayBuffer.load(path)` checks it and never
unpickles anything, so a restarted run continues with the same buffer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genba.cache import read_checked, write_checked
from genba.errors import GenbaError

POLICIES = ("reservoir", "herding")
FORMAT = "genba-replay-1"


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
        header = {"capacity": self.capacity, "policy": self.policy, "seed": self.seed, "seen": self.seen,
                  "tasks_done": self.tasks_done, "rng": json.dumps(self.rng.bit_generator.state)}
        write_checked(path, self.rows, format=FORMAT, metadata={k: str(v) for k, v in header.items()})

    @classmethod
    def load(cls, path: str | Path) -> "ReplayBuffer":
        rows, meta = read_checked(path, format=FORMAT, what="replay buffer", fix="delete it to start over")
        buffer = cls(int(meta["capacity"]), meta["policy"], int(meta["seed"]))
        buffer.rows, buffer.seen, buffer.tasks_done = rows, int(meta["seen"]), int(meta["tasks_done"])
        buffer.rng.bit_generator.state = json.loads(meta["rng"])
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
