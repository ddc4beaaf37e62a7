"""One registry shape for everything genba looks up by name: encoders, methods, backbones,
continual strategies, teachers, objectives.

    METHODS = Registry("method")
    @METHODS.register("tip-adapter", summary="training-free cache model")
    class TipAdapter(Method): ...
    METHODS.get("tip-adapter")        # the class; unknown names -> GenbaError listing the valid ones
    METHODS.names(), METHODS.summary("tip-adapter")

Metadata that describes an entry (its selection grid, whether it needs labels or text, the
hyperparameters a table shows) lives on the registered class itself, so every place that
lists, runs or tests entries reads it from one spot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genba.errors import GenbaError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    summary: str


class Registry:
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str = "", *, set_name: bool = True):
        """Decorator: register a class or factory under `name` (twice is a programming error)."""

        def wrap(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if set_name and isinstance(obj, type):
                obj.name = name
            doc = (getattr(obj, "__doc__", "") or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, summary or (doc[0] if doc else ""))
            return obj

        return wrap

    def get(self, name: str):
        if name not in self._entries:
            raise GenbaError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries) or '(none)'}")
        return self._entries[name].obj

    def names(self) -> list[str]:
        return list(self._entries)

    def summary(self, name: str) -> str:
        self.get(name)
        return self._entries[name].summary

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
