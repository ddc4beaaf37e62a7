"""The prediction log and the audit log of a memory store (tables `predictions` and `audit`).

Every served prediction is one row: time, the memory's version, the predicted (served) class,
its confidence p_max, the margin p_(1) - p_(2), the normalised entropy H(p) / log C, the top-k
probabilities (JSON), the dynamic memory's write label (the class the method wrote, or would
have written, the query under; NULL for a method without one), the source id, the request's
latency, the query's stored feature (the memory's feature format; what a correction turns into
support) and, only for a memory created with `log_images`, a small JPEG thumbnail. A row can
later carry an operator's label (confirmed or corrected class, the source id of the support it
became, the time). The log keeps the newest `spec.log_size` rows per memory (`trim`; logs over
EXACT_BOUND rows are trimmed every TRIM_EVERY rows, see `insert`).

`audit` records who did what through the service: time, memory, actor ("admin" or "memory"
token), action and a JSON detail (source ids are kept as a sha256 prefix, so the audit never
holds an erased source id in clear).

Both tables are created on open in files written before they existed (`ensure`), like
learned_states: no schema version change, older genba ignores them. Deleting a source erases
its log rows and the support corrections made from them (`erase_source`, called by
ops.delete_source). No function here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import numpy as np

TABLES = {
    "predictions": """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    time REAL NOT NULL,
    version INTEGER NOT NULL,
    class INTEGER NOT NULL,
    confidence REAL NOT NULL,
    margin REAL NOT NULL,
    entropy REAL NOT NULL,
    topk TEXT NOT NULL,
    write_label INTEGER,
    source_id TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    scale REAL,
    feature BLOB,
    thumbnail BLOB,
    label INTEGER,
    label_source TEXT,
    labelled REAL
)""",
    "audit": """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
)""",
}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS predictions_by_memory ON predictions(memory_id)",  # rowid order within a memory
    # covering index of the console's time series: its scans never read the rows (features, thumbnails)
    "CREATE INDEX IF NOT EXISTS predictions_series ON predictions(memory_id, time, class, confidence, entropy, "
    "write_label, label, latency_ms)",
    "CREATE INDEX IF NOT EXISTS predictions_least_confident ON predictions(memory_id, confidence) WHERE label IS NULL",
    "CREATE INDEX IF NOT EXISTS predictions_by_source ON predictions(source_id)",
    "CREATE INDEX IF NOT EXISTS predictions_queue ON predictions(memory_id, margin) WHERE label IS NULL",
    "CREATE INDEX IF NOT EXISTS audit_by_memory ON audit(memory_id, seq)",
)
ROW = ("id", "time", "version", "class", "confidence", "margin", "entropy", "topk", "write_label", "source_id",
       "latency_ms", "label", "label_source", "labelled")
TOP_K = 5


def ensure(conn: sqlite3.Connection) -> None:
    """Create the log tables and their indexes where missing (files from before they existed)."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    if set(TABLES) <= have and all(i.split(" EXISTS ")[1].split()[0] in have for i in INDEXES):
        return
    for statement in (*TABLES.values(), *INDEXES):
        conn.execute(statement)


def source_tag(source_id: str) -> str:
    """What the audit keeps of a source id: 'sha256:' + 16 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(source_id.encode()).hexdigest()[:16]


def log_rows(probs: np.ndarray, write_labels, source_ids: list[str], latency_ms: float, version: int,
             blobs: list[bytes], scales: list, thumbnails: list | None, now: float) -> list[tuple]:
    """Rows for `insert` from (N, C) probabilities: served class, p_max, margin, normalised entropy, top-k."""
    probs = np.asarray(probs, dtype=np.float64)
    N, C = probs.shape
    order = np.argsort(-probs, axis=1)
    top = np.take_along_axis(probs, order, axis=1)
    second = top[:, 1] if C > 1 else np.zeros(N)
    entropy = -(probs * np.log(np.clip(probs, 1e-30, None))).sum(1) / np.log(max(2, C))
    rows = []
    for i in range(N):
        k = min(TOP_K, C)
        topk = json.dumps([[int(order[i, j]), round(float(top[i, j]), 6)] for j in range(k)])
        wl = None if write_labels is None or int(write_labels[i]) < 0 else int(write_labels[i])
        rows.append((now, int(version), int(order[i, 0]), float(top[i, 0]), float(top[i, 0] - second[i]),
                     float(entropy[i]), topk, wl, str(source_ids[i]), float(latency_ms), scales[i], blobs[i],
                     None if thumbnails is None else thumbnails[i]))
    return rows


INSERT = ("INSERT INTO predictions(memory_id, time, version, class, confidence, margin, entropy, topk, write_label, "
          "source_id, latency_ms, scale, feature, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


TRIM_EVERY = 256
"""Above EXACT_BOUND rows a log is trimmed each time its row ids cross a multiple of this, so it
may hold up to TRIM_EVERY rows (plus one request) over its bound between trims."""
EXACT_BOUND = 4096


def insert(conn: sqlite3.Connection, memory_id: str, rows: list[tuple], keep: int) -> list[int]:
    """Append rows (from `log_rows`) and trim the memory's log to its newest `keep`; returns the ids.

    Trimming walks `keep` index entries, so a large log is trimmed once per TRIM_EVERY new rows
    (amortised O(keep / TRIM_EVERY) per row) and a small one (keep <= EXACT_BOUND) every time."""
    if keep <= 0 or not rows:
        return []
    ids = [conn.execute(INSERT, (memory_id, *row)).lastrowid for row in rows]
    if keep <= EXACT_BOUND or ids[-1] // TRIM_EVERY != (ids[0] - 1) // TRIM_EVERY:
        trim(conn, memory_id, keep)
    return ids


def trim(conn: sqlite3.Connection, memory_id: str, keep: int) -> int:
    """Delete all but the newest `keep` rows of a memory's log."""
    edge = conn.execute("SELECT id FROM predictions WHERE memory_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                        (memory_id, int(keep))).fetchone()
    if edge is None:
        return 0
    return conn.execute("DELETE FROM predictions WHERE memory_id = ? AND id <= ?", (memory_id, edge[0])).rowcount


def erase_source(conn: sqlite3.Connection, source_id: str, memory_id: str | None) -> tuple[int, list[tuple[str, str]]]:
    """Delete the log rows of `source_id` (one memory or all) -> (rows deleted, [(memory, label source)]
    of the support made from them by an operator's label, which the caller erases too)."""
    where, args = ("source_id = ?", [source_id]) if memory_id is None else ("source_id = ? AND memory_id = ?", [source_id, memory_id])
    derived = [(m, s) for m, s in conn.execute(f"SELECT memory_id, label_source FROM predictions WHERE {where} "
                                               "AND label_source IS NOT NULL", args)]
    n = conn.execute(f"DELETE FROM predictions WHERE {where}", args).rowcount
    conn.execute(f"UPDATE predictions SET label = NULL, label_source = NULL, labelled = NULL WHERE "
                 f"{where.replace('source_id', 'label_source', 1)}", args)  # the erased source was a label's support
    return n, derived


def preview_source(conn: sqlite3.Connection, source_id: str, memory_id: str) -> dict:
    """What deleting `source_id` from a memory would remove, without removing it."""
    derived = [s for (s,) in conn.execute("SELECT label_source FROM predictions WHERE source_id = ? AND memory_id = ? "
                                          "AND label_source IS NOT NULL", (source_id, memory_id))]
    sources = [source_id, *derived]
    marks = ", ".join("?" * len(sources))
    one = lambda sql, args: int(conn.execute(sql, args).fetchone()[0])  # noqa: E731
    return {
        "entries": one(f"SELECT count(*) FROM entries WHERE memory_id = ? AND source_id IN ({marks})", [memory_id, *sources]),
        "snapshot_copies": one(f"SELECT count(*) FROM snapshot_entries WHERE source_id IN ({marks}) AND snapshot_id IN "
                               "(SELECT id FROM snapshots WHERE memory_id = ?)", [*sources, memory_id]),
        "learned_states": one(f"SELECT count(*) FROM learned_states WHERE memory_id = ? AND EXISTS (SELECT 1 FROM "
                              f"json_each(learned_states.sources) WHERE value IN ({marks}))", [memory_id, *sources]),
        "predictions": one("SELECT count(*) FROM predictions WHERE memory_id = ? AND source_id = ?", (memory_id, source_id)),
        "corrections": len(derived),
    }


def rows(conn: sqlite3.Connection, memory_id: str, *, limit: int = 50, order: str = "recent",
         unlabelled: bool = False, with_thumbnails: bool = False) -> list[dict]:
    """Log rows as dicts: order "recent" (newest first), "uncertain" (smallest margin first) or "least-confident"."""
    by = {"recent": "id DESC", "uncertain": "margin ASC, id DESC", "least-confident": "confidence ASC, id DESC"}[order]
    cols = ", ".join(ROW) + (", thumbnail" if with_thumbnails else "")
    where = "memory_id = ?" + (" AND label IS NULL" if unlabelled else "")
    out = []
    for r in conn.execute(f"SELECT {cols} FROM predictions WHERE {where} ORDER BY {by} LIMIT ?", (memory_id, int(limit))):
        item = dict(zip(ROW, r))
        item["topk"] = json.loads(item["topk"])
        if with_thumbnails:
            item["thumbnail"] = r[len(ROW)]
        out.append(item)
    return out


def row(conn: sqlite3.Connection, memory_id: str, prediction_id: int) -> dict | None:
    """One log row with its stored feature (`feature`, `scale`), or None."""
    r = conn.execute(f"SELECT {', '.join(ROW)}, feature, scale FROM predictions WHERE memory_id = ? AND id = ?",
                     (memory_id, int(prediction_id))).fetchone()
    if r is None:
        return None
    item = dict(zip(ROW, r))
    item["topk"], item["feature"], item["scale"] = json.loads(item["topk"]), r[len(ROW)], r[len(ROW) + 1]
    return item


def set_label(conn: sqlite3.Connection, memory_id: str, prediction_id: int, label: int | None, label_source: str | None,
              now: float) -> None:
    conn.execute("UPDATE predictions SET label = ?, label_source = ?, labelled = ? WHERE memory_id = ? AND id = ?",
                 (label, label_source, None if label is None else now, memory_id, int(prediction_id)))


def audit(conn: sqlite3.Connection, memory_id: str | None, actor: str, action: str, detail: dict,
          now: float | None = None) -> None:
    conn.execute("INSERT INTO audit(memory_id, time, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
                 (memory_id, time.time() if now is None else now, actor, action, json.dumps(detail, sort_keys=True)))


def audit_rows(conn: sqlite3.Connection, memory_id: str, limit: int = 50) -> list[dict]:
    keys = ("seq", "time", "actor", "action", "detail")
    return [{**dict(zip(keys, r)), "detail": json.loads(r[4])} for r in conn.execute(
        "SELECT seq, time, actor, action, detail FROM audit WHERE memory_id = ? ORDER BY seq DESC LIMIT ?",
        (memory_id, int(limit)))]


def count(conn: sqlite3.Connection, memory_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM predictions WHERE memory_id = ?", (memory_id,)).fetchone()[0])


# -------------------------------------------------------------------------- export / import
EXPORTED = ("time", "version", "class", "confidence", "margin", "entropy", "topk", "write_label", "source_id",
            "latency_ms", "label", "label_source", "labelled")


def export_rows(conn: sqlite3.Connection, memory_id: str) -> tuple[list[dict], list[bytes | None], list, list]:
    """(row dicts, feature blobs, scales, thumbnails) of a memory's log, oldest first."""
    out, blobs, scales, thumbs = [], [], [], []
    for r in conn.execute(f"SELECT {', '.join(EXPORTED)}, feature, scale, thumbnail FROM predictions WHERE memory_id = ? "
                          "ORDER BY id", (memory_id,)):
        item = dict(zip(EXPORTED, r))
        item["topk"] = json.loads(item["topk"])
        out.append(item)
        blobs.append(r[len(EXPORTED)])
        scales.append(r[len(EXPORTED) + 1])
        thumbs.append(r[len(EXPORTED) + 2])
    return out, blobs, scales, thumbs


def import_rows(conn: sqlite3.Connection, memory_id: str, items: list[tuple]) -> int:
    """Insert checked rows (EXPORTED order, then feature, scale, thumbnail) as the memory's log."""
    cols = ", ".join(EXPORTED) + ", feature, scale, thumbnail"
    marks = ", ".join("?" * (len(EXPORTED) + 4))
    for item in items:
        r = list(item)
        r[EXPORTED.index("topk")] = json.dumps(r[EXPORTED.index("topk")])
        conn.execute(f"INSERT INTO predictions(memory_id, {cols}) VALUES ({marks})", (memory_id, *r))
    return len(items)


def writes(conn: sqlite3.Connection, memory_id: str, *, limit: int = 100, outcome: str | None = None,
           bank: str | None = None, cls: int | None = None, source_id: str | None = None) -> list[dict]:
    """The write log (newest first) filtered by outcome, bank, class and source id (each optional)."""
    keys = ("seq", "time", "source_id", "bank", "class", "entropy", "outcome", "entry_id", "old_id")
    where, args = ["memory_id = ?"], [memory_id]
    for column, value in (("outcome", outcome), ("bank", bank), ("class", cls), ("source_id", source_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    rows = conn.execute(f"SELECT {', '.join(keys)} FROM writes WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                        (*args, int(limit)))
    return [dict(zip(keys, r)) for r in rows]
