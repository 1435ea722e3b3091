"""`tfbench plot DIR`: write the ablation, learning-curve and accuracy-vs-cost figures of a results folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError
from harness.results.aggregate import TABLE_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default="best_top1",
                        help=f"the metric on the y axes: {', '.join(TABLE_METRICS)} (default best_top1)")


def run(args: argparse.Namespace) -> int:
    if args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench plot`; allowed: {', '.join(TABLE_METRICS)}")
    if not (Path(args.dir) / "trials.csv").is_file():
        raise UserError(f"no trials.csv in {args.dir}: give a results folder written by `tfbench run` "
                        f"(results/<sweep>/)")
    from harness.results.plots import write_plots  # matplotlib only when used

    paths = write_plots(args.dir, metric=args.metric)
    for p in paths:
        print(p)
    if not paths:
        print(f"no figures: {args.dir} has no finished trials")
    return 0
