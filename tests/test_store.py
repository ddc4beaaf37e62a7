"""The durable memory store: codec, reload equality, snapshots, retention, deletion, crashes, writers."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genba.errors import GenbaError
from genba.memory.read import l2_normalize
from genba.live import LiveMemory, check_encoder
from genba.store import MemorySpec, Store, export_memory, import_memory
from genba.store.archive import read_archive
from genba.store.codec import decode_rows, encode_rows, roundtrip

SRC = str(Path(__file__).resolve().parents[1] / "src")


pytestmark = pytest.mark.usefixtures("one_thread")


def problem(C=4, D=48, seed=0, noise=0.25):
    """Class text vectors and a sampler of clustered features whose right label is known."""
    g = torch.Generator().manual_seed(seed)
    text, u = l2_normalize(torch.randn(C, D, generator=g)), l2_normalize(torch.randn(C, D, generator=g))

    def draw(k):
        y = torch.arange(k) % C
        return l2_normalize(0.7 * u[y] + 0.3 * text[y] + noise * torch.randn(k, D, generator=g)), y

    return text, draw


def new_memory(store, text, method="dmn-tf", hp=None, **policy) -> str:
    C, D = text.shape
    spec = MemorySpec(classnames=[f"class {c}" for c in range(C)], templates=["a {}."], encoder="synthetic",
                      encoder_provenance="synthetic-v1", dim=D, method=method, hyperparameters=hp or {}, **policy)
    return store.create_memory(spec, text.numpy())


def ids(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


def test_codec_float16_exact_int8_bounded():
    x = l2_normalize(torch.randn(20, 64)).numpy()
    half = x.astype(np.float16).astype(np.float32)
    assert np.array_equal(roundtrip(half, "float16"), half)
    err = np.abs(roundtrip(x, "int8") - x).max(axis=1)
    assert (err <= np.abs(x).max(axis=1) / 254 + 1e-7).all()
    blobs, scales = encode_rows(x, "int8")
    assert len(blobs[0]) == 64 and scales[0] > 0
    with pytest.raises(GenbaError, match="damaged"):
        decode_rows([blobs[0][:10]], scales[:1], "int8", 64)


def test_int8_accuracy_cost_is_small(tmp_path):
    """int8 support and queues vs float16, same stream (real data: bench/results/serve.md)."""
    text, draw = problem(C=6, D=64, seed=3, noise=0.15)
    (xs, ys), (xq, yq) = draw(24), draw(240)
    acc = {}
    for fmt in ("float16", "int8"):
        store = Store(tmp_path / f"{fmt}.sqlite")
        live = LiveMemory(store, new_memory(store, text, feature_format=fmt))
        live.add_support(xs, ys, ids("s", len(ys)))
        probs, _ = live.predict(xq, update=True, source_ids=ids("q", len(yq)))
        acc[fmt] = 100.0 * (probs.argmax(1) == yq).float().mean().item()
    print(f"top-1 float16 {acc['float16']:.1f}%, int8 {acc['int8']:.1f}%")
    assert acc["float16"] > 70
    assert abs(acc["int8"] - acc["float16"]) <= 2.0, acc


@pytest.mark.parametrize("method,hp,fmt", [("dmn-tf", {"capacity": 5, "guard_prior": 0.1}, "float16"),
                                           ("dmn-zs", {"capacity": 3}, "int8"), ("tda", {}, "float16")])
def test_predictions_after_reopen_equal_before_close(tmp_path, method, hp, fmt):
    text, draw = problem()
    (xs, ys), (xq, _) = draw(8), draw(50)
    store = Store(tmp_path / "m.sqlite")
    memory_id = new_memory(store, text, method, hp, feature_format=fmt)
    live = LiveMemory(store, memory_id)
    if method == "dmn-tf":
        live.add_support(xs, ys, ids("s", 8))
    _, writes = live.predict(xq[:40], update=True, source_ids=ids("q", 40))
    assert {w["outcome"] for q in writes for w in q} >= {"entered"}
    before = live.predict(xq[40:])[0]
    store.close()
    reopened = Store(tmp_path / "m.sqlite")
    after = LiveMemory(reopened, memory_id).predict(xq[40:])[0]
    assert torch.equal(before, after)
    assert reopened.check() == []


def test_snapshot_rollback_and_log(tmp_path):
    text, draw = problem()
    (xs, ys), (xq, _) = draw(8), draw(60)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, hp={"capacity": 4}))
    live.add_support(xs, ys, ids("s", 8))
    live.predict(xq[:20], update=True, source_ids=ids("a", 20))
    snap, at_snapshot = live.snapshot("before b"), live.predict(xq[50:])[0]
    fill = live.fill()
    live.predict(xq[20:50], update=True, source_ids=ids("b", 30))
    assert not torch.equal(live.predict(xq[50:])[0], at_snapshot)
    live.rollback(snap)
    assert live.fill() == fill and torch.equal(live.predict(xq[50:])[0], at_snapshot)
    outcomes = {w["outcome"] for w in store.writes(live.id, 1000)}
    assert {"entered", "displaced", "rejected", "rolled-back"} <= outcomes
    assert store.snapshots(live.id)[0]["label"] == "before b" and store.check() == []


def test_retention_by_age_and_per_class_cap(tmp_path):
    text, draw = problem()
    (xs, ys) = draw(12)
    store = Store(tmp_path / "m.sqlite")
    memory_id = new_memory(store, text, "tip-adapter", max_per_class=2, max_age_s=100.0)
    store.add_entries(memory_id, "static", xs[:4].numpy(), ys[:4], ids("old", 4), now=1000.0)
    receipt = store.add_entries(memory_id, "static", xs.numpy(), ys, ids("new", 12), now=1050.0)
    assert store.fill(memory_id)["static"] == [2, 2, 2, 2] and receipt.removed == 8  # 16 - 4 classes x 2
    assert all(s.startswith("new") for s in store.entries(memory_id).sources)
    assert store.apply_retention(memory_id, now=1200.0) == 8 and store.fill(memory_id) == {}
    assert "expired" in {w["outcome"] for w in store.writes(memory_id, 100)} and store.check() == []


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


@pytest.mark.parametrize("vacuum", [False, True])
def test_delete_by_source_scrubs_entry_copies_and_file(tmp_path, vacuum):
    text, draw = problem()
    xs, ys = draw(8)
    path = tmp_path / "m.sqlite"
    store = Store(path)
    live = LiveMemory(store, new_memory(store, text, hp={"capacity": 4}))
    secret = l2_normalize(torch.randn(1, 48, generator=torch.Generator().manual_seed(99)))
    live.add_support(torch.cat([xs, secret]), torch.cat([ys, torch.tensor([1])]), ids("s", 8) + ["sha256:secret"])
    live.predict(torch.cat([secret, xs[:1]]), update=True, source_ids=["sha256:secret", "q1"])
    live.snapshot()
    pattern = encode_rows(secret.numpy(), "float16")[0][0]
    assert len(pattern) == 96 and pattern in _files(path)
    counts = live.delete_source("sha256:secret", vacuum=vacuum)
    assert counts["entries"] >= 1 and counts["snapshot_copies"] >= 1 and counts["wal_truncated"]
    assert pattern not in _files(path)
    assert encode_rows(xs[:1].numpy(), "float16")[0][0] in _files(path)  # the grep does see other rows
    assert "sha256:secret" not in {s for s in store.entries(live.id).sources}
    assert all(w["source_id"] != "sha256:secret" for w in store.writes(live.id, 1000)) and store.check() == []


def test_refuses_other_encoder_schema_and_files(tmp_path):
    store = Store(tmp_path / "m.sqlite")
    spec = store.spec(new_memory(store, problem()[0]))
    other = type("E", (), {"provenance": "tiny-v1:d48:s0"})()
    with pytest.raises(GenbaError, match="built with encoder 'synthetic-v1'"):
        check_encoder(spec, other)
    with pytest.raises(GenbaError, match="not comparable"):
        LiveMemory(store, store.memory_ids()[0], encoder=other)
    store.close()
    sqlite3.connect(tmp_path / "m.sqlite").execute("PRAGMA user_version=99").connection.close()
    with pytest.raises(GenbaError, match="schema version 99"):
        Store(tmp_path / "m.sqlite")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(GenbaError, match="not a genba memory store"):
        Store(tmp_path / "other.db")
    (tmp_path / "junk").write_bytes(b"not a database at all" * 100)
    with pytest.raises(GenbaError):
        Store(tmp_path / "junk")


def test_loading_and_import_never_unpickle(tmp_path, monkeypatch):
    text, draw = problem()
    xs, ys = draw(8)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, hp={"capacity": 4}))
    live.add_support(xs, ys, ids("s", 8))
    live.predict(draw(10)[0], update=True, source_ids=ids("q", 10))
    data = export_memory(store, live.id)

    def refuse(*a, **k):
        raise AssertionError("pickle used while loading")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    q = draw(6)[0]
    imported = LiveMemory(store, import_memory(store, data))
    assert torch.equal(LiveMemory(Store(tmp_path / "m.sqlite"), live.id).predict(q)[0], imported.predict(q)[0])


def test_import_rejects_damaged_archives(tmp_path):
    store = Store(tmp_path / "m.sqlite")
    memory_id = new_memory(store, problem()[0])
    good = export_memory(store, memory_id)
    with pytest.raises(GenbaError, match="not a readable"):
        read_archive(b"PK\x03\x04garbage")
    with pytest.raises(GenbaError, match="inflates"):
        read_archive(good, max_bytes=100)
    out = tmp_path / "x.zip"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", b"{}")
        z.writestr("evil.pkl", b"cos\nsystem\n")
    with pytest.raises(GenbaError, match="exactly"):
        read_archive(out.read_bytes())
    assert store.memory_ids() == [memory_id]


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {src!r})
    from genba.store import Store, Write, StaleMemory
    path, memory_id, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = Store(path)
    rng = np.random.default_rng(sum(map(ord, tag)))
    for i in range(n):
        x = rng.standard_normal((1, 48)).astype(np.float32)
        r = store.add_entries(memory_id, "static", x, [i % 4], [f"{{tag}}-s{{i}}"])
        print("ack", r.entry_ids[0], flush=True)
        while True:  # a test-time write into a queue of 3 per class, decided against the stored state
            version = store.version(memory_id)
            e = store.entries(memory_id)
            used = sorted(s for b, c, s in zip(e.banks, e.classes, e.slots) if b == "dynamic" and c == i % 4)
            slot = len(used) if len(used) < 3 else int(rng.integers(3))
            try:
                r = store.record(memory_id, [Write("dynamic", i % 4, slot, x[0], float(rng.random()), f"{{tag}}-q{{i}}")],
                                 expected_version=version)
                break
            except StaleMemory:
                continue
        print("ack", r.entry_ids[0], flush=True)
""")


def _writer(path, memory_id, tag, n):
    code = WRITER.format(src=SRC)
    return subprocess.Popen([sys.executable, "-c", code, str(path), memory_id, tag, str(n)],
                            stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_writes_leaves_a_consistent_store(tmp_path):
    path = tmp_path / "m.sqlite"
    text, draw = problem()
    memory_id = new_memory(Store(path), text, hp={"capacity": 3})
    proc = _writer(path, memory_id, "k", 100_000)
    acked = [int(proc.stdout.readline().split()[1]) for _ in range(60)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = Store(path)
    assert store.check() == []  # integrity_check again, log and entries agree, slots contiguous
    present = set(store.entries(memory_id).ids.tolist())
    removed = {w["old_id"] for w in store.writes(memory_id, 10**6) if w["old_id"] is not None}
    assert all(i in present or i in removed for i in acked)
    LiveMemory(store, memory_id).predict(draw(3)[0], update=True, source_ids=ids("after", 3))
    assert store.check() == []


def test_concurrent_writers_threads_and_processes_lose_nothing(tmp_path):
    import threading

    path, n = tmp_path / "m.sqlite", 12
    memory_id = new_memory(Store(path), problem()[0], hp={"capacity": 3})
    procs = [_writer(path, memory_id, f"p{k}", n) for k in range(3)]
    store = Store(path)
    errors = []

    def thread_writer(tag):
        try:
            for i in range(n):
                store.add_entries(memory_id, "static", np.ones((1, 48), np.float32) * (i + 1), [i % 4], [f"{tag}-s{i}"])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=thread_writer, args=(f"t{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for t in threads:
        t.join()
    assert not errors and all(p.returncode == 0 for p in procs)
    assert sum(o.count("ack") for o in outputs) == 3 * 2 * n
    e = store.entries(memory_id)
    static = {s for b, s in zip(e.banks, e.sources) if b == "static"}
    assert static == {f"{tag}-s{i}" for tag in ("p0", "p1", "p2", "t0", "t1") for i in range(n)}
    logged = [w for w in store.writes(memory_id, 10**6) if w["bank"] == "dynamic"]
    assert len(logged) == 3 * n and store.check() == []


def count_training(monkeypatch) -> list:
    """Replace the engine's fit as the trained methods call it; returns the list of calls."""
    import genba.methods.dmn_trained as dmn_trained
    import genba.train as train

    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return train.fit(*args, **kwargs)

    monkeypatch.setattr(dmn_trained, "fit", counted)
    return calls


def test_trained_method_state_persists_and_follows_the_support(tmp_path, monkeypatch):
    """dmn trains once per support set: a reopen, another process's view or a refresh restore the
    stored biases; a deleted support source deletes them and the next build trains again."""
    calls = count_training(monkeypatch)
    text, draw = problem()
    (xs, ys), (xq, _) = draw(12), draw(30)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, "dmn", {"train.epochs": 3}))
    live.add_support(xs, ys, ids("s", 12))
    assert len(calls) == 1  # the trial fit's biases are the ones kept: not trained again after the commit
    before = live.predict(xq)[0]
    store.close()
    reopened = Store(tmp_path / "m.sqlite")
    again = LiveMemory(reopened, live.id)
    assert len(calls) == 1 and torch.equal(again.predict(xq)[0], before)
    (fingerprint,) = [r[0] for r in reopened._conn().execute("SELECT fingerprint FROM learned_states")]

    again.delete_source("s3")
    assert len(calls) == 2  # new support, new biases, kept under a new fingerprint
    rows = reopened._conn().execute("SELECT fingerprint, sources FROM learned_states").fetchall()
    assert len(rows) == 1 and rows[0][0] != fingerprint and "s3" not in rows[0][1]
    reopened.delete_source("s5")  # store-level erase: what was learned from s5 goes with it
    assert reopened._conn().execute("SELECT count(*) FROM learned_states").fetchone()[0] == 0
    assert reopened.check() == []


def test_damaged_learned_state_is_retrained_not_trusted(tmp_path, monkeypatch):
    calls = count_training(monkeypatch)
    text, draw = problem()
    (xs, ys), (xq, _) = draw(12), draw(30)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, "dmn", {"train.epochs": 3}))
    live.add_support(xs, ys, ids("s", 12))
    before = live.predict(xq)[0]
    store._conn().execute("UPDATE learned_states SET tensors = ?", (b"not safetensors",))
    rebuilt = LiveMemory(store, live.id)
    assert len(calls) == 2 and torch.equal(rebuilt.predict(xq)[0], before)  # seeded: the same biases again
    (blob,) = [r[0] for r in store._conn().execute("SELECT tensors FROM learned_states")]
    assert blob != b"not safetensors"  # replaced by the retrained biases
    assert store.learned_state(live.id, "no such fingerprint") is None
