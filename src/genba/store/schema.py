"""The SQLite file behind a memory store: schema, connection settings and version checks.

One file holds many memories. It is identified by PRAGMA application_id = GENB and versioned by
PRAGMA user_version; a file that is not a genba store, or of another schema version, is refused
with a GenbaError. Every connection runs in WAL mode (readers never block the writer, a killed
writer leaves the last committed state), synchronous=FULL by default (an acknowledged write
survives power loss), secure_delete=ON (deleted rows and freed pages are overwritten with zeros)
and a busy timeout, so writers from several threads and processes queue instead of failing.

Tables: memories (spec JSON, text classifier float32 blob, hashed API token, version counter,
method state JSON), entries (bank, class, slot, source id, entropy, time, feature blob, payload),
writes (the write log), snapshots and snapshot_entries (full copies of entries at a snapshot),
pending_scrubs (one row per erasure whose scrub has not finished: no data, only its time; the
store finishes them when it is next opened, so an erasure survives a crash), learned_states (a
trained method's learned tensors, e.g. DMN's biases, as genba.artefact blobs, keyed
by a fingerprint of the support they were trained on, with the source ids of that support so that
deleting a source also deletes what was learned from it). learned_states is a cache: a memory
whose fingerprint has no row trains again, and exports do not carry it. It is created on open in
files written before it existed, as is pending_scrubs (no schema version change: older genba
ignores both tables). The prediction log and the audit log (`genba.store.predlog`) are added the
same way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from genba.errors import GenbaError
from genba.store import predlog

APPLICATION_ID = 0x47454E42  # "GENB"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE memories (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    text BLOB NOT NULL,
    token_hash TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    bank TEXT NOT NULL,
    class INTEGER NOT NULL,
    slot INTEGER,
    source_id TEXT NOT NULL,
    entropy REAL,
    created REAL NOT NULL,
    scale REAL,
    feature BLOB NOT NULL,
    payload BLOB
);
CREATE INDEX entries_by_class ON entries(memory_id, bank, class);
CREATE INDEX entries_by_source ON entries(source_id);
CREATE UNIQUE INDEX entries_by_slot ON entries(memory_id, bank, class, slot) WHERE slot IS NOT NULL;
CREATE TABLE writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL,
    time REAL NOT NULL,
    source_id TEXT,
    bank TEXT,
    class INTEGER,
    entropy REAL,
    outcome TEXT NOT NULL,
    entry_id INTEGER,
    old_id INTEGER
);
CREATE INDEX writes_by_memory ON writes(memory_id, seq);
CREATE INDEX writes_by_source ON writes(source_id);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE snapshot_entries (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    entry_id INTEGER NOT NULL,
    bank TEXT NOT NULL,
    class INTEGER NOT NULL,
    slot INTEGER,
    source_id TEXT NOT NULL,
    entropy REAL,
    created REAL NOT NULL,
    scale REAL,
    feature BLOB NOT NULL,
    payload BLOB
);
CREATE INDEX snapshot_entries_by_source ON snapshot_entries(source_id);
"""

LEARNED_STATES = """
CREATE TABLE IF NOT EXISTS learned_states (
    memory_id TEXT PRIMARY KEY REFERENCES memories(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    sources TEXT NOT NULL,
    tensors BLOB NOT NULL
)
"""


PENDING_SCRUBS = """
CREATE TABLE IF NOT EXISTS pending_scrubs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL
)
"""


def connect(path: str | Path, *, create: bool, durable: bool = True, timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open (and with `create`, initialise) the store at `path`; autocommit mode, checked version."""
    path = Path(path)
    if not path.exists() and not create:
        raise GenbaError(f"memory store {path} does not exist; create it with `genba serve --store {path}`")
    if path.exists() and path.is_dir():
        raise GenbaError(f"memory store {path} is a folder; pass a file path such as {path / 'genba.sqlite'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            _initialise(conn)
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise GenbaError(f"{path} is an SQLite file but not a genba memory store; pass a genba store or a new path")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise GenbaError(f"memory store {path} has schema version {version} but this genba reads version "
                             f"{SCHEMA_VERSION}; open it with the genba that wrote it and export/import the memories")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'learned_states'").fetchone() is None:
            conn.execute(LEARNED_STATES)  # files from before the table existed
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending_scrubs'").fetchone() is None:
            conn.execute(PENDING_SCRUBS)
        predlog.ensure(conn)  # the prediction and audit logs, likewise
    except sqlite3.OperationalError as error:
        conn.close()
        if "locked" in str(error) or "busy" in str(error):
            raise  # contention, not a bad file: the service answers 503 with Retry-After
        raise GenbaError(f"{path} is not a readable genba memory store ({error})") from None
    except sqlite3.DatabaseError as error:
        conn.close()
        raise GenbaError(f"{path} is not a readable genba memory store ({error})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _initialise(conn: sqlite3.Connection) -> None:
    """Create the schema once, even when several processes open a new file at the same time."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            for statement in SCHEMA.split(";"):  # not executescript: it would commit mid-transaction
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
