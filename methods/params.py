"""Validating a plain `Params` dataclass through pydantic, and the one wording of a validation error.

Methods (and datasets) keep declaring their parameters as frozen dataclasses with typed fields; this
module builds a strict pydantic model from such a dataclass (cached per class) and turns each pydantic
error into `(path, what is wrong, what is allowed)`. The harness's sweep-file formatter
(`harness.config.problems`) uses the same `explain`, so a parameter is worded the same wherever it is
checked. It lives here, not in the harness, because `methods` must not import `harness`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from .registry import did_you_mean

# strict: 1 is a float, but "1", true and 1.5 are not ints; nan/inf are never a hyper-parameter; a field of
# a type pydantic does not know (a user's own class) is checked with isinstance
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)


@functools.cache
def params_model(params_cls: type) -> type:
    """A strict pydantic model with the dataclass's fields, types and defaults."""
    hints = typing.get_type_hints(params_cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(params_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    return create_model(f"{params_cls.__qualname__}", __config__=STRICT, **fields)


def check_params(params_cls: type, values: dict[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[tuple, str]]]:
    """(every field resolved, []) or (None, [(path, 'what; allowed: ...'), ...]) for every problem at once."""
    model = params_model(params_cls)
    try:
        return model.model_validate(dict(values)).model_dump(), []
    except ValidationError as e:
        allowed_names = [f.name for f in dataclasses.fields(params_cls)]
        return None, [(tuple(err["loc"]), explain(err, allowed_names)) for err in e.errors()]


def explain(err: dict[str, Any], names: list[str] | None = None) -> str:
    """One pydantic error as 'found X; allowed: Y' (or 'unknown key (did you mean ..)'; allowed: ...)."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = err["loc"][-1] if err["loc"] else "?"
        return f"unknown key{did_you_mean(key, names or [])}; allowed: {', '.join(names or []) or 'none'}"
    if kind == "missing":
        return "missing; give a value"
    allowed = {
        "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
        "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
        "bool_type": "true or false", "bool_parsing": "true or false",
        "string_type": "text", "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping",
        "model_type": "a mapping", "model_attributes_type": "a mapping",
        "literal_error": ", ".join(str(v).strip("'") for v in str(ctx.get("expected", "")).replace(" or ", ", ")
                                   .split(", ")),
        "greater_than_equal": f">= {ctx.get('ge')}", "greater_than": f"> {ctx.get('gt')}",
        "less_than_equal": f"<= {ctx.get('le')}", "less_than": f"< {ctx.get('lt')}",
        "too_short": f"at least {ctx.get('min_length')} item(s)", "too_long": f"at most {ctx.get('max_length')}",
        "string_pattern_mismatch": f"text matching {ctx.get('pattern')}",
        "string_too_long": f"at most {ctx.get('max_length')} characters",
        "string_too_short": "a non-empty text",
    }.get(kind)
    if kind == "value_error":  # our own validators' messages are already 'what is wrong; allowed: ...'
        return str(ctx.get("error", err["msg"]))
    if allowed is None:
        allowed = err["msg"]
    if kind == "literal_error" and isinstance(value, str):
        choices = [c.strip() for c in allowed.split(",")]
        return f"found {short(value)}{did_you_mean(value, choices)}; allowed: {allowed}"
    return f"found {short(value)}; allowed: {allowed}"


def short(value: Any) -> str:
    """repr, cut: a 400-digit number or a long list must not flood the one-line message."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_name(hint: Any) -> str:
    """A short readable name of a field's type: float, int?, {none,bilinear}."""
    if typing.get_origin(hint) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(hint))) + "}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        name = " | ".join(type_name(a) for a in args)
        return name + "?" if type(None) in typing.get_args(hint) else name
    if typing.get_origin(hint) in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list[{type_name(args[0])}]" if args else "list"
    return getattr(hint, "__name__", str(hint))
