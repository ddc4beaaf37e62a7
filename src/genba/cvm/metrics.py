"""Accuracy-matrix metrics of continual learning (used until genba.continual.metrics lands).

A has T + 1 rows and T columns: A[0][i] = accuracy on task i before any training (the
zero-shot row), A[j][i] = accuracy on task i after training tasks 1..j (1-based j).
  avg       ZSCL (Zheng et al., ICCV 2023, MTIL code): mean of all entries of the T rows after
            training (the zero-shot row excluded).
  last      mean of the last row A[T][:].
  transfer  ZSCL: for each task i >= 2, the mean of A[j][i] over 1 <= j < i (trained on earlier
            tasks only), then the mean over i.
  bwt       Lopez-Paz & Ranzato (GEM, 2017): mean over i < T of A[T][i] - A[i][i].
  fwt       GEM: mean over i >= 2 of A[i-1][i] - A[0][i] (A[0] = the untrained / zero-shot row).
  forgetting Chaudhry et al. (RWalk, 2018): mean over i < T of max_{i <= j < T} A[j][i] - A[T][i].
"""

from __future__ import annotations

import math

from genba.errors import GenbaError


def stream_metrics(matrix: list[list[float]]) -> dict[str, float]:
    rows = [list(map(float, r)) for r in matrix]
    if len(rows) < 2 or any(len(r) != len(rows[0]) for r in rows) or len(rows) != len(rows[0]) + 1:
        raise GenbaError(f"an accuracy matrix needs T + 1 rows of T entries, got {[len(r) for r in rows]}")
    t = len(rows[0])
    trained = rows[1:]
    out = {"avg": _mean([v for r in trained for v in r]), "last": _mean(rows[t])}
    if t < 2:
        out.update(transfer=math.nan, bwt=math.nan, fwt=math.nan, forgetting=math.nan)
        return out
    out["transfer"] = _mean([_mean([rows[j][i] for j in range(1, i + 1)]) for i in range(1, t)])
    out["bwt"] = _mean([rows[t][i] - rows[i + 1][i] for i in range(t - 1)])
    out["fwt"] = _mean([rows[i][i] - rows[0][i] for i in range(1, t)])
    out["forgetting"] = _mean([max(rows[j][i] for j in range(i + 1, t)) - rows[t][i] for i in range(t - 1)])
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
