"""Plain-text tables, atomic JSON output and line plots for the CLI and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

from genba.cache import atomic_write_bytes


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; floats print with one decimal."""

    def cell(value) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    """Write `payload` as indented JSON, atomically."""
    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2) + "\n").encode())


def line_panels(panels: dict[str, dict[str, list[float]]], x: list, *, xlabel: str, ylabel: str,
                xticklabels: list[str] | None = None, styles: dict[str, dict] | None = None, log2_x: bool = False,
                panel_size: tuple[float, float] = (4.0, 3.6), legend_fontsize: float = 7):
    """A row of line plots, one panel per title: {title: {label: y per x}}, markers at the points.

    `styles` adds matplotlib keywords per label (linestyle, linewidth); the y label goes on the
    first panel, the legend on the last. Returns the figure (save it with ResultWriter.figure).
    Needs matplotlib (the `plot` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, ys in lines.items():
            ax.plot(x, ys, marker="o", label=label, **(styles or {}).get(label, {}))
        if log2_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, xticklabels or [str(v) for v in x])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=legend_fontsize)
    return fig
