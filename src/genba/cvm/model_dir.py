"""A trained CVM model directory (`genba cvm train --out DIR`), every file written atomically.

    DIR/model.safetensors     the student + head weights, one artefact (genba.artefact, kind
                              "cvm-model") whose metadata says how to rebuild it: student spec,
                              head, loss, classes, text model, the run's metrics and hyperparameters
    DIR/concepts.safetensors  the concept bank (genba.cvm.concepts, with its provenance)
    DIR/cvm.json              a readable copy of that metadata, for people; never read back

Loading verifies both artefacts (checksums over metadata and weights, finite weights) and the
metadata against SCHEMA (student sizes and the image size bounded before anything is built, the
class list equal to the bank's names) before building the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from genba.artefact import atomic_write_bytes, read_artefact, write_artefact
from genba.cvm.concepts import ConceptBank
from genba.cvm.heads import UNSEEN, ConceptHead, LinearHead
from genba.cvm.objective import LOSSES, StreamObjective
from genba.cvm.student import build_student
from genba.errors import GenbaError
from genba.metaschema import AnyJSON, Bool, Dict, Float, Int, List, OneOf, Schema, Str
from genba.store.spec import MAX_NAME

KIND = "cvm-model"
MODEL_FILE = "model.safetensors"
_SMALL = Dict({"kind": Str(choices=("small",)), "image_size": Int(min=8, max=1024),
               "widths": List(Int(min=1, max=2048), min_len=1, max_len=8), "strides": List(Int(min=1, max=4), min_len=1, max_len=8)})
_LITE = Dict({"kind": Str(choices=("lite0", "lite1", "lite2")), "image_size": Int(min=16, max=1024),
              "cut": Str(max_len=64), "pretrained": Bool()})
_CONCEPT = Dict({"kind": Str(choices=("concept",)), "scale": Float(min=0.0, max=1e4), "centered": Bool(),
                 "unseen": Str(choices=UNSEEN), "hub": Bool(), "conse_k": Int(min=1, max=10_000), "hub_k": Int(min=1, max=10_000)})


def _check(meta: dict, tensors: dict) -> str | None:
    student = meta["student"]
    if student["kind"] == "small" and len(student["widths"]) != len(student["strides"]):
        return "meta.student: widths and strides differ in length"
    if meta["known"] > len(meta["classes"]):
        return f"meta.known: {meta['known']} is more than the {len(meta['classes'])} classes"
    return None


SCHEMA = Schema({"student": OneOf((_SMALL, _LITE)), "head": OneOf((_CONCEPT, Dict({"kind": Str(choices=("linear",))}))),
                 "loss": Str(choices=LOSSES), "known": Int(min=0, max=100_000),
                 "classes": List(Str(max_len=MAX_NAME), min_len=1, max_len=100_000), "text_model": Str(max_len=2000),
                 "text_provenance": Str(max_len=2000), "licence": Str(max_len=2000), "run": AnyJSON()},
                optional=("run",), check=_check)


def _plain(value):
    """JSON-able copy of a run result: non-finite numbers -> None, other objects -> str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _plain(value.item())
    return str(value)


def save_model_dir(out_dir, objective: StreamObjective, bank: ConceptBank, cfg=None, result: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"student": objective.student.spec(), "head": objective.head.spec(), "loss": objective.loss_kind,
            "known": objective.known, "classes": bank.names, "text_model": bank.text_model,
            "text_provenance": bank.text_provenance, "licence": bank.licence}
    if result is not None:
        meta["run"] = _plain({k: v for k, v in result.items() if not k.startswith("_")})
    write_artefact(out / MODEL_FILE, kind=KIND, meta=meta, tensors=objective.state_dict())
    bank.save(out / "concepts.safetensors")
    atomic_write_bytes(out / "cvm.json", (json.dumps(meta, indent=2) + "\n").encode())
    return out


def load_model_dir(model_dir) -> tuple[StreamObjective, ConceptBank, dict]:
    d = Path(model_dir)
    if not (d / MODEL_FILE).is_file():
        raise GenbaError(f"{d} is not a CVM model directory (no {MODEL_FILE}): train one with `genba cvm train --out {d}`")
    found = read_artefact(d / MODEL_FILE, kind=KIND, schema=SCHEMA)
    meta, state = found.meta, found.tensors
    bank = ConceptBank.load(d / "concepts.safetensors")
    if bank.names != meta["classes"]:
        raise GenbaError(f"{d / 'concepts.safetensors'}: its {len(bank)} classes differ from the model's "
                         f"{len(meta['classes'])}; retrain the model (the two files belong together)")
    try:
        student = build_student(meta["student"])
        head_spec = meta["head"]
        if head_spec["kind"] == "concept":
            head = ConceptHead(student.feature_dim, bank.targets() if head_spec["centered"] else bank.embeddings,
                               scale=head_spec["scale"], centered=head_spec["centered"], unseen=head_spec["unseen"],
                               hub=head_spec["hub"], conse_k=head_spec["conse_k"], hub_k=head_spec["hub_k"])
        else:
            head = LinearHead(student.feature_dim, len(meta["classes"]))
        objective = StreamObjective(student, head, meta["loss"])
        objective.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise GenbaError(f"{d / MODEL_FILE}: its weights do not fit its description ({str(error).splitlines()[0][:160]}); "
                         "retrain the model") from None
    objective.set_known(min(meta["known"], head.num_classes))
    return objective.eval(), bank, meta


def add_classes(model_dir, names: list[str], templates: list[str]) -> ConceptBank:
    """Add classes by name only to a trained CVM model (one concept row each); CE models cannot."""
    from genba.cvm.concepts import TextEmbedder

    objective, bank, meta = load_model_dir(model_dir)
    if meta["head"]["kind"] != "concept":
        raise GenbaError("a cross-entropy head has no row for a class without images: add classes to a CVM "
                         "(concept head) model, or retrain the CE head with images of the new class")
    bank = bank.add(names, templates, TextEmbedder(bank.text_model))
    objective.head.set_bank(bank.targets() if objective.head.centered else bank.embeddings)
    save_model_dir(model_dir, objective, bank, result=meta.get("run"))
    return bank
