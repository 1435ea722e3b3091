"""A small name -> class registry (fvcore/timm style).

Duplicates raise; unknown names raise an error that names the registry and lists what exists.
The harness reuses this class for datasets, so there is one registry idiom in the project.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class RegistryError(KeyError):
    """A lookup or registration problem; str() is one readable line (KeyError's repr quoting is avoided)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if not isinstance(name, str) or not name:
                raise RegistryError(f"{self.kind} registry: a name must be a non-empty string, got {name!r}")
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(
                    f"{self.kind} registry: {name!r} is already registered by "
                    f"{_where(self._items[name])}; pick another name"
                )
            self._items[name] = obj
            try:
                obj.name = name
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> Any:
        if name not in self._items:
            hint = did_you_mean(name, self._items)
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def unregister(self, name: str) -> None:
        """For tests that register throw-away entries."""
        self._items.pop(name, None)


def did_you_mean(name: object, allowed: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest allowed name, or ''. The one place such hints are built."""
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
