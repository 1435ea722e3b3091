"""`tfbench table DIR`: print the mean +- std tables of a results folder and write its summary.{md,tex,csv}."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError
from harness.results.aggregate import TABLE_METRICS

FORMATS = ("md", "tex", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default="best_top1",
                        help=f"the metric the tables rank and compare: {', '.join(TABLE_METRICS)} "
                             f"(default best_top1)")
    parser.add_argument("--format", default="md", help=f"what to print: {', '.join(FORMATS)} (default md); "
                                                        f"all three files are written either way")


def run(args: argparse.Namespace) -> int:
    # Checked here, not with argparse `choices`, so that a bad value is one line like every user error.
    if args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench table`; allowed: {', '.join(TABLE_METRICS)}")
    if args.format not in FORMATS:
        raise UserError(f"unknown format {args.format!r} for `tfbench table`; allowed: {', '.join(FORMATS)}")
    if not (Path(args.dir) / "trials.csv").is_file():
        raise UserError(f"no trials.csv in {args.dir}: give a results folder written by `tfbench run` "
                        f"(results/<sweep>/)")
    from harness.results.tables import render_summary, write_outputs  # pandas/tabulate only when used

    outputs = render_summary(args.dir, metric=args.metric)
    write_outputs(args.dir, outputs)
    print(outputs[args.format], end="" if outputs[args.format].endswith("\n") else "\n")
    return 0
