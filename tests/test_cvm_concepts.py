"""The concept bank: provenance, atomic and checked storage, adding classes by name, bad names."""

from __future__ import annotations

import os

import pytest
import torch

from genba.cvm.concepts import KIND, ConceptBank, TextEmbedder
from genba.encoders import load_encoder
from genba.errors import GenbaError
from genba.zeroshot import text_classifier

TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture
def embedder():
    return TextEmbedder("tiny")


def test_build_matches_zeroshot_rows_and_records_provenance(embedder, tmp_path):
    bank = ConceptBank.build(["cat", "dog"], TEMPLATES, embedder)
    expected = text_classifier(load_encoder("tiny"), ["cat", "dog"], TEMPLATES)
    assert torch.allclose(bank.embeddings, expected)
    path = bank.save(tmp_path / "bank.safetensors")
    loaded = ConceptBank.load(path)
    assert loaded.names == ["cat", "dog"] and loaded.templates == [TEMPLATES, TEMPLATES]
    assert loaded.text_model == "tiny" and loaded.text_provenance == load_encoder("tiny").provenance
    assert loaded.licence.startswith("tiny: test-only weights")
    assert len(loaded.added) == 2 and loaded.added[0].endswith("+00:00")
    assert torch.equal(loaded.embeddings, bank.embeddings)
    from genba.artefact import read_artefact

    assert read_artefact(path, kind=KIND).kind == KIND


def test_minilm_bank_records_weights_hash_and_licence():
    e = TextEmbedder()  # the default; provenance hashes the offline weights file without loading the model
    assert e.provenance.startswith("all-MiniLM-L6-v2:") and len(e.provenance.split(":")[1]) == 16
    assert "Apache-2.0" in e.licence


def test_add_class_by_name_keeps_old_rows(embedder, tmp_path):
    bank = ConceptBank.build(["cat", "dog"], TEMPLATES, embedder)
    bigger = bank.add(["zebra"], ["a photo of a {}."], embedder)
    assert bigger.names == ["cat", "dog", "zebra"] and len(bank) == 2  # the old bank is untouched
    assert torch.equal(bigger.embeddings[:2], bank.embeddings)
    assert torch.allclose(bigger.embeddings[2], text_classifier(embedder, ["zebra"], ["a photo of a {}."])[0])
    assert bigger.templates[2] == ["a photo of a {}."]
    assert bigger.index("ZEBRA") == 2


def test_atomic_save_keeps_the_old_bank_when_the_write_fails(embedder, tmp_path, monkeypatch):
    path = tmp_path / "bank.safetensors"
    ConceptBank.build(["cat"], TEMPLATES, embedder).save(path)
    before = path.read_bytes()
    bigger = ConceptBank.load(path).add(["dog"], TEMPLATES, embedder)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        bigger.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temp file left behind


def test_damaged_or_foreign_bank_is_refused(embedder, tmp_path):
    path = ConceptBank.build(["cat", "dog"], TEMPLATES, embedder).save(tmp_path / "bank.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits of the last embedding value
    path.write_bytes(bytes(data))
    with pytest.raises(GenbaError, match="checksum"):
        ConceptBank.load(path)
    from safetensors.torch import save_file

    save_file({"embeddings": torch.zeros(2, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(GenbaError, match="not a genba artefact"):
        ConceptBank.load(tmp_path / "other.safetensors")


@pytest.mark.parametrize("names, match", [
    (["cat", ""], "empty class name"),
    (["cat", "   "], "empty class name"),
    (["cat", "Cat "], "duplicate class name"),
])
def test_bad_names_give_one_clear_error(embedder, names, match):
    with pytest.raises(GenbaError, match=match):
        ConceptBank.build(names, TEMPLATES, embedder)


def test_adding_an_existing_name_or_a_bad_template_fails(embedder):
    bank = ConceptBank.build(["cat"], TEMPLATES, embedder)
    with pytest.raises(GenbaError, match="duplicate class name 'cat'"):
        bank.add(["cat"], TEMPLATES, embedder)
    with pytest.raises(GenbaError, match="exactly one"):
        bank.add(["dog"], ["a photo"], embedder)
    with pytest.raises(GenbaError, match="same text model"):
        bank.add(["dog"], TEMPLATES, _OtherEmbedder())


class _OtherEmbedder(TextEmbedder):
    def __init__(self):
        self.spec = self.name = "other"

    provenance = "other-model:0"
    licence = "test"
