"""Hostile input to the service: every request a clean 4xx, nothing half-written, nothing eats the machine.

Each test pins one request that used to answer 500, take unbounded memory or time, or leave a
partial write; the property test at the end throws schema-shaped and arbitrary requests at the
whole HTTP API and asserts no 5xx.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import zipfile

import pytest

from genba.errors import GenbaError
from genba.serve import create_app
from genba.serve.uploads import Limits

try:
    from fastapi.testclient import TestClient
except ModuleNotFoundError:  # pragma: no cover - the dev extra installs them
    TestClient = None

from test_serve import ADMIN, COLORS, add_support, files, new_memory, png

pytestmark = pytest.mark.skipif(TestClient is None, reason="the serve extra or httpx is missing")
TOKEN = ADMIN["Authorization"].split()[1]


def make_client(tmp_path, **limits):
    app = create_app(tmp_path / "s.sqlite", TOKEN, encoders=("tiny",), limits=Limits(max_body_bytes=4 << 20, **limits))
    return app, TestClient(app)


@pytest.fixture
def client(tmp_path):
    app, c = make_client(tmp_path)
    with c:
        yield c
    app.state.service.close()


def state_of(client, memory_id):
    store = client.app.state.service.store
    return store.version(memory_id), len(store.entries(memory_id).ids), len(store.writes(memory_id, 10_000))


def test_labels_templates_snapshot_ids_and_ranges_are_4xx(client):
    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)
    before = state_of(client, memory_id)
    good = ("ok.png", png(COLORS["red"], seed=5), "image/png")
    for label in ("\u00b2", "1" * 5000, "\u0661"):  # superscript two, 5000 digits, Arabic-Indic one
        r = client.post(f"/memories/{memory_id}/support", headers=auth, files=files([good]), data={"labels": [label]})
        assert r.status_code == 400 and "unknown label" in r.json()["detail"], r.text
    for snapshot_id in (2**64, 2**70, -1, 0):
        r = client.post(f"/memories/{memory_id}/rollback", headers=auth, json={"snapshot_id": snapshot_id})
        assert r.status_code == 422, r.text
    for template in ("{} {x}", "{}{0}", "{} {.__class__}", "{0}", "{:>10}", "{!r}", "{", "}{}"):
        r = client.post("/memories", headers=ADMIN, json={"classnames": ["a", "b"], "encoder": "tiny", "templates": [template]})
        assert r.status_code in (400, 422) and "template" in r.text, (template, r.text)
    too_big = [({"capacity": 10**6}, "capacity"), ({"capacity": 10**30}, "hyperparameter"), ({"beta": 1e308 * 10}, ""),
               ({"stream_batch": 10**9}, "stream_batch"), ({"b_dyn": -1.0}, "b_dyn")]
    for hp, word in too_big:
        body = json.dumps({"classnames": ["a", "b"], "encoder": "tiny", "hyperparameters": hp}).replace("Infinity", "1e999")
        r = client.post("/memories", headers={**ADMIN, "Content-Type": "application/json"}, content=body)
        assert r.status_code in (400, 422) and word in r.text, (hp, r.text)
    for extra in ({"max_per_class": 10**12}, {"max_age_days": 1e300}, {"classnames": ["x" * 500]}):
        r = client.post("/memories", headers=ADMIN, json={"classnames": ["a", "b"], "encoder": "tiny", **extra})
        assert r.status_code == 422, (extra, r.text)
    r = client.post("/memories", headers=ADMIN, json={"classnames": [f"c{i}" for i in range(2000)], "encoder": "tiny",
                                                       "hyperparameters": {"capacity": 1000}})
    assert r.status_code == 413 and "MB" in r.json()["detail"]
    assert state_of(client, memory_id) == before and client.app.state.service.store.memory_ids() == [memory_id]


def rezip(archive: bytes, manifest=None, tensors=None, compress=zipfile.ZIP_DEFLATED, flag_bits=0) -> bytes:
    """An export with its manifest (dict -> dict or raw bytes) and tensors (dict -> dict or raw bytes) rewritten."""
    from safetensors.numpy import load, save

    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        m, t = json.loads(z.read("manifest.json")), load(z.read("tensors.safetensors"))
    m = manifest(m) if manifest else m
    t = tensors(t) if tensors else t
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in (("manifest.json", m if isinstance(m, bytes) else json.dumps(m).encode()),
                           ("tensors.safetensors", t if isinstance(t, bytes) else save(t))):
            info = zipfile.ZipInfo(name)
            info.compress_type = compress
            z.writestr(info, data)
    raw = out.getvalue()
    if flag_bits:  # mark every member encrypted in its local and central headers (zipfile cannot write one)
        raw = raw.replace(b"PK\x03\x04\x14\x00\x00\x00", b"PK\x03\x04\x14\x00\x01\x00")
        raw = raw.replace(b"PK\x01\x02\x14\x03\x14\x00\x00\x00", b"PK\x01\x02\x14\x03\x14\x00\x01\x00")
    return raw


def test_hostile_imports_are_4xx_and_leave_nothing(client):
    import numpy as np

    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)
    client.post(f"/memories/{memory_id}/predict", headers=auth, data={"update": "true"},
                files=files([("q.png", png(COLORS["blue"], seed=9), "image/png")]))
    archive = client.get(f"/memories/{memory_id}/export", headers=auth).content

    def entry(**change):
        return lambda m: {**m, "entries": [{**m["entries"][0], **change}] + m["entries"][1:]}

    def wider(t):
        C, D = t["text"].shape
        return {**t, "text": np.ones((C, D + 8), np.float32) / np.sqrt(D + 8),
                "features": np.zeros((t["features"].shape[0], 2 * (D + 8)), np.uint8)}

    bad = {
        "encrypted": rezip(archive, flag_bits=1),
        "bzip2": rezip(archive, compress=zipfile.ZIP_BZIP2),
        "nested": rezip(archive, manifest=lambda m: b"[" * 200_000 + b"]" * 200_000),
        "class 2**70": rezip(archive, manifest=entry(**{"class": 2**70})),
        "slot 2**70": rezip(archive, manifest=entry(slot=2**70)),
        "created 2**70": rezip(archive, manifest=entry(created=2**70)),
        "entropy inf": rezip(archive, manifest=entry(entropy=1e308 * 10)),
        "guard state": rezip(archive, manifest=lambda m: {**m, "state": {"guard_prior": "abc"}}),
        "guard state dict": rezip(archive, manifest=lambda m: {**m, "state": {"guard_prior": [{"a": 1}] * 3}}),
        "hyperparameter 10**400": rezip(archive, manifest=lambda m: {**m, "spec": {**m["spec"], "hyperparameters": {"capacity": 10**400}}}),
        "dim": rezip(archive, manifest=lambda m: {**m, "spec": {**m["spec"], "dim": m["spec"]["dim"] + 8}}, tensors=wider),
        "entropy 10**400": rezip(archive, manifest=entry(entropy=10**400)),
        "created 10**400": rezip(archive, manifest=entry(created=10**400)),
        "guard 10**400": rezip(archive, manifest=lambda m: {**m, "state": {"guard_prior": [10**400] * 3}}),
        "max_age_s 10**400": rezip(archive, manifest=lambda m: {**m, "spec": {**m["spec"], "max_age_s": 10**400}}),
        "entropy 1e400": rezip(archive, manifest=lambda m: json.dumps(entry(entropy=12345.5)(m)).replace(
            "12345.5", "1e400").encode()),
        "entropy NaN": rezip(archive, manifest=lambda m: json.dumps(entry(entropy=12345.5)(m)).replace(
            "12345.5", "NaN").encode()),
        "tensors header": rezip(archive, tensors=lambda t: b"\xff" * 8 + b"{}"),
    }
    for name, data in bad.items():
        r = client.post("/memories/import", headers=ADMIN, files=[("archive", ("m.zip", data, "application/zip"))])
        assert r.status_code == 400 and r.json()["detail"], (name, r.status_code, r.text)
    store = client.app.state.service.store
    assert store.memory_ids() == [memory_id] and store.check() == []


def test_import_numbers_never_5xx(client):
    """Property (issue 17): import manifests with huge, negative and non-finite numbers in any numeric
    field answer 4xx, never 5xx, and store nothing."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)
    archive = client.get(f"/memories/{memory_id}/export", headers=auth).content
    fields = {
        "entropy": lambda m, v: {**m, "entries": [{**m["entries"][0], "entropy": v}] + m["entries"][1:]},
        "created": lambda m, v: {**m, "entries": [{**m["entries"][0], "created": v}] + m["entries"][1:]},
        "slot": lambda m, v: {**m, "entries": [{**m["entries"][0], "slot": v}] + m["entries"][1:]},
        "class": lambda m, v: {**m, "entries": [{**m["entries"][0], "class": v}] + m["entries"][1:]},
        "guard_prior": lambda m, v: {**m, "state": {"guard_prior": [v] * 3}},
        "max_age_s": lambda m, v: {**m, "spec": {**m["spec"], "max_age_s": v}},
        "max_per_class": lambda m, v: {**m, "spec": {**m["spec"], "max_per_class": v}},
        "dim": lambda m, v: {**m, "spec": {**m["spec"], "dim": v}},
        "version": lambda m, v: {**m, "version": v},
        "hyperparameter": lambda m, v: {**m, "spec": {**m["spec"], "hyperparameters": {"capacity": v}}},
    }
    numbers = (st.sampled_from([10**400, -10**400, 10**30, 2**64, -1, 1e308, -1e308])
               | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**80, 2**80))

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(fields)), numbers)
    def hostile(field, value):
        data = rezip(archive, manifest=lambda m: fields[field](m, value))
        r = client.post("/memories/import", headers=ADMIN, files=[("archive", ("m.zip", data, "application/zip"))])
        assert r.status_code in (201, 400, 413), (field, value, r.status_code, r.text[:300])

    hostile()
    assert client.app.state.service.store.check() == []


def test_pixel_budget_per_request(tmp_path):
    app, c = make_client(tmp_path, max_request_pixels=3 * 24 * 24)
    with c:
        memory_id, auth = new_memory(c)
        items = [(f"{n}.png", png(rgb), "image/png") for n, rgb in COLORS.items()]
        assert c.post(f"/memories/{memory_id}/support", headers=auth, files=files(items),
                      data={"labels": list(COLORS)}).status_code == 200  # exactly the budget
        r = c.post(f"/memories/{memory_id}/predict", headers=auth, files=files(items + items[:1]))
        assert r.status_code == 413 and "pixels" in r.json()["detail"]
    app.state.service.close()


def asgi_call(app, method, path, headers, body_chunks):
    """Run one request through the ASGI app; returns (status, whether the body was read)."""
    read, sent = [], []
    chunks = list(body_chunks)

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": chunks.pop(0) if chunks else b"", "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), bool(read)


def test_token_checked_before_the_body_and_json_bodies_are_small(client):
    memory_id, auth = new_memory(client)
    big = [b"{" * (1 << 20)] * 60  # a 60 MB JSON body that is never read
    for path, headers, status in [("/memories", {}, 401), ("/memories", {"Authorization": "Bearer " + "x" * 40}, 403),
                                  (f"/memories/{memory_id}/snapshot", {}, 401),
                                  (f"/memories/{memory_id}/support", {"Authorization": "Bearer nope"}, 403),
                                  ("/memories/import", auth, 403)]:
        got, body_read = asgi_call(client.app, "POST", path, {"content-type": "application/json", **headers}, big)
        assert (got, body_read) == (status, False), path
    # chunked (no Content-Length) JSON over 1 MiB with a valid token: 413, not the framework's 400
    got, body_read = asgi_call(client.app, "POST", "/memories", {"content-type": "application/json", **ADMIN},
                               [b'{"classnames": [' + b'"a",' * 200_000, b'"a",' * 200_000 + b'"b"]}'])
    assert (got, body_read) == (413, True)
    r = client.post("/memories", headers={**ADMIN, "Content-Type": "application/json"},
                    content=b'{"classnames": [' + b'"a",' * 600_000 + b'"b"]}')
    assert r.status_code == 413 and "JSON" in r.json()["detail"]


def test_delete_source_waits_a_bounded_time_then_503_and_completes_later(tmp_path):
    app, c = make_client(tmp_path, store_wait_s=0.3)
    with c:
        memory_id, auth = new_memory(c)
        victim = add_support(c, memory_id, auth)["entries"][0]["source_id"]
        reader = sqlite3.connect(str(tmp_path / "s.sqlite"), isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM entries").fetchone()  # holds a read snapshot: the checkpoint must wait
        start = time.monotonic()
        r = c.post(f"/memories/{memory_id}/delete-source", headers=auth, json={"source_id": victim})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "recorded in the store" in r.json()["detail"]
        assert time.monotonic() - start < 5.0
        store = app.state.service.store
        assert victim not in store.entries(memory_id).sources and store.scrub_pending
        assert c.get(f"/memories/{memory_id}", headers=auth).status_code == 200  # the memory's lock was let go
        reader.execute("COMMIT")
        reader.close()
        for _ in range(100):  # the background checkpoint finishes once the reader is gone
            if not store.scrub_pending:
                break
            time.sleep(0.05)
        assert not store.scrub_pending and (tmp_path / "s.sqlite-wal").stat().st_size == 0
        r = c.post(f"/memories/{memory_id}/delete-source", headers=auth, json={"source_id": victim})
        assert r.status_code == 200 and r.json()["wal_truncated"] and r.json()["entries"] == 0
    app.state.service.close()


def test_contention_is_409(client, monkeypatch):
    from genba.store import StaleMemory
    from genba.store.db import Store

    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)

    def always_stale(self, *args, **kwargs):
        raise StaleMemory("memory changed in the store")

    monkeypatch.setattr(Store, "record", always_stale)
    r = client.post(f"/memories/{memory_id}/predict", headers=auth, data={"update": "true"},
                    files=files([("q.png", png(COLORS["red"], seed=2), "image/png")]))
    assert r.status_code == 409 and "concurrent" in r.json()["detail"]


def test_support_is_all_or_nothing(client, monkeypatch):
    from genba.methods.dmn import DMNTrainingFree

    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)
    before = state_of(client, memory_id)
    original = DMNTrainingFree._fit
    calls = {"n": 0}

    def fit_fails(after):
        def fit(self, *args):
            calls["n"] += 1
            if calls["n"] > after:
                raise RuntimeError("cannot fit")
            return original(self, *args)
        return fit

    monkeypatch.setattr(DMNTrainingFree, "_fit", fit_fails(0))  # refused while validating: nothing committed
    r = add_support_raw(client, memory_id, auth)
    assert r.status_code == 400 and "nothing stored" in r.json()["detail"]
    assert state_of(client, memory_id) == before
    calls["n"] = 0
    monkeypatch.setattr(DMNTrainingFree, "_fit", fit_fails(1))  # fails after the commit: undone
    r = add_support_raw(client, memory_id, auth)
    assert r.status_code == 400 and "undone" in r.json()["detail"]
    store = client.app.state.service.store
    assert len(store.entries(memory_id).ids) == before[1] and store.check() == []
    assert [w["outcome"] for w in store.writes(memory_id, 1)] == ["rolled-back"]
    monkeypatch.setattr(DMNTrainingFree, "_fit", original)
    assert client.get(f"/memories/{memory_id}", headers=auth).json()["ready"]


def add_support_raw(client, memory_id, auth):
    return client.post(f"/memories/{memory_id}/support", headers=auth,
                       files=files([("n.png", png(COLORS["green"], seed=11), "image/png")]), data={"labels": ["green"]})


def test_a_memory_that_cannot_be_rebuilt_can_be_inspected_exported_and_erased(client):
    memory_id, auth = new_memory(client)
    victim = add_support(client, memory_id, auth)["entries"][0]["source_id"]
    store = client.app.state.service.store
    spec = json.loads(store._conn().execute("SELECT spec FROM memories WHERE id = ?", (memory_id,)).fetchone()[0])
    spec["method"] = "tda"  # TDA has no static memory: a hand-edited store whose entries the method cannot hold
    store._conn().execute("UPDATE memories SET spec = ?, version = version + 1 WHERE id = ?", (json.dumps(spec), memory_id))
    store._conn().execute("INSERT INTO entries(memory_id, bank, class, slot, source_id, entropy, created, feature) "
                          "SELECT memory_id, 'pos', class, 99, 'x', 0.1, created, feature FROM entries WHERE memory_id = ? LIMIT 1",
                          (memory_id,))
    client.app.state.service._live.clear()
    info = client.get(f"/memories/{memory_id}", headers=auth)
    assert info.status_code == 200 and not info.json()["ready"] and "cannot be rebuilt" in info.json()["error"]
    assert client.get(f"/memories/{memory_id}/export", headers=auth).status_code == 200
    r = client.post(f"/memories/{memory_id}/predict", headers=auth, files=files([("q.png", png(COLORS["red"]), "image/png")]))
    assert r.status_code == 409 and "cannot be rebuilt" in r.json()["detail"]
    r = client.post(f"/memories/{memory_id}/delete-source", headers=auth, json={"source_id": victim})
    assert r.status_code == 200 and r.json()["entries"] == 1 and victim not in store.entries(memory_id).sources


def test_status_page_csp_has_no_inline_script(client, tmp_path):
    r = client.get("/status")
    csp = r.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "<script>" not in r.text
    assert client.get("/console.js").headers["content-type"].startswith("text/javascript")
    for bad in ("short", " " * 20, "x" * 15):
        with pytest.raises(GenbaError, match="at least 16"):
            create_app(tmp_path / "t.sqlite", bad, encoders=("tiny",))


def test_no_request_gets_a_5xx(tmp_path):
    """Property: schema-shaped and arbitrary requests over every route of /openapi.json never answer 5xx."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app, c = make_client(tmp_path)
    with c:
        memory_id, auth = new_memory(c)
        add_support(c, memory_id, auth, shots=1)
        schema = c.get("/openapi.json").json()
        routes = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
        components = schema.get("components", {}).get("schemas", {})
        json_value = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
                                  | st.floats(allow_nan=True) | st.text(max_size=12),
                                  lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                                  max_leaves=8)

        def typed(prop):
            """Values of the property's JSON type, extremes included (beyond 64 bits, non-finite, odd text)."""
            options = prop.get("anyOf", [prop])
            out = []
            for o in options:
                kind = o.get("type")
                if kind == "integer":
                    out.append(st.integers(-2**70, 2**70) | st.sampled_from([0, 1, 2**63, 2**64, -2**63 - 1, 10**30]))
                elif kind == "number":
                    out.append(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**70, 2**70))
                elif kind == "string":
                    out.append(st.text(max_size=20) | st.sampled_from(["{} {x}", "{}{0}", "{.__class__}", "\u00b2", "{}"]))
                elif kind == "array":
                    out.append(st.lists(typed(o.get("items", {})), max_size=4))
                elif kind == "object":
                    out.append(st.dictionaries(st.sampled_from(["capacity", "beta", "b_dyn", "stream_batch", "x"]),
                                               st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=4), max_size=3))
                else:
                    out.append(json_value)
            return st.one_of(*out)

        def body_for(op):
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                return st.none()
            ref = content["application/json"]["schema"].get("$ref", "")
            props = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
            shaped = st.fixed_dictionaries({}, optional={k: typed(v) | json_value for k, v in props.items()})
            full = st.fixed_dictionaries({k: typed(v) for k, v in props.items()})
            base = {"classnames": ["a", "b"], "encoder": "tiny"} if "classnames" in props else {}
            near_valid = shaped.map(lambda d: {**base, **d})  # mostly-valid bodies reach the service's own checks
            return st.one_of(near_valid, full.map(lambda d: {**d, **{k: v for k, v in base.items() if k not in d}}),
                             shaped, json_value)

        labels = st.lists(st.sampled_from(list(COLORS)) | st.text(max_size=6), max_size=3)
        image = st.sampled_from([png(COLORS["red"]), b"\x89PNG\r\n\x1a\nbroken", b"", b"GIF89a"]) | st.binary(max_size=64)
        # weighted towards the real memory and valid tokens, so most examples reach the routes' own checks
        ids = st.sampled_from([memory_id] * 2 + ["0000000000000000", "x" * 16, "../etc", "%00"])
        tokens = st.sampled_from([auth, ADMIN, {}, {"Authorization": "Bearer " + "y" * 40}, {"Authorization": "Basic a"}])

        def send(route, data, url, headers):
            path, method, op = route
            kwargs = {}
            if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
                n = data.draw(st.integers(0, 3))
                kwargs["files"] = [("archive" if "import" in path else "files",
                                    (f"f{i}.png", data.draw(image), data.draw(st.sampled_from(["image/png", "text/plain"]))))
                                   for i in range(n)] or None
                kwargs["data"] = {"labels": data.draw(labels), "update": data.draw(st.sampled_from(["true", "no", "?"]))}
            elif method == "post":
                kwargs["content"] = json.dumps(data.draw(body_for(op))).encode()
                headers = {**headers, "Content-Type": data.draw(st.sampled_from(["application/json"] * 5 + ["text/plain"]))}
            elif "{memory_id}/writes" in path:
                kwargs["params"] = {"limit": data.draw(st.sampled_from(["5", "-3", "9" * 30, "x"]))}
            r = c.request(method.upper(), url, headers=headers, **kwargs)  # a server exception fails here too
            assert r.status_code < 500, (method, url, kwargs, r.status_code, r.text[:300])

        def budget(n):
            return settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

        @budget(80)
        @given(st.sampled_from(routes), st.data())
        def any_request(route, data):  # every route, any token, any id
            send(route, data, route[0].replace("{memory_id}", data.draw(ids)), data.draw(tokens))

        json_routes = [r for r in routes if "application/json" in r[2].get("requestBody", {}).get("content", {})]
        upload_routes = [r for r in routes if "multipart/form-data" in r[2].get("requestBody", {}).get("content", {})]

        @budget(120)
        @given(st.sampled_from(json_routes * 3 + upload_routes), st.data())
        def authorised_request(route, data):  # the right token: the body reaches the route's own checks
            headers = ADMIN if "{memory_id}" not in route[0] else data.draw(st.sampled_from([auth, ADMIN]))
            send(route, data, route[0].replace("{memory_id}", memory_id), headers)

        any_request()
        authorised_request()
        assert app.state.service.store.check() == []
    app.state.service.close()
