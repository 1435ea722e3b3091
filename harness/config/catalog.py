"""What the registered methods declare (label, colour, table order, recipe, needs, parameters and their
presets per data set), as records generated from the method classes themselves.

Why a generated file for the built-ins (harness/config/catalog.json): importing the methods imports torch (about
2 s on a laptop), and `tfbench methods` and every table only need what the classes declare. The file is
generated from the classes (`python -m harness.config.catalog --write`) and tests/methods/test_catalog.py fails
when it differs from them, so it never drifts. A user's method (`--import`) is described live.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("catalog.json")


def describe(name: str) -> dict[str, Any]:
    """The record of one registered method, from its class (imports the methods and the data sets)."""
    from harness.data import DATASETS
    from methods import METHODS
    from methods.params import type_name

    cls = METHODS.get(name)
    hints = typing.get_type_hints(cls.Params)
    fields = dataclasses.fields(cls.Params)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else
                (f.default_factory() if f.default_factory is not dataclasses.MISSING else None) for f in fields}
    # the values a trial uses on each data set (with its default model), grouped where they are equal
    groups: dict[str, list[str]] = {}
    values_of: dict[str, dict[str, Any]] = {}
    for dataset in DATASETS.names():
        data_cls = DATASETS.get(dataset)
        preset = cls.preset(data_cls.traits(), data_cls.default_model)
        values = {k: preset.get(k, v) for k, v in defaults.items()}
        ident = json.dumps(values, sort_keys=True, default=str)
        groups.setdefault(ident, []).append(dataset)
        values_of[ident] = values
    doc = inspect.getdoc(cls) or ""
    return {
        "name": name, "label": cls.label or name, "color": cls.color, "order": cls.order, "recipe": cls.recipe,
        "module": f"{cls.__module__}.{cls.__qualname__}", "summary": doc.splitlines()[0] if doc else "",
        "needs": [f.name for f in dataclasses.fields(cls.needs) if getattr(cls.needs, f.name)],
        "params": [{"name": f.name, "type": type_name(hints.get(f.name)), "default": defaults[f.name]}
                   for f in fields],
        "presets": [{"datasets": groups[i], "values": values_of[i]} for i in groups],
    }


def generate(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """name -> record of the built-in methods (or of `names`)."""
    from methods import METHODS

    return {n: describe(n) for n in (names or [n for n in METHODS.names() if _builtin(METHODS.get(n))])}


def _builtin(cls: type) -> bool:
    module = getattr(cls, "__module__", "")
    return module == "methods" or module.startswith("methods.")


def dumped(records: dict[str, dict[str, Any]]) -> str:
    return json.dumps(records, indent=1, sort_keys=True, default=str) + "\n"


@functools.cache
def builtins() -> dict[str, dict[str, Any]]:
    """The built-in methods' records, read from the generated file (no torch)."""
    try:
        return json.loads(CATALOG.read_text())
    except (OSError, ValueError):  # a damaged install: describe them live (slow, but right)
        return generate()


# The display names of a user's methods, as a results folder recorded them (sweep.yaml's `labels`, written by
# `tfbench run` from the classes it imported; `remember_labels` when its trials are loaded): the results code
# reads files and never imports a user's method file.
_RECORDED: dict[str, str] = {}
MAX_LABEL = 200


def user_labels(names: list[str]) -> dict[str, str]:
    """name -> declared `label` of each registered method among `names` that is not a built-in and has one:
    what a sweep record keeps so that tables and figures show a user's method by its label."""
    from methods import METHODS

    out = {}
    for name in dict.fromkeys(names):
        cls = METHODS.get(name)
        if not _builtin(cls) and isinstance(cls.label, str) and cls.label.strip():
            out[name] = cls.label.strip()
    return out


def remember_labels(labels: object) -> None:
    """Take a results folder's recorded labels of user methods (a mapping name -> label; anything else, a
    built-in's name or a label that is not one line of text is ignored)."""
    if not isinstance(labels, dict):
        return
    for name, text in labels.items():
        if (isinstance(name, str) and isinstance(text, str) and name not in builtins() and text.strip()
                and "\n" not in text and len(text) <= MAX_LABEL):
            _RECORDED[name] = text.strip()


def label(method: str) -> str:
    """A method's display name: its declared label for a built-in, the recorded label of a user's method
    (`remember_labels`), its registered name otherwise."""
    return builtins().get(method, {}).get("label") or _RECORDED.get(method, method)


def color(method: str) -> str | None:
    return builtins().get(method, {}).get("color")


def order(method: str) -> tuple[int, str]:
    """Sort key of a method in tables: the built-ins in the paper's order, then the others by name."""
    record = builtins().get(method)
    return (int(record["order"]), "") if record else (1_000, method)


if __name__ == "__main__":  # python -m harness.config.catalog --write
    text = dumped(generate())
    if "--write" in sys.argv[1:]:
        from harness.io import atomic_write_text

        atomic_write_text(CATALOG, text)
        print(f"wrote {CATALOG}")
    else:
        print(text, end="")
