"""The experiment harness the benchmarks declare their runs with.

    for point in sweep(dataset=["textile"], method=["dmn-tf"], shots=[1, 4], seed=[0, 1, 2]):
        records.append(RunRecord.from_result(run_adapt(...)))
    cell = format_mean_std([r.top1 for r in select(records, method="dmn-tf", shots=4)])   # "m ± s"
    writer = ResultWriter("adapt", "bench/results")
    writer.markdown("title", body); writer.json({"rows": [r.to_dict() for r in records]})  # with the command

Also `cap_split` (a fixed seeded subset of a test split, the same images for every method
and seed); `Features.rows_of` finds dataset indices in a feature split.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genba.cache import atomic_write_bytes
from genba.report import write_json


def sweep(**axes) -> list[dict]:
    """The cartesian product of the axes, in order: sweep(a=[1, 2], b=[3]) -> [{a:1,b:3}, {a:2,b:3}]."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, population std) of the values; std 0 for one value."""
    return statistics.mean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def format_mean_std(values: list[float]) -> str:
    """'m ± s' with one decimal (just 'm' for one value)."""
    m, s = mean_std(values)
    return f"{m:.1f} ± {s:.1f}" if len(values) > 1 else f"{m:.1f}"


@dataclass
class RunRecord:
    """One run's outcome, typed: what was run and what it scored."""

    dataset: str
    method: str
    seed: int
    top1: float
    shots: int = 0
    selected_on: str = "fixed"
    hyperparameters: dict = field(default_factory=dict)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: dict, **extra) -> "RunRecord":
        known = {k: result[k] for k in ("dataset", "method", "seed", "top1", "shots", "selected_on",
                                        "hyperparameters", "seconds") if k in result}
        rest = {k: v for k, v in result.items() if k not in known}
        return cls(**known, extra={**rest, **extra})

    def to_dict(self) -> dict:
        return asdict(self)


def select(records: list[RunRecord], **where) -> list[RunRecord]:
    """Records whose fields (or extra keys) equal every given value."""
    def value(r, k):
        return getattr(r, k) if hasattr(r, k) else r.extra.get(k)
    return [r for r in records if all(value(r, k) == v for k, v in where.items())]


def command_line() -> str:
    """The command that is running, as a user would type it."""
    return "python " + " ".join([os.path.relpath(sys.argv[0], Path.cwd())] + sys.argv[1:])


class ResultWriter:
    """Writes <dir>/<name>.md (headed by the command) and <name>.json (with it), atomically."""

    def __init__(self, name: str, directory: str | Path, command: str | None = None) -> None:
        self.name, self.directory = name, Path(directory)
        self.command = command or command_line()

    def json(self, payload: dict) -> Path:
        path = self.directory / f"{self.name}.json"
        write_json(path, {"command": self.command, **payload})
        return path

    def markdown(self, title: str, body: str, seconds: float | None = None) -> Path:
        took = f" ({seconds:.0f} s)" if seconds is not None else ""
        path = self.directory / f"{self.name}.md"
        atomic_write_bytes(path, f"# {title}\n\nCommand: `{self.command}`{took}\n\n{body}\n".encode())
        return path


def cap_split(features, max_n: int | None, seed: int = 0):
    """At most `max_n` rows of a split: a sorted seeded subset (the same for every method and seed)."""
    if not max_n or len(features) <= max_n:
        return features
    keep = np.sort(np.random.default_rng(seed).permutation(len(features))[:max_n])
    return features.subset(keep)
