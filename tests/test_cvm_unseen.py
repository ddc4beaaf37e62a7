"""Scoring of classes without images by the concept head: direct, ConSE, and the bank-only CSLS hub term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genba.cvm.heads import ConceptHead
from genba.errors import GenbaError

S = 10.0
# Two classes with images (rows 0, 1) and two known by name only (rows 2, 3), unit rows in 3-d.
SEEN = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
ROW_A = [0.6, 0.0, 0.8]                       # close to seen row 0 only
ROW_B = [0.6 / math.sqrt(2), 0.6 / math.sqrt(2), 0.8]  # a "hub": equally close to both seen rows


def _head(unseen: str, hub: bool = False, conse_k: int = 10) -> ConceptHead:
    head = ConceptHead(3, torch.tensor(SEEN + [ROW_A, ROW_B]), scale=S, unseen=unseen, hub=hub, conse_k=conse_k)
    with torch.no_grad():  # projection = identity, so z = normalize(h)
        head.proj.weight.copy_(torch.eye(3))
        head.proj.bias.zero_()
    head.known = 2
    return head


def test_direct_conse_and_hub_follow_their_equations_on_a_hand_made_bank():
    h = torch.tensor([[0.8, 0.6, 0.0]])  # unit already: z = h
    # direct: s * z . t
    direct = _head("direct")(h)[0]
    assert torch.allclose(direct, torch.tensor([S * 0.8, S * 0.6, S * 0.48, S * 0.84 / math.sqrt(2)]), atol=1e-5)
    # direct picks the hub row B (0.594 > 0.48)
    assert direct[2:].argmax() == 1
    # conse: p = softmax(s * [0.8, 0.6]); e = normalize(p0 t0 + p1 t1); logits_u = s * e . u
    p0 = 1.0 / (1.0 + math.exp(-S * 0.2))
    p1 = 1.0 - p0
    norm = math.hypot(p0, p1)
    e = [p0 / norm, p1 / norm, 0.0]
    want = [S * sum(a * b for a, b in zip(e, row)) for row in (ROW_A, ROW_B)]
    conse = _head("conse")(h)[0]
    assert torch.allclose(conse[:2], direct[:2])  # the classes with images keep their direct logits
    assert torch.allclose(conse[2:], torch.tensor(want), atol=1e-5)
    # ConSE moves this image, mostly of class 0, from the hub row B to row A, the one near class 0
    assert conse[2:].argmax() == 0
    # top-1 ConSE: e = t0 exactly, so logits_u = s * u[0]
    top1 = _head("conse", conse_k=1)(h)[0]
    assert torch.allclose(top1[2:], torch.tensor([S * 0.6, S * 0.6 / math.sqrt(2)]), atol=1e-5)
    # hub: r_u = mean of the k largest cos(u, seen) (k capped at 2 here); logits_u -= s * r_u / 2
    r_a, r_b = (0.6 + 0.0) / 2, 0.6 / math.sqrt(2)
    hubbed = _head("conse", hub=True)(h)[0]
    assert torch.allclose(hubbed[2:], torch.tensor([want[0] - S * r_a / 2, want[1] - S * r_b / 2]), atol=1e-5)
    direct_hub = _head("direct", hub=True)(h)[0]
    assert torch.allclose(direct_hub[2:], direct[2:] - S * torch.tensor([r_a, r_b]) / 2, atol=1e-5)
    assert hubbed[2:].argmax() == 0 and direct_hub[2:].argmax() == 1  # B's hub term: 0.42 against A's 0.30


def test_scoring_is_a_no_op_once_every_class_has_images():
    h = torch.randn(4, 3)
    head = _head("conse", hub=True)
    head.known = 4
    assert torch.allclose(head(h), S * head.embed(h) @ head.bank.T)


def test_bad_scoring_options_are_refused():
    with pytest.raises(GenbaError, match="choose one of direct, conse"):
        ConceptHead(3, torch.eye(3), unseen="nearest")
    with pytest.raises(GenbaError, match="must be >= 1"):
        ConceptHead(3, torch.eye(3), unseen="conse", conse_k=0)


def test_conse_head_round_trips_through_the_model_dir_and_onnx(tmp_path, one_thread):
    from cvm_helpers import WARM, tiny_objective
    from genba.cvm.concepts import ConceptBank, TextEmbedder
    from genba.cvm.export import onnx_bytes
    from genba.cvm.heads import ConceptHead as Head
    from genba.cvm.model_dir import load_model_dir, save_model_dir
    from genba.cvm.predict import OnnxClassifier

    bank = ConceptBank.build(list(WARM), ["a photo of {}."], TextEmbedder("tiny"))
    objective = tiny_objective(bank)
    objective.head = Head(objective.student.feature_dim, bank.embeddings, scale=25.0, unseen="conse", hub=True)
    objective.set_known(2)  # the third class is known by name only
    loaded, _, _ = load_model_dir(save_model_dir(tmp_path / "m", objective.eval(), bank))
    assert (loaded.head.unseen, loaded.head.hub, loaded.head.known) == ("conse", True, 2)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = loaded.head(loaded.student(torch.from_numpy(x))).numpy()
        plain = (loaded.head.scale * loaded.head.embed(loaded.student(torch.from_numpy(x))) @ loaded.head.bank.T).numpy()
    assert np.abs(ref[:, 2] - plain[:, 2]).max() > 1e-3  # the name-only column is re-scored
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_bytes(loaded, bank, {}))
    assert np.abs(OnnxClassifier.load(path).logits(x) - ref).max() < 1e-4


def test_cli_train_with_conse_scoring_records_it(tmp_path, capsys, one_thread):
    import json

    from cvm_helpers import COOL, WARM, colour_folder
    from genba.cli import main

    warm = colour_folder(tmp_path / "warm", WARM)
    cool = colour_folder(tmp_path / "cool", COOL, seed=1)
    out = tmp_path / "model"
    code = main(["cvm", "train", "--stream", f"folder:{warm},folder:{cool}", "--out", str(out), "--text-model", "tiny",
                 "--loss", "contrastive", "--unseen", "conse", "--hub", "--set", "train.epochs=1",
                 "--set", "train.batch_size=8", "--quiet", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "cvm.json").read_text())
    assert (meta["head"]["unseen"], meta["head"]["hub"]) == ("conse", True)
    assert meta["run"]["hyperparameters"]["unseen"] == "conse"
