"""Plain-text tables and atomic JSON output for the CLI and the benchmarks."""

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
