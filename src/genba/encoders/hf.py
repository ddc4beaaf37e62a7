"""Hugging Face checkpoints from a local directory: `load_encoder("hf:/path/to/checkpoint")`.

Supported `model_type`s (from the directory's config.json):
    clip    CLIPModel + its tokenizer. Joint space: the projected, normalized image/text embeds.
            Visual features: the un-projected pooled vision output (post-layernorm CLS), dim
            vision_config.hidden_size.
    siglip  SiglipModel + its tokenizer (text padded to max_length, no attention mask, as SigLIP
            was trained). Joint space: the normalized pooled (attention-pool head) embeds. Visual
            features: the mean of the final patch tokens before the pooling head.
    dinov2  Dinov2Model, vision only: an ImageEncoder (`has_text` is False). Joint embedding: the normalized CLS
            (pooler) feature; visual features: the same CLS feature, un-normalized.

Everything is offline: transformers is called with local_files_only=True and nothing is
downloaded. Weights load from model.safetensors (preferred) or, failing that, from
pytorch_model.bin through torch.load(weights_only=True), which refuses pickled objects.

Images are preprocessed (hf_preprocess.py) with PIL + numpy (no torchvision, no "fast" processors), following
preprocessor_config.json (size / crop_size / resample / rescale / image_mean / image_std) the way
the transformers PIL image processors do, so features match what transformers would compute.

`provenance` is "hf:<model_type>:<sha256>", where the sha256 covers the weight files' bytes plus
everything else that changes the computed function: the model config, the resolved image
preprocessing and the tokenizer files.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from genba.backbones import register_backbone
from genba.encoders import register_encoder
from genba.device import module_device
from genba.encoders.base import ImageEncoder, VisionLanguageEncoder, file_sha256, l2_normalize
from genba.encoders.hf_preprocess import ImageTransform, _one_line, _read_image_processor_config, _read_json, build_image_transform
from genba.errors import GenbaError

SUPPORTED_MODEL_TYPES = ("clip", "siglip", "dinov2")

# Bumped whenever this module changes how features are computed from the same checkpoint.
_SCHEME = "genba-hf-v1"

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# At least one of these must exist: transformers >= 5 silently builds an EMPTY tokenizer otherwise.
_TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")

# Weights that may legitimately be absent from a checkpoint without changing the features.
_IGNORABLE_MISSING = ("position_ids", "logit_scale", "logit_bias", "mask_token")


class HFImageEncoder(ImageEncoder):
    """The vision tower of a CLIP, SigLIP or DINOv2 checkpoint from a local Hugging Face directory
    (a DINOv2 checkpoint is only this)."""

    def __init__(
        self,
        directory: Path,
        model_type: str,
        model: torch.nn.Module,
        tokenizer: Any,
        transform: ImageTransform,
        provenance: str,
        embed_dim: int,
        visual_dim: int,
        text_length: int,
        interpolate_pos_encoding: bool,
    ):
        self.name = f"hf:{model_type}:{directory.name}"
        self.directory = directory
        self.model_type = model_type
        self.embed_dim = embed_dim
        self.visual_dim = visual_dim
        self.transform = transform
        self._model = model
        self._tokenizer = tokenizer
        self._provenance = provenance
        self._text_length = text_length
        self._vision_kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        self.text_batch_size = 256

    @property
    def provenance(self) -> str:
        return self._provenance

    @property
    def model(self):
        """The loaded transformers model (read-only use: backbones, LoRA wrap copies of its parts)."""
        return self._model

    @property
    def vision_kwargs(self) -> dict:
        """Keyword arguments the vision tower is called with (e.g. interpolate_pos_encoding)."""
        return dict(self._vision_kwargs)

    def describe(self) -> str:
        text = "image+text" if self.has_text else "image only"
        return f"{self.name} ({text}): joint dim {self.embed_dim}, visual dim {self.visual_dim} [{self.directory}]"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def encode_image_with_visual(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise GenbaError(f"{self.name}: expected pixels of shape (N, 3, H, W), got {tuple(pixels.shape)}")
        if pixels.shape[0] == 0:
            return torch.zeros(0, self.embed_dim), torch.zeros(0, self.visual_dim)
        hardware = self.place(self._model)
        pixels = hardware.to(pixels.to(torch.float32))
        with torch.inference_mode(), hardware.autocast():
            if self.model_type == "clip":
                outputs = self._model.vision_model(pixel_values=pixels, **self._vision_kwargs)
                visual = outputs.pooler_output
                joint = self._model.visual_projection(visual)
            elif self.model_type == "siglip":
                outputs = self._model.vision_model(pixel_values=pixels, **self._vision_kwargs)
                visual = outputs.last_hidden_state.mean(dim=1)
                joint = outputs.pooler_output if outputs.pooler_output is not None else visual
            else:  # dinov2
                visual = self._model(pixel_values=pixels).pooler_output
                joint = visual
            joint = l2_normalize(joint.float()).cpu()
            visual = visual.float().cpu()
        # Clone outside inference mode so callers get ordinary tensors (usable with autograd).
        return joint.clone(), visual.clone()



class HFVisionLanguageEncoder(HFImageEncoder, VisionLanguageEncoder):
    """A CLIP or SigLIP checkpoint: the vision tower plus its text tower, in one joint space."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim)
        rows = []
        for start in range(0, len(texts), self.text_batch_size):
            rows.append(self._encode_text_batch(texts[start : start + self.text_batch_size]))
        return torch.cat(rows)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        padding = "max_length" if self.model_type == "siglip" else True
        batch = self._tokenizer(
            texts, padding=padding, truncation=True, max_length=self._text_length, return_tensors="pt"
        )
        batch = {k: v.to(module_device(self._model)) for k, v in batch.items()}  # wherever the images went
        with torch.inference_mode():
            if self.model_type == "clip":
                outputs = self._model.text_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
                embeds = self._model.text_projection(outputs.pooler_output)
            else:  # siglip: trained without a text attention mask; pooled from the last position
                embeds = self._model.text_model(input_ids=batch["input_ids"]).pooler_output
            embeds = l2_normalize(embeds.float()).cpu()
        return embeds.clone()


# ----------------------------------------------------------------------------- loading


def _weight_files(directory: Path) -> tuple[list[Path], str]:
    """The checkpoint's weight files and their format ("safetensors" or "bin")."""
    for single, index, fmt in (
        ("model.safetensors", "model.safetensors.index.json", "safetensors"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", "bin"),
    ):
        if (directory / single).is_file():
            return [directory / single], fmt
        if (directory / index).is_file():
            data = _read_json(directory / index)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise GenbaError(f"'{directory / index}' has no weight_map: the sharded checkpoint index is damaged")
            names = sorted(set(weight_map.values()))
            files = [directory / name for name in names]
            missing = [name for name, path in zip(names, files) if not path.is_file()]
            if missing:
                raise GenbaError(f"'{directory}' is missing weight shard(s) {', '.join(missing)} listed in {index}")
            return files, fmt
    raise GenbaError(
        f"'{directory}' has no model weights: expected model.safetensors (or pytorch_model.bin) next to config.json"
    )


def _weights_digest(files: list[Path]) -> str:
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _function_digest(weights: str, config: dict, transform: ImageTransform, directory: Path, text: dict) -> str:
    """sha256 over everything that determines the features: weights, config, preprocessing, tokenizer."""
    config = {k: v for k, v in config.items() if k not in ("transformers_version", "_name_or_path")}
    tokenizer_files = {}
    if text:
        for name in _TOKENIZER_FILES:
            if (directory / name).is_file():
                tokenizer_files[name] = file_sha256(directory / name)
    payload = {
        "scheme": _SCHEME,
        "weights": weights,
        "config": config,
        "image": asdict(transform),
        "text": text,
        "tokenizer_files": tokenizer_files,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _model_classes(model_type: str):
    import transformers

    if model_type == "clip":
        return transformers.CLIPConfig, transformers.CLIPModel
    if model_type == "siglip":
        return transformers.SiglipConfig, transformers.SiglipModel
    return transformers.Dinov2Config, transformers.Dinov2Model


def _dtype_kwargs() -> dict:
    """Load in float32 whatever dtype the checkpoint was saved in (transformers >= 5 defaults to 'auto')."""
    import transformers

    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        major, minor = 5, 0
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


def _load_bin_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    """Tensors from pytorch_model.bin file(s); torch.load(weights_only=True) refuses pickled code."""
    state_dict: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            part = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise GenbaError(
                f"refusing to load '{path}': it is not a plain tensor checkpoint ({_one_line(exc)}); "
                "convert it to model.safetensors"
            ) from exc
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise GenbaError(f"refusing to load '{path}': it does not hold a dict of tensors; convert it to model.safetensors")
        state_dict.update(part)
    return state_dict


def _load_model(directory: Path, model_type: str, files: list[Path], fmt: str):
    config_class, model_class = _model_classes(model_type)
    try:
        config = config_class.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad checkpoint, reported in one line
        raise GenbaError(f"cannot read the {model_type} config in '{directory}': {_one_line(exc)}") from exc

    kwargs = dict(config=config, output_loading_info=True, **_dtype_kwargs())
    try:
        if fmt == "safetensors":
            model, info = model_class.from_pretrained(
                str(directory), local_files_only=True, use_safetensors=True, **kwargs
            )
        else:
            state_dict = _load_bin_state_dict(files)
            model, info = model_class.from_pretrained(None, state_dict=state_dict, **kwargs)
    except GenbaError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise GenbaError(f"cannot load the {model_type} weights in '{directory}': {_one_line(exc)}") from exc

    missing = [key for key in info.get("missing_keys", []) if not key.endswith(_IGNORABLE_MISSING)]
    if missing:
        shown = ", ".join(sorted(missing)[:3])
        raise GenbaError(
            f"the weights in '{directory}' do not fit a {model_type} model: {len(missing)} tensors missing "
            f"(e.g. {shown}); is config.json from the same checkpoint?"
        )
    model.eval()
    model.requires_grad_(False)
    return model, config


def _load_tokenizer(directory: Path, model_type: str, vocab_size: int):
    from transformers import AutoTokenizer

    if not any((directory / name).is_file() for name in _TOKENIZER_VOCAB_FILES):
        raise GenbaError(
            f"'{directory}' has no tokenizer files (tokenizer.json, vocab.json + merges.txt or spiece.model): "
            f"save the {model_type} tokenizer into the checkpoint directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        hint = " (install the 'sentencepiece' package)" if "sentencepiece" in str(exc).lower() else ""
        raise GenbaError(
            f"cannot load the {model_type} tokenizer from '{directory}'{hint}: {_one_line(exc)}; "
            "the directory needs the tokenizer files saved with the model (e.g. tokenizer.json)"
        ) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise GenbaError(f"the tokenizer in '{directory}' has neither a pad nor an eos token, so texts cannot be batched")
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > vocab_size:
        raise GenbaError(
            f"the tokenizer in '{directory}' has {len(tokenizer)} tokens but the {model_type} text model only "
            f"{vocab_size}: tokenizer and weights come from different checkpoints"
        )
    return tokenizer


def load_hf_encoder(path: str | Path) -> HFImageEncoder:
    """Load a CLIP / SigLIP checkpoint directory (offline) as an HFVisionLanguageEncoder, a DINOv2
    one as an HFImageEncoder."""
    directory = Path(path).expanduser()
    if not directory.exists():
        raise GenbaError(f"checkpoint directory '{directory}' does not exist: pass 'hf:<dir>' with a local Hugging Face model directory")
    if not directory.is_dir():
        raise GenbaError(f"'{directory}' is not a directory: 'hf:<dir>' needs a local Hugging Face checkpoint directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise GenbaError(f"'{directory}' is not a Hugging Face checkpoint directory: no config.json")
    raw_config = _read_json(config_path)
    model_type = raw_config.get("model_type") if isinstance(raw_config, dict) else None
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type not in SUPPORTED_MODEL_TYPES:
        found = f"model_type '{model_type}'" if model_type else "no model_type"
        raise GenbaError(f"'{directory}' holds a checkpoint with {found}; the hf encoder supports: {supported}")

    files, fmt = _weight_files(directory)
    weights_digest = _weights_digest(files)
    model, config = _load_model(directory, model_type, files, fmt)

    if model_type == "dinov2":
        image_size = int(config.image_size)
        embed_dim = visual_dim = int(config.hidden_size)
        tokenizer, text_length, text_settings = None, 0, {}
    else:
        vision, text = config.vision_config, config.text_config
        image_size = int(vision.image_size)
        visual_dim = int(vision.hidden_size)
        if model_type == "clip":
            embed_dim = int(config.projection_dim)
        else:
            embed_dim = int(vision.hidden_size)
            text_dim = int(getattr(text, "projection_size", None) or text.hidden_size)
            if text_dim != embed_dim:
                raise GenbaError(f"'{directory}': SigLIP text embeddings ({text_dim}) and image embeddings ({embed_dim}) differ in size")
        tokenizer = _load_tokenizer(directory, model_type, int(text.vocab_size))
        text_length = int(text.max_position_embeddings)
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < text_length:
            text_length = model_max
        text_settings = {"padding": "max_length" if model_type == "siglip" else "longest", "max_length": text_length}

    processor_config, source = _read_image_processor_config(directory)
    transform = build_image_transform(processor_config, model_type, image_size, where=f"'{directory / source}'" if source else "defaults")
    interpolate = model_type != "dinov2" and transform.output_size not in (None, (image_size, image_size))

    digest = _function_digest(weights_digest, raw_config, transform, directory, text_settings)
    kind = HFImageEncoder if tokenizer is None else HFVisionLanguageEncoder
    return kind(
        directory=directory,
        model_type=model_type,
        model=model,
        tokenizer=tokenizer,
        transform=transform,
        provenance=f"hf:{model_type}:{digest}",
        embed_dim=embed_dim,
        visual_dim=visual_dim,
        text_length=text_length,
        interpolate_pos_encoding=interpolate,
    )


@register_encoder("hf", "a local Hugging Face CLIP / SigLIP / DINOv2 checkpoint ('hf:/path/to/dir'), offline")
def _make_hf(argument: str | None) -> HFImageEncoder:
    if not argument:
        raise GenbaError("the hf encoder needs a checkpoint directory: use 'hf:/path/to/checkpoint'")
    return load_hf_encoder(argument)


@register_backbone("hf", "a local CLIP / SigLIP / DINOv2 checkpoint's vision transformer (hf:<dir>)")
def _hf_backbone(argument: str | None, pretrained: bool = True):
    from genba.backbones.hf_vit import HFVisionBackbone

    if not argument:
        raise GenbaError("the hf backbone needs a checkpoint directory: hf:<dir>")
    return HFVisionBackbone(load_hf_encoder(argument))
