"""The EfficientNet-Lite student on genba.backbones: frozen front, trainable last stage, export parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genba.cvm.concepts import ConceptBank, TextEmbedder
from genba.cvm.heads import ConceptHead
from genba.cvm.objective import StreamObjective
from genba.cvm.student import build_student, trainable_parameters
from genba.errors import GenbaError


@pytest.fixture(scope="module")
def student():
    return build_student({"kind": "lite0", "image_size": 32, "cut": "block14", "pretrained": False})


def test_only_the_stages_after_the_cut_train(student, one_thread):
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in student.named_parameters()
                 if p.requires_grad and n.startswith("net._blocks")}
    assert trainable == {"_blocks.15"}
    assert student.net._conv_head.weight.requires_grad and not student.net._conv_stem.weight.requires_grad
    assert 1.0e6 < trainable_parameters(student) < 1.3e6
    student.train()
    assert not student.net._bn0.training and not student.net._blocks[3]._bn1.training  # frozen BN stays eval
    assert student.net._bn1.training
    student.eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(student.encode(student.prepare(x)), student(x), atol=1e-5)
        assert student(x).shape == (2, 1280)


def test_lite_export_matches_onnxruntime(student, tmp_path, one_thread):
    from genba.cvm.export import onnx_bytes
    from genba.cvm.predict import OnnxClassifier

    bank = ConceptBank.build(["cat", "dog", "bird"], ["a photo of a {}."], TextEmbedder("tiny"))
    objective = StreamObjective(student, ConceptHead(student.feature_dim, bank.embeddings), "contrastive").eval()
    path = tmp_path / "lite.onnx"
    path.write_bytes(onnx_bytes(objective, bank, {}))
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = objective.head(objective.student(torch.from_numpy(x))).numpy()
    diff = float(np.abs(OnnxClassifier.load(path).logits(x) - expected).max())
    print(f"lite0 max |logit difference| onnxruntime vs PyTorch: {diff:.2e}")
    assert diff < 1e-3


def test_unknown_student_or_cut(one_thread):
    with pytest.raises(GenbaError, match="unknown student"):
        build_student("resnet")
    with pytest.raises(GenbaError, match="no stage"):
        build_student({"kind": "lite0", "cut": "block99", "pretrained": False})
