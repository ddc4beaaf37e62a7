"""--runtime: conse's image tower through ONNX Runtime computes torch's features (cosine > 0.999,
measured here on real photographs), is exported once and cached with its provenance, and enters
the feature cache key only when it is not torch (torch keys stay exactly as they were)."""

import numpy as np
import pytest
import torch

from genba.data.table import Dataset
from genba.device import Hardware, resolve, use
from genba.encoders import load_encoder
from genba.errors import GenbaError
from genba.features import FEATURES_VERSION, feature_key

ONNX = Hardware(torch.device("cpu"), "fp32", "onnx")


@pytest.fixture(scope="module")
def conse():
    pytest.importorskip("onnxruntime")
    return load_encoder("conse")


def test_onnx_features_equal_torch_features_and_the_graph_is_cached(conse, tmp_path, monkeypatch):
    from genba.encoders.onnx_tower import _photo_crops, default_graph_dir

    pixels = torch.stack([conse.preprocess(photo) for photo in _photo_crops(6)])
    # the tower only: the joint embedding is the same function (join_visual) of these outputs
    torch_visual, torch_logits = conse.visual_and_logits(pixels)
    with use(ONNX):
        assert conse.runtime == "onnx"
        onnx_visual, onnx_logits = conse.visual_and_logits(pixels)
    tower = conse.onnx_tower("onnx")
    assert tower.path.parent == default_graph_dir() and tower.path.is_file()
    assert tower.meta["parity"]["min_cosine"] > 0.999 and tower.meta["parity"]["top1_agreement"] == 1.0
    assert torch.nn.functional.cosine_similarity(torch_visual, onnx_visual).min() > 0.999
    assert torch.allclose(torch_visual, onnx_visual, atol=1e-3) and torch.allclose(torch_logits, onnx_logits, atol=1e-3)
    assert onnx_visual.dtype == torch.float32 and onnx_visual.device.type == "cpu"
    # a second encoder (another process, in effect) loads the cached graph instead of exporting it
    before = tower.path.stat().st_mtime_ns
    again = load_encoder("conse").onnx_tower("onnx")
    assert again.path == tower.path and again.path.stat().st_mtime_ns == before and again.meta == tower.meta


def test_runtime_enters_the_feature_key_only_when_it_is_not_torch(conse):
    dataset = Dataset(name="d", classnames=["a"], templates=["{}"], labels=np.zeros(2, dtype=np.int64),
                      splits={"train": np.array([0]), "test": np.array([1])}, fingerprint="f", source="",
                      _load=lambda i: None)
    legacy = {"version": FEATURES_VERSION, "encoder": conse.provenance, "dataset": "d", "fingerprint": "f",
              "split": "test", "transform": "none"}  # the key every cached torch feature file was written under
    assert feature_key(conse, dataset, "test", None) == legacy
    with use(ONNX):
        assert feature_key(conse, dataset, "test", None) == {**legacy, "runtime": "onnx"}
    tiny = load_encoder("tiny")
    with use(ONNX):  # an encoder without a graph runs torch whatever the option: its key is unchanged
        assert tiny.runtime == "torch" and "runtime" not in feature_key(tiny, dataset, "test", None)


def test_runtime_option_resolution():
    assert resolve("cpu", "fp32", "torch").runtime == "torch"
    assert resolve("cpu", "fp32", "auto").runtime == "onnx"  # onnxruntime is a dev dependency
    assert resolve("cpu", "bf16", "auto").runtime == "torch"
    with pytest.raises(GenbaError, match="runs fp32 graphs on the CPU"):
        resolve("cpu", "bf16", "onnx")
    with pytest.raises(GenbaError):
        resolve("cpu", "fp32", "tensorrt")
