"""Encoder registry: `load_encoder("conse")`, `load_encoder("hf:/path/to/dir")`, `load_encoder("tiny")`.

A spec is `kind` or `kind:argument`. Kinds register themselves with `@register_encoder`.
"""

from __future__ import annotations

from genba.encoders.base import Encoder, ImageEncoder, TextEncoder, VisionLanguageEncoder, l2_normalize
from genba.errors import GenbaError
from genba.registry import Registry

ENCODERS = Registry("encoder")


def register_encoder(kind: str, summary: str):
    """Decorator: register `factory(argument or None) -> Encoder` under `kind`."""
    return ENCODERS.register(kind, summary, set_name=False)


def _ensure_builtin_kinds() -> None:
    # Importing the modules runs their @register_encoder decorators.
    from genba.encoders import conse, hf, tiny  # noqa: F401


def encoder_kinds() -> dict[str, str]:
    """kind -> one-line summary of every registered encoder kind."""
    _ensure_builtin_kinds()
    return {e.name: e.summary for e in sorted(ENCODERS.entries(), key=lambda e: e.name)}


def load_encoder(spec: str) -> ImageEncoder:
    """Build the encoder named by `spec` ("conse", "tiny", "hf:<dir>"): a VisionLanguageEncoder, or an
    ImageEncoder for a vision-only checkpoint (`encoder.has_text` tells)."""
    _ensure_builtin_kinds()
    kind, _, argument = spec.partition(":")
    if kind not in ENCODERS:
        valid = ", ".join(f"'{k}'" for k in sorted(ENCODERS.names()))
        raise GenbaError(f"unknown encoder '{spec}': valid kinds are {valid} (e.g. 'conse' or 'hf:/path/to/checkpoint')")
    return ENCODERS.get(kind)(argument or None)


def load_backbone(spec: str, *, pretrained: bool = True):
    """Any registered vision backbone by spec, `hf:<dir>` included (genba.backbones.load_backbone
    once every built-in kind, the encoders' hf one too, is registered)."""
    from genba.backbones import load_backbone as load_registered

    _ensure_builtin_kinds()
    return load_registered(spec, pretrained=pretrained)


__all__ = ["Encoder", "ImageEncoder", "TextEncoder", "VisionLanguageEncoder", "encoder_kinds", "l2_normalize", "load_backbone", "load_encoder",
           "register_encoder"]
