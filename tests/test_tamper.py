"""The tamper matrix (issue 17): every artefact kind genba writes (genba.artefact.KINDS; a kind not
listed in MAKERS fails here until it is), written by its real writer, then damaged or forged and
read back by its real reader. Every mutation must be refused with one GenbaError line naming the
file (nothing unpickled, the file untouched), except the few listed in ACCEPTED whose forged
value is valid for that field (each one checked to load into something usable).

Mutations: raw bytes (truncated, one flipped byte in the header and in the data, bogus header
length, a pickle payload, all-zero / NaN / inf tensor bytes: the checksum) and forged files with a
valid checksum (what someone who knows the format writes: NaN / inf tensors, every metadata field
set to a wrong type, negative, 10**400 and 10**9, every key missing, an extra key).
"""

from __future__ import annotations

import math
import pickle
import resource
from pathlib import Path

import pytest
import torch

from genba.artefact import KINDS, decode_artefact, encode_artefact, read_artefact
from genba.errors import GenbaError


# ------------------------------------------------------------------ one tiny artefact per kind
def make_cache(tmp):
    from genba.cache import TensorCache

    key = {"encoder": "tiny", "split": "test"}
    path = TensorCache(tmp).save("features", key, {"feats": torch.randn(4, 3), "labels": torch.arange(4)})

    def read(p):
        from genba.cache import SCHEMA

        found = read_artefact(p, kind="cache-entry", schema=SCHEMA)
        if found.meta["key"] != key:
            raise GenbaError(f"{p}: its key does not match")
    return path, read


def make_checkpoint(tmp):
    from genba.train import Objective, TensorData, TrainConfig, fit
    from genba.train.checkpoint import CHECKPOINT, load_checkpoint

    class Quadratic(Objective):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))

        def forward(self, batch):
            return ((self.w - batch["x"]) ** 2).sum(1).mean()

    data = TensorData(x=torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))
    fit(Quadratic(), data, TrainConfig(epochs=2, batch_size=3), checkpoint_dir=tmp / "ck", progress=False)

    def read(p):  # what a resumed run does: the file, then its fit to this run (config, rows, tensors)
        load_checkpoint(p.parent)
        fit(Quadratic(), data, TrainConfig(epochs=2, batch_size=3), checkpoint_dir=p.parent, resume=True, progress=False)
    return tmp / "ck" / CHECKPOINT, read


def make_learner(tmp):
    from genba.continual.loop import load_learner_state, save_learner_state

    path = tmp / "learner.safetensors"
    save_learner_state(path, {"adapter.weight": torch.randn(3, 3), "adapter.bias": torch.zeros(3)})
    return path, load_learner_state


def make_buffer(tmp):
    from genba.continual.buffer import ReplayBuffer

    buffer = ReplayBuffer(4, seed=1)
    buffer.add({"x": torch.randn(6, 3), "y": torch.arange(6)})
    path = tmp / "replay.safetensors"
    buffer.save(path)
    return path, lambda p: ReplayBuffer.load(p)


def _bank():
    from genba.cvm.concepts import ConceptBank, TextEmbedder

    return ConceptBank.build(["cat", "dog"], ["a photo of a {}."], TextEmbedder("tiny"))


def make_bank(tmp):
    from genba.cvm.concepts import ConceptBank

    path = tmp / "concepts.safetensors"
    _bank().save(path)
    return path, ConceptBank.load


def make_cvm(tmp):
    from cvm_helpers import tiny_objective
    from genba.cvm.model_dir import load_model_dir, save_model_dir

    bank = _bank()
    directory = save_model_dir(tmp / "cvm", tiny_objective(bank).eval(), bank, result={"top1": 50.0})
    return directory / "model.safetensors", lambda p: load_model_dir(p.parent)


def make_movit(tmp):
    from genba.movit.artefact import load_artefact, save_artefact
    from genba.movit.vit import MemoryConfig, MoViT, MoViTConfig

    cfg = MoViTConfig(num_classes=2, image_size=8, patch=4, channels=1, dim=8, depth=1, heads=2,
                      mem=MemoryConfig(capacity=4, topk=2, prototypes=2))
    prov = {"input": "pixels:8x8x1", "setting": "scratch", "dataset": "d", "fingerprint": "f", "classnames": ["a", "b"],
            "fraction": 0.5, "seed": 0, "train_ids": [0, 1], "weights_licences": {}, "created": "now", "method": "m"}
    path = tmp / "movit.safetensors"
    save_artefact(path, MoViT(cfg), prov, {"lr": 0.1})
    return path, load_artefact


def make_sak(tmp):
    from genba.sak.pipeline import load_student, save_student
    from genba.sak.student import SAKStudent, StudentConfig

    model = SAKStudent(StudentConfig(image_size=16, patch=8, dim=8, depth=1, heads=2, tasks={"saliency": 1}))
    path = save_student(tmp / "sak", model, {"stage": 2, "classnames": ["a"]})
    return path, lambda p: load_student(p.parent)


def make_learned(tmp):
    from genba.live import decode_learned, encode_learned

    fingerprint = "ab" * 32
    path = tmp / "learned.bin"
    path.write_bytes(encode_learned({"bias": torch.randn(4), "keys": torch.randn(2, 4)}, fingerprint))

    def read(p):
        if decode_learned(p.read_bytes(), fingerprint) is None:
            raise GenbaError(f"{p}: refused (the method trains again)")
    return path, read


def make_model(tmp):
    from PIL import Image

    from genba.cli import main
    from genba.model.base import MODEL_KINDS, load_model
    from model_helpers import pattern_folder

    site = pattern_folder(tmp / "site", per_class=8)
    path = tmp / "m.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tip-adapter", "--encoder", "tiny", "--shots", "2",
                 "--val-per-class", "2", "--out", str(path), "--quiet", "--no-cache"]) == 0
    image = Image.open(next((site / "bars").iterdir())).convert("RGB")

    def read(p):  # what `genba predict` does: the file, its kind's predictor, one image
        model = load_model(p)
        MODEL_KINDS.get(model.kind).predictor(model).probabilities([image])
    return path, read


def make_continual_model(tmp):
    """A second writer of the "model" kind: `genba continual --out` (moe-adapters: widths and experts)."""
    from genba.cli import main
    from genba.model.base import MODEL_KINDS, load_model
    from model_helpers import NEW, pattern_folder

    site, new = pattern_folder(tmp / "site", per_class=6), pattern_folder(tmp / "new", NEW, per_class=6, seed=1)
    assert main(["continual", "--stream", f"folder:{site},folder:{new}", "--method", "moe-adapters", "--encoder", "tiny",
                 "--control", "none", "--val-per-class", "1", "--set", "experts=2", "--set", "hidden=4", "--set",
                 "train.epochs=1", "--out", str(tmp / "run"), "--quiet", "--no-cache"]) == 0
    image = next((site / "bars").iterdir())

    def read(p):
        from PIL import Image

        model = load_model(p)
        MODEL_KINDS.get(model.kind).predictor(model).probabilities([Image.open(image).convert("RGB")])
    return tmp / "run" / "model.genba", read


MAKERS = {"cache-entry": make_cache, "train-checkpoint": make_checkpoint, "continual-learner": make_learner,
          "replay-buffer": make_buffer, "concept-bank": make_bank, "cvm-model": make_cvm, "movit-model": make_movit,
          "sak-model": make_sak, "learned-state": make_learned, "model": make_model}
VARIANTS = {"model:continual": ("model", make_continual_model)}  # another writer of a kind: case -> (kind, maker)

# forged values that are valid for their field; each still loads into a working object
ACCEPTED = {
    ("replay-buffer", "seed", "10**9"), ("replay-buffer", "seen", "10**9"), ("replay-buffer", "capacity", "10**9"),
    ("replay-buffer", "rng.state.state", "10**9"), ("replay-buffer", "rng.state.inc", "10**9"),  # any PCG64 state
    ("replay-buffer", "rng.uinteger", "10**9"),
    ("train-checkpoint", "state.loss_sum", "negative"), ("train-checkpoint", "state.loss_sum", "10**9"),
    ("train-checkpoint", "state.best_score", "negative"), ("train-checkpoint", "state.best_score", "10**9"),
    ("train-checkpoint", "state.history[0].loss", "negative"), ("train-checkpoint", "state.history[0].loss", "10**9"),
    ("movit-model", "provenance.train_ids[0]", "10**9"), ("movit-model", "provenance.train_ids[0]", "missing"),
    ("movit-model", "provenance.seed", "10**9"), ("movit-model", "config.mem.bias_init", "negative"),
    # an adapt model: any seed is a seed; --val-per-class has no upper bound (each class gives
    # min(val_per_class, n_c - 1) images); a test split of 10**9 images is a count (no tensor has its
    # size); one template fewer is still a valid template list (the text classifier is a tensor)
    ("model", "state.seed", "10**9"), ("model", "state.val_per_class", "10**9"), ("model", "metrics.n_test", "10**9"),
    ("model", "state.templates[0]", "missing"),
    # a continual model: the same seeds and counts, a per-class cap of 10**9 images, a checkpoint every
    # 10**9 steps (inside TrainConfig's documented range) and a measured time per image (a record)
    ("model:continual", "state.seed", "10**9"), ("model:continual", "state.val_per_class", "10**9"),
    ("model:continual", "hyperparameters.train.seed", "10**9"), ("model:continual", "state.caps[0]", "10**9"),
    ("model:continual", "hyperparameters.train.checkpoint_every", "10**9"),
    ("model:continual", "state.tasks[0].test_rows", "10**9"), ("model:continual", "metrics.metrics.ms_per_image", "10**9"),
}
ACCEPTED_PREFIXES = {  # opaque records kept for people, never used to compute anything
    ("cvm-model", "run"), ("movit-model", "hyperparameters"), ("sak-model", "extra"),
}


def test_every_kind_is_in_the_matrix():
    assert set(MAKERS) == set(KINDS), "add the new artefact kind to MAKERS (and ACCEPTED if needed)"


def test_every_model_kind_declares_its_schema():
    """What each kind of model file reads to rebuild itself is bounded by its own schema."""
    from genba.metaschema import Spec
    from genba.model.base import KIND_FIELDS, MODEL_KINDS
    from genba.model import kinds  # noqa: F401

    for entry in MODEL_KINDS.entries():
        schema = entry.obj.meta_schema
        assert set(schema) == set(KIND_FIELDS) and all(isinstance(s, Spec) for s in schema.values()), entry.name


# ------------------------------------------------------------------ mutations
def layout(data: bytes):
    n = int.from_bytes(data[:8], "little")
    return n, 8 + n


def raw_mutations(data: bytes) -> dict[str, bytes]:
    n, start = layout(data)
    flipped_header, flipped_data = bytearray(data), bytearray(data)
    flipped_header[8 + n // 2] ^= 0x01
    flipped_data[start + (len(data) - start) // 2] ^= 0x01
    zeros = data[:start] + bytes(len(data) - start)
    return {"truncated": data[: len(data) // 2], "truncated to 5": data[:5], "flipped header byte": bytes(flipped_header),
            "flipped data byte": bytes(flipped_data), "header length 2**62": (2**62).to_bytes(8, "little") + data[8:],
            "header length past end": (len(data)).to_bytes(8, "little") + data[8:],
            "pickle payload": pickle.dumps({"w": torch.zeros(2)}), "all-zero tensor bytes": zeros,
            "NaN tensor bytes": data[:start] + b"\xff\xff\xc0\x7f" * ((len(data) - start) // 4)}


def leaves(value, path=""):
    """(dotted path, value) of every field under `value`, lists through their first element."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        if value:
            yield from leaves(value[0], f"{path}[0]")
    yield path, value


def replaced(meta, path, new):
    """A deep copy of `meta` with the field at `path` set to `new` (or removed when new is REMOVE)."""
    import copy
    import re

    out = copy.deepcopy(meta)
    parts = [p for p in re.split(r"\.|(\[0\])", path) if p]
    target = out
    for part in parts[:-1]:
        target = target[0] if part == "[0]" else target[part]
    last = parts[-1]
    if new is REMOVE:
        if last == "[0]":
            del target[0]
        else:
            del target[last]
    elif last == "[0]":
        target[0] = new
    else:
        target[last] = new
    return out


REMOVE = object()


def forged_mutations(kind: str, meta: dict, tensors: dict):
    floats = [k for k, t in tensors.items() if t.is_floating_point() and t.numel()]
    for name, value in (("NaN tensor", math.nan), ("inf tensor", math.inf)):
        if floats:
            bad = dict(tensors, **{floats[0]: torch.full_like(tensors[floats[0]], value)})
            yield ("", name), meta, bad
    for path, value in leaves(meta):
        if not path:
            continue
        wrong = 12345 if isinstance(value, str) else "x"
        for label, new in (("wrong type", wrong), ("negative", -5), ("10**400", 10**400), ("10**9", 10**9)):
            yield (path, label), replaced(meta, path, new), tensors
        yield (path, "missing"), replaced(meta, path, REMOVE), tensors
        if isinstance(value, dict):
            yield (path, "extra key"), replaced(meta, path, {**value, "zz_extra": 1}), tensors
    yield ("", "extra key"), {**meta, "zz_extra": 1}, tensors


def refused(read, path: Path) -> str | None:
    """The one-line error of reading `path`, or None if it loaded."""
    before = path.read_bytes()
    try:
        read(path)
    except GenbaError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message, message
        return message
    finally:
        assert path.read_bytes() == before, "the reader changed the file"
    return None


@pytest.mark.parametrize("case", sorted(MAKERS) + sorted(VARIANTS))
def test_tamper_matrix(case, tmp_path, monkeypatch):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kind, maker = VARIANTS.get(case, (case, MAKERS.get(case)))
    path, read = maker(tmp_path)

    def unpickled(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, unpickled)
    good = path.read_bytes()
    assert refused(read, path) is None, "the untouched artefact must load"
    original = read_artefact(path, kind=kind, finite=False) if kind != "learned-state" else \
        decode_artefact(good, kind=kind, finite=False)

    for label, data in raw_mutations(good).items():
        path.write_bytes(data)
        assert refused(read, path), f"{case}: {label} was accepted"

    accepted = set()
    for (field, label), meta, tensors in forged_mutations(kind, original.meta, original.tensors):
        path.write_bytes(encode_artefact(kind=kind, meta=meta, tensors=tensors))
        if refused(read, path) is None:
            accepted.add((case, field, label))
    opaque = {a for a in accepted if any(a[0] == k and a[1].startswith(p) for k, p in ACCEPTED_PREFIXES)}
    assert accepted - opaque == {a for a in ACCEPTED if a[0] == case}, f"{case}: accepted {sorted(accepted - opaque)}"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 2**20  # KiB -> GiB
    assert grown < 1.0, f"{case}: peak RSS grew by {grown:.2f} GiB"


@pytest.mark.parametrize("kind,argv", [
    ("cvm-model", lambda p: ["export", str(p.parent), "--onnx", str(p.parent.parent / "x.onnx")]),
    ("concept-bank", lambda p: ["export", str(p.parent), "--onnx", str(p.parent.parent / "x.onnx")]),
    ("movit-model", lambda p: ["movit", "predict", "--model", str(p), "--dataset", "digits"]),
    ("sak-model", lambda p: ["sak", "eval", "--model", str(p.parent), "--test", "2"]),
])
def test_cli_reports_a_tampered_artefact_in_one_line(kind, argv, tmp_path, capsys):
    """Through the CLI (a representative subset): exit 2, one line naming the file, no traceback."""
    from genba.cli import main

    if kind == "concept-bank":
        path = make_cvm(tmp_path)[0].parent / "concepts.safetensors"
    else:
        path = MAKERS[kind](tmp_path)[0]
    good = path.read_bytes()
    art = read_artefact(path, kind=kind)
    first_int = next((p for p, v in leaves(art.meta) if isinstance(v, int) and not isinstance(v, bool)), None)
    cases = [raw_mutations(good)["flipped data byte"], raw_mutations(good)["truncated"],
             encode_artefact(kind=kind, meta=art.meta, tensors={k: torch.full_like(v, math.nan) if v.is_floating_point()
                                                                 else v for k, v in art.tensors.items()})]
    if first_int:
        cases.append(encode_artefact(kind=kind, meta=replaced(art.meta, first_int, 10**400), tensors=art.tensors))
    for data in cases:
        path.write_bytes(data)
        assert main(argv(path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err, err
        assert path.read_bytes() == data
