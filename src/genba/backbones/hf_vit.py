"""A Hugging Face vision transformer (CLIP / SigLIP vision tower, DINOv2) as a Backbone.

Stages: "embeddings" (patch + position embeddings; CLIP's pre-layernorm too), "layer0".."layerL-1"
(the encoder blocks), "norm" (the final layernorm on the tokens: SigLIP post_layernorm,
DINOv2 layernorm; CLIP normalises only its pooled token, so its tokens pass unchanged).
forward_features -> tokens (B, 1 + P, D) (SigLIP: P, no CLS). forward_head -> the vector the
`hf:` encoder calls "visual": CLIP post_layernorm(CLS), SigLIP the mean token, DINOv2 the CLS.
`adapter_targets` names the attention projections LoRA (peft) adapts in the manner of the
LoRA paper (query and value).
"""

from __future__ import annotations

import torch
from torch import nn

from genba.backbones.base import Backbone

TARGET_NAMES = (["q_proj", "v_proj"], ["query", "value"])  # transformers 5 / older DINOv2 naming


class HFVisionBackbone(Backbone):
    def __init__(self, encoder) -> None:
        self.encoder, self.kind = encoder, encoder.model_type
        model = encoder.model
        self.vision = model if self.kind == "dinov2" else model.vision_model
        self.layers = self.vision.encoder.layer if self.kind == "dinov2" else self.vision.encoder.layers
        self.stages = ["embeddings"] + [f"layer{i}" for i in range(len(self.layers))] + ["norm"]
        self.name, self.feature_dim = encoder.name, encoder.visual_dim
        self.licence = "as stated by the checkpoint's model card (local directory)"

    @property
    def module(self) -> nn.Module:
        return self.vision

    @property
    def provenance(self) -> str:
        return self.encoder.provenance

    def adapter_targets(self) -> list[str]:
        names = {n.rsplit(".", 1)[-1] for n, _ in self.vision.named_modules()}
        return next(t for t in TARGET_NAMES if set(t) <= names)

    def _run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        v = self.vision
        if index == 0:
            kwargs = {} if self.kind == "dinov2" else dict(self.encoder.vision_kwargs)
            x = v.embeddings(x.float(), **kwargs)
            return v.pre_layrnorm(x) if self.kind == "clip" else x
        if index == len(self.stages) - 1:
            if self.kind == "dinov2":
                return v.layernorm(x)
            return v.post_layernorm(x) if self.kind == "siglip" else x
        out = self.layers[index - 1](x, None) if self.kind != "dinov2" else self.layers[index - 1](x)
        return out[0] if isinstance(out, tuple) else out

    def _stage_modules(self, index: int) -> list[nn.Module]:
        v = self.vision
        if index == 0:
            return [v.embeddings] + ([v.pre_layrnorm] if self.kind == "clip" else [])
        if index == len(self.stages) - 1:
            return [v.layernorm] if self.kind == "dinov2" else [v.post_layernorm]
        return [self.layers[index - 1]]

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.kind == "clip":
            return self.vision.post_layernorm(tokens[:, 0])
        return tokens.mean(1) if self.kind == "siglip" else tokens[:, 0]

    def preprocess(self, image, size: int | None = None) -> torch.Tensor:
        """The checkpoint's own preprocessing (its image size; `size` is ignored)."""
        return self.encoder.preprocess(image)
