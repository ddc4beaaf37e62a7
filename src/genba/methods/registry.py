"""Method registry: `@register_method(name)` on a Method subclass, `create_method(name, **overrides)`.

Metadata lives on each class: `selection_grid` (the validation grid fixed in advance),
`shown_hyperparameters` (what result tables print), `needs_support` (uses labels), `test_time`.

Configs are dataclasses whose defaults are the papers' values; `make_config` rejects unknown keys
and wrongly typed values with a GenbaError that lists what is valid.
"""

from __future__ import annotations

import typing

from genba.errors import GenbaError
from genba.registry import Registry

METHODS = Registry("method")


def register_method(name: str, summary: str = ""):
    """Class decorator: register a Method subclass under `name`."""
    return METHODS.register(name, summary)


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return METHODS.names()


def get_method(name: str) -> type:
    """The Method class registered under `name`."""
    return METHODS.get(name)


def _coerce(cls, key: str, value, annotation):
    kind = {"float": float, "int": int, "bool": bool, "str": str}.get(str(annotation))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is not None and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is None:
        return value
    raise GenbaError(f"{cls.__name__}.{key} must be a {kind.__name__}, got {value!r}")


def make_config(name: str, overrides: dict | None = None):
    """The config of method `name` with `overrides` applied (unknown keys -> GenbaError).

    Trained methods hold their training settings in a nested `train` TrainConfig; override them
    with dotted keys ({"train.lr": 1e-3}, `--set train.lr=1e-3` on the CLI) or train={...}.
    """
    from genba.settings import build_config

    cls = get_method(name).config_cls
    hints = typing.get_type_hints(cls)
    coerce = lambda k, v: _coerce(cls, k, v, hints[k].__name__ if hasattr(hints[k], "__name__") else hints[k])  # noqa: E731
    return build_config(cls, overrides or {}, f"method {name!r}", coerce)


def create_method(name: str, **overrides):
    """Instantiate method `name` with config overrides."""
    return get_method(name)(make_config(name, overrides))
