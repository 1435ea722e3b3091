"""`tfbench` command line: argparse subcommands, each implemented in its own module.

User errors (bad input) print one line `tfbench: error: ...` and exit 2; nothing else is caught,
so a bug still shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import UserError

# subcommand -> (module, help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "methods": ("harness.cli.methods", "list registered methods with their parameters and defaults"),
    "datasets": ("harness.cli.datasets", "list datasets and where each looks for its data"),
    "train": ("harness.cli.train", "train one trial (no Ray)"),
    "run": ("harness.cli.run", "run a sweep file on Ray Tune"),
    "table": ("harness.cli.table", "print / write the mean +- std tables of a results folder"),
    "plot": ("harness.cli.plot", "write ablation, learning-curve and cost plots of a results folder"),
    "seeds": ("harness.cli.seeds", "how many seeds each comparison with CE needs for 80% power"),
    "landscape": ("harness.cli.landscape", "loss landscapes and sharpness of trained trials"),
    "zipf": ("harness.cli.zipf", "the supplement's analyses: toy, fit, snr, examples"),
    "bench": ("harness.cli.bench", "benchmarks that print measured tables"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfbench", description="Benchmark harness for teacher-free training methods.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            sp.set_defaults(_missing=module)
            continue
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"tfbench: error: '{args.command}' is not implemented in this version", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("tfbench: interrupted; finished work is kept, rerun the same command to continue", file=sys.stderr)
        return 130
    except Exception as e:  # only user errors are reduced to one line
        if _is_user_error(e):
            print(f"tfbench: error: {e}", file=sys.stderr)
            return 2
        raise


def _is_user_error(e: BaseException) -> bool:
    from methods import MethodParamError, UserImportError
    from methods.registry import RegistryError

    return isinstance(e, (UserError, MethodParamError, UserImportError, RegistryError))

