"""Teacher-free training methods behind one interface (see `base.Method`).

Built-ins are imported explicitly (no directory scanning), so registration order is fixed. A user's
method registers itself with `@register("name")` when its file is imported (`load_user_module`), and is
then used by name like a built-in.

Why the names below are resolved on first use (PEP 562): the methods' math needs torch (about 2 s to
import), and much of tfbench reads only the registry's rules or a parameter's validation
(`methods.registry`, `methods.params`: listing data sets, checking a sweep file). Importing those
submodules leaves torch unimported; touching `METHODS`, `Method` or `register` imports the methods.
"""
from __future__ import annotations

from typing import Any

_BASE = ("METHODS", "Method", "MethodParamError", "Needs", "StepContext", "build_method", "describe_methods",
         "make_params", "register")
_USER = ("UserImportError", "load_user_module")


def load_builtins() -> None:
    """Register the built-in methods (once: a module is imported once)."""
    from . import bake, byot, ce, cskd, dlb, ls, maxsup, ols, pskd, tfkd, uskd, zipf  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _BASE:
        from . import base

        load_builtins()
        return getattr(base, name)
    if name in _USER:
        from . import user

        return getattr(user, name)
    raise AttributeError(f"module 'methods' has no attribute {name!r}")


__all__ = [*_BASE, *_USER, "load_builtins"]
