"""Image preprocessing of Hugging Face vision checkpoints in PIL + numpy (no torchvision).

Follows preprocessor_config.json (size / crop_size / resample / rescale / image_mean /
image_std) the way the transformers PIL image processors do: resize (shortest edge, or to an
exact height x width), centre-crop, rescale to [0, 1], normalize (x - mean) / std per channel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genba.errors import GenbaError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULT_MEAN_STD = {
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
}



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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenbaError(f"cannot read '{path}': {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
