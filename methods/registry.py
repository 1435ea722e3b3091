"""A small name -> class registry (fvcore/timm style).

Duplicates raise; unknown names raise an error that names the registry and lists what exists. A name is an
identifier (NAME_RULE), because it becomes part of trial keys and folder names: `../x` or a 300-character
name is refused when it is registered. The harness reuses this class for datasets, so there is one
registry idiom in the project.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class RegistryError(KeyError):
    """A lookup or registration problem; str() is one readable line (KeyError's repr quoting is avoided)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


MAX_NAME = 40
NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
NAME_TEXT = f"a letter, then letters, digits or '_', at most {MAX_NAME} characters"


class Registry:
    def __init__(self, kind: str, base: type | None = None, load: Callable[[], None] | None = None):
        """`base`: every registered object must be a subclass of it (a plugin's class that is not is refused).
        `load`: registers the built-ins; called before the first lookup (they are imported when needed)."""
        self.kind = kind
        self.base = base
        self._load = load
        self._items: dict[str, Any] = {}

    def _loaded(self) -> dict[str, Any]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._items

    def register(self, name: str) -> Callable[[Any], Any]:
        if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_RULE.fullmatch(name):
            raise RegistryError(f"{self.kind} registry: the name {name!r:.60} is not an identifier; allowed: "
                                f"{NAME_TEXT} (it becomes part of trial keys and folder names)")

        def deco(obj: Any) -> Any:
            if name in self._loaded() and self._items[name] is not obj:  # the built-ins first: theirs win
                raise RegistryError(
                    f"{self.kind} registry: {name!r} is already registered by "
                    f"{_where(self._items[name])}; pick another name"
                )
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise RegistryError(f"{self.kind} registry: {name!r} registers {_where(obj)}, which is not a "
                                    f"{self.base.__name__} subclass; allowed: class ... ({self.base.__name__})")
            self._items[name] = obj
            try:
                obj.name = name
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> Any:
        if name not in self._loaded():
            hint = did_you_mean(name, self._items)
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._loaded()))

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def unregister(self, name: str) -> None:
        """For tests that register throw-away entries."""
        self._items.pop(name, None)


def did_you_mean(name: object, allowed: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest allowed name, or ''. The one place such hints are built."""
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
