"""The operator console's API: prediction log, erasure, corrections, review queue, Label Studio, warnings."""

from __future__ import annotations

import sqlite3
import zipfile
import io
import json

import numpy as np
import pytest
import torch

from genba.errors import GenbaError
from genba.methods import Feats, create_method
from genba.store import MemorySpec, Store, export_memory, import_memory, predlog, series
from test_serve import ADMIN, COLORS, add_support, client, files, new_memory, png, web  # noqa: F401  (fixture)


def predict(client, memory_id, auth, n=3, seed=0, update=True, sources=None):
    items = [(f"q{i}.png", png(list(COLORS.values())[i % 3], seed=seed + i), "image/png") for i in range(n)]
    data = {"update": "true" if update else "false"}
    if sources:
        data["source_ids"] = sources
    r = client.post(f"/memories/{memory_id}/predict", headers=auth, files=files(items), data=data)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def console(client, memory_id, auth):
    r = client.get(f"/memories/{memory_id}/console.json", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


@web
def test_every_prediction_is_logged_with_its_fields_and_survives_a_restart(client, tmp_path):
    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth)
    served = predict(client, memory_id, auth, n=4, sources=["a", "b", "c", "d"])
    data = console(client, memory_id, auth)
    assert data["logged"] == 4 and [p["prediction_id"] for p in served] == [1, 2, 3, 4]
    rows = {r["id"]: r for r in data["recent"]}
    for p in served:
        row = rows[p["prediction_id"]]
        assert row["class_name"] == p["class"] and row["source_id"] == p["source_id"]
        assert row["confidence"] == pytest.approx(p["confidence"], abs=1e-6)
        assert row["topk"][0][0] == p["class"] and row["latency_ms"] > 0 and 0 <= row["entropy"] <= 1
        assert row["write_label_name"] in COLORS  # dmn writes its dynamic memory under a label
        assert row["version"] >= 1
    bucket = data["series"]["buckets"][-1]
    assert sum(b["count"] for b in data["series"]["buckets"]) == 4 and bucket["p50_ms"] > 0
    # durable: a new service on the same file sees the same log
    client.app.state.service.close()
    from genba.serve import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(client.app.state.service.store.path, "admin-secret-0123456789", encoders=("tiny",))) as again:
        assert console(again, memory_id, ADMIN)["logged"] == 4


@web
def test_log_is_bounded_and_thumbnails_only_when_opted_in(client):
    plain, auth = new_memory(client, log_size=5)
    add_support(client, plain, auth)
    for k in range(3):
        predict(client, plain, auth, n=3, seed=10 * k)
    data = console(client, plain, auth)
    assert data["logged"] == 5 and all(r.get("thumbnail") is None for r in data["recent"])
    assert min(r["id"] for r in data["recent"]) == 5  # the oldest four rolled out
    images, auth2 = new_memory(client, log_images=True)
    add_support(client, images, auth2)
    predict(client, images, auth2, n=2)
    recent = console(client, images, auth2)["recent"]
    assert all(r["thumbnail"].startswith("data:image/jpeg;base64,") for r in recent)
    off, auth3 = new_memory(client, log_size=0)
    add_support(client, off, auth3)
    assert predict(client, off, auth3, n=1)[0]["prediction_id"] is None and console(client, off, auth3)["logged"] == 0


@web
def test_delete_source_erases_log_rows_and_corrections_with_a_preview(client):
    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth)
    served = predict(client, memory_id, auth, n=3, sources=["cam-1", "cam-2", "cam-3"])
    pid = served[0]["prediction_id"]
    other = [c for c in COLORS if c != served[0]["class"]][0]
    r = client.post(f"/memories/{memory_id}/predictions/{pid}/label", headers=auth, json={"label": other})
    assert r.status_code == 200 and r.json()["source_id"] == f"label:{pid}" and not r.json()["confirmed"]
    r = client.post(f"/memories/{memory_id}/delete-source/preview", headers=auth, json={"source_id": "cam-1"})
    preview = r.json()
    assert preview["predictions"] == 1 and preview["corrections"] == 1 and preview["entries"] >= 1  # the correction's support
    store = client.app.state.service.store
    assert "label:1" in store.entries(memory_id).sources
    r = client.post(f"/memories/{memory_id}/delete-source", headers=auth, json={"source_id": "cam-1"})
    assert r.status_code == 200 and r.json()["predictions"] == 1 and r.json()["entries"] == preview["entries"]
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM predictions WHERE source_id = 'cam-1'").fetchone()[0] == 0
    assert "label:1" not in store.entries(memory_id).sources and "cam-1" not in store.entries(memory_id).sources
    assert console(client, memory_id, auth)["logged"] == 2
    audit = client.get(f"/memories/{memory_id}/audit", headers=auth).json()["audit"]
    assert audit[0]["action"] == "delete-source" and "cam-1" not in json.dumps(audit)  # kept as a hash
    assert store.check() == []


@web
def test_corrections_teach_retrain_once_and_are_idempotent(client):
    memory_id, auth = new_memory(client, method="dmn")  # a trained method: learned state per support
    add_support(client, memory_id, auth)
    store = client.app.state.service.store
    conn = store._conn()
    first = conn.execute("SELECT fingerprint FROM learned_states WHERE memory_id = ?", (memory_id,)).fetchone()[0]
    served = predict(client, memory_id, auth, n=3, update=False)
    support = sum(store.fill(memory_id)["static"])
    key = {**auth, "Idempotency-Key": "click-1"}
    a = client.post(f"/memories/{memory_id}/predictions/{served[1]['prediction_id']}/label", headers=key,
                    json={"label": served[1]["class"]})
    b = client.post(f"/memories/{memory_id}/predictions/{served[1]['prediction_id']}/label", headers=key,
                    json={"label": served[1]["class"]})
    assert a.status_code == b.status_code == 200 and a.json() == b.json() and a.json()["confirmed"]
    assert sum(store.fill(memory_id)["static"]) == support + 1  # one new support row, not two
    second = conn.execute("SELECT fingerprint FROM learned_states WHERE memory_id = ?", (memory_id,)).fetchone()[0]
    assert second != first  # retrained once on the grown support
    # the same label without a key is a no-op too; a different label replaces the correction
    c = client.post(f"/memories/{memory_id}/predictions/{served[1]['prediction_id']}/label", headers=auth,
                    json={"label": served[1]["class"]})
    assert c.json()["changed"] is False and sum(store.fill(memory_id)["static"]) == support + 1
    other = [n for n in COLORS if n != served[1]["class"]][0]
    d = client.post(f"/memories/{memory_id}/predictions/{served[1]['prediction_id']}/label", headers=auth, json={"label": other})
    assert d.json()["changed"] and not d.json()["confirmed"] and sum(store.fill(memory_id)["static"]) == support + 1
    assert client.post(f"/memories/{memory_id}/predictions/999/label", headers=auth, json={"label": other}).status_code == 404
    assert client.post(f"/memories/{memory_id}/predictions/1/label", headers=auth, json={"label": "nope"}).status_code == 400
    actions = [a["action"] for a in client.get(f"/memories/{memory_id}/audit", headers=auth).json()["audit"]]
    assert actions.count("label") == 3 and "label (repeat, not run again)" in actions
    buckets = console(client, memory_id, auth)["series"]["buckets"]
    assert sum(b["labelled"] for b in buckets) == 1  # accuracy over time counts confirmed rows
    assert [b["accuracy"] for b in buckets if b["labelled"]] == [0.0]


@web
def test_queue_is_ordered_by_margin_and_label_studio_round_trip(client):
    memory_id, auth = new_memory(client, log_images=True)
    add_support(client, memory_id, auth)
    predict(client, memory_id, auth, n=6, update=False)
    queue = client.get(f"/memories/{memory_id}/queue", headers=auth).json()["queue"]
    margins = [q["margin"] for q in queue]
    assert len(queue) == 6 and margins == sorted(margins)
    tasks = client.get(f"/memories/{memory_id}/queue/label-studio", headers=auth).json()
    assert [t["data"]["genba_prediction_id"] for t in tasks] == [q["id"] for q in queue]
    first = tasks[0]
    assert first["data"]["image"].startswith("data:image/jpeg") and first["predictions"][0]["result"][0]["type"] == "choices"
    config = client.get(f"/memories/{memory_id}/queue/label-studio?config=true", headers=auth).text
    assert all(f'value="{n}"' in config for n in COLORS) and 'toName="image"' in config
    # what Label Studio exports after annotation: tasks with annotations (one cancelled, one without any)
    export = []
    for t, name in zip(tasks[:3], ["red", "blue", "green"]):
        export.append({**t, "id": 100 + len(export), "annotations": [
            {"id": 1, "was_cancelled": False, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                            "value": {"choices": [name]}}]}]})
    export.append({**tasks[3], "annotations": [{"was_cancelled": True, "result": [
        {"type": "choices", "value": {"choices": ["red"]}}]}]})
    export.append({**tasks[4], "annotations": []})
    r = client.post(f"/memories/{memory_id}/label-studio", headers=auth, json=export)
    assert r.status_code == 200 and r.json() == {"labelled": 3, "unchanged": 0, "skipped": 2}
    again = client.post(f"/memories/{memory_id}/label-studio", headers=auth, json=export).json()
    assert again == {"labelled": 0, "unchanged": 3, "skipped": 2}
    left = client.get(f"/memories/{memory_id}/queue", headers=auth).json()["queue"]
    assert len(left) == 3 and {q["id"] for q in left} == {t["data"]["genba_prediction_id"] for t in tasks[3:]}
    rows = {r["id"]: r for r in client.get(f"/memories/{memory_id}/predictions?limit=10", headers=auth).json()["predictions"]}
    assert [rows[t["data"]["genba_prediction_id"]]["label_name"] for t in tasks[:3]] == ["red", "blue", "green"]
    bad = client.post(f"/memories/{memory_id}/label-studio", headers=auth, json=[{"data": {}, "annotations": []}])
    assert bad.status_code == 400 and "genba_prediction_id" in bad.json()["detail"]


@web
def test_rollback_snapshot_idempotent_and_writes_filter(client):
    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth)
    key = {**auth, "Idempotency-Key": "snap-1"}
    s1 = client.post(f"/memories/{memory_id}/snapshot", headers=key, json={"label": "before"}).json()
    s2 = client.post(f"/memories/{memory_id}/snapshot", headers=key, json={"label": "before"}).json()
    assert s1 == s2 and len(client.get(f"/memories/{memory_id}/snapshots", headers=auth).json()["snapshots"]) == 1
    predict(client, memory_id, auth, n=3)
    store = client.app.state.service.store
    assert "dynamic" in store.fill(memory_id)
    rb = {**auth, "Idempotency-Key": "rb-1"}
    a = client.post(f"/memories/{memory_id}/rollback", headers=rb, json={"snapshot_id": s1["snapshot_id"]})
    b = client.post(f"/memories/{memory_id}/rollback", headers=rb, json={"snapshot_id": s1["snapshot_id"]})
    assert a.json() == b.json() and "dynamic" not in store.fill(memory_id)
    rolled = client.get(f"/memories/{memory_id}/writes?outcome=rolled-back", headers=auth).json()["writes"]
    assert rolled and all(w["outcome"] == "rolled-back" and w["bank"] == "dynamic" for w in rolled)
    static = client.get(f"/memories/{memory_id}/writes?bank=static&class=0", headers=auth).json()["writes"]
    assert static and all(w["bank"] == "static" and w["class"] == 0 for w in static)
    lineage = console(client, memory_id, auth)["lineage"]
    assert lineage["last_rollback"]["detail"]["snapshot_id"] == s1["snapshot_id"] and lineage["support_entries"] == 6
    assert client.post(f"/memories/{memory_id}/snapshot", headers={**auth, "Idempotency-Key": "x" * 200},
                       json={}).status_code == 400


def synthetic_store(tmp_path, C=3, D=8, **policy):
    store = Store(tmp_path / "w.sqlite")
    spec = MemorySpec(classnames=[f"c{c}" for c in range(C)], templates=["a {}."], encoder="synthetic",
                      encoder_provenance="synthetic-v1", dim=D, **policy)
    return store, store.create_memory(spec, np.eye(C, D, dtype=np.float32))


def log(store, memory_id, probs, write_labels, now, sources=None, latency=5.0):
    probs = np.asarray(probs, dtype=np.float32)
    n, D = len(probs), store.spec(memory_id).dim
    rows = predlog.log_rows(probs, write_labels, sources or [f"s{i}" for i in range(n)], latency, 1,
                            [np.zeros(D, np.float16).tobytes()] * n, [None] * n, None, now)
    with store.transaction() as conn:
        predlog.insert(conn, memory_id, rows, store.spec(memory_id).log_size)


def test_warnings_never_written_collapse_and_drift(tmp_path):
    store, memory_id = synthetic_store(tmp_path)
    names = store.spec(memory_id).classnames
    conn = store._conn()
    served_1 = [[0.1, 0.8, 0.1]] * 60  # served class 1, always written under class 0
    log(store, memory_id, served_1, [0] * 60, now=1000.0)
    kinds = {w["kind"]: w for w in series.warnings(conn, memory_id, names, {"dynamic": [60, 0, 0]})}
    assert kinds["never-written"]["class"] == "c1" and kinds["collapse"]["class"] == "c0" and "confidence-drift" not in kinds
    # balanced writes and a filled class: no warning
    store2, m2 = synthetic_store(tmp_path / "b")
    log(store2, m2, [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 30, [0, 1, 2] * 30, now=1000.0)
    assert series.warnings(store2._conn(), m2, names, {"dynamic": [30, 30, 30]}) == []
    # confidence falling: 600 at 0.9 then 200 at 0.5
    store3, m3 = synthetic_store(tmp_path / "c")
    log(store3, m3, [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]] * 200, [-1] * 600, now=1000.0)
    log(store3, m3, [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]] * 100, [-1] * 200, now=2000.0)
    kinds = [w["kind"] for w in series.warnings(store3._conn(), m3, names, {})]
    assert kinds == ["confidence-drift"]  # no dynamic-memory rule without write labels


def test_series_buckets_percentiles_and_accuracy(tmp_path):
    store, memory_id = synthetic_store(tmp_path)
    for k in range(10):  # ten requests of two images, one per 10 s, latency 10 k ms
        log(store, memory_id, [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]], [0, 0], now=1000.0 + 10 * k, latency=10.0 * (k + 1))
    with store.transaction() as conn:
        predlog.set_label(conn, memory_id, 1, 0, "label:1", 2000.0)  # right
        predlog.set_label(conn, memory_id, 2, 0, "label:2", 2000.0)  # wrong (served class 1)
    s = series.series(store._conn(), memory_id, 3, buckets=2)
    assert s["total"] == 20 and len(s["buckets"]) == 2
    first, second = s["buckets"]
    assert first["count"] + second["count"] == 20 and first["per_class"][0] == first["count"] // 2
    assert first["write_differs"] == pytest.approx(0.5) and first["accuracy"] == pytest.approx(0.5)
    assert second["accuracy"] is None and first["p50_ms"] < second["p50_ms"]
    assert second["p99_ms"] == pytest.approx(np.percentile([60, 70, 80, 90, 100], 99))
    assert first["requests_per_s"] == pytest.approx(5 / s["width_s"])


def test_log_exported_imported_and_old_files_migrate(tmp_path):
    store, memory_id = synthetic_store(tmp_path, log_images=True)
    jpeg = b"\xff\xd8\xff\xe0fakejpeg"
    rows = predlog.log_rows(np.array([[0.6, 0.3, 0.1]], np.float32), [2], ["cam"], 3.0, 1,
                            [np.ones(8, np.float16).tobytes()], [None], [jpeg], 1234.0)
    with store.transaction() as conn:
        predlog.insert(conn, memory_id, rows, 100)
    data = export_memory(store, memory_id)
    other = Store(tmp_path / "other.sqlite")
    new_id = import_memory(other, data)
    got = predlog.rows(other._conn(), new_id, with_thumbnails=True)
    assert len(got) == 1 and got[0]["write_label"] == 2 and got[0]["thumbnail"] == jpeg and got[0]["source_id"] == "cam"
    assert predlog.row(other._conn(), new_id, got[0]["id"])["feature"] == np.ones(8, np.float16).tobytes()
    # a hostile row is refused before anything is stored
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(archive.read("manifest.json"))
    manifest["predictions"][0]["class"] = 7
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("tensors.safetensors", archive.read("tensors.safetensors"))
    with pytest.raises(GenbaError, match="prediction 0 is malformed"):
        import_memory(other, out.getvalue())
    assert len(other.memory_ids()) == 1
    # a store file from before the log existed gains its tables on open
    old = tmp_path / "old.sqlite"
    Store(old).close()
    conn = sqlite3.connect(old)
    conn.execute("DROP TABLE predictions")
    conn.execute("DROP TABLE audit")
    conn.close()
    reopened = Store(old)
    assert reopened._conn().execute("SELECT count(*) FROM predictions").fetchone()[0] == 0
    assert reopened.check() == []


@pytest.mark.parametrize("rule", ["reference", "final"])
def test_dmn_write_label_rule(rule):
    g = torch.Generator().manual_seed(0)
    C, D = 3, 16
    text = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    support = torch.nn.functional.normalize(text.repeat(2, 1) + 0.3 * torch.randn(2 * C, D, generator=g), dim=1)
    queries = torch.nn.functional.normalize(text[torch.tensor([0, 1, 2, 1])] + 0.5 * torch.randn(4, D, generator=g), dim=1)
    m = create_method("dmn-tf", write_label=rule)
    m.fit(text, Feats(support), torch.arange(2 * C) % C, num_classes=C)
    probs = m.predict_stream(Feats(queries))
    zero_shot = (100 * queries @ text.T).argmax(1)
    expected = probs.argmax(1) if rule == "final" else zero_shot
    assert torch.equal(m.write_labels, expected)
    with pytest.raises(GenbaError, match="write_label"):
        create_method("dmn-tf", write_label="served")


@web
def test_docs_are_served_from_installed_assets(client):
    from genba.serve.routes import swagger_assets

    page = client.get("/docs")
    assert page.status_code == 200 and "http" not in page.text.split("<body>")[1]  # no external URL
    if swagger_assets() is None:
        assert "pip install" in page.text
        pytest.skip("fastapi-offline (the serve extra) is not installed")
    assert "/docs/swagger-ui-bundle.js" in page.text and "script-src 'self'" in page.headers["Content-Security-Policy"]
    js = client.get("/docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000 and "SwaggerUIBundle" in js.text[:5000]
    assert client.get("/docs/../../etc/passwd").status_code == 404 and client.get("/docs/favicon.png").status_code == 404


@web
def test_create_and_support_run_once_per_idempotency_key(client):
    body = {"classnames": list(COLORS), "encoder": "tiny", "name": "double click"}
    key = {**ADMIN, "Idempotency-Key": "create-1"}
    a, b = (client.post("/memories", headers=key, json=body) for _ in range(2))
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    assert len(client.get("/memories", headers=ADMIN).json()["memories"]) == 1
    memory_id = a.json()["id"]
    items = [(f"{n}.png", png(rgb), "image/png") for n, rgb in COLORS.items()]
    once = {**ADMIN, "Idempotency-Key": "support-1"}
    for _ in range(2):
        r = client.post(f"/memories/{memory_id}/support", headers=once, files=files(items), data={"labels": list(COLORS)})
        assert r.status_code == 200
    assert sum(client.app.state.service.store.fill(memory_id)["static"]) == 3
    audit = client.get(f"/memories/{memory_id}/audit", headers=ADMIN).json()["audit"]
    assert [a["action"] for a in audit][::-1] == ["create", "create (repeat, not run again)", "support",
                                                  "support (repeat, not run again)"]
