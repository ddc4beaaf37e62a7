"""Learned states in the store: verified like every artefact (a bad one is retrained, never served)
and written only against the support they were trained on (compare-and-set on the memory's version)."""

from __future__ import annotations

import math

import torch

from genba.live import LiveMemory, encode_learned
from genba.store import Store
from test_store import count_training, ids, new_memory, problem


def rows(store):
    return store._conn().execute("SELECT fingerprint, sources, tensors FROM learned_states").fetchall()


def test_nonfinite_or_foreign_learned_state_is_retrained_not_served(tmp_path, monkeypatch):
    calls = count_training(monkeypatch)
    text, draw = problem()
    (xs, ys), (xq, _) = draw(12), draw(30)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, "dmn", {"train.epochs": 3}))
    live.add_support(xs, ys, ids("s", 12))
    before = live.predict(xq)[0]
    (fingerprint, sources, blob), = rows(store)
    good = live.method.state_dict()
    for bad in ({k: torch.full_like(v, math.nan) for k, v in good.items()},  # NaN with a valid checksum
                {k: torch.full_like(v, math.inf) for k, v in good.items()}):
        store._conn().execute("UPDATE learned_states SET tensors = ?", (encode_learned(bad, fingerprint),))
        n = len(calls)
        rebuilt = LiveMemory(store, live.id)
        assert len(calls) == n + 1 and torch.equal(rebuilt.predict(xq)[0], before)
    # a state stored for another support (blob moved between rows) is not trusted either
    store._conn().execute("UPDATE learned_states SET tensors = ?", (encode_learned(good, "0" * 64),))
    n = len(calls)
    LiveMemory(store, live.id)
    assert len(calls) == n + 1
    # one flipped byte: checksum
    (_, _, blob), = rows(store)
    flipped = bytearray(blob)
    flipped[-3] ^= 1
    store._conn().execute("UPDATE learned_states SET tensors = ?", (bytes(flipped),))
    n = len(calls)
    LiveMemory(store, live.id)
    assert len(calls) == n + 1


def test_put_learned_state_compares_the_version(tmp_path):
    text, draw = problem()
    xs, ys = draw(12)
    store = Store(tmp_path / "m.sqlite")
    live = LiveMemory(store, new_memory(store, text, "dmn", {"train.epochs": 2}))
    live.add_support(xs, ys, ids("s", 12))
    version = store.version(live.id)
    blob = encode_learned(live.method.state_dict(), "f" * 64)
    other = Store(tmp_path / "m.sqlite")
    other.delete_source("s3")
    assert not store.put_learned_state(live.id, "f" * 64, blob, ids("s", 12), version=version)
    assert all(r[0] != "f" * 64 for r in rows(store))
    assert store.put_learned_state(live.id, "f" * 64, blob, ids("s", 12), version=store.version(live.id))


def test_state_trained_while_a_source_is_deleted_is_not_kept(tmp_path, monkeypatch):
    """The race of issue 17: a process trains on the old support while another deletes one of its
    sources; what it trained must not be stored after the delete returned."""
    import genba.methods.dmn_trained as dmn_trained
    import genba.train as train

    text, draw = problem()
    xs, ys = draw(12)
    store = Store(tmp_path / "m.sqlite")
    memory = new_memory(store, text, "dmn", {"train.epochs": 2})
    LiveMemory(store, memory).add_support(xs, ys, ids("s", 12))
    store._conn().execute("DELETE FROM learned_states")
    other = Store(tmp_path / "m.sqlite")

    def fit_while_deleting(*args, **kwargs):
        result = train.fit(*args, **kwargs)
        if not other.check() and "s3" in [s for s in other.entries(memory).sources]:
            other.delete_source("s3")  # lands between the trainer's read of the support and its write
        return result

    monkeypatch.setattr(dmn_trained, "fit", fit_while_deleting)
    LiveMemory(store, memory)
    assert all("s3" not in sources for _, sources, _ in rows(store))
    assert "s3" not in other.entries(memory).sources
