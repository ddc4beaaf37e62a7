"""Trainable backbones: cut points, forward_features / forward_from / forward_head, cached
activations. `load_backbone("efficientnet-lite0" | "efficientnet-lite1" | "efficientnet-lite2" |
"hf:<dir>")` (a local CLIP / SigLIP / DINOv2 checkpoint's vision transformer)."""

from genba.backbones.activations import Activations, extract_activations
from genba.backbones.base import Backbone, resize_centre_crop
from genba.errors import GenbaError


def backbone_names() -> list[str]:
    from genba.backbones.efficientnet import VARIANTS

    return list(VARIANTS) + ["hf:<dir>"]


def load_backbone(spec: str, *, pretrained: bool = True) -> Backbone:
    """A backbone by name (see backbone_names())."""
    from genba.backbones.efficientnet import VARIANTS, EfficientNetLite

    if spec in VARIANTS:
        return EfficientNetLite(spec, pretrained=pretrained)
    if spec.startswith("hf:"):
        from genba.backbones.hf_vit import HFVisionBackbone
        from genba.encoders.hf import load_hf_encoder

        return HFVisionBackbone(load_hf_encoder(spec[3:]))
    raise GenbaError(f"unknown backbone {spec!r}; choose one of {', '.join(backbone_names())}")


__all__ = ["Activations", "Backbone", "backbone_names", "extract_activations", "load_backbone", "resize_centre_crop"]
