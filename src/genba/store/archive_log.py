"""The prediction log inside a memory export (`genba.store.archive`): written and checked here.

manifest.json carries "predictions": a list of rows (time, version, class, confidence, margin,
entropy, topk, write_label, source_id, latency_ms, label, label_source, labelled, and a base64
JPEG "thumbnail" only for a memory created with log_images); tensors.safetensors carries their
stored features, log_features (M, W) uint8 and log_scales (M,) float32. An export without the
key (older genba) imports with an empty log. Every field is checked before anything is stored.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import zipfile

import numpy as np
from safetensors.numpy import load as load_tensors

from genba.errors import GenbaError
from genba.store import predlog
from genba.store.spec import MemorySpec

MAX_THUMBNAIL = 64 << 10


def export_log(store, memory_id: str, spec: MemorySpec, tensors: dict) -> list[dict]:
    """The log's rows for the manifest; adds log_features / log_scales to `tensors`."""
    items, blobs, scales, thumbs = predlog.export_rows(store._conn(), memory_id)
    width = spec.dim * (2 if spec.feature_format == "float16" else 1)
    feats = np.zeros((len(items), width), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        if blob is not None and len(blob) == width:
            feats[i] = np.frombuffer(blob, dtype=np.uint8)
    tensors["log_features"] = feats
    tensors["log_scales"] = np.array([np.nan if s is None else s for s in scales], dtype=np.float32)
    for item, thumb in zip(items, thumbs):
        if thumb is not None:
            item["thumbnail"] = base64.b64encode(thumb).decode()
    return items


def _num(v, lo: float, hi: float) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _cls(v, C: int, optional: bool = False) -> bool:
    return (optional and v is None) or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < C)


def _text(v, optional: bool = False) -> bool:
    return (optional and v is None) or (isinstance(v, str) and 0 < len(v) <= 256)


def read_log(data: bytes, spec: MemorySpec, *, max_bytes: int = 512 << 20) -> list[tuple]:
    """Checked log rows of an export (read_archive has already accepted the archive), oldest first."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        items = manifest.get("predictions", [])
        if not items:
            return []
        tensors = load_tensors(archive.read("tensors.safetensors"))
    C, M = spec.num_classes, len(items) if isinstance(items, list) else -1
    width = spec.dim * (2 if spec.feature_format == "float16" else 1)
    feats, scales = tensors.get("log_features"), tensors.get("log_scales")
    if (M < 0 or feats is None or feats.shape != (M, width) or feats.dtype != np.uint8 or scales is None
            or scales.shape != (M,) or scales.dtype != np.float32):
        raise GenbaError(f"memory export: 'predictions' must be a list with log_features uint8 ({M}, {width}) and log_scales")
    rows = []
    for i, e in enumerate(items):
        ok = (isinstance(e, dict) and _num(e.get("time"), 0, 1e11) and _num(e.get("version"), 0, 2**62)
              and _cls(e.get("class"), C) and _num(e.get("confidence"), 0, 1) and _num(e.get("margin"), 0, 1)
              and _num(e.get("entropy"), 0, 1.0001) and _cls(e.get("write_label"), C, True) and _text(e.get("source_id"))
              and _num(e.get("latency_ms"), 0, 1e9) and _cls(e.get("label"), C, True)
              and _text(e.get("label_source"), True) and (e.get("labelled") is None or _num(e["labelled"], 0, 1e11))
              and isinstance(e.get("topk"), list) and len(e["topk"]) <= predlog.TOP_K
              and all(isinstance(t, list) and len(t) == 2 and _cls(t[0], C) and _num(t[1], 0, 1) for t in e["topk"]))
        if not ok:
            raise GenbaError(f"memory export: prediction {i} is malformed (time, class and labels in range, "
                             "confidence/margin/entropy in [0, 1], top-k pairs, source id)")
        thumb = e.get("thumbnail")
        if thumb is not None:
            try:
                thumb = base64.b64decode(thumb, validate=True) if isinstance(thumb, str) and len(thumb) < 2 * MAX_THUMBNAIL else None
            except (binascii.Error, ValueError):
                thumb = None
            if thumb is None or not thumb.startswith(b"\xff\xd8"):
                raise GenbaError(f"memory export: prediction {i} has a thumbnail that is not a small base64 JPEG")
        if not spec.log_images:
            thumb = None  # images only where the memory opted in
        scale = float(scales[i])
        rows.append((*(e.get(k) for k in predlog.EXPORTED), feats[i].tobytes(),
                     scale if spec.feature_format == "int8" and math.isfinite(scale) else None, thumb))
    return rows


def store_log(store, memory_id: str, rows: list[tuple]) -> None:
    """Insert an imported memory's log rows, then keep the newest log_size of them."""
    if not rows:
        return
    with store.transaction() as conn:
        predlog.import_rows(conn, memory_id, rows)
        predlog.trim(conn, memory_id, store.spec(memory_id).log_size)
