"""The sweep-file reference, generated from the pydantic models and the registries.

`python -m harness.config.reference` prints it; docs/sweep-files.md holds it between the markers below,
and tests/config/test_reference.py fails when the two differ (regenerate with `--write`).
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.config.schema import (
    MAX_NAME,
    MAX_TRIALS,
    Costs,
    DatasetDefaults,
    Dimension,
    Evaluate,
    Figures,
    Resources,
    Scheduler,
    SearchSettings,
    SweepFile,
    TrainSettings,
)
from methods.params import type_name

BEGIN = "<!-- BEGIN GENERATED: python -m harness.config.reference --write -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "sweep-files.md"


def _type(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _type(args[0])
    if annotation is Any:
        return "see meaning"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"mapping ({annotation.__name__})"
    if typing.get_origin(annotation) is dict:
        return f"mapping of {_type(args[0])} -> {_type(args[1])}"
    if typing.get_origin(annotation) is list:
        return f"list of {_type(args[0])}" if args else "list"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [_type(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    return type_name(annotation)


def _metadata(annotation: Any) -> list[Any]:
    """Constraint objects (annotated_types.Ge, ...) anywhere in an annotation: Optional[Annotated[int, Field(ge=1)]]."""
    out = []
    for meta in getattr(annotation, "__metadata__", ()):
        out.extend(getattr(meta, "metadata", [meta]))
    for arg in typing.get_args(annotation):
        if typing.get_origin(annotation) is not typing.Annotated or arg is typing.get_args(annotation)[0]:
            if typing.get_origin(arg) is not list:  # a list's items' limits are not the field's
                out.extend(_metadata(arg))
    return out


def _limits(field: Any) -> str:
    out = []
    for meta in list(field.metadata) + _metadata(field.annotation):
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
                          ("pattern", "matches")):
            value = getattr(meta, attr, None)
            if value is not None and f"{sym} {value}" not in out:
                out.append(f"{sym} {value}")
    return ", ".join(out)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "— (the default)" if value is None else f"`{value!r}`"


def model_table(model: type[BaseModel], title: str) -> str:
    rows = [f"### {title}", "", (model.__doc__ or "").strip(), "", "| key | type | limits | default | meaning |",
            "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        cells = [f"`{name}`", _type(field.annotation), _limits(field) or "—", _default(field), field.description or ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def params_table(kind: str, registry: Any) -> str:
    rows = [f"### {kind} parameters (from each class's `Params`)", "", "| name | parameter | type | default |",
            "|---|---|---|---|"]
    for name in registry.names():
        cls = registry.get(name)
        if not cls.__module__.startswith(("methods.", "harness.")):  # the built-ins, not what a user file added
            continue
        hints = typing.get_type_hints(cls.Params)
        for f in dataclasses.fields(cls.Params):
            default = f.default if f.default is not dataclasses.MISSING else None
            rows.append(f"| `{name}` | `{f.name}` | {type_name(hints[f.name])} | `{default!r}` |")
    return "\n".join(rows)


def generate() -> str:
    from harness.data import DATASETS
    from methods import METHODS

    parts = [
        f"Limits: at most {MAX_TRIALS:,} trials per file (the product of the axes, checked before expanding); "
        f"`name` at most {MAX_NAME} characters; the file at most 1 MiB and 100,000 YAML values after aliases.",
        model_table(SweepFile, "Top level"),
        model_table(TrainSettings, "`train` (and `dataset_defaults.<dataset>.train`, `--set train.<key>`)"),
        model_table(Resources, "`resources`"),
        model_table(DatasetDefaults, "`dataset_defaults.<dataset>`"),
        model_table(Evaluate, "`evaluate` (docs/results.md)"),
        model_table(Costs, "`costs` (docs/results.md)"),
        model_table(Figures, "`figures` (docs/results.md, \"Figures\")"),
        model_table(SearchSettings, "`search` (docs/tuning.md)"),
        model_table(Scheduler, "`search.scheduler`"),
        model_table(Dimension, "`search.space.<method>.<parameter>`"),
        params_table("Method", METHODS),
        params_table("Dataset", DATASETS),
    ]
    return "\n\n".join(parts) + "\n"


def generated_block(text: str) -> str | None:
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    block = generate()
    if "--write" in argv:
        text = DOC.read_text()
        head, rest = text.split(BEGIN, 1)
        DOC.write_text(head + BEGIN + "\n" + block + END + rest.split(END, 1)[1])
    else:
        sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
