"""The feature cache: keys, hits, corruption detection, atomic writes; extraction with the tiny VLM."""

from __future__ import annotations

import os

import pytest
import torch

from genba.cache import CacheCorruptWarning, TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.features import ImageTransform, extract_features, feature_key


def test_round_trip_and_key_separation(tmp_path):
    cache = TensorCache(tmp_path)
    a = {"x": torch.arange(6.0).view(2, 3), "y": torch.tensor([1, 2])}
    cache.save("k", {"name": "a"}, a)
    loaded = cache.load("k", {"name": "a"})
    assert torch.equal(loaded["x"], a["x"]) and torch.equal(loaded["y"], a["y"])
    assert cache.load("k", {"name": "b"}) is None
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file left behind"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_entry_is_detected_deleted_and_rebuilt(tmp_path, damage):
    cache = TensorCache(tmp_path)
    key = {"name": "a"}
    path = cache.save("k", key, {"x": torch.randn(64, 8)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes(b ^ 0xFF for b in data[-10:]))
    else:
        path.write_bytes(b"not a safetensors file")
    with pytest.warns(CacheCorruptWarning):
        assert cache.load("k", key) is None
    assert not path.exists()
    calls = []
    rebuilt = cache.get_or_compute("k", key, lambda: calls.append(1) or {"x": torch.ones(2)})
    assert calls == [1] and torch.equal(rebuilt["x"], torch.ones(2))
    assert torch.equal(cache.load("k", key)["x"], torch.ones(2))


def test_failed_compute_leaves_no_entry(tmp_path):
    cache = TensorCache(tmp_path)

    def boom():
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", {"a": "1"}, boom)
    assert not list(tmp_path.rglob("*.safetensors"))


class CountingTiny:
    """Wraps the tiny VLM and counts image batches, to prove a cache hit encodes nothing."""

    def __init__(self):
        self.inner = load_encoder("tiny")
        self.batches = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_image_with_visual(self, pixels):
        self.batches += 1
        return self.inner.encode_image_with_visual(pixels)


def test_extract_then_hit(tmp_path, color_folder):
    dataset = load_dataset(f"folder:{color_folder}")
    encoder = CountingTiny()
    cache = TensorCache(tmp_path / "cache")
    first = extract_features(encoder, dataset, "test", cache=cache, progress=False)
    used = encoder.batches
    assert used > 0
    second = extract_features(encoder, dataset, "test", cache=cache, progress=False)
    assert encoder.batches == used, "second extraction must come from the cache"
    assert torch.equal(first.image, second.image) and torch.equal(first.visual, second.visual)
    assert torch.equal(first.indices, torch.as_tensor(dataset.splits["test"]))
    assert torch.equal(first.labels, torch.as_tensor(dataset.labels[dataset.splits["test"]]))
    assert torch.allclose(first.image.norm(dim=1), torch.ones(len(first)))


def test_key_records_encoder_dataset_split_transform(color_folder):
    dataset = load_dataset(f"folder:{color_folder}")
    tiny, tiny64 = load_encoder("tiny"), load_encoder("tiny:64")
    blur = ImageTransform("blur:1", lambda im: im)
    keys = [
        feature_key(tiny, dataset, "test", None),
        feature_key(tiny64, dataset, "test", None),
        feature_key(tiny, dataset, "train", None),
        feature_key(tiny, dataset, "test", blur),
    ]
    assert len({tuple(sorted(k.items())) for k in keys}) == 4
    assert keys[0]["fingerprint"] == dataset.fingerprint


def test_dataset_change_changes_fingerprint(tmp_path, color_folder):
    before = load_dataset(f"folder:{color_folder}").fingerprint
    (color_folder / "red" / "0.png").write_bytes((color_folder / "blue" / "0.png").read_bytes())
    os.utime(color_folder / "red" / "0.png", ns=(1, 1))
    assert load_dataset(f"folder:{color_folder}").fingerprint != before


def test_entry_from_before_the_artefact_format_is_still_a_hit(tmp_path):
    """Entries written by the old TensorCache (metadata "key" + tensor-only "sha256") stay valid;
    the same entry with its tensors edited is a miss."""
    import json

    from safetensors.torch import save

    from genba.cache import tensors_digest

    cache, key, tensors = TensorCache(tmp_path), {"encoder": "conse", "split": "test"}, {"x": torch.randn(4, 3)}
    path = cache.path("features", key)
    path.parent.mkdir(parents=True)
    path.write_bytes(save(tensors, metadata={"key": json.dumps(key, sort_keys=True), "sha256": tensors_digest(tensors)}))
    assert torch.equal(cache.load("features", key)["x"], tensors["x"])
    path.write_bytes(save({"x": tensors["x"] + 1}, metadata={"key": json.dumps(key, sort_keys=True),
                                                            "sha256": tensors_digest(tensors)}))
    with pytest.warns(CacheCorruptWarning, match="checksum"):
        assert cache.load("features", key) is None
