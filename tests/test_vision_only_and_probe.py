"""Vision-only encoders (the tiny DINOv2 checkpoint), the linear-probe baseline and imbalance-proof metrics."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_color_folder
from genba.cli import main
from genba.errors import GenbaError
from genba.methods import Feats, create_method
from genba.metrics import classification_metrics


pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per_class=12, C=3, D=16, seed=0):
    """Three well-separated clusters on the sphere (same centres for every seed; `seed` draws the noise)."""
    centres = torch.nn.functional.normalize(torch.randn(C, D, generator=torch.Generator().manual_seed(99)), dim=1)
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([centres[c] + 0.1 * torch.randn(n_per_class, D, generator=g) for c in range(C)])
    return torch.nn.functional.normalize(x, dim=1), torch.arange(C).repeat_interleave(n_per_class)


def test_majority_predictor_is_visible_in_balanced_accuracy():
    labels = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)
    m = classification_metrics(torch.zeros(100, dtype=torch.long), labels, 4)  # class 3 absent from test
    assert m["top1"] == pytest.approx(90.0) and m["balanced_accuracy"] == pytest.approx(100.0 / 3)
    assert m["per_class_recall"] == [100.0, 0.0, 0.0, None]
    assert m["confusion"][0] == [90, 0, 0, 0] and m["confusion"][1] == [5, 0, 0, 0] and sum(map(sum, m["confusion"])) == 100


def test_linear_probe_trains_through_the_engine_and_l2_shrinks_it(monkeypatch):
    import genba.methods.linear_probe as probe

    x, y = blobs()
    xq, yq = blobs(seed=1)
    calls = []
    real_fit = probe.fit
    monkeypatch.setattr(probe, "fit", lambda *a, **k: calls.append(k["callbacks"]) or real_fit(*a, **k))
    norms = []
    for l2 in (0.0, 0.1):
        m = create_method("linear-probe", l2=l2, **{"train.epochs": 100})
        m.fit(None, Feats(x), y, num_classes=3)  # no text classifier needed
        acc = (m.predict_stream(Feats(xq)).argmax(1) == yq).float().mean().item()
        assert acc > 0.9
        norms.append(float(m.weight.norm()))
    assert len(calls) == 2 and isinstance(calls[0][0], probe.L2Penalty)
    assert norms[1] < 0.5 * norms[0]
    with pytest.raises(GenbaError, match="l2 must be in"):
        create_method("linear-probe", l2=1e9)


def test_methods_that_need_text_say_so_without_a_text_classifier():
    x, y = blobs()
    for name in ("zeroshot", "tda", "dmn-zs"):
        with pytest.raises(GenbaError, match="vision-only.*tip-adapter.*dmn-tf.*linear-probe"):
            create_method(name).fit(None, Feats(x), y, num_classes=3)
    m = create_method("dmn-tf", capacity=4)
    m.fit(None, Feats(x), y, num_classes=3)
    xq, yq = blobs(seed=2)
    probs = m.predict_stream(Feats(xq), torch.randperm(len(xq), generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(probs.sum(1), torch.ones(len(xq))) and (probs.argmax(1) == yq).float().mean() > 0.9
    assert int(m.dynamic.count.sum()) > 0  # the static memory pseudo-labelled the stream into the dynamic memory


def test_adapt_with_a_vision_only_dinov2_checkpoint(tmp_path, capsys, monkeypatch):
    from test_encoders_hf import _build, _offline

    _offline(monkeypatch)
    checkpoint = _build("dinov2", tmp_path / "dinov2")
    folder = make_color_folder(tmp_path / "colors", per_class=8)
    out = tmp_path / "r.json"
    code = main(["adapt", "--dataset", str(folder), "--encoder", f"hf:{checkpoint}", "--method", "tip-adapter,dmn-tf,linear-probe",
                 "--shots", "2", "--val-per-class", "2", "--json", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet",
                 "--select", "fixed"])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    results = results if isinstance(results, list) else results.get("results", [results])
    assert [r["method"] for r in results] == ["tip-adapter", "dmn-tf", "linear-probe"]
    for r in results:
        assert {"balanced_accuracy", "per_class_recall", "confusion"} <= set(r) and len(r["confusion"]) == 3
    code = main(["adapt", "--dataset", str(folder), "--encoder", f"hf:{checkpoint}", "--method", "zeroshot", "--shots", "0",
                 "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert code == 2 and "vision-only" in capsys.readouterr().err


def test_serve_with_a_vision_only_dinov2_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genba.serve import create_app
    from test_encoders_hf import _build, _offline
    from test_serve import ADMIN, COLORS, files, png

    _offline(monkeypatch)
    spec = f"hf:{_build('dinov2', tmp_path / 'dinov2')}"
    app = create_app(tmp_path / "s.sqlite", ADMIN["Authorization"].split()[1], encoders=(spec,))
    with TestClient(app) as c:
        for method in ("zeroshot", "tda", "dmn-zs"):
            r = c.post("/memories", headers=ADMIN, json={"classnames": list(COLORS), "encoder": spec, "method": method})
            assert r.status_code == 400 and "vision-only" in r.json()["detail"], r.text
        for method in ("dmn-tf", "tip-adapter", "linear-probe"):
            r = c.post("/memories", headers=ADMIN, json={"classnames": list(COLORS), "encoder": spec, "method": method,
                                                           "hyperparameters": {"capacity": 4} if method == "dmn-tf" else {}})
            assert r.status_code == 201, r.text
            memory_id, auth = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
            items = [(f"{n}{k}.png", png(rgb, seed=k), "image/png") for k in range(2) for n, rgb in COLORS.items()]
            r = c.post(f"/memories/{memory_id}/support", headers=auth, files=files(items), data={"labels": list(COLORS) * 2})
            assert r.status_code == 200, r.text
            query = files([("q.png", png(COLORS["blue"], seed=7), "image/png")])
            if method != "dmn-tf":  # no test-time memory: a write is refused, a plain prediction served
                r = c.post(f"/memories/{memory_id}/predict", headers=auth, data={"update": "true"}, files=query)
                assert r.status_code == 409 and "no test-time memory" in r.json()["detail"], r.text
            r = c.post(f"/memories/{memory_id}/predict", headers=auth, data={"update": str(method == "dmn-tf").lower()},
                       files=query)
            assert r.status_code == 200 and r.json()["predictions"][0]["class"] in COLORS, r.text
            if method == "dmn-tf":
                assert r.json()["updated"] and c.get(f"/memories/{memory_id}", headers=auth).json()["fill"]["dynamic"]
    app.state.service.close()
