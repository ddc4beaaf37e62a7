"""The genba service: API flow, access, limits (never a 500, never a partial write), status page, CLI."""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from PIL import Image

from genba.cli import main
from genba.serve import create_app
from genba.serve.uploads import Limits

try:
    import httpx
    from fastapi.testclient import TestClient
except ModuleNotFoundError:  # pragma: no cover - the dev extra installs them
    httpx = None
web = pytest.mark.skipif(httpx is None, reason="the serve extra (fastapi, uvicorn, python-multipart) or httpx is missing")

SRC = str(Path(__file__).resolve().parents[1] / "src")
ADMIN = {"Authorization": "Bearer admin-secret-0123456789"}
COLORS = {"red": (230, 20, 20), "green": (20, 210, 30), "blue": (20, 30, 230)}


def png(rgb, size=24, seed=0) -> bytes:
    image = Image.new("RGB", (size, size), rgb)
    image.putpixel((seed % size, 0), (seed % 256, 7, 7))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bomb_png(width=60_000, height=60_000) -> bytes:
    """A valid PNG header declaring a huge image, with no pixel data at all."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def files(items):
    return [("files", (name, data, ctype)) for name, data, ctype in items]


@pytest.fixture
def client(tmp_path):
    app = create_app(tmp_path / "s.sqlite", "admin-secret-0123456789", encoders=("tiny",), limits=Limits(max_body_bytes=4 << 20))
    with TestClient(app) as c:
        yield c
    app.state.service.close()


def new_memory(client, method="dmn-tf", **extra):
    r = client.post("/memories", headers=ADMIN, json={"classnames": list(COLORS), "encoder": "tiny", "method": method,
                                                       "hyperparameters": {"capacity": 4}, "name": "line 3", **extra})
    assert r.status_code == 201, r.text
    return r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}


def add_support(client, memory_id, auth, shots=2):
    items = [(f"{n}{k}.png", png(rgb, seed=k), "image/png") for k in range(shots) for n, rgb in COLORS.items()]
    labels = [n for _ in range(shots) for n in COLORS]
    r = client.post(f"/memories/{memory_id}/support", headers=auth, files=files(items), data={"labels": labels})
    assert r.status_code == 200, r.text
    return r.json()


@web
def test_flow_create_support_predict_inspect(client):
    memory_id, auth = new_memory(client)
    assert client.post(f"/memories/{memory_id}/predict", headers=auth, files=files([("q.png", png(COLORS["red"]), "image/png")])).status_code == 400  # no support yet
    added = add_support(client, memory_id, auth)
    assert added["added"] == 6 and added["entries"][0]["source_id"].startswith("sha256:")
    queries = files([(f"q{i}.png", png(rgb, seed=10 + i), "image/png") for i, rgb in enumerate(COLORS.values())])
    r = client.post(f"/memories/{memory_id}/predict", headers=auth, files=queries, data={"update": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["updated"] and len(body["predictions"]) == 3
    assert abs(sum(body["predictions"][0]["probs"].values()) - 1) < 1e-3
    assert all(w["outcome"] in ("entered", "displaced", "rejected") for p in body["predictions"] for w in p["writes"])
    info = client.get(f"/memories/{memory_id}", headers=auth).json()
    assert info["fill"]["static"] == [2, 2, 2] and info["ready"] and info["recent_writes"]
    assert client.get(f"/memories/{memory_id}/writes?limit=5", headers=auth).json()["writes"][0]["seq"] > 0
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/memories/{memory_id}/predict", "/memories/{memory_id}/support", "/memories/{memory_id}/rollback",
            "/memories/{memory_id}/delete-source", "/memories/{memory_id}/export", "/memories/import"} <= set(paths)


@web
def test_access_tokens(client):
    a, auth_a = new_memory(client)
    b, auth_b = new_memory(client)
    assert client.get(f"/memories/{a}").status_code == 401
    assert client.get(f"/memories/{a}", headers=auth_b).status_code == 403
    assert client.get(f"/memories/{a}", headers={"Authorization": "Bearer guess"}).status_code == 403
    assert client.get("/memories/0000000000000000", headers=auth_b).status_code == 403  # no probing for ids
    assert client.get("/memories/0000000000000000", headers=ADMIN).status_code == 404
    assert client.get(f"/memories/{a}", headers=auth_a).status_code == 200
    assert client.post("/memories", headers=auth_a, json={"classnames": ["x"], "encoder": "tiny"}).status_code == 403
    assert client.get("/status.json").status_code == 401
    store = client.app.state.service.store
    assert all(len(store.token_hash(m)) == 64 for m in (a, b))  # only sha256 hashes are stored


@web
def test_bad_requests_are_clear_4xx_and_write_nothing(client):
    memory_id, auth = new_memory(client)
    add_support(client, memory_id, auth, shots=1)
    store = client.app.state.service.store
    before = (store.version(memory_id), len(store.entries(memory_id).ids), len(store.writes(memory_id, 1000)))
    url = f"/memories/{memory_id}/support"
    good = ("ok.png", png(COLORS["red"], seed=5), "image/png")
    cases = [
        (415, dict(files=files([("a.txt", b"hello", "text/plain")]), data={"labels": ["red"]})),
        (400, dict(files=files([good, ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")]), data={"labels": ["red", "blue"]})),
        (413, dict(files=files([good, ("bomb.png", bomb_png(), "image/png")]), data={"labels": ["red", "blue"]})),
        (400, dict(files=files([good]), data={"labels": ["purple"]})),
        (400, dict(files=files([good, good]), data={"labels": ["red"]})),
        (415, dict(json={"labels": ["red"]})),
        (413, dict(content=b"x" * (5 << 20), headers={"Content-Type": "multipart/form-data; boundary=x"})),
        (413, dict(content=iter([b"x" * (1 << 20)] * 6), headers={"Content-Type": "multipart/form-data; boundary=x"})),
    ]
    for status, kwargs in cases:
        headers = {**auth, **kwargs.pop("headers", {})}
        r = client.post(url, headers=headers, **kwargs)
        assert r.status_code == status, (status, r.text)
        assert r.json()["detail"]
    bad_json = [(b"{not json", "application/json", 400), (b'{"classnames": ["a"], "colour": 1}', "application/json", 422),
                (b'{"classnames": ["a"]}', "text/plain", 415), (b'{"classnames": ["a"], "method": "nope", "encoder": "tiny"}',
                                                                "application/json", 400)]
    for body, ctype, status in bad_json:
        r = client.post("/memories", headers={**ADMIN, "Content-Type": ctype}, content=body)
        assert r.status_code == status, (body, r.text)
    r = client.post(f"/memories/{memory_id}/predict", headers=auth, files=files([good]), data={"update": "maybe"})
    assert r.status_code == 400
    assert client.post(f"/memories/{memory_id}/rollback", headers=auth, json={"snapshot_id": 999}).status_code == 400
    assert client.post("/memories", headers=ADMIN, json={"classnames": ["a"], "encoder": "hf:/etc"}).status_code == 400
    after = (store.version(memory_id), len(store.entries(memory_id).ids), len(store.writes(memory_id, 1000)))
    assert after == before and store.memory_ids() == [memory_id] and store.check() == []


@web
def test_snapshot_rollback_delete_export_import(client):
    memory_id, auth = new_memory(client)
    support = add_support(client, memory_id, auth)
    snap = client.post(f"/memories/{memory_id}/snapshot", headers=auth, json={"label": "day 1"}).json()["snapshot_id"]
    extra = client.post(f"/memories/{memory_id}/support", headers=auth, files=files([("x.png", png((9, 9, 9)), "image/png")]),
                        data={"labels": ["blue"], "source_ids": ["camera-7/0001"]})
    assert extra.json()["entries"][0]["source_id"] == "camera-7/0001"
    r = client.post(f"/memories/{memory_id}/rollback", headers=auth, json={"snapshot_id": snap})
    assert r.status_code == 200 and r.json()["fill"]["static"] == [2, 2, 2]
    victim = support["entries"][0]["source_id"]
    r = client.post(f"/memories/{memory_id}/delete-source", headers=auth, json={"source_id": victim})
    assert r.json()["entries"] == 1 and r.json()["snapshot_copies"] == 1 and r.json()["wal_truncated"]
    query = files([("q.png", png(COLORS["green"], seed=3), "image/png")])
    expected = client.post(f"/memories/{memory_id}/predict", headers=auth, files=query).json()["predictions"][0]["probs"]
    archive = client.get(f"/memories/{memory_id}/export", headers=auth)
    assert archive.headers["content-type"] == "application/zip"
    r = client.post("/memories/import", headers=ADMIN, files=[("archive", ("m.zip", archive.content, "application/zip"))])
    assert r.status_code == 201, r.text
    copy, copy_auth = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    got = client.post(f"/memories/{copy}/predict", headers=copy_auth, files=query).json()["predictions"][0]["probs"]
    assert got == expected
    bad = client.post("/memories/import", headers=ADMIN, files=[("archive", ("m.zip", b"PK\x03\x04junk", "application/zip"))])
    assert bad.status_code == 400 and len(client.app.state.service.store.memory_ids()) == 2


def test_missing_web_stack_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "pip install 'genba[serve]'" in capsys.readouterr().err


@web
def test_cli_writes_a_generated_admin_token_to_an_owner_only_file(tmp_path, monkeypatch, capsys):
    import uvicorn

    served = {}
    monkeypatch.delenv("GENBA_ADMIN_TOKEN", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert main(["serve", "--store", str(tmp_path / "s.sqlite"), "--port", "9", "--encoders", "tiny"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "s.sqlite.admin-token"
    token = path.read_text().strip()
    assert token not in out and str(path) in out and served["host"] == "127.0.0.1" and served["port"] == 9
    assert path.stat().st_mode & 0o777 == 0o600
    with TestClient(served["app"]) as c:
        assert c.get("/status.json", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    served["app"].state.service.close()
    # --admin-token-file reads the same file; short or blank tokens and group-readable files are refused
    assert main(["serve", "--store", str(tmp_path / "s.sqlite"), "--admin-token-file", str(path), "--encoders", "tiny"]) == 0
    served["app"].state.service.close()
    for bad in ("short", "   " * 8):
        assert main(["serve", "--store", str(tmp_path / "s.sqlite"), "--admin-token", bad]) == 2
        assert "at least 16 characters" in capsys.readouterr().err
    path.chmod(0o644)
    assert main(["serve", "--store", str(tmp_path / "s.sqlite"), "--admin-token-file", str(path)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """`genba serve` in a subprocess on a free loopback port, with one memory ready to predict."""
    folder = Path(tempfile.mkdtemp(prefix="genba-serve-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "GENBA_ADMIN_TOKEN": "admin-secret-0123456789"}
    proc = subprocess.Popen([sys.executable, "-m", "genba.cli", "serve", "--store", str(folder / "s.sqlite"),
                             "--port", str(port), "--encoders", "tiny", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            if proc.poll() is not None:
                pytest.fail(f"genba serve exited: {proc.stdout.read()}")
        with httpx.Client(base_url=base, timeout=30) as c:
            memory_id, auth = new_memory(c)
            add_support(c, memory_id, auth)
            yield base, memory_id, auth
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@web
def test_genba_serve_subprocess_answers_predict(server):
    base, memory_id, auth = server
    r = httpx.post(f"{base}/memories/{memory_id}/predict", headers=auth, timeout=30,
                   files=files([("q.png", png(COLORS["blue"], seed=4), "image/png")]), data={"update": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["class"] in COLORS


@web
def test_status_page_in_headless_chromium(server, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium chromium-driver)")
    base, memory_id, auth = server
    httpx.post(f"{base}/memories/{memory_id}/predict", headers=auth, timeout=30,
               files=files([("q.png", png(COLORS["red"], seed=8), "image/png")]))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", f"{base}/status#token=admin-secret-0123456789"],
                         capture_output=True, text=True, timeout=90).stdout
    start = dom.index(f'id="memory-{memory_id}"')
    section = dom[start:]
    assert "line 3" in section and "fill per class" in section and "recent predictions" in section
    assert all(name in section for name in COLORS)
    assert "static" in section and "dynamic" in section
    denied = subprocess.run([browser, *flags, "--dump-dom", f"{base}/status#token=wrong"],
                            capture_output=True, text=True, timeout=90).stdout
    assert "needs the admin token" in denied and "line 3" not in denied
