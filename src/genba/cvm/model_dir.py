"""A trained CVM model directory (`genba cvm train --out DIR`), every file written atomically.

    DIR/model.safetensors     the student + head weights (safetensors, no pickle)
    DIR/concepts.safetensors  the concept bank (genba.cvm.concepts, with its provenance)
    DIR/cvm.json              how to rebuild it: student spec, head, loss, image size, classes,
                              the run's metrics and hyperparameters
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes

from genba.cache import atomic_write_bytes
from genba.cvm.concepts import ConceptBank
from genba.cvm.heads import ConceptHead, LinearHead
from genba.cvm.objective import StreamObjective
from genba.cvm.student import build_student
from genba.errors import GenbaError

FORMAT = "genba-cvm-model-v1"


def save_model_dir(out_dir, objective: StreamObjective, bank: ConceptBank, cfg=None, result: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in objective.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save_bytes(state, metadata={"format": FORMAT}))
    bank.save(out / "concepts.safetensors")
    meta = {"format": FORMAT, "student": objective.student.spec(), "head": objective.head.spec(),
            "loss": objective.loss_kind, "known": objective.known, "classes": bank.names,
            "text_model": bank.text_model, "text_provenance": bank.text_provenance, "licence": bank.licence}
    if result is not None:
        meta["run"] = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_bytes(out / "cvm.json", (json.dumps(meta, indent=2, default=str) + "\n").encode())
    return out


def load_model_dir(model_dir) -> tuple[StreamObjective, ConceptBank, dict]:
    d = Path(model_dir)
    meta_path = d / "cvm.json"
    if not meta_path.is_file():
        raise GenbaError(f"{d} is not a CVM model directory (no cvm.json): train one with `genba cvm train --out {d}`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise GenbaError(f"{meta_path} cannot be read ({error}): retrain the model") from None
    if meta.get("format") != FORMAT:
        raise GenbaError(f"{meta_path} is not a genba CVM model (format {meta.get('format')!r})")
    bank = ConceptBank.load(d / "concepts.safetensors")
    student = build_student(meta["student"])
    head_spec = meta["head"]
    if head_spec["kind"] == "concept":
        centered = bool(head_spec.get("centered"))
        head = ConceptHead(student.feature_dim, bank.targets() if centered else bank.embeddings,
                           scale=head_spec.get("scale", 20.0), centered=centered,
                           unseen=head_spec.get("unseen", "direct"), hub=bool(head_spec.get("hub", False)),
                           conse_k=int(head_spec.get("conse_k", 10)), hub_k=int(head_spec.get("hub_k", 10)))
    else:
        head = LinearHead(student.feature_dim, len(meta["classes"]))
    objective = StreamObjective(student, head, meta["loss"])
    try:
        state = load_file(str(d / "model.safetensors"))
    except (SafetensorError, OSError) as error:
        raise GenbaError(f"{d / 'model.safetensors'} cannot be read ({error}): retrain the model") from None
    objective.load_state_dict(state, strict=True)
    objective.set_known(min(meta.get("known", head.num_classes), head.num_classes))
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
