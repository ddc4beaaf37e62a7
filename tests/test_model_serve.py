"""Models and served memories: a model goes into a store and is served, a served memory comes out
as a model, a labelled folder fills a memory as support (source ids that delete-source erases),
and the service refuses test-time writes into a method that keeps no test-time memory (4xx)."""

from __future__ import annotations

import json

import pytest

from genba.cli import main
from model_helpers import pattern_folder, split_files

try:
    from fastapi.testclient import TestClient
except ModuleNotFoundError:  # pragma: no cover - the dev extra installs it
    TestClient = None

ADMIN = "admin-secret-0123456789"


@pytest.mark.skipif(TestClient is None, reason="the serve extra is missing")
def test_model_to_served_memory_and_back(tmp_path, capsys, one_thread):
    from genba.serve import create_app

    site = pattern_folder(tmp_path / "site", per_class=12)
    model, store = tmp_path / "m.genba", tmp_path / "s.sqlite"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tip-adapter", "--encoder", "tiny", "--space",
                 "joint", "--shots", "2", "--out", str(model), "--quiet", "--no-cache"]) == 0
    capsys.readouterr()
    assert main(["memory", "put", "--store", str(store), "--model", str(model), "--name", "line 3"]) == 0
    put = json.loads(capsys.readouterr().out)
    auth = {"Authorization": f"Bearer {put['token']}"}
    paths, labels = split_files(f"folder:{site}")
    expected = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(model), "--images", *map(str, paths[:6]), "--format", "jsonl",
                 "--out", str(expected), "--quiet"]) == 0
    offline = {json.loads(line)["path"]: json.loads(line) for line in expected.read_text().splitlines()}
    app = create_app(store, ADMIN, encoders=("tiny",))
    with TestClient(app) as client:
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths[:6]]
        r = client.post(f"/memories/{put['id']}/predict", headers=auth, files=files)
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        for p, item in zip(paths[:6], served):  # the served memory answers as the model file does
            assert item["class"] == offline[str(p)]["class"]
            assert item["confidence"] == pytest.approx(offline[str(p)]["probability"], abs=2e-3)  # float16 rows
        r = client.post(f"/memories/{put['id']}/predict", headers=auth, files=files[:1], data={"update": "true"})
        assert r.status_code == 409 and "keeps no test-time memory" in r.json()["detail"]
        assert main(["memory", "fill", "--store", str(store), "--memory", put["id"], "--dataset", f"folder:{site}",
                     "--quiet"]) == 0
        assert "36 support images added (bars 12, checks 12, stripes 12)" in capsys.readouterr().out
        r = client.get(f"/memories/{put['id']}", headers=auth)
        assert r.status_code == 200
        r = client.post(f"/memories/{put['id']}/delete-source", headers=auth, json={"source_id": "bars/000.png"})
        assert r.status_code == 200, r.text
    assert main(["memory", "get", "--store", str(store), "--memory", put["id"], "--out", str(tmp_path / "back.genba")]) == 0
    capsys.readouterr()
    assert main(["model", "show", str(tmp_path / "back.genba"), "--json"]) == 0
    back = json.loads(capsys.readouterr().out)
    sources = back["data"]["sources"][0]["support_source_ids"]
    assert len(sources) == 6 + 36 - 1 and "bars/000.png" not in sources and "checks/000.png" in sources
    capsys.readouterr()
    assert main(["memory", "put", "--store", str(store), "--model", str(tmp_path / "nope.genba")]) == 2
    cvm_like = tmp_path / "visual.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tip-adapter", "--encoder", "tiny", "--shots", "2",
                 "--out", str(cvm_like), "--quiet", "--no-cache"]) == 0
    capsys.readouterr()
    assert main(["memory", "put", "--store", str(store), "--model", str(cvm_like)]) == 2
    assert "--space joint" in capsys.readouterr().err
