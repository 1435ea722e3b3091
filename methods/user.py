"""Importing a user's method file or module: the one way user code runs in tfbench."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


class UserImportError(ImportError):
    """One line: what was imported, from where, and what went wrong."""


def load_user_module(ref: str, base_dir: str | Path | None = None) -> ModuleType:
    """Import `ref`: a path to a .py file (relative to `base_dir`), or a dotted module name.

    Importing runs the file's `@register(...)` decorators, which is all that is needed.
    """
    looks_like_path = ref.endswith(".py") or "/" in ref or "\\" in ref
    if looks_like_path:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        path = path.resolve()
        if not path.is_file():
            raise UserImportError(f"imports: {ref!r}: no such file ({path})")
        # a stable module name per path, so importing the same file twice is a no-op
        name = "tfbench_user_" + path.stem + "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserImportError(f"imports: {ref!r}: cannot be imported as Python ({path})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SystemExit as e:  # exit() in a method file must not end tfbench without a word (or with exit 0)
            sys.modules.pop(name, None)
            raise UserImportError(f"imports: {ref!r} called exit({e.code!r:.80}) while being imported") from None
        except Exception as e:  # the user's code: report it in one line, whatever it raised
            sys.modules.pop(name, None)
            raise UserImportError(f"imports: {ref!r} raised {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(ref)
    except SystemExit as e:
        raise UserImportError(f"imports: {ref!r} called exit({e.code!r:.80}) while being imported") from None
    except ModuleNotFoundError as e:
        raise UserImportError(f"imports: {ref!r}: no such module ({e})") from e
    except Exception as e:
        raise UserImportError(f"imports: {ref!r} raised {type(e).__name__}: {e}") from e


def source_hash(cls: type) -> str:
    """'' for a built-in method; for a user's method, sha256 of its source file's bytes (first 16 hex).

    Why the content, not the path: a trial key must hold what changes numbers. The same file copied to
    another folder or machine gives the same key; an edited file gives a new one.
    """
    module = sys.modules.get(getattr(cls, "__module__", ""))
    if module is None or module.__name__ == "methods" or module.__name__.startswith("methods."):
        return ""
    path = getattr(module, "__file__", None)
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""
