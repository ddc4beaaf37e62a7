"""Training data for the engine: anything with len() and take(indices) -> batch.

TensorData holds equal-length tensors (cached features, small images, labels) and returns a
dict of row subsets. The batch order is a pure function of (seed, epoch), so a resumed run
rebuilds exactly the batches it would have seen.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol

import torch

from genba.errors import GenbaError


class TrainData(Protocol):
    def __len__(self) -> int: ...

    def take(self, indices: torch.Tensor): ...


class TensorData:
    """Equal-length tensors by name; take(idx) -> {name: tensor[idx]}."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        if not tensors:
            raise GenbaError("training data needs at least one tensor")
        lengths = {name: int(t.shape[0]) for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise GenbaError(f"training tensors differ in length: {lengths}")
        for name, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise GenbaError(f"training tensor {name!r} holds NaN or infinite values; "
                                 "re-extract the features or drop those rows")
        self.tensors = tensors
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.n

    def take(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t[indices] for name, t in self.tensors.items()}


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) used in `epoch` (independent of earlier epochs)."""
    g = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def step_seed(seed: int, step: int) -> int:
    """The global torch seed set before step `step`, so random draws inside a step replay on resume."""
    return _mix(seed, step, 0x57E9)


def seed_step(seed: int) -> None:
    """Reseed the CPU generator (and CUDA's when in use) before a step. Not torch.manual_seed: that
    also queues lazy seeding of every accelerator backend, which captures a stack each call and cost
    about 0.75 ms per step here, 3x a small step's own work."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draws inside the block come from torch's CPU generator seeded with `seed`; the caller's
    generator state is restored on exit. The one place library code seeds torch's global
    generator (tests/test_layers.py checks): module constructors (nn.Linear, nn.Parameter(randn))
    take no generator argument, so a model is built under `with seeded(run_seed):` instead.
    Every other random draw takes a torch.Generator / numpy Generator derived from the run's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _mix(a: int, b: int, salt: int) -> int:
    return (a * 1_000_003 + b * 7_919 + salt) % (2**63 - 1)
