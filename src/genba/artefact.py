"""The one verified reader and writer of every file (and store blob) genba writes and reads back.

An artefact is a safetensors file: 8 bytes little-endian header length N, N bytes of JSON header
(tensor name -> dtype, shape, data offsets; "__metadata__" -> strings), then the tensor bytes.
genba's metadata holds two strings:

    "genba":  canonical JSON {"format": FORMAT_VERSION, "kind": ..., "genba": <version>, "meta": {...}}
    "sha256": sha256("genba-artefact\\n" + len + that JSON + for each tensor in name order
                     "name:dtype:shape;" + its bytes)

so the checksum covers the metadata and the tensors. Reading trusts nothing in the file: the
size is capped before reading, the header length is bounded by the file size and a cap, the
header is parsed here (not by a library) and every tensor entry checked (known dtype, shape of
non-negative ints, offsets contiguous, covering exactly the data, element count x item size =
its byte span) before anything is allocated; the metadata JSON is capped (MAX_META_BYTES), its
nesting depth bounded, NaN / inf / duplicate keys refused; then the checksum, the kind, the
format version (a newer one -> "made by a newer genba"), finite tensors where asked, and the
kind's Schema (genba.metaschema: types, ranges, lengths, a cross-check against tensor shapes).
Any failure is one ArtefactError line "<file>: <problem>; <fix>". Nothing is ever unpickled.

Every kind genba writes is listed in KINDS (the tamper tests enumerate it: a new kind fails
tests/test_tamper.py until it is covered there). Writes are atomic: temp file in the same
folder, fsync, rename, fsync of the folder.

    write_artefact(path, kind="movit-model", meta={"config": {...}}, tensors=model.state_dict())
    art = read_artefact(path, kind="movit-model", schema=MOVIT_SCHEMA)   # art.meta, art.tensors
    blob = encode_artefact(kind="learned-state", meta={...}, tensors=...)  # bytes for the store
    art = decode_artefact(blob, kind="learned-state", name="learned state of memory m")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import torch

from genba import __version__
from genba.errors import GenbaError
from genba.metaschema import Schema

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 2**20
MAX_META_BYTES = 16 * 2**20
MAX_DEPTH = 32
MAX_TENSORS = 100_000
MAX_NDIM = 16
MAX_NAME = 1024
DEFAULT_MAX_BYTES = 64 * 2**30
_DIGEST_TAG = b"genba-artefact\n"


@dataclass(frozen=True)
class Kind:
    what: str  # how a user names it: "training checkpoint"
    fix: str  # what to do when it cannot be used


KINDS: dict[str, Kind] = {
    "cache-entry": Kind("feature cache entry", "it is deleted and recomputed"),
    "train-checkpoint": Kind("training checkpoint", "delete it to start over, or point --out at a new directory"),
    "continual-learner": Kind("continual learner state", "delete that task folder (or rerun without --resume)"),
    "replay-buffer": Kind("replay buffer", "delete it to start over"),
    "concept-bank": Kind("concept bank", "rebuild it (genba cvm train writes a new one)"),
    "cvm-model": Kind("CVM model", "retrain it with `genba cvm train`"),
    "movit-model": Kind("MoViT model", "pass the movit.safetensors written by `genba movit train` (or retrain it)"),
    "sak-model": Kind("SAK model", "retrain it with `genba sak train`"),
    "learned-state": Kind("learned state", "it is discarded and the method trains again"),
    "model": Kind("genba model", "pass a model written by `genba adapt|continual|cvm train|movit train --out`"),
}

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_CODES = {v: k for k, v in _DTYPES.items()}


class ArtefactError(GenbaError):
    """A file or blob that cannot be trusted: "<file>: <problem>; <fix>" on one line."""

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(" ".join(f"{where}: {problem}; {fix}".split()))


@dataclass
class Artefact:
    kind: str
    version: int  # FORMAT_VERSION it was written with (0: a cache entry from before this format)
    meta: dict
    tensors: dict[str, torch.Tensor]
    genba: str = ""  # the genba version that wrote it


# ------------------------------------------------------------------------------------ writing
@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary handle whose contents replace `path` at once when the block ends without error:
    temp file in the same folder, fsync, rename, folder fsync. Readers see the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(folder)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(folder)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    with atomic_writer(path) as out:
        out.write(data)


def canonical_json(obj) -> str:
    """Sorted keys, no spaces, ASCII, finite numbers only (ValueError otherwise)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    flat = tensor.reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _digest(meta_text: str, tensors: dict[str, torch.Tensor]) -> str:
    raw = meta_text.encode()
    digest = hashlib.sha256(_DIGEST_TAG + len(raw).to_bytes(8, "little") + raw)
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(_bytes_of(tensor))
    return digest.hexdigest()


def _legacy_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The tensor-only checksum of cache entries written before this format (genba.cache.tensors_digest)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(_bytes_of(tensor))
    return digest.hexdigest()


def _prepare(kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> tuple[bytes, list[tuple[str, torch.Tensor]]]:
    if kind not in KINDS:
        raise ValueError(f"artefact kind {kind!r} is not registered: add it to genba.artefact.KINDS and tests/test_tamper.py")
    if not isinstance(meta, dict):
        raise ValueError("artefact meta must be a dict")
    prepared = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r}")
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype not in _CODES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, not storable in an artefact")
        prepared[name] = tensor
    text = canonical_json({"format": FORMAT_VERSION, "kind": kind, "genba": __version__, "meta": meta})
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"artefact metadata of {len(text)} bytes exceeds {MAX_META_BYTES}")
    ordered = sorted(prepared.items())
    header, offset = {"__metadata__": {"genba": text, "sha256": _digest(text, prepared)}}, 0
    for name, tensor in ordered:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _CODES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, ordered


def encode_artefact(*, kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    """The artefact as bytes (for blobs kept in the store)."""
    head, ordered = _prepare(kind, meta, tensors)
    return b"".join([head, *(bytes(_bytes_of(t)) for _, t in ordered)])


def write_artefact(path: str | Path, *, kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write the artefact atomically, streaming the tensors (no second copy in memory)."""
    head, ordered = _prepare(kind, meta, tensors)
    with atomic_writer(path) as out:
        out.write(head)
        for _, tensor in ordered:
            out.write(_bytes_of(tensor))


# ------------------------------------------------------------------------------------ reading
class _Problem(Exception):
    """Internal: one problem found while reading, turned into an ArtefactError by the caller."""


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Problem(f"duplicate key {key[:40]!r} in its JSON")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Problem(f"number {text[:40]} in its metadata is out of range")
    return value


def _reject_constant(text: str):
    raise _Problem(f"{text} in its metadata is not a finite number")


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


def _parse_json(raw: bytes | str, what: str):
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_float=_finite_float,
                           parse_constant=_reject_constant)
    except RecursionError:
        raise _Problem(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise _Problem(f"{what} is not valid JSON ({str(error)[:80]})") from None
    if _depth(value) > MAX_DEPTH:
        raise _Problem(f"{what} is nested deeper than {MAX_DEPTH} levels")
    return value


class _Source:
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
                raise _Problem("is truncated (ends inside a tensor)")
            got += n

    def read(self, offset: int, n: int) -> bytes:
        buffer = bytearray(n)
        self.read_into(offset, memoryview(buffer))
        return bytes(buffer)


def _entries(header: dict, data_size: int) -> list[tuple[str, torch.dtype, tuple[int, ...], int, int]]:
    if len(header) > MAX_TENSORS:
        raise _Problem(f"declares {len(header)} tensors, at most {MAX_TENSORS} allowed")
    entries = []
    for name, entry in header.items():
        if not name or len(name) > MAX_NAME:
            raise _Problem("has a tensor with an empty or overlong name")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _Problem(f"tensor entry {name[:60]!r} is malformed")
        dtype, shape, offsets = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None, \
            entry["shape"], entry["data_offsets"]
        if dtype is None:
            raise _Problem(f"tensor {name[:60]!r} has an unknown dtype {str(entry['dtype'])[:20]!r}")
        ints = lambda v, n=None: isinstance(v, list) and (n is None or len(v) == n) and all(  # noqa: E731
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**48 for x in v)
        if not ints(shape) or len(shape) > MAX_NDIM or not ints(offsets, 2) or offsets[0] > offsets[1]:
            raise _Problem(f"tensor {name[:60]!r} has a bad shape or bad data offsets")
        numel = math.prod(shape)
        if numel * dtype.itemsize != offsets[1] - offsets[0]:
            raise _Problem(f"tensor {name[:60]!r}: shape {shape} does not match its {offsets[1] - offsets[0]} bytes")
        entries.append((name, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for name, _, _, begin, end in entries:
        if begin != position:
            raise _Problem(f"tensor {name[:60]!r} overlaps another or leaves a gap")
        position = end
    if position != data_size:
        raise _Problem(f"tensor data covers {position} bytes but the file holds {data_size}")
    return entries


def _decode(source: _Source, kinds: tuple[str, ...], schema: Schema | None, finite: bool, max_bytes: int) -> Artefact:
    if source.size > max_bytes:
        raise _Problem(f"is {source.size} bytes, more than the {max_bytes} allowed for it")
    if source.size < 8:
        raise _Problem(f"is truncated ({source.size} bytes)")
    n = int.from_bytes(source.read(0, 8), "little")
    if n > source.size - 8 or n > MAX_HEADER_BYTES or n < 2:
        raise _Problem(f"has a bogus header length {n} (file of {source.size} bytes)")
    header = _parse_json(source.read(8, n), "its header")
    if not isinstance(header, dict):
        raise _Problem("has a header that is not a JSON object")
    meta_strings = header.pop("__metadata__", None) or {}
    if not isinstance(meta_strings, dict) or not all(isinstance(v, str) for v in meta_strings.values()):
        raise _Problem("has malformed safetensors metadata")
    entries = _entries(header, source.size - 8 - n)

    legacy = "genba" not in meta_strings and "cache-entry" in kinds and set(meta_strings) == {"key", "sha256"}
    if legacy:
        body = {"format": 0, "kind": "cache-entry", "genba": "", "meta": {"key": meta_strings["key"]}}
    elif "genba" not in meta_strings or "sha256" not in meta_strings:
        raise _Problem("is not a genba artefact (no genba metadata: another program's file, or one from an older genba)")
    else:
        if len(meta_strings["genba"]) > MAX_META_BYTES:
            raise _Problem(f"has metadata over {MAX_META_BYTES} bytes")
        body = _parse_json(meta_strings["genba"], "its metadata")
        if not isinstance(body, dict) or set(body) != {"format", "kind", "genba", "meta"}:
            raise _Problem("has malformed genba metadata")
        version = body["format"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _Problem(f"has a bad format version {str(version)[:20]!r}")
        if version > FORMAT_VERSION:
            raise _Problem(f"was made by a newer genba (format {version}, this genba reads {FORMAT_VERSION}); upgrade genba")

    tensors = {}
    for name, dtype, shape, begin, end in entries:
        tensor = torch.empty(shape, dtype=dtype)
        source.read_into(8 + n + begin, _bytes_of(tensor))
        tensors[name] = tensor
    expected = _legacy_digest(tensors) if legacy else _digest(meta_strings["genba"], tensors)
    if meta_strings["sha256"] != expected:
        raise _Problem("fails its checksum (damaged or edited)")
    if legacy:
        body["meta"]["key"] = _parse_json(meta_strings["key"], "its key")

    kind = body["kind"]
    if kind not in kinds:
        what = KINDS[kind].what if isinstance(kind, str) and kind in KINDS else f"{str(kind)[:40]!r} artefact"
        raise _Problem(f"is a {what}, not a {KINDS[kinds[0]].what}")
    for name, tensor in tensors.items():
        if tensor.dtype == torch.bool and tensor.numel() and int(tensor.view(torch.uint8).max()) > 1:
            raise _Problem(f"tensor {name[:60]!r} holds bytes that are not booleans")
        if finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _Problem(f"tensor {name[:60]!r} holds NaN or infinite values")
    if not isinstance(body["meta"], dict):
        raise _Problem("has metadata that is not a JSON object")
    if schema is not None:
        found = schema.validate(body["meta"], tensors)
        if found:
            raise _Problem(f"has invalid metadata ({found})")
    return Artefact(kind, body["format"], body["meta"], tensors, body["genba"])


def _kinds(kind: str | tuple[str, ...]) -> tuple[str, ...]:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"artefact kind(s) {unknown} not registered in genba.artefact.KINDS")
    return kinds


def read_artefact(path: str | Path, *, kind: str | tuple[str, ...], schema: Schema | None = None,
                  finite: bool = True, max_bytes: int = DEFAULT_MAX_BYTES, fix: str | None = None) -> Artefact:
    """Read and verify the artefact at `path` (see the module doc); ArtefactError if it cannot be trusted."""
    kinds = _kinds(kind)
    fix = fix or KINDS[kinds[0]].fix
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ArtefactError(str(path), f"no {KINDS[kinds[0]].what} there", fix) from None
    except OSError as error:
        raise ArtefactError(str(path), f"cannot be opened ({error.strerror})", fix) from None
    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            return _decode(_Source(handle=handle, size=size), kinds, schema, finite, max_bytes)
    except _Problem as problem:
        raise ArtefactError(str(path), str(problem), fix) from None
    except (OSError, MemoryError) as error:
        raise ArtefactError(str(path), f"cannot be read ({type(error).__name__})", fix) from None


def decode_artefact(data: bytes, *, kind: str | tuple[str, ...], schema: Schema | None = None, finite: bool = True,
                    max_bytes: int = DEFAULT_MAX_BYTES, name: str = "<blob>", fix: str | None = None) -> Artefact:
    """read_artefact for bytes (a blob from the store); `name` stands for the file in errors."""
    kinds = _kinds(kind)
    fix = fix or KINDS[kinds[0]].fix
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArtefactError(name, f"is not bytes but {type(data).__name__}", fix)
    try:
        return _decode(_Source(data=bytes(data), size=len(data)), kinds, schema, finite, max_bytes)
    except _Problem as problem:
        raise ArtefactError(name, str(problem), fix) from None
    except MemoryError:
        raise ArtefactError(name, "cannot be read (out of memory)", fix) from None
