"""Export and import one memory as a zip of JSON + safetensors: no pickle, nothing executable.

    memory.zip
      manifest.json         {"format": "genba-memory", "version": 1, "spec": {...}, "state": {...},
                             "entries": [{"bank", "class", "slot", "source_id", "entropy", "created"}],
                             "predictions": [the prediction log, oldest first; optional]}
      tensors.safetensors   text (C, D) float32, features (N, W) uint8 (the stored blobs, W = 2D for
                            float16, D for int8), scales (N,) float32 (NaN: none), payloads (N, P)
                            float32 with has_payload (N,) uint8; the prediction log's features
                            log_features (M, W) uint8, log_scales (M,) float32 (`archive_log`)
Entries keep their write order, so the imported memory predicts exactly as the exported one.
Imports are checked before anything is stored: archive member sizes (a zip bomb is refused
before it is inflated), JSON types, tensor shapes and dtypes, class ranges.
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import torch

from genba.artefact import ArtefactError, decode_plain, encode_plain
from genba.errors import GenbaError
from genba.store import archive_log
from genba.store.db import Store
from genba.store.spec import MemorySpec

FORMAT, VERSION = "genba-memory", 1
MEMBERS = ("manifest.json", "tensors.safetensors")


def export_memory(store: Store, memory_id: str) -> bytes:
    """The memory (spec, text classifier, method state, entries) as zip bytes; tokens and log excluded."""
    version, spec, text, state, _ = store.load(memory_id)
    raw = store.raw_entries(memory_id)  # (bank, class, slot, source_id, entropy, created, scale, feature, payload)
    width = spec.dim * (2 if spec.feature_format == "float16" else 1)
    P = max((len(r[8]) // 4 for r in raw if r[8] is not None), default=0)
    payloads = np.zeros((len(raw), P), dtype=np.float32)
    for i, r in enumerate(raw):
        if r[8] is not None:
            payloads[i] = np.frombuffer(r[8], dtype="<f4")
    tensors = {
        "text": text,
        "features": np.frombuffer(b"".join(r[7] for r in raw), dtype=np.uint8).reshape(len(raw), width),
        "scales": np.array([np.nan if r[6] is None else r[6] for r in raw], dtype=np.float32),
        "payloads": payloads,
        "has_payload": np.array([r[8] is not None for r in raw], dtype=np.uint8),
    }
    manifest = {"format": FORMAT, "version": VERSION, "spec": json.loads(spec.to_json()), "state": state,
                "entries": [{"bank": r[0], "class": r[1], "slot": r[2], "source_id": r[3], "entropy": r[4], "created": r[5]}
                            for r in raw]}
    manifest["predictions"] = archive_log.export_log(store, memory_id, spec, tensors)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MEMBERS[0], json.dumps(manifest))
        archive.writestr(MEMBERS[1], encode_plain({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}))
    return buffer.getvalue()


def read_archive(data: bytes, *, max_bytes: int = 512 << 20) -> tuple[MemorySpec, np.ndarray, dict, list[tuple]]:
    """Validate an export -> (spec, text (C, D), state, raw entry rows); GenbaError on anything odd."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in archive.infolist()}
        if sorted(infos) != sorted(MEMBERS) or len(archive.infolist()) != len(MEMBERS):
            raise GenbaError(f"a memory export holds exactly {', '.join(MEMBERS)}; got {', '.join(sorted(infos)) or 'nothing'}")
        for info in infos.values():
            if info.flag_bits & 0x1:
                raise GenbaError(f"memory export member {info.filename} is encrypted; export it again without a password")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise GenbaError(f"memory export member {info.filename} uses compression method {info.compress_type}; "
                                 "only stored and deflated members are read (genba's own exports are deflated)")
        if sum(i.file_size for i in infos.values()) > max_bytes:
            raise GenbaError(f"memory export inflates to more than {max_bytes >> 20} MB; refused")
        manifest = _parse_manifest(archive.read(MEMBERS[0]))
        tensors = {k: v.numpy() for k, v in decode_plain(archive.read(MEMBERS[1]), name=f"memory export {MEMBERS[1]}",
                                                         fix="export the memory again", max_bytes=max_bytes).items()}
    except GenbaError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, ArtefactError,
            RuntimeError, NotImplementedError, KeyError) as error:  # zipfile raises all of these on hostile archives
        raise GenbaError(f"not a readable genba memory export ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise GenbaError(f"not a {FORMAT} export of version {VERSION}")
    spec = MemorySpec.from_dict(manifest.get("spec"))
    state, entries = manifest.get("state", {}), manifest.get("entries")
    if not isinstance(state, dict) or not isinstance(entries, list):
        raise GenbaError("memory export: 'state' must be an object and 'entries' a list")
    _check_state(state, spec.num_classes)
    N, C, D = len(entries), spec.num_classes, spec.dim
    width = D * (2 if spec.feature_format == "float16" else 1)
    expected = {"text": ((C, D), np.float32), "features": ((N, width), np.uint8), "scales": ((N,), np.float32),
                "has_payload": ((N,), np.uint8)}
    for name, (shape, dtype) in expected.items():
        t = tensors.get(name)
        if t is None or t.shape != shape or t.dtype != dtype:
            raise GenbaError(f"memory export: tensor {name!r} must be {np.dtype(dtype).name} {shape}")
    payloads = tensors.get("payloads")
    if payloads is None or payloads.dtype != np.float32 or payloads.ndim != 2 or payloads.shape[0] != N:
        raise GenbaError("memory export: tensor 'payloads' must be float32 (N, P)")
    if not np.isfinite(tensors["text"]).all() or not np.isfinite(payloads).all():
        raise GenbaError("memory export: text classifier and payloads must be finite")
    rows = []
    for i, e in enumerate(entries):
        rows.append(_entry_row(i, e, spec, tensors, payloads))
    slots: dict[tuple, list[int]] = {}
    for r in rows:
        if r[2] is not None:
            slots.setdefault((r[0], r[1]), []).append(r[2])
    for (bank, cls), used in slots.items():  # the store's invariant (ops.check): each queue fills slots 0..n-1
        if sorted(used) != list(range(len(used))):
            raise GenbaError(f"memory export: bank {bank[:32]!r} class {cls} has slots {sorted(used)[:6]}, not 0..{len(used) - 1}")
    return spec, tensors["text"], state, rows


MAX_SLOT = 1 << 20
"""Largest slot index an entry may name (a queue never has this many slots)."""


MAX_INT_DIGITS = 20
"""Longest integer literal a manifest may hold (any larger is out of every range here)."""


def _parse_manifest(raw: bytes):
    """The manifest through the artefact reader's strict JSON (genba.tensorfile.parse_json): every
    number bounded (huge integers, 1e400, NaN, Infinity), duplicate keys and deep nesting refused,
    each a GenbaError (a 4xx in the service)."""
    from genba.tensorfile import Problem, parse_json

    try:
        return parse_json(raw, "manifest.json", max_int_digits=MAX_INT_DIGITS)
    except Problem as problem:
        raise GenbaError(f"memory export: {problem}; refused") from None


def _number(v, lo: float, hi: float) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return lo <= v <= hi if isinstance(v, int) else (math.isfinite(v) and lo <= v <= hi)


def _check_state(state: dict, num_classes: int) -> None:
    """The method state an export may carry: {"guard_prior": null | C finite numbers}."""
    unknown = sorted(set(state) - {"guard_prior"})
    prior = state.get("guard_prior")
    if unknown or not (prior is None or (isinstance(prior, list) and len(prior) == num_classes
                                         and all(_number(v, 0.0, 1e9) for v in prior))):
        raise GenbaError(f"memory export: 'state' must be {{\"guard_prior\": null or {num_classes} numbers >= 0}}"
                         + (f"; unknown key(s) {', '.join(unknown)[:100]}" if unknown else ""))


def _entry_row(i: int, e, spec: MemorySpec, tensors: dict, payloads: np.ndarray) -> tuple:
    ok = (isinstance(e, dict) and isinstance(e.get("bank"), str) and 0 < len(e["bank"]) <= 32
          and isinstance(e.get("class"), int) and not isinstance(e["class"], bool) and 0 <= e["class"] < spec.num_classes
          and (e.get("slot") is None or (isinstance(e["slot"], int) and not isinstance(e["slot"], bool)
                                         and 0 <= e["slot"] <= MAX_SLOT))
          and isinstance(e.get("source_id"), str) and 0 < len(e["source_id"]) <= 256
          and (e.get("entropy") is None or _number(e["entropy"], 0.0, 1e6))
          and _number(e.get("created"), 0.0, 1e11))
    if not ok:
        raise GenbaError(f"memory export: entry {i} is malformed (bank, class in range, slot in [0, {MAX_SLOT}], "
                         "source_id, entropy a finite number >= 0, created a time in seconds)")
    scale = float(tensors["scales"][i])
    if spec.feature_format == "int8" and not (math.isfinite(scale) and scale > 0):
        raise GenbaError(f"memory export: entry {i} has no valid int8 scale")
    payload = payloads[i].astype("<f4").tobytes() if tensors["has_payload"][i] else None
    return (e["bank"], e["class"], e["slot"], e["source_id"], e["entropy"], float(e["created"]),
            scale if spec.feature_format == "int8" else None, tensors["features"][i].tobytes(), payload)


def import_memory(store: Store, data: bytes, *, token_hash: str | None = None, max_bytes: int = 512 << 20) -> str:
    """Add an exported memory to `store` as a new memory (new id); returns the id."""
    spec, text, state, rows = read_archive(data, max_bytes=max_bytes)
    log = archive_log.read_log(data, spec, max_bytes=max_bytes)
    memory_id = store.create_memory(spec, text, token_hash=token_hash, entries=rows, state=state)
    archive_log.store_log(store, memory_id, log)
    return memory_id
