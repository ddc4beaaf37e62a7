"""Erasure survives a crash (issue 17): a reader holds the store, delete-source cannot scrub in time
(the service's 503), the server is SIGKILLed; the next open of the store (a restarted server, before
its first request) finishes the scrub: the deleted bytes are gone from the db, WAL and SHM files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from genba.live import LiveMemory
from genba.memory.read import l2_normalize
from genba.store import Store
from genba.store.codec import encode_rows
from test_store import ids, new_memory, problem

SRC = str(Path(__file__).resolve().parents[1] / "src")
READER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM entries").fetchone()  # a read snapshot the checkpoint must wait for
    print("ready", flush=True)
    time.sleep(120)
""")
SERVER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {src!r})
    from genba.store import Store
    store = Store(sys.argv[1])
    counts = store.delete_source("sha256:secret", wait_s=0.3)
    print(json.dumps(counts), flush=True)
    time.sleep(120)
""")


def files_of(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def test_pending_erasure_is_finished_on_the_next_open_after_sigkill(tmp_path):
    text, draw = problem()
    xs, ys = draw(8)
    path = tmp_path / "m.sqlite"
    store = Store(path)
    live = LiveMemory(store, new_memory(store, text, hp={"capacity": 4}))
    secret = l2_normalize(torch.randn(1, 48, generator=torch.Generator().manual_seed(7)))
    live.add_support(torch.cat([xs, secret]), torch.cat([ys, torch.tensor([2])]), ids("s", 8) + ["sha256:secret"])
    store.close()  # the last connection: the secret row is checkpointed into the main file
    pattern = encode_rows(secret.numpy(), "float16")[0][0]
    assert pattern in files_of(path)

    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, text=True)
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(src=SRC), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        counts = json.loads(server.stdout.readline())
        assert counts["entries"] == 1 and counts["wal_truncated"] is False  # the service answers 503 here
    finally:
        for process in (server, reader):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert pattern in files_of(path)  # killed mid-erasure: the old bytes are still on disk

    restarted = Store(path)  # what a restarted server does first, before it serves anything
    assert pattern not in files_of(path) and b"sha256:secret" not in files_of(path)
    assert restarted._conn().execute("SELECT count(*) FROM pending_scrubs").fetchone()[0] == 0
    assert "sha256:secret" not in restarted.entries(live.id).sources and restarted.check() == []
    restarted.close()
