"""Continual-learning metrics over the accuracy matrix, with their definitions and sources.

The matrix A has T + 1 rows and T columns (tasks 1..T): row 0 is the model before any
training (the zero-shot row), row j >= 1 the accuracies after training task j; A[j][i] is
the accuracy (%) on task i. Tasks are 1-based below, as in the papers; arrays are 0-based.

* Transfer (ZSCL, Zheng et al. ICCV 2023, MTIL code `metrics.py`): for each task i >= 2 the
  mean of A[j][i] over the training steps j = 1..i-1 (before task i is learned), then the mean
  over i = 2..T. The zero-shot row 0 is not part of it (as in ZSCL's T x T matrix).
* Avg (ZSCL): the mean of all T x T entries A[j][i], j, i = 1..T.
* Last (ZSCL): the mean of the last row, (1/T) sum_i A[T][i].
* BWT (backward transfer; Lopez-Paz & Ranzato, GEM, NeurIPS 2017, Eq. 2):
  (1/(T-1)) sum_{i=1}^{T-1} (A[T][i] - A[i][i]). Negative = forgetting.
* FWT (forward transfer; GEM Eq. 3): (1/(T-1)) sum_{i=2}^{T} (A[i-1][i] - b_i), with b_i the
  accuracy of the initial model on task i, i.e. the zero-shot row A[0][i] (GEM's b is a
  randomly initialised model; for a VLM the zero-shot model is the natural reference).
* Forgetting (Chaudhry et al., RWalk, ECCV 2018, Eq. 5-6): for i = 1..T-1,
  f_i = max_{l in i..T-1} A[l][i] - A[T][i]; the mean of f_i. The max runs over the steps
  after task i was learned (l >= i), the form used by Avalanche's and Mammoth's forgetting.
* Linear CKA (Kornblith et al., ICML 2019, Eq. 5): with column-centred X (n, p), Y (n, q),
  CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F); 1 = the same representation up to rotation
  and isotropic scale.
* Alignment: the mean cosine between a probe image's embedding and its class text embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from genba.errors import GenbaError


def _check(A, need_two: bool = False) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] + 1 or A.shape[1] < 1:
        raise GenbaError(f"the accuracy matrix must have T + 1 rows (zero-shot row first) and T columns, "
                         f"got shape {A.shape}")
    if not np.isfinite(A).all():
        raise GenbaError("the accuracy matrix holds NaN or infinite entries")
    if need_two and A.shape[1] < 2:
        raise GenbaError("Transfer, BWT, FWT and Forgetting need a stream of at least two tasks; "
                         "add a task to --stream")
    return A


def transfer(A) -> float:
    A = _check(A, need_two=True)
    T = A.shape[1]
    return float(np.mean([A[1:i + 1, i].mean() for i in range(1, T)]))  # column i (0-based) = task i+1


def avg(A) -> float:
    return float(_check(A)[1:].mean())


def last(A) -> float:
    return float(_check(A)[-1].mean())


def bwt(A) -> float:
    A = _check(A, need_two=True)
    T = A.shape[1]
    return float(np.mean([A[T, i] - A[i + 1, i] for i in range(T - 1)]))


def fwt(A) -> float:
    A = _check(A, need_two=True)
    T = A.shape[1]
    return float(np.mean([A[i, i] - A[0, i] for i in range(1, T)]))


def forgetting(A) -> float:
    A = _check(A, need_two=True)
    T = A.shape[1]
    return float(np.mean([A[i + 1:T, i].max() - A[T, i] for i in range(T - 1)]))


def summary(A) -> dict[str, float]:
    """transfer, avg, last, bwt, fwt, forgetting of one accuracy matrix."""
    return {"transfer": transfer(A), "avg": avg(A), "last": last(A), "bwt": bwt(A), "fwt": fwt(A),
            "forgetting": forgetting(A)}


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA between two (n, p) and (n, q) representations of the same n inputs."""
    if X.shape[0] != Y.shape[0] or X.shape[0] < 2:
        raise GenbaError("CKA needs the same n >= 2 inputs in both representations")
    X = X.double() - X.double().mean(0)
    Y = Y.double() - Y.double().mean(0)
    cross = (Y.T @ X).norm() ** 2
    denom = (X.T @ X).norm() * (Y.T @ Y).norm()
    return float(cross / denom) if denom > 0 else 0.0


def alignment(embeddings: torch.Tensor, class_text: torch.Tensor) -> float:
    """Mean cos(e_n, t_{y_n}) of unit image embeddings (n, D) and their unit class texts (n, D)."""
    return float((embeddings * class_text).sum(1).mean())
