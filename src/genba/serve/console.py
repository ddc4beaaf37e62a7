"""The operator console's operations (no HTTP): the prediction log, its data, labels, the review queue.

    log_predictions   one row per served prediction (genba.store.predlog), after each predict
    console_data      what the console shows for one memory: spec, lineage, time series,
                      warnings, recent / least-confident predictions, queue, write log, audit
    label             confirm or correct a logged prediction: its stored feature becomes
                      labelled support with its own source id "label:<prediction id>", added
                      through LiveMemory.add_support, so trained methods retrain once as for
                      an upload; the row keeps the label (accuracy on confirmed labels)
    queue             unlabelled predictions ordered by uncertainty: smallest margin
                      p_(1) - p_(2) first (margin, not least confidence: with many classes a low
                      p_max can still be unambiguous, a small margin never is)

A label is idempotent: the same label again changes nothing and answers as before; a different
label replaces the previous correction (its support is erased, the new one added).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict

import numpy as np

from genba.errors import GenbaError
from genba.methods import make_config
from genba.serve.uploads import ApiError
from genba.store import predlog, series
from genba.store.codec import decode_rows, encode_rows

THUMBNAIL_PX = 96


def thumbnail(image) -> bytes:
    """A JPEG of at most THUMBNAIL_PX on its longer side (what the log keeps when images are opted in)."""
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


def log_predictions(store, spec, memory_id: str, version: int, probs, write_labels, sources: list[str],
                    latency_ms: float, feats, thumbnails) -> list[int]:
    """Append a request's predictions to the memory's log (kept to spec.log_size rows); returns their ids."""
    if spec.log_size <= 0:
        return []
    feats = np.asarray(feats, dtype=np.float32)
    blobs, scales = encode_rows(feats, spec.feature_format)
    rows = predlog.log_rows(np.asarray(probs), write_labels, sources, latency_ms, version, blobs, scales,
                            thumbnails if spec.log_images else None, time.time())
    with store.transaction() as conn:
        return predlog.insert(conn, memory_id, rows, spec.log_size)


def _named(item: dict, names: list[str]) -> dict:
    out = dict(item)
    out["class_name"] = names[item["class"]]
    out["label_name"] = None if item.get("label") is None else names[item["label"]]
    out["write_label_name"] = None if item.get("write_label") is None else names[item["write_label"]]
    out["topk"] = [[names[c], p] for c, p in item["topk"]]
    if out.get("thumbnail") is not None:
        out["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(out["thumbnail"]).decode()
    return out


def console_data(service, memory_id: str, *, buckets: int = 48, recent: int = 12) -> dict:
    """Everything the console page shows for one memory (one consistent read where it matters)."""
    memory = service.live(memory_id)
    with memory.lock:
        memory.refresh()
    spec, store = memory.spec, service.store
    conn = store._conn()
    names = spec.classnames
    fill = store.fill(memory_id)
    try:
        config = asdict(make_config(spec.method, spec.hyperparameters))
    except GenbaError:
        config = dict(spec.hyperparameters)
    learned = conn.execute("SELECT fingerprint, created, json_array_length(sources) FROM learned_states WHERE memory_id = ?",
                           (memory_id,)).fetchone()
    thumbs = spec.log_images
    timeline = series.series(conn, memory_id, spec.num_classes, buckets)
    served = np.sum([b["per_class"] for b in timeline["buckets"]], axis=0).tolist() if timeline["buckets"] else None
    return {
        "id": memory_id, "name": spec.name, "method": spec.method, "encoder": spec.encoder,
        "encoder_provenance": spec.encoder_provenance, "hyperparameters": spec.hyperparameters, "config": config,
        "classnames": names, "feature_format": spec.feature_format, "log_size": spec.log_size, "log_images": thumbs,
        "version": store.version(memory_id), "ready": memory.method is not None, "error": memory.broken, "fill": fill,
        "lineage": {
            "support_entries": sum(fill.get("static", [])),
            "support_sources": int(conn.execute("SELECT count(DISTINCT source_id) FROM entries WHERE memory_id = ? AND "
                                                "bank = 'static'", (memory_id,)).fetchone()[0]),
            "learned_state": None if learned is None else {"fingerprint": learned[0][:16], "created": learned[1],
                                                           "sources": learned[2]},
            "snapshots": store.snapshots(memory_id),
            "last_rollback": next((a for a in predlog.audit_rows(conn, memory_id, 200) if a["action"] == "rollback"), None)},
        "logged": timeline["total"],
        "series": timeline,
        "warnings": series.warnings(conn, memory_id, names, fill, served),
        "recent": [_named(r, names) for r in predlog.rows(conn, memory_id, limit=recent, with_thumbnails=thumbs)],
        "least_confident": [_named(r, names) for r in predlog.rows(conn, memory_id, limit=recent, order="least-confident",
                                                                   unlabelled=True, with_thumbnails=thumbs)],
        "queue": [_named(r, names) for r in predlog.rows(conn, memory_id, limit=recent, order="uncertain", unlabelled=True)],
        "writes": store.writes(memory_id, 50),
        "audit": predlog.audit_rows(conn, memory_id, 30),
    }


def queue(service, memory_id: str, limit: int = 50) -> list[dict]:
    """Unlabelled logged predictions, smallest margin first (see the module docstring)."""
    names = service.live(memory_id).spec.classnames
    return [_named(r, names) for r in predlog.rows(service.store._conn(), memory_id, limit=limit, order="uncertain",
                                                   unlabelled=True, with_thumbnails=service.store.spec(memory_id).log_images)]


def resolve_label(names: list[str], label) -> int:
    if isinstance(label, str) and label in names:
        return names.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
        return label
    raise ApiError(400, f"unknown label {str(label)[:80]!r}; use a class name ({', '.join(names)[:200]}) or its index")


def label(service, memory_id: str, prediction_id: int, label) -> dict:
    """Confirm or correct one logged prediction; its feature becomes support "label:<id>" (module docstring)."""
    memory = service.live(memory_id)
    spec, store = memory.spec, service.store
    cls = resolve_label(spec.classnames, label)
    with memory.lock:
        item = predlog.row(store._conn(), memory_id, prediction_id)
        if item is None:
            raise ApiError(404, f"memory {memory_id} has no logged prediction {prediction_id} (erased or rolled out of the log)")
        source = f"label:{int(prediction_id)}"
        kept = item["label_source"] and store._conn().execute(
            "SELECT 1 FROM entries WHERE memory_id = ? AND source_id = ? LIMIT 1", (memory_id, item["label_source"])).fetchone()
        if item["label"] == cls and kept:  # a rollback may have removed the support: then it is added again
            return {"prediction_id": item["id"], "label": spec.classnames[cls], "confirmed": cls == item["class"],
                    "source_id": source, "changed": False, "version": store.version(memory_id)}
        if item["feature"] is None:
            raise ApiError(409, f"logged prediction {prediction_id} kept no feature; it cannot become support")
        if item["label_source"]:
            store.delete_source(item["label_source"], memory_id, wait_s=service.limits.store_wait_s)
            memory.rebuild()
        feat = decode_rows([item["feature"]], [item["scale"]], spec.feature_format, spec.dim)
        receipt = memory.add_support(feat, [cls], [source])
        with store.transaction() as conn:
            predlog.set_label(conn, memory_id, prediction_id, cls, source, time.time())
    return {"prediction_id": item["id"], "label": spec.classnames[cls], "confirmed": cls == item["class"],
            "source_id": source, "changed": True, "version": receipt.version, "entry_ids": receipt.entry_ids}


def preview_delete(service, memory_id: str, source_id: str) -> dict:
    service.live(memory_id)
    return predlog.preview_source(service.store._conn(), source_id, memory_id)


def audit(service, memory_id: str | None, actor: str, action: str, detail: dict) -> None:
    with service.store.transaction() as conn:
        predlog.audit(conn, memory_id, actor, action, detail)
