"""Plain records passed between the store and its callers: writes, rejections, receipts, entries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genba.errors import GenbaError


class StaleMemory(GenbaError):
    """The memory changed in the store since this process loaded it; reload and retry."""


class UnusableMemory(GenbaError):
    """The memory's method cannot be rebuilt from the store; it can still be inspected, exported and erased."""


@dataclass
class Write:
    """One write into a test-time bank, as decided by the method in RAM."""

    bank: str
    cls: int
    slot: int
    feature: np.ndarray  # (D,)
    entropy: float
    source_id: str
    payload: np.ndarray | None = None  # (P,) float32, e.g. TDA's probability map


@dataclass
class Rejection:
    """A test-time query that stored nothing (its pseudo-label and entropy, for the log)."""

    source_id: str
    bank: str
    cls: int
    entropy: float


@dataclass
class Receipt:
    """What a mutation did: the new version, ids and outcomes of its writes, entries removed."""

    version: int
    entry_ids: list[int]
    outcomes: list[str]
    removed: int = 0


@dataclass
class Entries:
    """Entries of one memory in id (= write) order; `feats` are decoded float32 rows (N, D)."""

    ids: np.ndarray
    banks: list[str]
    classes: np.ndarray
    slots: list[int | None]
    sources: list[str]
    entropies: np.ndarray
    created: np.ndarray
    feats: np.ndarray
    payloads: list[np.ndarray | None]
