"""`--set key=value` pairs from the command line -> typed values (every sub-command parses them so)."""

from __future__ import annotations

from genba.errors import GenbaError


def parse_set_pairs(pairs: list[str]) -> dict:
    """['alpha=100', 'train.lr=1e-3', 'policy=herding'] -> {'alpha': 100, 'train.lr': 0.001, 'policy': 'herding'}:
    integers and floats become numbers, anything else stays a string."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise GenbaError(f"--set takes key=value, got '{pair}'")
        try:
            values[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            values[key] = value
    return values
