"""Compact on-disk encodings of feature rows: raw float16 (default) or int8 with a per-row scale.

float16: the row's IEEE half bytes, little-endian (2 D bytes; exact for memories kept in float16).
int8:    s = max_d |x_d| / 127,  q_d = round(x_d / s) in [-127, 127],  x_d ~ s q_d  (D bytes + s);
         the relative error per coordinate is at most 1/254 of the row's largest coordinate.
Decoding never unpickles: a blob is only ever read with `numpy.frombuffer` of a fixed dtype.
"""

from __future__ import annotations

import numpy as np

from genba.errors import GenbaError

FORMATS = ("float16", "int8")


def check_format(fmt: str) -> str:
    """Return `fmt` if it is a known feature format, else raise GenbaError."""
    if fmt not in FORMATS:
        raise GenbaError(f"feature format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    return fmt


def encode_rows(x: np.ndarray, fmt: str) -> tuple[list[bytes], list[float | None]]:
    """(N, D) float rows -> N blobs and N scales (None for float16)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise GenbaError(f"features to store must be a finite (N, D) array, got shape {x.shape}")
    if check_format(fmt) == "float16":
        half = x.astype("<f2")  # (N, D)
        return [row.tobytes() for row in half], [None] * len(x)
    scale = np.abs(x).max(axis=1) / 127.0  # (N,)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)  # (N, D)
    return [row.tobytes() for row in q], [float(s) for s in scale]


def decode_rows(blobs: list[bytes], scales: list[float | None], fmt: str, dim: int) -> np.ndarray:
    """N blobs (+ scales) -> (N, D) float32 rows; a blob of the wrong size raises GenbaError."""
    check_format(fmt)
    width = dim * (2 if fmt == "float16" else 1)
    out = np.empty((len(blobs), dim), dtype=np.float32)  # (N, D)
    for i, (blob, scale) in enumerate(zip(blobs, scales)):
        if len(blob) != width:
            raise GenbaError(f"stored feature has {len(blob)} bytes, expected {width} ({fmt}, dim {dim}); the store is damaged")
        if fmt == "float16":
            out[i] = np.frombuffer(blob, dtype="<f2")
        else:
            out[i] = np.frombuffer(blob, dtype=np.int8).astype(np.float32) * np.float32(scale)
    return out


def roundtrip(x: np.ndarray, fmt: str) -> np.ndarray:
    """What a stored (N, D) block reads back as."""
    x = np.asarray(x, dtype=np.float32)
    blobs, scales = encode_rows(x, fmt)
    return decode_rows(blobs, scales, fmt, x.shape[1])
