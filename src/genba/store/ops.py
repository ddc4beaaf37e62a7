"""Statements shared by the store's transactions: insert and remove entries, retention, snapshots,
rollback, deletion by source id with scrubbing, and the consistency check.

Each function runs inside a transaction its caller opened (`Store.transaction`), except `scrub`
and `check`, which run outside one. Removing entries of a test-time bank renumbers the remaining
slots of that class 0..n-1, the layout the method's in-RAM queues have after a rebuild.
Log outcomes: entered, displaced (old_id), rejected, expired, deleted, rolled-back, restored.
"""

from __future__ import annotations

import json
import sqlite3
import time

from genba.store import predlog

RAW = "bank, class, slot, source_id, entropy, created, scale, feature, payload"
ADDED = ("entered", "displaced", "restored")


def insert_entry(conn: sqlite3.Connection, memory_id: str, row: tuple, outcome: str, now: float, *,
                 entry_id: int | None = None, old_id: int | None = None) -> int:
    """Insert one raw entry (RAW order) and its log row; returns the entry id."""
    cur = conn.execute(f"INSERT INTO entries(id, memory_id, {RAW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (entry_id, memory_id, *row))
    new_id = cur.lastrowid if entry_id is None else entry_id
    conn.execute("INSERT INTO writes(memory_id, time, source_id, bank, class, entropy, outcome, entry_id, old_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (memory_id, now, row[3], row[0], row[1], row[4], outcome, new_id, old_id))
    return new_id


def bump(conn: sqlite3.Connection, memory_id: str) -> int:
    """Increment and return the memory's version (every change to its entries or state)."""
    conn.execute("UPDATE memories SET version = version + 1 WHERE id = ?", (memory_id,))
    return int(conn.execute("SELECT version FROM memories WHERE id = ?", (memory_id,)).fetchone()[0])


def remove(conn: sqlite3.Connection, ids: list[int], outcome: str, now: float, *, redact: bool = False,
           compact: bool = True) -> int:
    """Delete entries by id, log `outcome` for each (source id dropped if `redact`), renumber slots."""
    groups = set()
    for entry_id in ids:
        row = conn.execute("SELECT memory_id, bank, class, slot, source_id FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            continue
        memory_id, bank, cls, slot, source = row
        conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        conn.execute("INSERT INTO writes(memory_id, time, source_id, bank, class, outcome, old_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (memory_id, now, None if redact else source, bank, cls, outcome, entry_id))
        if slot is not None:
            groups.add((memory_id, bank, cls))
    if compact:
        for memory_id, bank, cls in groups:
            rows = conn.execute("SELECT id, slot FROM entries WHERE memory_id = ? AND bank = ? AND class = ? "
                                "AND slot IS NOT NULL ORDER BY slot", (memory_id, bank, cls)).fetchall()
            for new_slot, (entry_id, slot) in enumerate(rows):  # ascending: the target slot is always free
                if slot != new_slot:
                    conn.execute("UPDATE entries SET slot = ? WHERE id = ?", (new_slot, entry_id))
    return len(ids)


def retain(conn: sqlite3.Connection, memory_id: str, spec, now: float) -> int:
    """Remove entries older than spec.max_age_s and beyond spec.max_per_class per (bank, class)."""
    ids: list[int] = []
    if spec.max_age_s is not None:
        ids += [r[0] for r in conn.execute("SELECT id FROM entries WHERE memory_id = ? AND created < ?",
                                           (memory_id, now - spec.max_age_s))]
    if spec.max_per_class is not None:
        over = conn.execute("SELECT bank, class FROM entries WHERE memory_id = ? GROUP BY bank, class HAVING count(*) > ?",
                            (memory_id, spec.max_per_class)).fetchall()
        for bank, cls in over:
            ids += [r[0] for r in conn.execute(
                "SELECT id FROM entries WHERE memory_id = ? AND bank = ? AND class = ? ORDER BY created DESC, id DESC "
                "LIMIT -1 OFFSET ?", (memory_id, bank, cls, spec.max_per_class))]
    return remove(conn, sorted(set(ids)), "expired", now) if ids else 0


def snapshot(conn: sqlite3.Connection, memory_id: str, label: str, now: float) -> int:
    state = conn.execute("SELECT state FROM memories WHERE id = ?", (memory_id,)).fetchone()[0]
    snap = conn.execute("INSERT INTO snapshots(memory_id, label, created, state) VALUES (?, ?, ?, ?)",
                        (memory_id, label, now, state)).lastrowid
    conn.execute(f"INSERT INTO snapshot_entries(snapshot_id, entry_id, {RAW}) SELECT ?, id, {RAW} FROM entries "
                 "WHERE memory_id = ? ORDER BY id", (snap, memory_id))
    return snap


def list_snapshots(conn: sqlite3.Connection, memory_id: str) -> list[dict]:
    rows = conn.execute("SELECT s.id, s.label, s.created, count(e.entry_id) FROM snapshots s LEFT JOIN snapshot_entries e "
                        "ON e.snapshot_id = s.id WHERE s.memory_id = ? GROUP BY s.id ORDER BY s.id", (memory_id,))
    # "snapshot_id" as everywhere else (create, rollback); "id" is its older name, kept for clients
    return [{"snapshot_id": i, "id": i, "label": label, "created": created, "entries": n} for i, label, created, n in rows]


def rollback(conn: sqlite3.Connection, memory_id: str, snapshot_id: int, now: float) -> None:
    from genba.errors import GenbaError

    row = conn.execute("SELECT state FROM snapshots WHERE id = ? AND memory_id = ?", (snapshot_id, memory_id)).fetchone()
    if row is None:
        raise GenbaError(f"memory {memory_id} has no snapshot {snapshot_id}; list them with GET .../snapshots")
    kept = {r[0] for r in conn.execute("SELECT entry_id FROM snapshot_entries WHERE snapshot_id = ?", (snapshot_id,))}
    current = [r[0] for r in conn.execute("SELECT id FROM entries WHERE memory_id = ? ORDER BY id", (memory_id,))]
    remove(conn, [i for i in current if i not in kept], "rolled-back", now, compact=False)
    conn.execute("DELETE FROM entries WHERE memory_id = ?", (memory_id,))  # kept ones come back with their old slots
    present = set(current)
    for entry_id, *raw in conn.execute(f"SELECT entry_id, {RAW} FROM snapshot_entries WHERE snapshot_id = ? ORDER BY entry_id",
                                       (snapshot_id,)).fetchall():
        if entry_id in present:
            conn.execute(f"INSERT INTO entries(id, memory_id, {RAW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (entry_id, memory_id, *raw))
        else:
            insert_entry(conn, memory_id, tuple(raw), "restored", now, entry_id=entry_id)
    conn.execute("UPDATE memories SET state = ? WHERE id = ?", (row[0], memory_id))


def delete_source(conn: sqlite3.Connection, source_id: str, memory_id: str | None, now: float) -> dict:
    """Remove a source's entries, snapshot copies, the learned tensors trained on it, its prediction-log
    rows and the support made from them by an operator's label, and redact it from the write log
    (one memory or all)."""
    where, args = ("source_id = ?", [source_id]) if memory_id is None else ("source_id = ? AND memory_id = ?", [source_id, memory_id])
    hits = conn.execute(f"SELECT id, memory_id FROM entries WHERE {where}", args).fetchall()
    remove(conn, [i for i, _ in hits], "deleted", now, redact=True)
    snap_filter = "" if memory_id is None else " AND snapshot_id IN (SELECT id FROM snapshots WHERE memory_id = ?)"
    copies = conn.execute(f"DELETE FROM snapshot_entries WHERE source_id = ?{snap_filter}",
                          [source_id] + ([] if memory_id is None else [memory_id])).rowcount
    conn.execute(f"UPDATE writes SET source_id = NULL WHERE {where}", args)
    learned_filter = "" if memory_id is None else " AND memory_id = ?"
    conn.execute("DELETE FROM learned_states WHERE EXISTS (SELECT 1 FROM json_each(learned_states.sources) "
                 f"WHERE value = ?){learned_filter}", [source_id] + ([] if memory_id is None else [memory_id]))
    for touched in {m for _, m in hits}:
        bump(conn, touched)
    counts = {"entries": len(hits), "snapshot_copies": copies, "memories": sorted({m for _, m in hits})}
    counts["predictions"], derived = predlog.erase_source(conn, source_id, memory_id)
    for owner, label_source in derived:  # support an operator's label made from this source's prediction
        sub = delete_source(conn, label_source, owner, now)
        counts["entries"] += sub["entries"]
        counts["snapshot_copies"] += sub["snapshot_copies"]
        counts["memories"] = sorted(set(counts["memories"]) | set(sub["memories"]))
    counts["pending"] = conn.execute("INSERT INTO pending_scrubs(created) VALUES (?)", (now,)).lastrowid  # durable: see finish_scrubs
    return counts


def finish_scrubs(conn: sqlite3.Connection, *, wait_s: float = 2.5, upto: int | None = None, vacuum: bool = False) -> bool:
    """Finish the erasures recorded in pending_scrubs (every one, or those with id <= `upto`):
    scrub, then drop their rows (which hold no erased data) and checkpoint that small change too.
    True when none remains pending; False when outside readers still block the scrub."""
    where, args = ("", []) if upto is None else (" WHERE id <= ?", [upto])
    if conn.execute(f"SELECT 1 FROM pending_scrubs{where} LIMIT 1", args).fetchone() is None:
        return True
    if not scrub(conn, wait_s=wait_s, vacuum=vacuum):
        return False
    conn.execute(f"DELETE FROM pending_scrubs{where}", args)
    scrub(conn, wait_s=0.0)
    return True


def scrub(conn: sqlite3.Connection, *, vacuum: bool = False, wait_s: float = 2.5) -> bool:
    """Move the WAL into the main file and truncate it (VACUUM first if asked); True when done.

    secure_delete has already zeroed the deleted cells and freed pages in the new page images;
    the old images live on in WAL frames until this checkpoint overwrites the pages in place.
    A TRUNCATE checkpoint waits for every reader to reach the newest snapshot, so another
    connection holding a read transaction blocks it: this waits at most `wait_s` seconds (busy
    handler set to 50 ms per attempt, then restored) and returns False if readers remain.
    """
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    deadline = time.monotonic() + max(0.0, wait_s)
    conn.execute("PRAGMA busy_timeout=50")
    try:
        if vacuum:
            conn.execute("VACUUM")
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)  # another connection is mid-transaction; try again
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")


def check(conn: sqlite3.Connection) -> list[str]:
    """Integrity and consistency problems of the whole file ([] when sound)."""
    problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
    lost = conn.execute(
        f"SELECT w.entry_id FROM writes w WHERE w.outcome IN {ADDED} AND w.entry_id NOT IN (SELECT id FROM entries) "
        "AND w.entry_id NOT IN (SELECT old_id FROM writes WHERE old_id IS NOT NULL)").fetchall()
    problems += [f"logged entry {r[0]} is neither in the store nor logged as removed" for r in lost]
    unlogged = conn.execute(f"SELECT id FROM entries WHERE id NOT IN (SELECT entry_id FROM writes WHERE outcome IN {ADDED} "
                            "AND entry_id IS NOT NULL)").fetchall()
    problems += [f"entry {r[0]} has no log row" for r in unlogged]
    for memory_id, bank, cls, n, top in conn.execute(
            "SELECT memory_id, bank, class, count(*), max(slot) FROM entries WHERE slot IS NOT NULL GROUP BY memory_id, bank, class"):
        if top != n - 1:
            problems.append(f"memory {memory_id} bank {bank} class {cls}: slots are not 0..{n - 1}")
    for memory_id, state in conn.execute("SELECT id, state FROM memories"):
        try:
            json.loads(state)
        except json.JSONDecodeError:
            problems.append(f"memory {memory_id}: method state is not JSON")
    return problems
