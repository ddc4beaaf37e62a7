"""Encoder registry: `load_encoder("conse")`, `load_encoder("hf:/path/to/dir")`, `load_encoder("tiny")`.

A spec is `kind` or `kind:argument`. Kinds register themselves with `@register_encoder`.
"""

from __future__ import annotations

from typing import Callable

from genba.encoders.base import Encoder, l2_normalize
from genba.errors import GenbaError

_REGISTRY: dict[str, tuple[Callable[[str | None], Encoder], str]] = {}


def register_encoder(kind: str, summary: str):
    """Decorator: register `factory(argument or None) -> Encoder` under `kind`."""

    def wrap(factory):
        _REGISTRY[kind] = (factory, summary)
        return factory

    return wrap


def _ensure_builtin_kinds() -> None:
    # Importing the modules runs their @register_encoder decorators.
    from genba.encoders import conse, hf, tiny  # noqa: F401


def encoder_kinds() -> dict[str, str]:
    """kind -> one-line summary of every registered encoder kind."""
    _ensure_builtin_kinds()
    return {kind: summary for kind, (_, summary) in sorted(_REGISTRY.items())}


def load_encoder(spec: str) -> Encoder:
    """Build the encoder named by `spec` ("conse", "tiny", "hf:<dir>")."""
    _ensure_builtin_kinds()
    kind, _, argument = spec.partition(":")
    if kind not in _REGISTRY:
        valid = ", ".join(f"'{k}'" for k in sorted(_REGISTRY))
        raise GenbaError(f"unknown encoder '{spec}': valid kinds are {valid} (e.g. 'conse' or 'hf:/path/to/checkpoint')")
    factory, _ = _REGISTRY[kind]
    return factory(argument or None)


__all__ = ["Encoder", "encoder_kinds", "l2_normalize", "load_encoder", "register_encoder"]
