"""What defines a stored memory: encoder, classes, prompts, method and its hyperparameters, policy.

A `MemorySpec` is plain data (JSON in the store and in exports). It is validated when built, so a
damaged or hand-edited record fails with a GenbaError naming the bad field, never later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from genba.errors import GenbaError
from genba.store.codec import check_format


@dataclass(frozen=True)
class MemorySpec:
    """One memory's definition.

    Args:
        classnames: C class names (unique, non-empty).
        templates: prompt templates with one `{}` each.
        encoder: encoder spec to load ("conse", "tiny", "hf:<dir>").
        encoder_provenance: `Encoder.provenance` of that encoder; a mismatch on load is an error.
        dim: D, dimension of the stored features (the encoder's joint space).
        method: registered method name (genba.methods).
        hyperparameters: overrides of the method's config (paper defaults otherwise).
        feature_format: "float16" (default) or "int8".
        max_age_s: entries older than this many seconds are removed (None keeps them).
        max_per_class: at most this many entries per class and bank, newest kept (None: no cap).
        name: free label shown on the status page.
    """

    classnames: list[str]
    templates: list[str]
    encoder: str
    encoder_provenance: str
    dim: int
    method: str = "dmn-tf"
    hyperparameters: dict = field(default_factory=dict)
    feature_format: str = "float16"
    max_age_s: float | None = None
    max_per_class: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        names = self.classnames
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise GenbaError("classnames must be a non-empty list of non-empty strings")
        if len(set(names)) != len(names):
            raise GenbaError("classnames must be unique")
        if not isinstance(self.templates, list) or not self.templates or not all(
                isinstance(t, str) and t.count("{}") == 1 for t in self.templates):
            raise GenbaError("templates must be a non-empty list of strings with exactly one '{}' each")
        for key in ("encoder", "encoder_provenance", "method"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise GenbaError(f"memory spec field {key!r} must be a non-empty string")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise GenbaError(f"memory spec dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.hyperparameters, dict):
            raise GenbaError("hyperparameters must be a JSON object")
        check_format(self.feature_format)
        if self.max_age_s is not None and not (isinstance(self.max_age_s, (int, float)) and self.max_age_s > 0):
            raise GenbaError(f"max_age_s must be a positive number of seconds or null, got {self.max_age_s!r}")
        if self.max_per_class is not None and not (isinstance(self.max_per_class, int) and self.max_per_class >= 1):
            raise GenbaError(f"max_per_class must be an integer >= 1 or null, got {self.max_per_class!r}")
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise GenbaError("name must be a string of at most 200 characters")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "MemorySpec":
        """Build from a dict; unknown or missing keys raise GenbaError listing the valid ones."""
        if not isinstance(data, dict):
            raise GenbaError("a memory spec must be a JSON object")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise GenbaError(f"unknown memory spec field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise GenbaError(f"memory spec is incomplete: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> "MemorySpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as error:
            raise GenbaError(f"stored memory spec is not valid JSON ({error}); the store is damaged") from None
