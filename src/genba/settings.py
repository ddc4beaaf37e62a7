"""`--set key=value` pairs from the command line -> typed values (every sub-command parses them so)."""

from __future__ import annotations

from genba.errors import GenbaError


def parse_set_pairs(pairs: list[str]) -> dict:
    """['alpha=100', 'train.lr=1e-3', 'memory=false'] -> {'alpha': 100, 'train.lr': 0.001, 'memory': False}:
    integers and floats become numbers, true / false booleans, anything else stays a string."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GenbaError(f"--set takes key=value (e.g. train.lr=1e-3), got '{pair}'")
        if value in ("true", "false"):
            values[key] = value == "true"
            continue
        try:
            values[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            values[key] = value
    return values
