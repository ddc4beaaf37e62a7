"""The model: one self-describing file per adapted or trained classifier, and the kinds registry.

    model = Model.create("adapt", classes=[...], encoder={...}, method=..., hyperparameters=..., ...)
    save_model(model, "site.genba")
    model = load_model("site.genba")                 # any kind; refuses other files in one line
    kind = MODEL_KINDS.get(model.kind)               # what it can do: kind.capabilities
    predictor = kind.predictor(model, cache=None)    # .classes, .probabilities(list of PIL images)

Every model carries in `meta`: format + format_version, kind, genba version, the command that
made it, creation time, encoder provenance, classes, method (or strategy) with its
hyperparameters and how each was chosen, the data sources with their ids, the metrics it
reached; kind-specific settings live under meta["state"], its tensors under `tensors`.
A kind declares its capabilities; the CLI and the service ask the registry, never a name list.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from genba.errors import GenbaError
from genba.registry import Registry

FORMAT = "genba-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.genba"  # the model inside a run folder (continual, cvm train, movit train --out DIR)
CAPABILITIES = ("predict", "test_time_writes", "learn_task", "export")
KIND_FIELDS = ("hyperparameters", "chosen", "data", "metrics", "state")  # each kind's schema covers these
MODEL_KINDS = Registry("model kind")


def genba_version() -> str:
    from genba import __version__

    return __version__


def command_line() -> str:
    """The command that is running, as a user would retype it."""
    return " ".join(["genba"] + [shlex.quote(a) for a in sys.argv[1:]]) if sys.argv else "genba"


@dataclass
class Model:
    """One model: `meta` (JSON) and `tensors` (its head / memory state)."""

    kind: str
    meta: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def create(cls, kind: str, *, classes: list[str], tensors: dict[str, torch.Tensor], encoder: dict | None,
               method: str, hyperparameters: dict, chosen: dict, data: dict, metrics: dict, state: dict,
               command: str | None = None, parent: dict | None = None) -> "Model":
        MODEL_KINDS.get(kind)  # unknown kind -> GenbaError
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "genba_version": genba_version(),
                "command": command or command_line(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "encoder": encoder, "classes": list(classes), "method": method, "hyperparameters": hyperparameters,
                "chosen": chosen, "data": data, "metrics": metrics, "state": state,
                "version": 1 if parent is None else int(parent.get("version", 1)) + 1, "parent": parent}
        return cls(kind, meta, dict(tensors))

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def kind_class(self) -> "type[ModelKind]":
        return MODEL_KINDS.get(self.kind)

    def can(self, capability: str) -> bool:
        return capability in self.kind_class.capabilities


def _naming_the_file(build):
    """`build(cls, model, ...)` with any failure to rebuild the model from its (verified, but possibly
    forged) description turned into one ArtefactError line naming the file."""
    import functools

    @functools.wraps(build)
    def wrapped(cls, model, *args, **kw):
        from genba.artefact import ArtefactError

        try:
            return build(cls, model, *args, **kw)
        except GenbaError as error:
            if isinstance(error, ArtefactError) or (model.path is not None and str(model.path) in str(error)):
                raise
            raise ArtefactError(str(model.path or "<model>"), f"a {model.kind!r} model that cannot be used ({error})",
                                "re-create it with the command that wrote it") from error
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError,
                OverflowError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0][:200]
            raise ArtefactError(str(model.path or "<model>"), f"a {model.kind!r} model that cannot be rebuilt ({first})",
                                "re-create it with the command that wrote it") from error
    return wrapped


class ModelKind:
    """What a kind of model can do. Subclasses register with @MODEL_KINDS.register(name)."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"predict"})
    summary: ClassVar[str] = ""
    meta_schema: ClassVar[dict] = {}
    """genba.metaschema specs of the kind's own metadata, one per KIND_FIELDS entry (what the kind
    reads to rebuild itself and its records): checked by the model file's schema (genba.model.io)."""

    @classmethod
    def meta_problem(cls, meta: dict, tensors: dict) -> str | None:
        """Cross-checks of schema-valid metadata against itself and the tensors (counts, shapes)."""
        return None

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if "predictor" in cls.__dict__:  # every kind's rebuild refuses a forged description in one line
            cls.predictor = classmethod(_naming_the_file(cls.__dict__["predictor"].__func__))

    @classmethod
    def predictor(cls, model: Model, *, cache=None, progress: bool = False):
        """An object with `.classes` and `.probabilities(images) -> (N, C)` for RGB PIL images."""
        raise NotImplementedError

    @classmethod
    def onnx_prepare(cls, encoder: dict, state: dict):
        """image -> the tensor an exported graph of this kind reads (default: the encoder's preprocessing)."""
        from genba.encoders import load_encoder

        return load_encoder(encoder["spec"]).preprocess

    @classmethod
    def describe(cls, model: Model) -> list[str]:
        """Kind-specific lines for `genba model show`."""
        return []

    @classmethod
    def require(cls, capability: str) -> None:
        if capability not in cls.capabilities:
            able = [e.name for e in MODEL_KINDS.entries() if capability in e.obj.capabilities]
            raise GenbaError(f"a {cls.name!r} model cannot {capability.replace('_', ' ')}; kinds that can: "
                             f"{', '.join(able) or '(none)'}")


def kind_problem(meta: dict, tensors: dict) -> str | None:
    """The model file's kind-specific check (run by genba.model.io's SCHEMA once the shared fields are
    valid): the kind's `meta_schema`, then its `meta_problem`. A foreign format, a newer format
    version or an unknown kind pass here: load_model says which in its own words."""
    from genba.metaschema import Dict
    from genba.model import kinds  # noqa: F401  (registers every kind)

    if meta["format"] != FORMAT or meta["format_version"] > FORMAT_VERSION or meta["kind"] not in MODEL_KINDS:
        return None
    kind = MODEL_KINDS.get(meta["kind"])
    missing = [k for k in KIND_FIELDS if k not in kind.meta_schema]
    if missing:  # a kind without its schema is a bug of genba, not of the file
        raise TypeError(f"model kind {meta['kind']!r} declares no meta_schema for {missing}")
    return Dict(kind.meta_schema).problem({k: meta[k] for k in KIND_FIELDS}, "meta") or kind.meta_problem(meta, tensors)


def save_model(model: Model, path: str | Path) -> Path:
    """Write `model` to one file (atomic, checksummed)."""
    from genba.model.io import write_model_file

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    written = write_model_file(path, model.meta, model.tensors)
    model.path = written
    return written


def resolve_path(path: str | Path) -> Path:
    """A model file, or a run folder holding one (MODEL_FILE)."""
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise GenbaError(f"{path} is a folder without a {MODEL_FILE}: pass the model file, or a run folder "
                         "written with --out by a genba that writes models")
    return path


def load_model(path: str | Path) -> Model:
    """Read any kind of model; a file of another format, a newer format version or an unknown kind
    is refused with one GenbaError."""
    from genba.model.io import read_model_file

    path = resolve_path(path)
    meta, tensors = read_model_file(path)
    if meta.get("format") != FORMAT:
        raise GenbaError(f"{path} is not a genba model (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GenbaError(f"{path} is a genba model of format version {version} (written by genba "
                         f"{meta.get('genba_version')}); this genba {genba_version()} reads version {FORMAT_VERSION}: "
                         "upgrade genba or re-create the model with this one")
    kind = meta.get("kind")
    if kind not in MODEL_KINDS:
        raise GenbaError(f"{path} is a model of kind {kind!r}, which this genba does not know (it knows "
                         f"{', '.join(MODEL_KINDS.names())}): upgrade genba")
    return Model(kind, meta, tensors, path)


def open_predictor(model: Model, **options):
    """The kind's predictor of `model` (a kind that cannot predict is refused; anything in the file
    that cannot be used is one ArtefactError naming the file: see _naming_the_file)."""
    kind = MODEL_KINDS.get(model.kind)
    kind.require("predict")
    return kind.predictor(model, **options)


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix/`, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
