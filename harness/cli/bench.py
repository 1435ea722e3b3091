"""`tfbench bench TARGET`: benchmarks that print measured tables; the targets are harness.bench.targets.TARGETS."""
from __future__ import annotations

import argparse

from harness.bench.targets import TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_, add, run_) in TARGETS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        sp.set_defaults(_bench=run_)


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
