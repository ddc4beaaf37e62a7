"""The service's state and operations, without HTTP: store, encoders, live memories, access checks.

`Service` owns one `Store`, the encoders it has loaded (only those the operator enabled: an API
caller can never make the server load weights from an arbitrary path) and one `LiveMemory` per
memory in use. Every operation validates all of its input (images decoded and checked, labels
resolved) before it touches the store, so a bad request never leaves a partial write.
"""

from __future__ import annotations

import re
import threading
import time

import torch
from PIL import Image

from genba.encoders import load_encoder
from genba.errors import GenbaError
from genba.methods import make_config
from genba.serve import console
from genba.serve.auth import check_admin_token, matches, new_token, token_hash
from genba.serve.uploads import ApiError, Limits, StoreBusy, check_request_pixels, decode_image, source_id
from genba.store import Store, predlog
from genba.store.spec import check_hyperparameters
from genba.store.archive import export_memory, read_archive
from genba.store.archive_log import read_log, store_log
from genba.live import LiveMemory, check_encoder, create_memory, encode_images

MEMORY_ID = re.compile(r"^[0-9a-f]{16}$")
Upload = tuple[bytes, str, str | None]  # (bytes, file name, declared content type)


class Service:
    """Everything `genba serve` does, callable from tests without a server."""

    def __init__(self, store_path, admin_token: str, *, limits: Limits | None = None,
                 encoders: tuple[str, ...] = ("conse", "tiny")) -> None:
        self.store = Store(store_path)
        self.admin_hash = token_hash(check_admin_token(admin_token))
        self.limits, self.allowed_encoders = limits or Limits(), tuple(encoders)
        self._encoders: dict = {}
        self._live: dict[str, LiveMemory] = {}
        self._lock = threading.RLock()
        Image.MAX_IMAGE_PIXELS = self.limits.max_pixels  # PIL's own bomb check, behind ours

    def close(self) -> None:
        self.store.close()

    # ---------------------------------------------------------------------------- access
    def authorize(self, token: str | None, memory_id: str | None = None) -> None:
        """Admin token: anything. Memory token: that memory only. None: 401; anything else: 403."""
        if token is None:
            raise ApiError(401, "missing token: send 'Authorization: Bearer <token>'")
        if matches(token, self.admin_hash):
            if memory_id is not None and not self._exists(memory_id):
                raise ApiError(404, f"no memory {memory_id!r}")
            return
        if memory_id is None:
            raise ApiError(403, "this needs the server's admin token")
        stored = self.store.token_hash(memory_id) if self._exists(memory_id) else None
        if not matches(token, stored):
            raise ApiError(403, "this token does not grant access to this memory")

    def _exists(self, memory_id: str) -> bool:
        return bool(MEMORY_ID.match(memory_id)) and self.store.has_memory(memory_id)

    def encoder(self, spec: str):
        """The loaded (and warmed) encoder `spec`, if the operator enabled it."""
        if spec not in self.allowed_encoders:
            raise ApiError(400, f"encoder {spec!r} is not enabled on this server; enabled: {', '.join(self.allowed_encoders)}")
        with self._lock:
            if spec not in self._encoders:
                encoder = load_encoder(spec)
                encode_images(encoder, [Image.new("RGB", (32, 32))])  # load lazy weights once, under the lock
                self._encoders[spec] = encoder
            return self._encoders[spec]

    def live(self, memory_id: str) -> LiveMemory:
        with self._lock:
            if memory_id not in self._live:
                if not self._exists(memory_id):
                    raise ApiError(404, f"no memory {memory_id!r}")
                self._live[memory_id] = LiveMemory(self.store, memory_id)
            memory = self._live[memory_id]
        if memory.spec.max_age_s is not None:
            memory.apply_retention()
        return memory

    def _features(self, memory: LiveMemory, uploads: list[Upload], thumbnails: list | None = None):
        if not uploads:
            raise ApiError(400, "send at least one image in the 'files' field")
        if len(uploads) > self.limits.max_files:
            raise ApiError(413, f"{len(uploads)} images is over the limit of {self.limits.max_files} per request")
        check_request_pixels(uploads, self.limits)  # every header checked, pixels summed, before any decoding
        encoder = self.encoder(memory.spec.encoder)
        check_encoder(memory.spec, encoder)
        out = []
        for i in range(0, len(uploads), encoder.batch_size):  # decode + encode one batch at a time
            images = [decode_image(data, name, ctype, self.limits) for data, name, ctype in uploads[i : i + encoder.batch_size]]
            out.append(encode_images(encoder, images))
            if thumbnails is not None:
                thumbnails.extend(console.thumbnail(image) for image in images)
            del images
        return torch.cat(out)

    # ------------------------------------------------------------------------ operations
    def create(self, body: dict) -> dict:
        """Create a memory from a validated request body; returns its id and API token (shown once)."""
        prompts = len(body["classnames"]) * len(body["templates"])
        if prompts > self.limits.max_prompts:
            raise ApiError(413, f"{len(body['classnames'])} classes x {len(body['templates'])} templates is {prompts} prompts "
                                f"to encode, over the limit of {self.limits.max_prompts}; use fewer templates")
        encoder = self.encoder(body["encoder"])
        self._check_footprint(body, int(encoder.embed_dim))
        token = new_token()
        max_age = body.get("max_age_days")
        with self._lock:  # the text tower may load lazily
            memory_id = create_memory(
                self.store, encoder, body["encoder"], body["classnames"], body["templates"], body["method"],
                body.get("hyperparameters") or {}, token_hash=token_hash(token), feature_format=body["feature_format"],
                max_age_s=None if max_age is None else float(max_age) * 86400.0,
                max_per_class=body.get("max_per_class"), name=body.get("name") or "",
                log_size=int(body.get("log_size", 10_000)), log_images=bool(body.get("log_images", False)))
        return {"id": memory_id, "token": token}

    def _check_footprint(self, body: dict, dim: int) -> None:
        """Refuse (413) a memory whose test-time banks would need more RAM than the server allows.

        Estimate: C x (sum of the method's per-class capacities) x (4 D + 4 L) bytes, the rows
        (float32 bound) and the per-class Gram matrix of each bank.
        """
        check_hyperparameters(body.get("hyperparameters") or {})
        config = make_config(body["method"], body.get("hyperparameters") or {})  # ranges checked here
        C = len(body["classnames"])
        slots = [int(getattr(config, k)) for k in ("capacity", "pos_capacity", "neg_capacity") if hasattr(config, k)]
        estimate = sum(C * L * (4 * dim + 4 * L) for L in slots)
        if estimate > self.limits.max_memory_bytes:
            raise ApiError(413, f"this memory's test-time banks would take about {estimate >> 20} MB, over the server's "
                                f"limit of {self.limits.max_memory_bytes >> 20} MB; use fewer classes or a smaller capacity")

    def add_support(self, memory_id: str, uploads: list[Upload], labels: list[str], source_ids: list[str]) -> dict:
        memory = self.live(memory_id)
        classes = self._classes(memory, labels, len(uploads))
        sources = self._sources(uploads, source_ids)
        feats = self._features(memory, uploads)
        receipt = memory.add_support(feats, classes, sources)
        entries = [{"entry_id": i, "class": memory.spec.classnames[c], "source_id": s}
                   for i, c, s in zip(receipt.entry_ids, classes, sources)]
        return {"added": len(entries), "entries": entries, "removed_by_retention": receipt.removed, "version": receipt.version}

    def predict(self, memory_id: str, uploads: list[Upload], *, update: bool, source_ids: list[str]) -> dict:
        """Predict, answer and log each prediction (genba.serve.console.log_predictions) with the request's latency."""
        start = time.perf_counter()
        memory = self.live(memory_id)
        if update:  # what a memory's kind can do comes from the model-kind registry
            from genba.model.base import MODEL_KINDS
            from genba.model.kinds.adapt import kind_name

            kind = MODEL_KINDS.get(kind_name(memory.spec.method))
            if "test_time_writes" not in kind.capabilities:
                able = [e.name.split(":", 1)[1] for e in MODEL_KINDS.entries()
                        if e.name.startswith("adapt:") and "test_time_writes" in e.obj.capabilities]
                raise ApiError(409, f"memory {memory_id} runs {memory.spec.method!r}, which keeps no test-time memory: "
                                    f"update=true cannot write into it; send update=false, or serve one of "
                                    f"{', '.join(able)}")
        sources = self._sources(uploads, source_ids)
        thumbs = [] if memory.spec.log_images else None
        feats = self._features(memory, uploads, thumbs)
        with memory.lock:
            probs, writes = memory.predict(feats, update=update, source_ids=sources)
            write_labels, version = memory.write_labels, memory.version
        latency_ms = (time.perf_counter() - start) * 1000.0
        ids = console.log_predictions(self.store, memory.spec, memory_id, version, probs, write_labels, sources,
                                      latency_ms, feats, thumbs)
        names = memory.spec.classnames
        out = []
        for i, p in enumerate(probs):
            c = int(p.argmax())
            item = {"source_id": sources[i], "class": names[c], "index": c, "confidence": float(p[c]),
                    "probs": {n: round(float(v), 6) for n, v in zip(names, p)},
                    "prediction_id": ids[i] if ids else None}
            if writes is not None:
                item["writes"] = [{**w, "class": names[w["class"]]} for w in writes[i]]
            out.append(item)
        return {"predictions": out, "updated": writes is not None, "version": memory.version}

    def _classes(self, memory: LiveMemory, labels: list[str], n: int) -> list[int]:
        names = memory.spec.classnames
        if len(labels) != n:
            raise ApiError(400, f"send one 'labels' field per image: {n} images, {len(labels)} labels")
        out = []
        for label in labels:
            if label in names:
                out.append(names.index(label))
            elif label.isascii() and label.isdigit() and len(label) <= 9 and int(label) < len(names):
                out.append(int(label))  # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
            else:
                raise ApiError(400, f"unknown label {label[:80]!r}; use a class name ({', '.join(names)}) or its index")
        return out

    @staticmethod
    def _sources(uploads: list[Upload], given: list[str]) -> list[str]:
        if given and len(given) != len(uploads):
            raise ApiError(400, f"send one 'source_ids' field per image or none: {len(uploads)} images, {len(given)} ids")
        if any(not 0 < len(s) <= 256 for s in given):
            raise ApiError(400, "source ids must be 1 to 256 characters")
        return list(given) if given else [source_id(data) for data, _, _ in uploads]

    def inspect(self, memory_id: str, recent: int = 20) -> dict:
        memory = self.live(memory_id)
        with memory.lock:
            memory.refresh()
        spec = memory.spec
        return {"id": memory_id, "name": spec.name, "encoder": spec.encoder, "method": spec.method,
                "hyperparameters": spec.hyperparameters, "classnames": spec.classnames, "templates": spec.templates,
                "feature_format": spec.feature_format, "max_age_s": spec.max_age_s, "max_per_class": spec.max_per_class,
                "version": self.store.version(memory_id), "fill": memory.fill(), "ready": memory.method is not None,
                "error": memory.broken,
                "recent_writes": self.store.writes(memory_id, recent), "snapshots": self.store.snapshots(memory_id)}

    def import_archive(self, data: bytes) -> dict:
        spec, text, state, rows = read_archive(data, max_bytes=self.limits.max_import_bytes)  # checked before any write
        log = read_log(data, spec, max_bytes=self.limits.max_import_bytes)
        check_encoder(spec, self.encoder(spec.encoder))
        token = new_token()
        memory_id = self.store.create_memory(spec, text, token_hash=token_hash(token), entries=rows, state=state)
        try:
            store_log(self.store, memory_id, log)
            live = self.live(memory_id)
            if live.broken:
                raise GenbaError(live.broken)
        except Exception as error:
            with self._lock:
                self._live.pop(memory_id, None)
            self.store.drop_memory(memory_id)  # entries that do not fit the method: leave nothing behind
            if isinstance(error, (GenbaError, ApiError)):
                raise
            raise GenbaError(f"imported memory does not fit its method {spec.method!r} ({type(error).__name__}); "
                             "nothing was stored") from None
        return {"id": memory_id, "token": token}

    def delete_source(self, memory_id: str, source: str, *, vacuum: bool = False) -> dict:
        """Erase a source from one memory; 503 + Retry-After when outside readers delay the scrub.

        The entries are gone when this returns either way; the memory's lock is held at most
        `limits.store_wait_s` for the scrub, which the store then finishes in the background as
        soon as the readers end their transactions (`Store.delete_source`).
        """
        memory = self.live(memory_id)
        with memory.lock:
            counts = self.store.delete_source(source, memory_id, vacuum=vacuum, wait_s=self.limits.store_wait_s)
            memory.rebuild()
        if not counts["wal_truncated"]:
            raise StoreBusy(f"deleted {counts['entries']} entries and {counts['snapshot_copies']} snapshot copies of that "
                            "source, but another connection holds a read transaction on the store, so their old bytes "
                            "are still in the store's files; the scrub is recorded in the store and finishes as soon as "
                            "that reader ends (or, if this server stops first, when the store is next opened, before "
                            "any request); repeat this request to confirm (wal_truncated: true)", retry_after=max(1, round(self.limits.store_wait_s)))
        return counts

    def export(self, memory_id: str) -> bytes:
        self.live(memory_id)
        return export_memory(self.store, memory_id)

    def status(self) -> dict:
        """Every memory with its fill per class, log size, version and last 10 logged predictions (the console's list)."""
        memories = []
        conn = self.store._conn()
        for memory_id in self.store.memory_ids():
            spec = self.store.spec(memory_id)
            recent = [{"time": r["time"], "class": spec.classnames[r["class"]], "confidence": r["confidence"],
                       "entropy": r["entropy"]} for r in predlog.rows(conn, memory_id, limit=10)]
            memories.append({"id": memory_id, "name": spec.name, "method": spec.method, "encoder": spec.encoder,
                             "classnames": spec.classnames, "fill": self.store.fill(memory_id),
                             "version": self.store.version(memory_id), "logged": predlog.count(conn, memory_id),
                             "recent_predictions": recent})
        return {"memories": memories}
