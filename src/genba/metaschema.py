"""A small declarative schema for artefact metadata (genba.artefact): types, ranges, lengths.

    Schema({"step": Int(min=0, max=10**9), "classnames": List(Str(max_len=200), max_len=100_000),
            "config": Dict({"dim": Int(min=1, max=4096)})},
           check=lambda meta, tensors: None if len(meta["classnames"]) == tensors["head.weight"].shape[0]
                                       else "classnames disagree with head.weight")

`validate(value)` returns None or one line naming the field and the problem ("meta.step: -5 is
below the minimum 0"). Nothing here allocates more than the parsed JSON already holds: bounds
are checked before anything is built from the values. Bool is never accepted as Int/Float
(Python's bool is an int), NaN / inf never as Float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


class Spec:
    """A field type; `problem(value, where)` -> None or a one-line problem."""

    def problem(self, value: Any, where: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _range(value, lo, hi, where: str) -> str | None:
    if lo is not None and value < lo:
        return f"{where}: {_describe(value)} is below the minimum {lo}"
    if hi is not None and value > hi:
        return f"{where}: {_describe(value)} is above the maximum {hi}"
    return None


@dataclass(frozen=True)
class Int(Spec):
    min: int | None = None
    max: int | None = None

    def problem(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{where}: expected an integer, got {type(value).__name__}"
        return _range(value, self.min, self.max, where)


@dataclass(frozen=True)
class Float(Spec):
    """A finite number (JSON ints accepted)."""
    min: float | None = None
    max: float | None = None

    def problem(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where}: expected a number, got {type(value).__name__}"
        if isinstance(value, int) and abs(value) > 1e300:
            return f"{where}: {_describe(value)} is out of range"
        if not math.isfinite(value):
            return f"{where}: {value} is not a finite number"
        return _range(value, self.min, self.max, where)


@dataclass(frozen=True)
class Bool(Spec):
    def problem(self, value, where):
        return None if isinstance(value, bool) else f"{where}: expected true or false, got {type(value).__name__}"


@dataclass(frozen=True)
class Str(Spec):
    """A string of at most `max_len` characters; control characters refused unless `control`."""
    max_len: int = 10_000
    min_len: int = 0
    choices: tuple[str, ...] | None = None
    control: bool = False

    def problem(self, value, where):
        if not isinstance(value, str):
            return f"{where}: expected a string, got {type(value).__name__}"
        if len(value) > self.max_len:
            return f"{where}: string of {len(value)} characters, at most {self.max_len} allowed"
        if len(value) < self.min_len:
            return f"{where}: string of {len(value)} characters, at least {self.min_len} needed"
        if self.choices is not None and value not in self.choices:
            return f"{where}: {_describe(value)} is not one of {list(self.choices)}"
        if not self.control and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            return f"{where}: contains control characters"
        return None


@dataclass(frozen=True)
class List(Spec):
    item: Spec
    max_len: int = 100_000
    min_len: int = 0

    def problem(self, value, where):
        if not isinstance(value, list):
            return f"{where}: expected a list, got {type(value).__name__}"
        if not self.min_len <= len(value) <= self.max_len:
            return f"{where}: list of {len(value)} items, expected {self.min_len}..{self.max_len}"
        for i, item in enumerate(value):
            found = self.item.problem(item, f"{where}[{i}]")
            if found:
                return found
        return None


@dataclass(frozen=True)
class Nullable(Spec):
    """`spec` or null."""
    spec: Spec

    def problem(self, value, where):
        return None if value is None else self.spec.problem(value, where)


@dataclass(frozen=True)
class OneOf(Spec):
    """Any of `specs` (the first problem is reported when none fits)."""
    specs: tuple[Spec, ...]

    def problem(self, value, where):
        problems = [s.problem(value, where) for s in self.specs]
        return None if any(p is None for p in problems) else problems[0]


@dataclass(frozen=True)
class AnyJSON(Spec):
    """Opaque JSON (already bounded in size and depth by the reader), e.g. an rng state."""

    def problem(self, value, where):
        return None


@dataclass(frozen=True)
class Dict(Spec):
    """A JSON object: named `fields` (all required unless listed in `optional`), or, with
    `values`, any string keys (at most `max_len`) whose values all match `values`."""
    fields: dict[str, Spec] | None = None
    optional: tuple[str, ...] = ()
    allow_extra: bool = False
    values: Spec | None = None
    max_len: int = 10_000
    key: Str = field(default_factory=lambda: Str(max_len=1000))

    def problem(self, value, where):
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {type(value).__name__}"
        if len(value) > self.max_len:
            return f"{where}: object of {len(value)} keys, at most {self.max_len} allowed"
        fields = self.fields or {}
        missing = [k for k in fields if k not in value and k not in self.optional]
        if missing:
            return f"{where}: missing key {missing[0]!r}"
        for k, v in value.items():
            found = self.key.problem(k, f"{where} key")
            if found:
                return found
            spec = fields.get(k, self.values)
            if spec is None:
                if not self.allow_extra:
                    return f"{where}: unexpected key {_describe(k)}"
                continue
            found = spec.problem(v, f"{where}.{k}")
            if found:
                return found
        return None


@dataclass(frozen=True)
class Schema:
    """The metadata of one artefact kind: a top-level Dict plus an optional cross-check of the
    metadata against the tensors, `check(meta, tensors) -> problem or None` (run only once the
    metadata matches its fields, so it may index them freely). `tensors`: the exact tensor names
    expected, when fixed."""
    fields: dict[str, Spec]
    optional: tuple[str, ...] = ()
    allow_extra: bool = False
    check: Callable[[dict, dict], str | None] | None = None
    tensors: frozenset[str] | None = None

    def validate(self, meta: Any, tensors: dict) -> str | None:
        found = Dict(self.fields, self.optional, self.allow_extra, max_len=100_000).problem(meta, "meta")
        if found:
            return found
        if self.tensors is not None and set(tensors) != set(self.tensors):
            extra, missing = sorted(set(tensors) - self.tensors), sorted(self.tensors - set(tensors))
            return f"tensors differ from the expected set (missing {missing[:5]}, unexpected {extra[:5]})"
        return self.check(meta, tensors) if self.check is not None else None


def shape_problem(tensors: dict, name: str, shape: tuple) -> str | None:
    """None when tensors[name] exists with `shape` (None entries match any size), else the problem."""
    if name not in tensors:
        return f"tensor {name!r} is missing"
    got = tuple(tensors[name].shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = tuple("*" if s is None else s for s in shape)
        return f"tensor {name!r} has shape {got}, expected {want}"
    return None


def dataclass_spec(cls, ranges: dict, nested: dict | None = None, max_len: int = 200) -> Dict:
    """Exactly the fields of dataclass `cls`, every one required, typed by its annotation: bool ->
    Bool, int -> Int and float -> Float ranged by `ranges[name]` (a numeric field without a range
    is a TypeError here, at import, not an unbounded value in a file), str -> Str(max_len),
    `X | None` -> Nullable(X), a dataclass field -> `nested[its class]`."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)

    def spec_of(name: str, hint) -> Spec:
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1 and len(args) == 2:
                return Nullable(spec_of(name, inner[0]))
        if hint is bool:
            return Bool()
        if hint in (int, float):
            if name not in ranges:
                raise TypeError(f"{cls.__name__}.{name}: a numeric field needs a documented range")
            lo, hi = ranges[name]
            return Int(min=lo, max=hi) if hint is int else Float(min=lo, max=hi)
        if hint is str:
            return Str(max_len=max_len)
        if nested and hint in nested:
            return nested[hint]
        raise TypeError(f"{cls.__name__}.{name}: no schema for a field of type {hint!r}")

    return Dict({f.name: spec_of(f.name, hints[f.name]) for f in dataclasses.fields(cls)})
