"""genba.artefact: the verified reader / writer, and genba.metaschema."""

import json
import math
import pickle

import pytest
import torch

from genba.artefact import (FORMAT_VERSION, KINDS, ArtefactError, canonical_json, decode_artefact, encode_artefact,
                            read_artefact, write_artefact)
from genba.metaschema import AnyJSON, Bool, Dict, Float, Int, List, Nullable, Schema, Str, shape_problem

SCHEMA = Schema({"step": Int(min=0, max=10**9), "lr": Float(min=0.0),
                 "classnames": List(Str(max_len=200), max_len=100_000), "config": Dict({"dim": Int(min=1, max=4096)}),
                 "flag": Bool(), "note": Nullable(Str()), "rng": AnyJSON()},
                check=lambda meta, t: shape_problem(t, "head.weight", (len(meta["classnames"]), meta["config"]["dim"])))
META = {"step": 3, "lr": 0.01, "classnames": ["a", "b"], "config": {"dim": 4}, "flag": True, "note": None,
        "rng": {"state": [1, 2, 3]}}


def tensors():
    return {"head.weight": torch.arange(8, dtype=torch.float32).reshape(2, 4), "count": torch.tensor(5),
            "mask": torch.tensor([True, False]), "half": torch.ones(3, dtype=torch.bfloat16),
            "empty": torch.zeros(0, 7)}


def forge(kind, meta, tensors_, *, version=FORMAT_VERSION):
    """An artefact with a valid checksum over whatever metadata: what an attacker who knows the format writes."""
    import genba.artefact as a

    old = a.FORMAT_VERSION
    a.FORMAT_VERSION = version
    try:
        return a.encode_artefact(kind=kind, meta=meta, tensors=tensors_)
    finally:
        a.FORMAT_VERSION = old


def test_roundtrip_file_and_bytes(tmp_path):
    path = tmp_path / "a.safetensors"
    write_artefact(path, kind="movit-model", meta=META, tensors=tensors())
    art = read_artefact(path, kind="movit-model", schema=SCHEMA)
    assert art.kind == "movit-model" and art.version == FORMAT_VERSION and art.meta == META
    for name, t in tensors().items():
        assert torch.equal(art.tensors[name], t) and art.tensors[name].dtype == t.dtype
    blob = encode_artefact(kind="learned-state", meta=META, tensors=tensors())
    assert blob == encode_artefact(kind="learned-state", meta=dict(reversed(META.items())), tensors=tensors())
    assert decode_artefact(blob, kind=("learned-state", "cache-entry"), schema=SCHEMA).meta == META
    # a standard safetensors reader reads it too (interoperable format)
    from safetensors.torch import load
    assert torch.equal(load(blob)["head.weight"], tensors()["head.weight"])


def test_wrong_kind_unknown_kind_and_newer_version(tmp_path):
    blob = encode_artefact(kind="sak-model", meta={}, tensors={})
    with pytest.raises(ArtefactError, match="is a SAK model, not a MoViT model"):
        decode_artefact(blob, kind="movit-model", name="m.st")
    with pytest.raises(ValueError):
        encode_artefact(kind="no-such-kind", meta={}, tensors={})
    newer = forge("sak-model", {}, {}, version=FORMAT_VERSION + 1)
    with pytest.raises(ArtefactError, match=r"made by a newer genba \(format 2.*upgrade genba"):
        decode_artefact(newer, kind="sak-model")


def test_checksum_covers_metadata_and_tensors():
    blob = bytearray(encode_artefact(kind="movit-model", meta=META, tensors=tensors()))
    edited = bytes(blob).replace(b'\\"step\\":3', b'\\"step\\":4')
    assert edited != bytes(blob)
    with pytest.raises(ArtefactError, match="checksum"):
        decode_artefact(edited, kind="movit-model", name="x")
    blob[-20] ^= 1
    with pytest.raises(ArtefactError, match="checksum"):
        decode_artefact(bytes(blob), kind="movit-model", name="x")


@pytest.mark.parametrize("field,value,problem", [
    ("step", -5, "below the minimum"), ("step", 10**400, "above the maximum"), ("step", "3", "expected an integer"),
    ("step", True, "expected an integer"), ("lr", -1.0, "below"), ("classnames", ["x" * 201, "b"], "characters"),
    ("classnames", ["a\x1b[31m", "b"], "control characters"), ("config", {"dim": 10**6}, "above the maximum"),
    ("config", {"dim": 4, "x": 1}, "unexpected key"), ("config", {}, "missing key"), ("flag", 1, "true or false"),
    ("classnames", ["a"], "has shape"),
])
def test_schema_rejects(field, value, problem):
    meta = dict(META, **{field: value})
    with pytest.raises(ArtefactError, match=problem) as info:
        decode_artefact(forge("movit-model", meta, tensors()), kind="movit-model", schema=SCHEMA, name="f.st")
    assert "\n" not in str(info.value) and str(info.value).startswith("f.st: ")


def test_missing_and_extra_top_level_keys():
    for meta in ({k: v for k, v in META.items() if k != "step"}, dict(META, extra=1)):
        with pytest.raises(ArtefactError, match="missing key|unexpected key"):
            decode_artefact(forge("movit-model", meta, tensors()), kind="movit-model", schema=SCHEMA)


def test_nonfinite_tensors_and_metadata():
    bad = dict(tensors(), **{"head.weight": torch.full((2, 4), math.nan)})
    with pytest.raises(ArtefactError, match="NaN or infinite"):
        decode_artefact(forge("movit-model", META, bad), kind="movit-model")
    assert decode_artefact(forge("movit-model", META, bad), kind="movit-model", finite=False).meta == META
    with pytest.raises(ValueError):  # the writer never writes NaN metadata
        encode_artefact(kind="movit-model", meta={"x": math.inf}, tensors={})
    header, data = header_of(forge("movit-model", {"x": 1.5}, {}))
    header["__metadata__"]["genba"] = header["__metadata__"]["genba"].replace("1.5", "1e999")
    with pytest.raises(ArtefactError, match="out of range"):
        decode_artefact(rebuild(header, data), kind="movit-model")
    header["__metadata__"]["genba"] = header["__metadata__"]["genba"].replace("1e999", "NaN")
    with pytest.raises(ArtefactError, match="not a finite number"):
        decode_artefact(rebuild(header, data), kind="movit-model")


def header_of(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def rebuild(header, data):
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("mutate,problem", [
    (lambda b: b[:5], "truncated"),
    (lambda b: b[:-3], "covers"),
    (lambda b: (2**62).to_bytes(8, "little") + b[8:], "bogus header length"),
    (lambda b: (1).to_bytes(8, "little") + b[8:], "bogus header length"),
    (lambda b: pickle.dumps({"w": [1.0]}), "bogus header length|not valid JSON"),
    (lambda b: b"", "truncated"),
])
def test_damaged_bytes(mutate, problem):
    blob = encode_artefact(kind="movit-model", meta=META, tensors=tensors())
    with pytest.raises(ArtefactError, match=problem):
        decode_artefact(mutate(blob), kind="movit-model")


@pytest.mark.parametrize("edit,problem", [
    (lambda h: h["head.weight"].update(shape=[10**6, 10**6]), "does not match"),
    (lambda h: h["head.weight"].update(shape=[-2, -4]), "bad shape"),
    (lambda h: h["head.weight"].update(dtype="O"), "unknown dtype"),
    (lambda h: h["head.weight"].update(data_offsets=[0, 10**15]), "bad data offsets"),
    (lambda h: h["head.weight"].update(data_offsets=[0, 10**12]), "does not match"),
    (lambda h: h.update(extra={"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}), "overlaps|covers"),
    (lambda h: h.update(__metadata__={"format": "pt"}), "not a genba artefact"),
    (lambda h: h["head.weight"].update(evil=1), "malformed"),
])
def test_hostile_headers_fail_before_allocation(edit, problem):
    header, data = header_of(encode_artefact(kind="movit-model", meta=META, tensors=tensors()))
    edit(header)
    with pytest.raises(ArtefactError, match=problem):
        decode_artefact(rebuild(header, data), kind="movit-model")


def test_deep_and_duplicate_json():
    header, data = header_of(encode_artefact(kind="movit-model", meta={}, tensors={}))
    deep = canonical_json({"format": 1, "kind": "movit-model", "genba": "x", "meta": {}}).replace(
        '"meta":{}', '"meta":' + "[" * 100_000 + "]" * 100_000)
    header["__metadata__"]["genba"] = deep
    with pytest.raises(ArtefactError, match="nested"):
        decode_artefact(rebuild(header, data), kind="movit-model")
    raw = b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    with pytest.raises(ArtefactError, match="duplicate"):
        decode_artefact(len(raw).to_bytes(8, "little") + raw, kind="movit-model")


def test_file_errors_name_the_file_and_size_cap(tmp_path):
    with pytest.raises(ArtefactError, match="no training checkpoint there"):
        read_artefact(tmp_path / "none.safetensors", kind="train-checkpoint")
    path = tmp_path / "a.safetensors"
    write_artefact(path, kind="sak-model", meta={}, tensors={"w": torch.ones(100)})
    with pytest.raises(ArtefactError, match=rf"^{path}: is \d+ bytes, more than the 100 allowed"):
        read_artefact(path, kind="sak-model", max_bytes=100)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temp file left


def test_kinds_have_fixes():
    assert all(k.what and k.fix for k in KINDS.values())
    assert Dict(values=Int()).problem({"a": 1, "b": "x"}, "m") == "m.b: expected an integer, got str"
