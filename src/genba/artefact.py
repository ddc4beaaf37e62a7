"""The one verified reader and writer of every file (and store blob) genba writes and reads back.

An artefact is a safetensors file: 8 bytes little-endian header length N, N bytes of JSON header
(tensor name -> dtype, shape, data offsets; "__metadata__" -> strings), then the tensor bytes.
genba's metadata holds two strings:

    "genba":  canonical JSON {"format": FORMAT_VERSION, "kind": ..., "genba": <version>, "meta": {...}}
    "sha256": sha256("genba-artefact\\n" + len + that JSON + for each tensor in name order
                     "name:dtype:shape;" + its bytes)

so the checksum covers the metadata and the tensors. Reading trusts nothing in the file: the
size is capped before reading, and genba.tensorfile parses the layout itself (not a library):
header length bounded by the file size and a cap, every tensor entry checked (known dtype, shape
of non-negative ints, offsets contiguous, covering exactly the data, element count x item size =
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
from genba.tensorfile import CODES, MAX_NAME, Problem, Source, bytes_of, header_bytes, layout, parse_json, read_tensors

FORMAT_VERSION = 1
MAX_META_BYTES = 16 * 2**20
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



def _digest(meta_text: str, tensors: dict[str, torch.Tensor]) -> str:
    raw = meta_text.encode()
    digest = hashlib.sha256(_DIGEST_TAG + len(raw).to_bytes(8, "little") + raw)
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(bytes_of(tensor))
    return digest.hexdigest()


def _legacy_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The tensor-only checksum of cache entries written before this format (genba.cache.tensors_digest)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(bytes_of(tensor))
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
        if tensor.dtype not in CODES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, not storable in an artefact")
        prepared[name] = tensor
    text = canonical_json({"format": FORMAT_VERSION, "kind": kind, "genba": __version__, "meta": meta})
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"artefact metadata of {len(text)} bytes exceeds {MAX_META_BYTES}")
    ordered = sorted(prepared.items(), key=lambda item: item[0])
    return header_bytes(ordered, {"genba": text, "sha256": _digest(text, prepared)}), ordered


def encode_artefact(*, kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    """The artefact as bytes (for blobs kept in the store)."""
    head, ordered = _prepare(kind, meta, tensors)
    return b"".join([head, *(bytes(bytes_of(t)) for _, t in ordered)])


def write_artefact(path: str | Path, *, kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write the artefact atomically, streaming the tensors (no second copy in memory)."""
    head, ordered = _prepare(kind, meta, tensors)
    with atomic_writer(path) as out:
        out.write(head)
        for _, tensor in ordered:
            out.write(bytes_of(tensor))


# ------------------------------------------------------------------------------------ reading

def _decode(source: Source, kinds: tuple[str, ...], schema: Schema | None, finite: bool, max_bytes: int) -> Artefact:
    n, meta_strings, entries = layout(source, max_bytes)

    legacy = "genba" not in meta_strings and "cache-entry" in kinds and set(meta_strings) == {"key", "sha256"}
    if legacy:
        body = {"format": 0, "kind": "cache-entry", "genba": "", "meta": {"key": meta_strings["key"]}}
    elif "genba" not in meta_strings or "sha256" not in meta_strings:
        raise Problem("is not a genba artefact (no genba metadata: another program's file, or one from an older genba)")
    else:
        if len(meta_strings["genba"]) > MAX_META_BYTES:
            raise Problem(f"has metadata over {MAX_META_BYTES} bytes")
        body = parse_json(meta_strings["genba"], "its metadata")
        if not isinstance(body, dict) or set(body) != {"format", "kind", "genba", "meta"}:
            raise Problem("has malformed genba metadata")
        version = body["format"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise Problem(f"has a bad format version {str(version)[:20]!r}")
        if version > FORMAT_VERSION:
            raise Problem(f"was made by a newer genba (format {version}, this genba reads {FORMAT_VERSION}); upgrade genba")

    tensors = read_tensors(source, n, entries)
    expected = _legacy_digest(tensors) if legacy else _digest(meta_strings["genba"], tensors)
    if meta_strings["sha256"] != expected:
        raise Problem("fails its checksum (damaged or edited)")
    if legacy:
        body["meta"]["key"] = parse_json(meta_strings["key"], "its key")

    kind = body["kind"]
    if kind not in kinds:
        what = KINDS[kind].what if isinstance(kind, str) and kind in KINDS else f"{str(kind)[:40]!r} artefact"
        raise Problem(f"is a {what}, not a {KINDS[kinds[0]].what}")
    for name, tensor in tensors.items():
        if tensor.dtype == torch.bool and tensor.numel() and int(tensor.view(torch.uint8).max()) > 1:
            raise Problem(f"tensor {name[:60]!r} holds bytes that are not booleans")
        if finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise Problem(f"tensor {name[:60]!r} holds NaN or infinite values")
    if not isinstance(body["meta"], dict):
        raise Problem("has metadata that is not a JSON object")
    if schema is not None:
        found = schema.validate(body["meta"], tensors)
        if found:
            raise Problem(f"has invalid metadata ({found})")
    return Artefact(kind, body["format"], body["meta"], tensors, body["genba"])


def encode_plain(tensors: dict[str, torch.Tensor]) -> bytes:
    """Plain safetensors bytes (no genba metadata, no checksum) for formats that carry their own
    checks, e.g. the store's memory export (a zip whose members have CRCs and a validated manifest)."""
    ordered = sorted(((name, t.detach().cpu().contiguous()) for name, t in tensors.items()), key=lambda item: item[0])
    return b"".join([header_bytes(ordered, None), *(bytes(bytes_of(t)) for _, t in ordered)])


def decode_plain(data: bytes, *, name: str, fix: str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """The tensors of any safetensors bytes (genba's or another writer's), read with the same bounds
    as an artefact (header length, entries, offsets) but without a genba checksum or kind: the
    caller validates the content. ArtefactError "<name>: <problem>; <fix>" otherwise."""
    try:
        source = Source(data=bytes(data), size=len(data))
        n, _, entries = layout(source, max_bytes)
        return read_tensors(source, n, entries)
    except Problem as problem:
        raise ArtefactError(name, str(problem), fix) from None


def module_problem(build, tensors: dict[str, torch.Tensor]) -> str | None:
    """None when the module `build()` makes has exactly the state-dict names and shapes of
    `tensors`, else the problem. The module is built on torch's meta device, so a configuration
    read from a file (a dim of 10**6) allocates nothing before it is known to fit the file's
    tensors, whose sizes the file itself bounds."""
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except GenbaError as error:
        return str(error).splitlines()[0][:200]
    except (ValueError, TypeError, RuntimeError, KeyError, ZeroDivisionError) as error:
        return f"its description cannot be built ({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})"
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        return f"its tensors do not match its description (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, value in expected.items():
        if tuple(value.shape) != tuple(tensors[name].shape):
            return f"tensor {name[:60]!r} has shape {tuple(tensors[name].shape)}, its description says {tuple(value.shape)}"
    return None


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
            return _decode(Source(handle=handle, size=size), kinds, schema, finite, max_bytes)
    except Problem as problem:
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
        return _decode(Source(data=bytes(data), size=len(data)), kinds, schema, finite, max_bytes)
    except Problem as problem:
        raise ArtefactError(name, str(problem), fix) from None
    except MemoryError:
        raise ArtefactError(name, "cannot be read (out of memory)", fix) from None
