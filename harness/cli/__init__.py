"""`tfbench` command line: argparse subcommands, each implemented in its own module.

Why the parser is built in two steps: importing a command's module pulls in torch, timm or Ray (seconds),
so the top level knows only the names and one-line help of COMMANDS, and the one module the command line
names is imported (and its subparser filled in) before parsing. `tfbench --help` therefore imports no
command module at all.

User errors (bad input) print one line `tfbench: error: ...` and exit 2; nothing else is caught,
so a bug still shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness.errors import UserError, printable

# subcommand -> (module, help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "methods": ("harness.cli.methods", "list registered methods with their parameters and defaults"),
    "datasets": ("harness.cli.datasets", "list datasets and where each looks for its data"),
    "train": ("harness.cli.train", "train one trial (no Ray)"),
    "run": ("harness.cli.run", "run a sweep file on Ray Tune"),
    "evaluate": ("harness.cli.evaluate", "calibration, selective prediction, corruptions, OOD of trained trials"),
    "table": ("harness.cli.table", "print / write the mean +- std tables of a results folder"),
    "plot": ("harness.cli.plot", "write ablation, learning-curve and cost plots of a results folder"),
    "seeds": ("harness.cli.seeds", "how many seeds each comparison with CE needs (power analysis)"),
    "landscape": ("harness.cli.landscape", "loss landscapes and sharpness of trained trials"),
    "zipf": ("harness.cli.zipf", "the supplement's analyses: toy, fit, snr, examples"),
    "bench": ("harness.cli.bench", "benchmarks that print measured tables"),
}


def version() -> str:
    """The installed package's version, plus the git revision when running from a checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from harness.io import checkout_root, git_revision

    try:
        text = f"tfbench {dist_version('tfbench')}"
    except PackageNotFoundError:  # imported from a source tree that was never installed
        text = "tfbench (not installed)"
    if checkout_root() is not None:
        text += f" (git {git_revision()})"
    return text


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: the first argument that is not an option (the top level
    has options only, and none of them takes a value)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only `command`'s module is imported and its arguments added."""
    p = argparse.ArgumentParser(prog="tfbench", description="Benchmark harness for teacher-free training methods.")
    p.add_argument("--version", action="store_true", help="print the version (and git revision) and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if name != command:
            continue
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    if args.version:
        print(version())
        return 0
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
            print(f"tfbench: error: {printable(e)}", file=sys.stderr)
            return 2
        raise


def _is_user_error(e: BaseException) -> bool:
    from methods import MethodParamError, UserImportError
    from methods.registry import RegistryError

    return isinstance(e, (UserError, MethodParamError, UserImportError, RegistryError))
