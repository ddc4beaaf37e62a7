"""Trainable backbones: cut points, forward_features / forward_from / forward_head, cached
activations. `load_backbone("efficientnet-lite0" | "efficientnet-lite1" | "efficientnet-lite2" |
"hf:<dir>")` (a local CLIP / SigLIP / DINOv2 checkpoint's vision transformer).

A spec is `kind` or `kind:argument`; kinds register `factory(argument or None, pretrained) ->
Backbone` with `@register_backbone` (one file plus its registration, as encoders do). The
`hf` kind is registered by genba.encoders.hf (an HF vision tower is read through the `hf:`
encoder's loader, one HF loader), so backbones never import encoders; code above the encoders
layer loads any spec, `hf:` included, through `genba.encoders.load_backbone`."""

from __future__ import annotations

from genba.backbones.activations import Activations, extract_activations
from genba.backbones.base import Backbone, resize_centre_crop
from genba.errors import GenbaError
from genba.registry import Registry

BACKBONES = Registry("backbone")


def register_backbone(kind: str, summary: str = ""):
    """Decorator: register `factory(argument: str | None, pretrained: bool) -> Backbone` under `kind`."""
    return BACKBONES.register(kind, summary, set_name=False)


def _ensure_builtin_kinds() -> None:
    from genba.backbones import efficientnet  # noqa: F401  (runs its @register_backbone)


def backbone_names() -> list[str]:
    _ensure_builtin_kinds()
    return BACKBONES.names() + ([] if "hf" in BACKBONES else ["hf:<dir>"])


def load_backbone(spec: str, *, pretrained: bool = True) -> Backbone:
    """A backbone by spec (see backbone_names(); `hf:<dir>` once genba.encoders is loaded)."""
    _ensure_builtin_kinds()
    kind, _, argument = spec.partition(":")
    if kind not in BACKBONES:
        hint = " (load hf: backbones through genba.encoders.load_backbone)" if kind == "hf" else ""
        raise GenbaError(f"unknown backbone {spec!r}; choose one of {', '.join(backbone_names())}{hint}")
    return BACKBONES.get(kind)(argument or None, pretrained)


__all__ = ["Activations", "BACKBONES", "Backbone", "backbone_names", "extract_activations", "load_backbone",
           "register_backbone", "resize_centre_crop"]
