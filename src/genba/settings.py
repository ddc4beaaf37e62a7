"""`--set key=value` pairs from the command line -> typed values (every sub-command parses them so),
and the one builder of a hyperparameter dataclass from such values (methods and continual strategies)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from genba.errors import GenbaError

# the hardware options' names (genba.device resolves them; declared here so that the CLI needs no torch)
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("torch", "onnx", "onnx-int8")


def default_cache_dir() -> Path:
    """$GENBA_CACHE_DIR, else $XDG_CACHE_HOME/genba, else ~/.cache/genba."""
    if os.environ.get("GENBA_CACHE_DIR"):
        return Path(os.environ["GENBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genba"


def add_hardware_options(parser) -> None:
    """--device, --precision and --runtime on an argparse parser (the CLI's shared options)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto | cpu | cuda | cuda:N | mps (default auto: a GPU when one is present)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="compute precision of encoders and training (default fp32; bf16/fp16 autocast, "
                             "fp32 master weights)")
    parser.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES,
                        help="image encoder runtime on the CPU: torch, onnx (ONNX Runtime fp32) or onnx-int8 "
                             "(default auto: onnx on the CPU in fp32 when onnxruntime is installed)")


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


def build_config(cls, values: dict, what: str, coerce: Callable[[str, object], object] | None = None):
    """`cls(**values)` for a config dataclass, with one set of checks for every registry: unknown
    keys refused (listing the valid ones), dotted `train.KEY` values applied to a nested `train`
    TrainConfig (or `train={...}`), `coerce(key, value)` per value when given, and a config's own
    range checks (ValueError / TypeError in __post_init__) turned into a GenbaError naming `what`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values or {})
    nested = {k.split(".", 1)[1]: values.pop(k) for k in list(values) if k.startswith("train.")}
    if nested and "train" not in fields:
        raise GenbaError(f"{what} does not train, so it takes no train.* settings; valid: {', '.join(fields) or '(none)'}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GenbaError(f"unknown hyperparameter(s) {', '.join(unknown)} for {what}; "
                         f"valid: {', '.join(fields) or '(none)'}" + (", train.*" if "train" in fields else ""))
    out = {k: coerce(k, v) if coerce else v for k, v in values.items() if k != "train"}
    if "train" in fields:
        given = values.get("train", {})
        given = dataclasses.asdict(given) if dataclasses.is_dataclass(given) else dict(given)
        out["train"] = fields["train"].default_factory().replace(**{**given, **nested})
    try:
        return cls(**out)
    except (TypeError, ValueError) as error:
        raise GenbaError(f"bad hyperparameter for {what}: {error}") from error

