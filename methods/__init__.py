"""Teacher-free training methods behind one interface (see `base.Method`).

Built-ins are imported explicitly (no directory scanning), so registration order is fixed.
A user's method registers itself with `@register("name")` when its file is imported
(`load_user_module`), and is then used by name like a built-in.
"""
from . import ce, cskd, ls, ols, pskd, tfkd, zipf  # noqa: E402,F401  (registers the built-ins)
from .base import (
    METHODS,
    Method,
    MethodParamError,
    Needs,
    StepContext,
    build_method,
    describe_methods,
    make_params,
    register,
)
from .user import UserImportError, load_user_module

__all__ = [
    "METHODS", "Method", "MethodParamError", "Needs", "StepContext", "UserImportError",
    "build_method", "describe_methods", "load_user_module", "make_params", "register",
]
