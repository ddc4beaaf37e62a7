"""Shared set-up for the benchmark scripts: cache folder, dataset list, result paths."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genba.experiment import command_line  # noqa: F401  (re-exported for the scripts)

RESULTS = Path(__file__).resolve().parent / "results"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    default_cache = os.environ.get("GENBA_CACHE_DIR") or str(Path.home() / ".cache" / "genba")
    parser.add_argument("--cache-dir", default=default_cache, help="feature cache (default %(default)s)")
    parser.add_argument("--datasets", nargs="*", help="built-in datasets (default: every installed one)")
    parser.add_argument("--encoder", default="conse")
    return parser


def installed_datasets(requested: list[str] | None) -> list[str]:
    from genba.data import available_datasets

    table = {name: (ok, why) for name, ok, why in available_datasets()}
    names = [name for name, (ok, _) in table.items() if ok]
    if not requested:
        return names
    for name in requested:
        if name not in table:
            sys.exit(f"unknown dataset '{name}': built-ins are {', '.join(table)}")
        if not table[name][0]:
            sys.exit(f"dataset '{name}' is not installed: {table[name][1]}")
    return list(requested)
