"""Hugging Face checkpoints from a local directory: `load_encoder("hf:/path/to/checkpoint")`.

Supported `model_type`s (from the directory's config.json):
    clip    CLIPModel + its tokenizer. Joint space: the projected, normalized image/text embeds.
            Visual features: the un-projected pooled vision output (post-layernorm CLS), dim
            vision_config.hidden_size.
    siglip  SiglipModel + its tokenizer (text padded to max_length, no attention mask, as SigLIP
            was trained). Joint space: the normalized pooled (attention-pool head) embeds. Visual
            features: the mean of the final patch tokens before the pooling head.
    dinov2  Dinov2Model, vision only (`has_text` is False). Joint embedding: the normalized CLS
            (pooler) feature; visual features: the same CLS feature, un-normalized.

Everything is offline: transformers is called with local_files_only=True and nothing is
downloaded. Weights load from model.safetensors (preferred) or, failing that, from
pytorch_model.bin through torch.load(weights_only=True), which refuses pickled objects.

Images are preprocessed here with PIL + numpy (no torchvision, no "fast" processors), following
preprocessor_config.json (size / crop_size / resample / rescale / image_mean / image_std) the way
the transformers PIL image processors do, so features match what transformers would compute.

`provenance` is "hf:<model_type>:<sha256>", where the sha256 covers the weight files' bytes plus
everything else that changes the computed function: the model config, the resolved image
preprocessing and the tokenizer files.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genba.encoders import register_encoder
from genba.encoders.base import Encoder, file_sha256, l2_normalize
from genba.errors import GenbaError

SUPPORTED_MODEL_TYPES = ("clip", "siglip", "dinov2")

# Bumped whenever this module changes how features are computed from the same checkpoint.
_SCHEME = "genba-hf-v1"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULT_MEAN_STD = {
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
}

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

# (resolved path, size, mtime_ns) -> sha256 hex of the file's bytes.
_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


def cached_file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoized per (path, size, mtime) for this process."""
    resolved = path.resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    digest = _DIGEST_CACHE.get(key)
    if digest is None:
        digest = file_sha256(resolved)
        _DIGEST_CACHE[key] = digest
    return digest


# ----------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class ImageTransform:
    """RGB -> resize -> center crop -> rescale -> normalize, as transformers' PIL processors do.

    resize_mode: "shortest" (shortest side to `resize[0]`, aspect kept), "exact" (to
    `resize` = (height, width)) or "none". `crop` is (height, width) or None.
    """

    resize_mode: str
    resize: tuple[int, int]
    crop: tuple[int, int] | None
    resample: int
    rescale_factor: float
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(H, W) of every output, or None when it depends on the input image."""
        if self.crop is not None:
            return self.crop
        if self.resize_mode == "exact":
            return self.resize
        return None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = _to_rgb(image)
        if self.resize_mode == "shortest":
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.resize[0], int(self.resize[0] * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            image = image.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        elif self.resize_mode == "exact":
            height, width = self.resize
            image = image.resize((width, height), resample=Image.Resampling(self.resample))
        array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
        if self.crop is not None:
            array = _center_crop(array, self.crop)
        pixels = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.mean is not None and self.std is not None:
            pixels = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (3, H, W)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of `image`; transparent pixels are composited over white (as transformers does)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _center_crop(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Center crop an (H, W, C) array to `size`, zero-padding first if it is smaller."""
    crop_h, crop_w = size
    height, width = array.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    padded = np.zeros((new_h, new_w) + array.shape[2:], dtype=array.dtype)
    top_pad, left_pad = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = array
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    return padded[top : top + crop_h, left : left + crop_w]


def _parse_size(value: Any, default_square: bool, where: str) -> tuple[str, tuple[int, int]]:
    """A transformers `size` / `crop_size` value -> ("shortest" | "exact", sizes)."""
    if isinstance(value, bool):
        raise GenbaError(f"unsupported image size {value!r} in {where}")
    if isinstance(value, (int, float)):
        return ("exact", (int(value), int(value))) if default_square else ("shortest", (int(value), int(value)))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return "exact", (int(value[0]), int(value[1]))
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _parse_size(value[0], default_square, where)
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return "exact", (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            edge = int(value["shortest_edge"])
            return "shortest", (edge, edge)
    raise GenbaError(f"unsupported image size {value!r} in {where}: expected an int, {{'shortest_edge': n}} or {{'height': h, 'width': w}}")


def _read_image_processor_config(directory: Path) -> tuple[dict | None, str]:
    """The image processor settings saved with the checkpoint, if any, and the file they came from."""
    path = directory / "preprocessor_config.json"
    if path.is_file():
        return _read_json(path), path.name
    path = directory / "processor_config.json"  # transformers >= 5 saves processors here
    if path.is_file():
        data = _read_json(path)
        nested = data.get("image_processor") if isinstance(data, dict) else None
        if isinstance(nested, dict):
            return nested, path.name
    return None, ""


def build_image_transform(config: dict | None, model_type: str, image_size: int, where: str = "preprocessor_config.json") -> ImageTransform:
    """The preprocessing for `model_type` from an image processor config (None: the defaults)."""
    default_mean, default_std = _DEFAULT_MEAN_STD[model_type]
    square_by_default = model_type == "siglip"  # SigLIP resizes to height x width, no crop
    if config is None:
        if square_by_default:
            return ImageTransform("exact", (image_size, image_size), None, 3, 1 / 255, default_mean, default_std)
        return ImageTransform("shortest", (image_size, image_size), (image_size, image_size), 3, 1 / 255, default_mean, default_std)

    resize_mode, resize = "none", (0, 0)
    if config.get("do_resize", True) and config.get("size") is not None:
        resize_mode, resize = _parse_size(config["size"], square_by_default, where)

    crop = None
    crop_value = config.get("crop_size")
    if config.get("do_center_crop", crop_value is not None) and crop_value is not None:
        _, crop = _parse_size(crop_value, True, where)
    if crop is None and resize_mode == "shortest":
        crop = resize  # keep batches rectangular: square crop of the resized shortest side
    if crop is None and resize_mode == "none":
        crop = (image_size, image_size)

    resample = int(config.get("resample", 3))
    if resample not in {int(r) for r in Image.Resampling}:
        raise GenbaError(f"unsupported resample {resample} in {where}: expected a PIL resampling code 0-5")
    rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
    mean = std = None
    if config.get("do_normalize", True):
        mean = _triple(config.get("image_mean", default_mean), "image_mean", where)
        std = _triple(config.get("image_std", default_std), "image_std", where)
    return ImageTransform(resize_mode, resize, crop, resample, rescale, mean, std)


def _triple(value: Any, name: str, where: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise GenbaError(f"{name} in {where} must be 3 numbers (one per RGB channel), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


# ----------------------------------------------------------------------------- the encoder


class HFEncoder(Encoder):
    """A CLIP, SigLIP or DINOv2 checkpoint loaded from a local Hugging Face directory."""

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
        self.has_text = tokenizer is not None
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
        pixels = pixels.to(torch.float32)
        with torch.inference_mode():
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
            joint = l2_normalize(joint.float())
            visual = visual.float()
        # Clone outside inference mode so callers get ordinary tensors (usable with autograd).
        return joint.clone(), visual.clone()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            raise GenbaError(
                f"{self.name} has no text tower ({self.model_type} is vision-only), so it cannot encode text; "
                "use a CLIP or SigLIP checkpoint directory for zero-shot"
            )
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
        with torch.inference_mode():
            if self.model_type == "clip":
                outputs = self._model.text_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
                embeds = self._model.text_projection(outputs.pooler_output)
            else:  # siglip: trained without a text attention mask; pooled from the last position
                embeds = self._model.text_model(input_ids=batch["input_ids"]).pooler_output
            embeds = l2_normalize(embeds.float())
        return embeds.clone()


# ----------------------------------------------------------------------------- loading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenbaError(f"cannot read '{path}': {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
        return cached_file_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{cached_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _function_digest(weights: str, config: dict, transform: ImageTransform, directory: Path, text: dict) -> str:
    """sha256 over everything that determines the features: weights, config, preprocessing, tokenizer."""
    config = {k: v for k, v in config.items() if k not in ("transformers_version", "_name_or_path")}
    tokenizer_files = {}
    if text:
        for name in _TOKENIZER_FILES:
            if (directory / name).is_file():
                tokenizer_files[name] = cached_file_sha256(directory / name)
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


def load_hf_encoder(path: str | Path) -> HFEncoder:
    """Load a CLIP / SigLIP / DINOv2 checkpoint directory (offline) as an `Encoder`."""
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
    return HFEncoder(
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
def _make_hf(argument: str | None) -> Encoder:
    if not argument:
        raise GenbaError("the hf encoder needs a checkpoint directory: use 'hf:/path/to/checkpoint'")
    return load_hf_encoder(argument)
