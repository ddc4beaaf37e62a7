"""The safetensors byte layout, parsed with bounds and built: the layer under genba.artefact.

    8 bytes little-endian header length N | N bytes JSON header | tensor bytes

The header maps each tensor name to {"dtype", "shape", "data_offsets"} and "__metadata__" to
strings. `layout` trusts none of it: the header length is bounded by the data and MAX_HEADER_BYTES,
the JSON by MAX_DEPTH (no duplicate keys, no NaN / Infinity, floats finite), every entry is checked
(known dtype, at most MAX_NDIM non-negative dims, element count x item size = its byte span,
spans contiguous and covering exactly the data) before `read_tensors` allocates anything, so the
largest allocation is the data actually there. Problems raise `Problem` (one line, no file name;
genba.artefact adds the file and the fix).
"""

from __future__ import annotations

import json
import math
from typing import IO

import torch

MAX_HEADER_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_TENSORS = 100_000
MAX_NDIM = 16
MAX_NAME = 1024

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
CODES = {v: k for k, v in DTYPES.items()}


def bytes_of(tensor: torch.Tensor) -> memoryview:
    flat = tensor.reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")



def header_bytes(ordered: list[tuple[str, torch.Tensor]], metadata: dict[str, str] | None) -> bytes:
    """Length prefix + JSON header (padded to 8 bytes) for contiguous CPU tensors in this order."""
    header, offset = ({"__metadata__": metadata} if metadata is not None else {}), 0
    for name, tensor in ordered:
        if tensor.dtype not in CODES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, not storable")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": CODES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


class Problem(Exception):
    """One problem found while reading, turned into an ArtefactError (file + fix) by genba.artefact."""


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise Problem(f"duplicate key {key[:40]!r} in its JSON")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Problem(f"number {text[:40]} in its metadata is out of range")
    return value


def _reject_constant(text: str):
    raise Problem(f"{text} in its metadata is not a finite number")


def _depth(obj) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


def parse_json(raw: bytes | str, what: str, max_int_digits: int | None = None):
    """json.loads with duplicate keys, NaN / Infinity, 1e400 and (with `max_int_digits`) longer
    integers refused, and the nesting depth bounded: one Problem naming `what` otherwise."""
    def bounded_int(text: str) -> int:
        if max_int_digits is not None and len(text.lstrip("-")) > max_int_digits:
            raise Problem(f"number {text[:24]}... in {what} is out of range")
        return int(text)

    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_float=_finite_float,
                           parse_constant=_reject_constant, parse_int=bounded_int)
    except RecursionError:
        raise Problem(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise Problem(f"{what} is not valid JSON ({str(error)[:80]})") from None
    if _depth(value) > MAX_DEPTH:
        raise Problem(f"{what} is nested deeper than {MAX_DEPTH} levels")
    return value


class Source:
    """Random access to the artefact's bytes: a file handle or a bytes object."""

    def __init__(self, data: bytes | None = None, handle: IO[bytes] | None = None, size: int = 0):
        self.data, self.handle, self.size = (memoryview(data) if data is not None else None), handle, size

    def read_into(self, offset: int, out: memoryview) -> None:
        if not len(out):
            return
        if self.data is not None:
            out[:] = self.data[offset:offset + len(out)]
            return
        self.handle.seek(offset)
        got = 0
        while got < len(out):
            n = self.handle.readinto(out[got:])
            if not n:
                raise Problem("is truncated (ends inside a tensor)")
            got += n

    def read(self, offset: int, n: int) -> bytes:
        buffer = bytearray(n)
        self.read_into(offset, memoryview(buffer))
        return bytes(buffer)


def entries_of(header: dict, data_size: int) -> list[tuple[str, torch.dtype, tuple[int, ...], int, int]]:
    if len(header) > MAX_TENSORS:
        raise Problem(f"declares {len(header)} tensors, at most {MAX_TENSORS} allowed")
    entries = []
    for name, entry in header.items():
        if not name or len(name) > MAX_NAME:
            raise Problem("has a tensor with an empty or overlong name")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise Problem(f"tensor entry {name[:60]!r} is malformed")
        dtype, shape, offsets = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None, \
            entry["shape"], entry["data_offsets"]
        if dtype is None:
            raise Problem(f"tensor {name[:60]!r} has an unknown dtype {str(entry['dtype'])[:20]!r}")
        ints = lambda v, n=None: isinstance(v, list) and (n is None or len(v) == n) and all(  # noqa: E731
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**48 for x in v)
        if not ints(shape) or len(shape) > MAX_NDIM or not ints(offsets, 2) or offsets[0] > offsets[1]:
            raise Problem(f"tensor {name[:60]!r} has a bad shape or bad data offsets")
        numel = math.prod(shape)
        if numel * dtype.itemsize != offsets[1] - offsets[0]:
            raise Problem(f"tensor {name[:60]!r}: shape {shape} does not match its {offsets[1] - offsets[0]} bytes")
        entries.append((name, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for name, _, _, begin, end in entries:
        if begin != position:
            raise Problem(f"tensor {name[:60]!r} overlaps another or leaves a gap")
        position = end
    if position != data_size:
        raise Problem(f"tensor data covers {position} bytes but the file holds {data_size}")
    return entries


def layout(source: Source, max_bytes: int) -> tuple[int, dict, list]:
    """(header length, metadata strings, checked tensor entries) of a safetensors byte layout."""
    if source.size > max_bytes:
        raise Problem(f"is {source.size} bytes, more than the {max_bytes} allowed for it")
    if source.size < 8:
        raise Problem(f"is truncated ({source.size} bytes)")
    n = int.from_bytes(source.read(0, 8), "little")
    if n > source.size - 8 or n > MAX_HEADER_BYTES or n < 2:
        raise Problem(f"has a bogus header length {n} (file of {source.size} bytes)")
    header = parse_json(source.read(8, n), "its header")
    if not isinstance(header, dict):
        raise Problem("has a header that is not a JSON object")
    meta_strings = header.pop("__metadata__", None) or {}
    if not isinstance(meta_strings, dict) or not all(isinstance(v, str) for v in meta_strings.values()):
        raise Problem("has malformed safetensors metadata")
    return n, meta_strings, entries_of(header, source.size - 8 - n)


def read_tensors(source: Source, n: int, entries: list) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        tensor = torch.empty(shape, dtype=dtype)
        source.read_into(8 + n + begin, bytes_of(tensor))
        tensors[name] = tensor
    return tensors
