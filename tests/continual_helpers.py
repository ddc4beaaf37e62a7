"""Synthetic streams for the continual tests: tasks as random clustered features, no encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genba.continual.reference import Reference
from genba.continual.stream import Stream, Task
from genba.features import Features

DV, D = 24, 8


def make_task(name: str, classes: int, offset: int, seed: int, n_per_class: int = 12) -> Task:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(classes, D, generator=g), dim=1)
    centres = torch.randn(classes, DV, generator=g) * 3

    def split(n: int, s: int) -> Features:
        gg = torch.Generator().manual_seed(seed * 100 + s)
        y = torch.arange(classes).repeat_interleave(n)
        v = centres[y] + torch.randn(len(y), DV, generator=gg)
        z = F.normalize(text[y] * 0.3 + torch.randn(len(y), D, generator=gg), dim=1)  # weak zero-shot signal
        return Features(z, v, y, torch.arange(len(y)))

    return Task(name, [f"{name}-{c}" for c in range(classes)], offset, text, split(n_per_class, 1),
                split(4, 2), split(n_per_class, 3))


def make_stream(sizes=(2, 3, 2), control: bool = True) -> Stream:
    tasks, offset = [], 0
    for i, c in enumerate(sizes):
        tasks.append(make_task(f"t{i}", c, offset, seed=i + 1))
        offset += c
    return Stream(tasks, make_task("ctrl", 2, 0, seed=99) if control else None)


def make_reference(n: int = 32, vocab: int = 50) -> Reference:
    g = torch.Generator().manual_seed(7)
    return Reference(torch.randn(n, DV, generator=g), F.normalize(torch.randn(n, D, generator=g), dim=1),
                     F.normalize(torch.randn(vocab, D, generator=g), dim=1))
