"""Dataset lookup: a built-in name, `folder:<dir>`, `csv:<file>`, or a plain folder / .csv path."""

from __future__ import annotations

from pathlib import Path

from genba.data.builtin import DATASETS
from genba.data.table import Dataset
from genba.data.user import load_csv, load_folder
from genba.errors import GenbaError


def available_datasets() -> list[tuple[str, bool, str]]:
    """(name, ok, summary if ok else the reason with the install command) per built-in."""
    out = []
    for entry in DATASETS.values():
        ok, reason = entry.check()
        out.append((entry.name, ok, entry.summary if ok else reason))
    return out


def load_dataset(spec: str) -> Dataset:
    """Load a dataset by spec.

    Args:
        spec: a built-in name (see `DATASETS`), "folder:<dir>" (one sub-folder per class),
            "csv:<file>" (header path,label), an existing directory, or a path ending in .csv.

    Raises:
        GenbaError: unknown name, missing package, or unusable user data.
    """
    if spec in DATASETS:
        return DATASETS[spec].load()
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):])
    if spec.startswith("csv:"):
        return load_csv(spec[len("csv:"):])
    if spec.lower().endswith(".csv"):
        return load_csv(spec)
    if Path(spec).expanduser().is_dir() or "/" in spec or spec.startswith((".", "~")):
        return load_folder(spec)  # a path-like spec: let the folder loader say what is wrong
    raise GenbaError(
        f"unknown dataset '{spec}': use one of {', '.join(DATASETS)}, "
        "or folder:<dir> (one sub-folder per class), or csv:<file> (columns path,label)"
    )
