"""The teacher registry: each teacher maps images to a spatial map and a pooled vector.

    teacher = load_teacher("efficientnet-lite0")      # or conse-dense, ppocr-det, hf:<dir>
    dense, pooled = teacher(images_uint8)             # (B, D, h, w), (B, D)
    targets = teacher_targets(teacher, scenes, cache)  # computed once, kept in the feature cache

A teacher declares `name`, `dim`, `input_size` (images are resized to it, bilinear), `licence`
and `provenance` (weights hash + options + licence: the cache key). `teacher_targets` pools the
dense map to at most `grid` x `grid` cells (adaptive average) and stores float16 tensors under
the key {teacher provenance, scene fingerprint, grid} with genba.cache.TensorCache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genba.cache import TensorCache
from genba.errors import GenbaError
from genba.registry import Registry

CACHE_KIND = "sak-teacher"
TEACHERS = Registry("teacher")


class Teacher:
    """Base class; subclasses implement `features(pixels_float01)`."""

    name = "teacher"
    dim = 0
    input_size = 128
    licence = "unknown"
    role = ""

    @property
    def provenance(self) -> str:
        raise NotImplementedError

    def parameter_count(self) -> int:
        raise NotImplementedError

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, input_size, input_size) floats in [0, 1] -> (dense (B, D, h, w), pooled (B, D))."""
        raise NotImplementedError

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise GenbaError(f"teacher {self.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if pixels.shape[-1] != self.input_size or pixels.shape[-2] != self.input_size:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        dense, pooled = self.features(pixels)
        return dense.float().clone(), pooled.float().clone()


def register_teacher(name: str, summary: str):
    """Decorator: register `factory(argument or None) -> Teacher` under `name`."""
    return TEACHERS.register(name, summary, set_name=False)


def teacher_kinds() -> dict[str, str]:
    _load_builtin()
    return {e.name: e.summary for e in TEACHERS.entries()}


def load_teacher(spec: str) -> Teacher:
    """'efficientnet-lite0', 'conse-dense', 'ppocr-det' or 'hf:<dir>' -> a Teacher."""
    _load_builtin()
    kind, sep, argument = spec.partition(":")
    if kind not in TEACHERS:
        raise GenbaError(f"unknown teacher '{spec}': use one of {', '.join(sorted(TEACHERS.names()))} "
                         "(hf:<dir> is a local DINOv2 / CLIP / SAM checkpoint directory)")
    return TEACHERS.get(kind)(argument if sep else None)


def _load_builtin() -> None:
    import genba.sak.teacher_models  # noqa: F401  (registers the built-in teachers)


def teacher_targets(teacher: Teacher, images: torch.Tensor, fingerprint: str, cache: TensorCache | None,
                    grid: int = 8, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{'dense': (N, D, g, g) float16 with g = min(h, grid), 'pooled': (N, D) float16}, cached."""
    key = {"teacher": teacher.provenance, "images": fingerprint, "grid": str(grid), "n": str(len(images))}

    def compute() -> dict[str, torch.Tensor]:
        dense_rows, pooled_rows = [], []
        for start in range(0, len(images), batch_size):
            dense, pooled = teacher(images[start:start + batch_size])
            if dense.shape[-1] > grid or dense.shape[-2] > grid:
                dense = F.adaptive_avg_pool2d(dense, (min(grid, dense.shape[-2]), min(grid, dense.shape[-1])))
            dense_rows.append(dense.half())
            pooled_rows.append(pooled.half())
        return {"dense": torch.cat(dense_rows), "pooled": torch.cat(pooled_rows)}

    if cache is None:
        return compute()
    return cache.get_or_compute(CACHE_KIND, key, compute)
