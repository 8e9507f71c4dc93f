"""A small typed registry: name -> builder (function or class), plus the config class it takes.

One instance per component kind (image encoders, fusion modules, presets, ...), never a global
dict of everything, so a name can only resolve to a component of the kind asked for and each
registry can be listed on its own (contract tests iterate over `items()`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown name; a ``KeyError`` so ``except KeyError`` callers keep working."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one component kind; ``kind`` ("image encoder") is used in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._configs: dict[str, type | None] = {}

    def register(self, name: str, *, config: type | None = None) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; ``config``'s ``kind`` default, if any, must equal ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        kind = getattr(config, "kind", None)
        if isinstance(kind, str) and kind != name:
            raise ValueError(f"{self.kind} {name!r}: config {config.__name__} has kind {kind!r}")

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            self._configs[name] = config
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry for ``name``; ``RegistryError`` with the nearest names and the full list otherwise."""
        if name in self._entries:
            return self._entries[name]
        near = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
        raise RegistryError(f"unknown {self.kind} {name!r}; {hint}available: {', '.join(self.names()) or '(none)'}")

    def config(self, name: str) -> type | None:
        """The config class registered with ``name`` (None if none was given)."""
        self.get(name)
        return self._configs[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
