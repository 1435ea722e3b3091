"""`tfbench methods`: every registered method with its parameters, types and defaults."""
from __future__ import annotations

import argparse
import dataclasses
import inspect

from tabulate import tabulate

from methods import METHODS, describe_methods, load_user_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="METHOD", help="only these methods (default: all)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="import a file or module that registers more methods (repeatable)")


def format_methods(names: list[str] | None = None) -> str:
    """One block per method: name, what it needs from the harness, summary line, parameter table."""
    blocks = []
    for name, params in describe_methods():
        if names and name not in names:
            continue
        cls = METHODS.get(name)
        needs = [f.name for f in dataclasses.fields(cls.needs) if getattr(cls.needs, f.name)]
        doc = inspect.getdoc(cls) or ""
        summary = doc.splitlines()[0] if doc else ""
        head = f"{name}  ({cls.__module__}.{cls.__qualname__})"
        if needs:
            head += f"  needs: {', '.join(needs)}"
        lines = [head]
        if summary:
            lines.append(f"  {summary}")
        if params:
            table = tabulate([(p, t, repr(d)) for p, t, d in params], headers=["parameter", "type", "default"],
                             tablefmt="simple", disable_numparse=True)
            lines.extend("  " + row for row in table.splitlines())
        else:
            lines.append("  (no parameters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    for ref in args.imports:
        load_user_module(ref)
    for name in args.names:
        METHODS.get(name)  # an unknown name is one clear error listing the registered ones
    print(format_methods(args.names or None))
    return 0
