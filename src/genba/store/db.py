"""A durable memory store on one SQLite file: memories, their entries and the write log.

Entries are features with their class, bank ("static" for labelled support; the method's test-time
banks, e.g. "dynamic", "pos", "neg", by slot), source id (sha256 of the image bytes or a client
id), entropy and time. Every mutation is one `BEGIN IMMEDIATE` transaction that also appends to
the write log (entered / displaced <old id> / rejected / expired / deleted / rolled-back /
restored) and bumps the memory's version, so a process killed mid-write leaves the last committed
state and the log always agrees with the entries (`Store.check`). Snapshots, rollback, retention
and deletion by source id live in `genba.store.ops`. No function here imports torch.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from genba.errors import GenbaError
from genba.store import ops
from genba.store.codec import decode_rows, encode_rows
from genba.store.records import Entries, Receipt, Rejection, StaleMemory, UnusableMemory, Write  # noqa: F401  (UnusableMemory re-exported)
from genba.store.schema import connect
from genba.store.spec import MemorySpec

STATIC = "static"
RAW_COLUMNS = "bank, class, slot, source_id, entropy, created, scale, feature, payload"


class Store:
    """A memory store file; safe to share between threads (one connection per thread) and processes."""

    def __init__(self, path: str | Path, *, create: bool = True, durable: bool = True) -> None:
        self.path, self.durable, self._create = Path(path), durable, create
        self._local, self._lock, self._conns = threading.local(), threading.Lock(), []
        self._conn()  # open now so a bad file fails here
        self.finish_pending_scrubs()

    def finish_pending_scrubs(self, wait_s: float = 5.0) -> bool:
        """Finish erasures a crash or a stop left pending (pending_scrubs rows): called on open, so a
        service finishes them before its first request. If outside readers still block the scrub
        after `wait_s`, it continues in the background (`scrub_pending`) and False is returned."""
        if ops.finish_scrubs(self._conn(), wait_s=wait_s):
            return True
        self._scrub_later()
        return False

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, create=self._create, durable=self.durable)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this object opened (call when no thread is using it)."""
        self._closed = True
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any error."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------------------ memories
    def create_memory(self, spec: MemorySpec, text: np.ndarray, *, token_hash: str | None = None,
                      entries: list[tuple] | None = None, state: dict | None = None, now: float | None = None) -> str:
        """Add a memory with its (C, D) text classifier (and raw entries, e.g. from an import); returns its id."""
        text = np.ascontiguousarray(text, dtype=np.float32)
        if text.shape != (spec.num_classes, spec.dim) or not np.isfinite(text).all():
            raise GenbaError(f"text classifier must be finite with shape ({spec.num_classes}, {spec.dim}), got {text.shape}")
        memory_id, now = secrets.token_hex(8), time.time() if now is None else now
        try:
            with self.transaction() as conn:
                conn.execute("INSERT INTO memories(id, spec, text, token_hash, state, created) VALUES (?, ?, ?, ?, ?, ?)",
                             (memory_id, spec.to_json(), text.tobytes(), token_hash, json.dumps(state or {}), now))
                for row in entries or []:
                    ops.insert_entry(conn, memory_id, row, "entered", now)
        except sqlite3.IntegrityError as error:
            raise GenbaError(f"memory entries are inconsistent ({error}): two entries share a slot") from None
        return memory_id

    def drop_memory(self, memory_id: str) -> None:
        """Remove a memory with its entries, snapshots and log, then scrub the file."""
        with self.transaction() as conn:
            for table in ("snapshot_entries WHERE snapshot_id IN (SELECT id FROM snapshots WHERE memory_id = ?)",
                          "snapshots WHERE memory_id = ?", "entries WHERE memory_id = ?", "writes WHERE memory_id = ?",
                          "learned_states WHERE memory_id = ?", "memories WHERE id = ?"):
                conn.execute(f"DELETE FROM {table}", (memory_id,))
            pending = conn.execute("INSERT INTO pending_scrubs(created) VALUES (?)", (time.time(),)).lastrowid
        if not ops.finish_scrubs(self._conn(), upto=pending):
            self._scrub_later()

    def memory_ids(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM memories ORDER BY created, id")]

    def has_memory(self, memory_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM memories WHERE id = ?", (memory_id,)).fetchone() is not None

    def _memory_row(self, memory_id: str, columns: str) -> tuple:
        row = self._conn().execute(f"SELECT {columns} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        if row is None:
            raise GenbaError(f"no memory {memory_id!r} in store {self.path}")
        return row

    def spec(self, memory_id: str) -> MemorySpec:
        return MemorySpec.from_json(self._memory_row(memory_id, "spec")[0])

    def text(self, memory_id: str) -> np.ndarray:
        """The stored (C, D) float32 text classifier."""
        spec, blob = self.spec(memory_id), self._memory_row(memory_id, "text")[0]
        if len(blob) != 4 * spec.num_classes * spec.dim:
            raise GenbaError(f"memory {memory_id}: stored text classifier has the wrong size; the store is damaged")
        return np.frombuffer(blob, dtype=np.float32).reshape(spec.num_classes, spec.dim).copy()

    def version(self, memory_id: str) -> int:
        return int(self._memory_row(memory_id, "version")[0])

    def state(self, memory_id: str) -> dict:
        """Method state outside the entries (e.g. a collapse guard's running prior), as JSON."""
        return json.loads(self._memory_row(memory_id, "state")[0])

    def token_hash(self, memory_id: str) -> str | None:
        return self._memory_row(memory_id, "token_hash")[0]

    # ------------------------------------------------------------------------------- writes
    def add_entries(self, memory_id: str, bank: str, feats: np.ndarray, classes, source_ids: list[str], *,
                    entropies=None, now: float | None = None) -> Receipt:
        """Append labelled rows (slot-less, e.g. support images) in one transaction."""
        spec, now = self.spec(memory_id), time.time() if now is None else now
        feats = np.asarray(feats, dtype=np.float32)
        classes = [int(c) for c in classes]
        n = len(classes)
        if feats.shape != (n, spec.dim) or len(source_ids) != n:
            raise GenbaError(f"need {n} features of dim {spec.dim} and {n} source ids, got {feats.shape} and {len(source_ids)}")
        if any(not 0 <= c < spec.num_classes for c in classes):
            raise GenbaError(f"classes must lie in [0, {spec.num_classes})")
        ent = [None] * n if entropies is None else [float(h) for h in entropies]
        blobs, scales = encode_rows(feats, spec.feature_format)
        with self.transaction() as conn:
            ids = [ops.insert_entry(conn, memory_id, (bank, c, None, str(s), h, now, sc, b, None), "entered", now)
                   for c, s, h, sc, b in zip(classes, source_ids, ent, scales, blobs)]
            removed = ops.retain(conn, memory_id, spec, now)
            version = ops.bump(conn, memory_id)
        return Receipt(version, ids, ["entered"] * n, removed)

    def remove_entries(self, memory_id: str, ids: list[int], outcome: str = "rolled-back", now: float | None = None) -> int:
        """Remove entries of this memory by id in one transaction (e.g. undo a write its method refused)."""
        now = time.time() if now is None else now
        with self.transaction() as conn:
            mine = [int(i) for i in ids if conn.execute("SELECT 1 FROM entries WHERE id = ? AND memory_id = ?",
                                                        (int(i), memory_id)).fetchone()]
            ops.remove(conn, mine, outcome, now)
            ops.bump(conn, memory_id)
        return len(mine)

    def record(self, memory_id: str, items: list[Write | Rejection], *, expected_version: int | None = None,
               state: dict | None = None, now: float | None = None) -> Receipt:
        """Record test-time writes and rejections, in stream order, in one transaction.

        A write to an occupied slot displaces the entry there. With `expected_version`, a memory
        changed meanwhile by another writer raises StaleMemory and nothing is written.
        """
        spec, now = self.spec(memory_id), time.time() if now is None else now
        writes = [w for w in items if isinstance(w, Write)]
        blobs, scales = encode_rows(np.stack([w.feature for w in writes]), spec.feature_format) if writes else ([], [])
        encoded = {id(w): (b, s) for w, b, s in zip(writes, blobs, scales)}
        with self.transaction() as conn:
            current = int(conn.execute("SELECT version FROM memories WHERE id = ?", (memory_id,)).fetchone()[0])
            if expected_version is not None and current != expected_version:
                raise StaleMemory(f"memory {memory_id} changed in the store (version {current}, expected {expected_version})")
            ids, outcomes = [], []
            for w in items:
                if isinstance(w, Rejection):
                    conn.execute("INSERT INTO writes(memory_id, time, source_id, bank, class, entropy, outcome) "
                                 "VALUES (?, ?, ?, ?, ?, ?, 'rejected')", (memory_id, now, w.source_id, w.bank, int(w.cls), float(w.entropy)))
                    continue
                old = conn.execute("SELECT id FROM entries WHERE memory_id = ? AND bank = ? AND class = ? AND slot = ?",
                                   (memory_id, w.bank, int(w.cls), int(w.slot))).fetchone()
                if old is not None:
                    conn.execute("DELETE FROM entries WHERE id = ?", (old[0],))
                blob, scale = encoded[id(w)]
                payload = None if w.payload is None else np.asarray(w.payload, dtype="<f4").tobytes()
                row = (w.bank, int(w.cls), int(w.slot), w.source_id, float(w.entropy), now, scale, blob, payload)
                outcomes.append("displaced" if old else "entered")
                ids.append(ops.insert_entry(conn, memory_id, row, outcomes[-1], now, old_id=old[0] if old else None))
            if state is not None:
                conn.execute("UPDATE memories SET state = ? WHERE id = ?", (json.dumps(state), memory_id))
            removed = ops.retain(conn, memory_id, spec, now)
            version = ops.bump(conn, memory_id)
        return Receipt(version, ids, outcomes, removed)

    def put_learned_state(self, memory_id: str, fingerprint: str, tensors: bytes, sources: list[str], *,
                          version: int) -> bool:
        """Keep a trained method's learned tensors (an artefact blob, genba.artefact) for the support
        `fingerprint` names, replacing the memory's previous ones; `sources` are that support's source
        ids. Compare-and-set: written only while the memory is still at `version`, the version whose
        entries were trained on, so tensors trained on a support that changed meanwhile (a deleted
        source) are never stored; returns whether it was written. The memory's version does not
        change: this is a cache of what its entries determine."""
        with self.transaction() as conn:
            row = conn.execute("SELECT version FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:
                raise GenbaError(f"no memory {memory_id!r} in this store")
            if int(row[0]) != int(version):
                return False
            conn.execute("INSERT OR REPLACE INTO learned_states(memory_id, fingerprint, created, sources, tensors) "
                         "VALUES (?, ?, ?, ?, ?)", (memory_id, fingerprint, time.time(), json.dumps(sorted(set(sources))),
                                                    sqlite3.Binary(tensors)))
        return True

    def learned_state(self, memory_id: str, fingerprint: str) -> bytes | None:
        """The learned tensors stored for this support fingerprint, or None (then the method trains)."""
        row = self._conn().execute("SELECT tensors FROM learned_states WHERE memory_id = ? AND fingerprint = ?",
                                   (memory_id, fingerprint)).fetchone()
        return None if row is None else bytes(row[0])

    # ------------------------------------------------------------------------------ reading
    def entries(self, memory_id: str) -> Entries:
        """Every entry of a memory, in write order, features decoded."""
        spec = self.spec(memory_id)
        rows = self._conn().execute(f"SELECT id, {RAW_COLUMNS} FROM entries WHERE memory_id = ? ORDER BY id",
                                    (memory_id,)).fetchall()
        feats = decode_rows([r[8] for r in rows], [r[7] for r in rows], spec.feature_format, spec.dim)
        return Entries(
            ids=np.array([r[0] for r in rows], dtype=np.int64), banks=[r[1] for r in rows],
            classes=np.array([r[2] for r in rows], dtype=np.int64), slots=[r[3] for r in rows],
            sources=[r[4] for r in rows], entropies=np.array([np.nan if r[5] is None else r[5] for r in rows]),
            created=np.array([r[6] for r in rows]), feats=feats,
            payloads=[None if r[9] is None else np.frombuffer(r[9], dtype="<f4").copy() for r in rows])

    def load(self, memory_id: str) -> tuple[int, MemorySpec, np.ndarray, dict, Entries]:
        """(version, spec, text classifier, method state, entries) read in one consistent snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")  # a WAL read transaction: concurrent commits stay invisible until COMMIT
        try:
            return self.version(memory_id), self.spec(memory_id), self.text(memory_id), self.state(memory_id), self.entries(memory_id)
        finally:
            conn.execute("COMMIT")

    def raw_entries(self, memory_id: str) -> list[tuple]:
        """Entries as stored (RAW_COLUMNS order, encoded blobs), in write order: for exports."""
        return self._conn().execute(f"SELECT {RAW_COLUMNS} FROM entries WHERE memory_id = ? ORDER BY id",
                                    (memory_id,)).fetchall()

    def fill(self, memory_id: str) -> dict[str, list[int]]:
        """bank -> number of entries per class."""
        C = self.spec(memory_id).num_classes
        out: dict[str, list[int]] = {}
        for bank, cls, n in self._conn().execute(
                "SELECT bank, class, count(*) FROM entries WHERE memory_id = ? GROUP BY bank, class", (memory_id,)):
            out.setdefault(bank, [0] * C)[cls] = n
        return out

    def writes(self, memory_id: str, limit: int = 50) -> list[dict]:
        """The most recent write-log rows, newest first."""
        keys = ("seq", "time", "source_id", "bank", "class", "entropy", "outcome", "entry_id", "old_id")
        rows = self._conn().execute(f"SELECT {', '.join(keys)} FROM writes WHERE memory_id = ? ORDER BY seq DESC LIMIT ?",
                                    (memory_id, int(limit)))
        return [dict(zip(keys, r)) for r in rows]

    # -------------------------------------------------------- snapshots, retention, privacy
    def snapshot(self, memory_id: str, label: str = "", now: float | None = None) -> int:
        """Copy every entry and the method state; returns the snapshot id."""
        self.spec(memory_id)
        with self.transaction() as conn:
            return ops.snapshot(conn, memory_id, label, time.time() if now is None else now)

    def snapshots(self, memory_id: str) -> list[dict]:
        return ops.list_snapshots(self._conn(), memory_id)

    def rollback(self, memory_id: str, snapshot_id: int, now: float | None = None) -> Receipt:
        """Make the memory's entries and state those of a snapshot (retention still applies)."""
        spec, now = self.spec(memory_id), time.time() if now is None else now
        if isinstance(snapshot_id, bool) or not isinstance(snapshot_id, int) or not 0 < snapshot_id < 2**63:
            raise GenbaError(f"snapshot id must be a positive 64-bit integer, got {str(snapshot_id)[:40]}; "
                             "list them with GET .../snapshots")
        with self.transaction() as conn:
            ops.rollback(conn, memory_id, int(snapshot_id), now)
            removed = ops.retain(conn, memory_id, spec, now)
            version = ops.bump(conn, memory_id)
        return Receipt(version, [], [], removed)

    def apply_retention(self, memory_id: str, now: float | None = None) -> int:
        """Remove entries past the memory's max age or per-class cap; returns how many."""
        spec, now = self.spec(memory_id), time.time() if now is None else now
        with self.transaction() as conn:
            removed = ops.retain(conn, memory_id, spec, now)
            if removed:
                ops.bump(conn, memory_id)
        return removed

    def delete_source(self, source_id: str, memory_id: str | None = None, *, vacuum: bool = False,
                      wait_s: float = 2.5) -> dict:
        """Remove every entry and snapshot copy from `source_id` and scrub the file; see ops.delete_source.

        The deletion commits at once; the scrub (the WAL checkpoint that overwrites the old page
        images) waits at most `wait_s` for outside readers. If they are still there, "wal_truncated"
        is False and a background thread of this Store retries the checkpoint every 0.2 s until it
        succeeds, i.e. as soon as the last such reader ends its transaction (`scrub_pending` tells
        whether it is still running). The erasure is durable: a pending_scrubs row commits with the
        deletion and is dropped only once the scrub is done, so if the process dies first (even by
        SIGKILL) the next Store opened on the file finishes it before returning.
        """
        with self.transaction() as conn:
            counts = ops.delete_source(conn, source_id, memory_id, time.time())
        pending = counts.pop("pending")
        counts["wal_truncated"] = ops.finish_scrubs(self._conn(), wait_s=wait_s, upto=pending, vacuum=vacuum)
        if not counts["wal_truncated"]:
            self._scrub_later()
        return counts

    @property
    def scrub_pending(self) -> bool:
        """True while a background checkpoint is waiting for outside readers to finish."""
        thread = getattr(self, "_scrubber", None)
        return thread is not None and thread.is_alive()

    def _scrub_later(self) -> None:
        with self._lock:
            if self.scrub_pending:
                return
            self._scrubber = threading.Thread(target=self._scrub_loop, name="genba-store-scrub", daemon=True)
            self._scrubber.start()

    def _scrub_loop(self) -> None:
        conn = connect(self.path, create=False, durable=self.durable)
        try:
            while not getattr(self, "_closed", False):
                if ops.finish_scrubs(conn, wait_s=0.0):
                    return
                time.sleep(0.2)
        finally:
            conn.close()

    def check(self) -> list[str]:
        """Problems found by PRAGMA integrity_check and the log/entry consistency rules ([] if none)."""
        return ops.check(self._conn())
