"""What defines a stored memory: encoder, classes, prompts, method and its hyperparameters, policy.

A `MemorySpec` is plain data (JSON in the store and in exports). It is validated when built, so a
damaged or hand-edited record fails with a GenbaError naming the bad field, never later.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import asdict, dataclass, field, fields

from genba.errors import GenbaError
from genba.store.codec import check_format


MAX_CLASSES = 10_000
"""Upper bound of the number of classes of one memory."""
MAX_PER_CLASS = 1_000_000
"""Upper bound of `max_per_class` (an entry count the store can hold and a table can scan)."""
MAX_AGE_S = 100 * 365 * 86400.0
"""Upper bound of `max_age_s`: a hundred years."""
MAX_LOG = 1_000_000
"""Upper bound of `log_size`, the rolling bound of a memory's prediction log."""


MAX_NAME = 200
"""Upper bound of a class name's length (characters)."""


def check_classname(name) -> str:
    """`name` with runs of whitespace folded to one space; GenbaError unless it is a non-blank string of
    at most MAX_NAME characters without control characters (an ESC in a name would be a terminal
    escape in every printed prediction). The one check of class names, in the CLI and the server."""
    if not isinstance(name, str) or not name.strip():
        raise GenbaError(f"empty class name {name!r}: every class needs a non-blank name (e.g. 'scratched fabric')")
    if len(name) > MAX_NAME:
        raise GenbaError(f"class name {name[:40]!r}... has {len(name)} characters; at most {MAX_NAME} are allowed")
    if any(ord(c) < 32 and c not in "\t\n\r" or 127 <= ord(c) < 160 for c in name):
        raise GenbaError(f"class name {name[:60]!r} contains control characters; use printable text only")
    return " ".join(name.split())


def check_template(template) -> None:
    """Raise GenbaError unless `template` is a string whose only format field is one bare `{}`.

    `str.format` would otherwise read attributes ("{.__class__}"), demand keyword fields
    ("{} {x}") or mix automatic and manual numbering ("{}{0}"); none of that is a prompt.
    """
    fields = None
    if isinstance(template, str) and len(template) <= 500:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
        except ValueError:
            fields = None
    if fields != [("", "", None)]:
        shown = repr(template)[:80] if isinstance(template, str) else type(template).__name__
        raise GenbaError(f"template {shown} must be a string of at most 500 characters with exactly one '{{}}' and no "
                         "other format field (write a literal brace as '{{' or '}}'), e.g. 'a photo of a {}.'")


def check_hyperparameters(hyperparameters) -> None:
    """Raise GenbaError unless this is a JSON object of <= 64 booleans, short strings or finite numbers
    of magnitude <= 1e12 (each method then applies its documented ranges, genba.methods.config.RANGES)."""
    if not isinstance(hyperparameters, dict) or len(hyperparameters) > 64:
        raise GenbaError("hyperparameters must be a JSON object of at most 64 keys")
    for key, value in hyperparameters.items():
        plain = isinstance(value, (bool, str)) and len(str(value)) <= 200
        number = (isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 1e12
                  and math.isfinite(value))
        if not isinstance(key, str) or len(key) > 64 or not (plain or number):
            raise GenbaError(f"hyperparameter {str(key)[:64]!r} must be a boolean, a short string or a finite number "
                             f"of magnitude <= 1e12, got {str(value)[:40]}; see the method's documented ranges")


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
        has_text: False for a vision-only encoder (DINOv2): the stored text classifier is zeros
            and the method runs with the text logits absent (methods that declare text_optional).
        log_size: the prediction log keeps this memory's newest `log_size` predictions (0: no log).
        log_images: keep a small JPEG thumbnail of each logged prediction (opt-in, set at creation).
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
    has_text: bool = True
    log_size: int = 10_000
    log_images: bool = False

    def __post_init__(self) -> None:
        names = self.classnames
        if not isinstance(names, list) or not 0 < len(names) <= MAX_CLASSES:
            raise GenbaError(f"classnames must be a list of 1 to {MAX_CLASSES} non-empty strings of at most {MAX_NAME} characters")
        for name in names:
            check_classname(name)
        if len(set(names)) != len(names):
            raise GenbaError("classnames must be unique")
        if not isinstance(self.templates, list) or not self.templates:
            raise GenbaError("templates must be a non-empty list of strings with exactly one '{}' each")
        for template in self.templates:
            check_template(template)
        for key in ("encoder", "encoder_provenance", "method"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise GenbaError(f"memory spec field {key!r} must be a non-empty string")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or not 1 <= self.dim <= 65_536:
            raise GenbaError(f"memory spec dim must be an integer in [1, 65536], got {self.dim!r}")
        check_hyperparameters(self.hyperparameters)
        check_format(self.feature_format)
        if self.max_age_s is not None and not (isinstance(self.max_age_s, (int, float)) and not isinstance(self.max_age_s, bool)
                                               and 0 < self.max_age_s <= MAX_AGE_S and math.isfinite(self.max_age_s)):
            raise GenbaError(f"max_age_s must be a number of seconds in (0, {MAX_AGE_S:g}] or null, got {self.max_age_s!r}")
        if self.max_per_class is not None and not (isinstance(self.max_per_class, int) and not isinstance(self.max_per_class, bool)
                                                   and 1 <= self.max_per_class <= MAX_PER_CLASS):
            raise GenbaError(f"max_per_class must be an integer in [1, {MAX_PER_CLASS}] or null, got {self.max_per_class!r}")
        if not isinstance(self.has_text, bool):
            raise GenbaError(f"has_text must be true or false, got {self.has_text!r}")
        if not (isinstance(self.log_size, int) and not isinstance(self.log_size, bool) and 0 <= self.log_size <= MAX_LOG):
            raise GenbaError(f"log_size must be an integer in [0, {MAX_LOG}], got {self.log_size!r}")
        if not isinstance(self.log_images, bool):
            raise GenbaError(f"log_images must be true or false, got {self.log_images!r}")
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
