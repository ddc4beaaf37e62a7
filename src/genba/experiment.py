"""The experiment harness the benchmarks declare their runs with.

    for point in sweep(dataset=["textile"], method=["dmn-tf"], shots=[1, 4], seed=[0, 1, 2]):
        records.append(RunRecord.from_result(run_adapt(...)))
    cell = format_mean_std([r.top1 for r in select(records, method="dmn-tf", shots=4)])   # "m ± s"
    writer = ResultWriter("adapt", "bench/results")
    writer.markdown("title", body); writer.json({"rows": [r.to_dict() for r in records]})  # with the command

Tables over the records (`Summary`: per dataset a methods x shots table of per-seed values,
the mean over datasets taken per seed, cells "m ± s"), a results file that grows over runs
(`ResultLog`: merge with the rows and commands already there, progress saved as it goes), and
`cap_split` (a fixed seeded subset of a test split, the same images for every method and seed);
`Features.rows_of` finds dataset indices in a feature split.

    s = Summary(lambda ds, m, k: per_seed(select(records, dataset=ds, method=m, shots=k)), datasets, methods, shots)
    s.add_mean("mean over datasets", datasets)
    text = s.sections([f"{k}-shot" for k in shots])      # "### <dataset>" + table, per group
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from genba.cache import atomic_write_bytes
from genba.errors import GenbaError
from genba.report import markdown_table, write_json


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

    @classmethod
    def from_dict(cls, row: dict) -> "RunRecord":
        """A row of a results file: a `to_dict()` (it has "extra") or a raw result dict."""
        return cls(**row) if "extra" in row else cls.from_result(row)

    def to_dict(self) -> dict:
        return asdict(self)

    def get(self, key: str):
        """A field, or else an extra key (None when the record lacks it)."""
        return getattr(self, key) if key in self.__dataclass_fields__ else self.extra.get(key)


def select(records: list[RunRecord], **where) -> list[RunRecord]:
    """Records whose fields (or extra keys) equal every given value."""
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def per_seed(records: list[RunRecord], metric: str = "top1") -> dict[int, list]:
    """seed -> that seed's values of `metric` (one run, or e.g. one per corruption; None where a record
    lacks it), seeds in the order they first appear: a `Summary` cell."""
    by: dict[int, list] = {}
    for r in records:
        by.setdefault(r.seed, []).append(r.get(metric))
    return by


def format_cell(values: dict[int, float | None], missing: str = "n/a") -> str:
    """Per-seed values as 'm ± s' over the seeds; `missing` where none ran or a seed lacks the metric."""
    return missing if not values or None in values.values() else format_mean_std(list(values.values()))


class Summary:
    """Per group (a dataset), a rows x columns table (methods x shots) of per-seed values, and means over groups.

    `cell(group, row, column)` gives {seed: [values]} ({} where it did not run; `per_seed` makes
    it from records); a seed's value is the `mean` of its list (None if one is None). A mean over
    groups pools the groups' lists per seed (the seeds every group ran), so it weighs every run
    alike (over datasets and corruptions) and its '± s' is the spread over seeds of that mean.
    `mean` is statistics.mean (exact); a table first printed with numpy keeps np.mean, since the
    summation order decides ties such as 19.35 at one decimal. Rows and groups keep their order.
    """

    def __init__(self, cell: Callable, groups: list, rows: list, columns: list, mean: Callable = statistics.mean) -> None:
        self.rows, self.columns, self.mean = list(rows), list(columns), mean
        self.tables = {g: {r: [cell(g, r, c) for c in self.columns] for r in self.rows} for g in groups}

    def complete(self) -> list:
        """The groups where every cell ran."""
        return [g for g, table in self.tables.items() if all(c for line in table.values() for c in line)]

    def add_mean(self, name: str, groups: list) -> None:
        """A table `name`: per row and column, the groups' values pooled per seed ({} unless every group ran)."""
        def pooled(cells):
            if not cells or not all(cells):
                return {}
            return {s: [v for c in cells for v in c[s]] for s in cells[0] if all(s in c for c in cells)}
        self.tables[name] = {r: [pooled([self.tables[g][r][i] for g in groups]) for i in range(len(self.columns))]
                             for r in self.rows}

    def values(self, group, row, column) -> dict[int, float | None]:
        """seed -> the cell's value (the mean of its runs; None if a run lacks the metric)."""
        cell = self.tables[group][row][self.columns.index(column)]
        return {s: None if None in v else self.mean(v) for s, v in cell.items()}

    def curve(self, group, row) -> list[float]:
        """One row's mean over seeds per column (nan where the cell is missing): a line to plot."""
        out = []
        for c in self.columns:
            v = list(self.values(group, row, c).values())
            out.append(statistics.mean(v) if v and None not in v else math.nan)
        return out

    def markdown(self, group, headers: list[str], corner: str = "method") -> str:
        """The table of `group`: a header per column, cells 'm ± s' over seeds (format_cell)."""
        return markdown_table([corner] + list(headers),
                              [[r] + [format_cell(self.values(group, r, c)) for c in self.columns] for r in self.rows])

    def sections(self, headers: list[str], heading: str = "### {}", groups: list | None = None, corner: str = "method") -> str:
        """`heading` (formatted with the group) and the table, for every group (or those given)."""
        return "\n\n".join(f"{heading.format(g)}\n\n" + self.markdown(g, headers, corner)
                           for g in (self.tables if groups is None else groups))


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

    def figure(self, fig, suffix: str = "", **savefig) -> Path:
        """Save a matplotlib figure as <name><suffix>.png (savefig's keywords, e.g. dpi), atomically; closes it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", **savefig)
        plt.close(fig)
        path = self.directory / f"{self.name}{suffix}.png"
        atomic_write_bytes(path, buffer.getvalue())
        return path


class ResultLog:
    """A results JSON that grows over runs: its RunRecord rows, the commands that made them and each
    command's seconds. Every `add` rewrites the file whole (atomically), so a run that crashes leaves
    the rows added so far; `finish` records this command's time.

        log = ResultLog(writer)                                  # a fresh file
        log = ResultLog(writer, keep=lambda r: r.method != "dmn")   # merge: the file's rows `keep` accepts,
                                                                 # its commands, then this one
        log = ResultLog.read(writer)                             # the file as it is (rebuild tables only)
        log.add(records); ...; log.finish()

    The JSON: {"command": the latest, "commands": [...], "seconds": [... or None], "rows": [...]};
    an older file with one "command" and no "seconds" reads as one command of unrecorded time.
    """

    def __init__(self, writer: ResultWriter, keep: Callable[[RunRecord], bool] | None = None) -> None:
        self.writer, self._start = writer, time.perf_counter()
        self.rows: list[RunRecord] = []
        self.commands: list[str] = [writer.command]
        self.seconds: list[int | None] = [None]
        if keep is not None and self.path.exists():
            rows, commands, seconds = self._load()
            self.rows = [r for r in rows if keep(r)]
            self.commands, self.seconds = commands + self.commands, seconds + self.seconds

    @property
    def path(self) -> Path:
        return self.writer.directory / f"{self.writer.name}.json"

    @classmethod
    def read(cls, writer: ResultWriter) -> "ResultLog":
        """The file's rows and commands, nothing added; writer.command becomes its latest command."""
        log = cls.__new__(cls)
        log.writer, log._start = writer, time.perf_counter()
        if not log.path.exists():
            raise GenbaError(f"no results file {log.path}: run the benchmark once without --tables-only to write it")
        log.rows, log.commands, log.seconds = log._load()
        writer.command = log.commands[-1]
        return log

    def _load(self) -> tuple[list[RunRecord], list[str], list]:
        try:
            old = json.loads(self.path.read_text())
            commands = old.get("commands", [old["command"]])
            return [RunRecord.from_dict(r) for r in old["rows"]], commands, old.get("seconds", [None] * len(commands))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise GenbaError(f"{self.path}: not a results file this benchmark wrote ({type(error).__name__}); "
                             "move it away and run the benchmark again") from None

    def add(self, records: list[RunRecord]) -> None:
        """Append rows and save (progress that survives a crash)."""
        self.rows += records
        self.save()

    def finish(self) -> None:
        """This command's wall time (whole seconds since the log was made), saved."""
        self.seconds[-1] = round(time.perf_counter() - self._start)
        self.save()

    def save(self) -> Path:
        return self.writer.json({"commands": self.commands, "seconds": self.seconds,
                                 "rows": [r.to_dict() for r in self.rows]})


def cap_split(features, max_n: int | None, seed: int = 0):
    """At most `max_n` rows of a split: a sorted seeded subset (the same for every method and seed)."""
    if not max_n or len(features) <= max_n:
        return features
    keep = np.sort(np.random.default_rng(seed).permutation(len(features))[:max_n])
    return features.subset(keep)
