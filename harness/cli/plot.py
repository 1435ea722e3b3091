"""`tfbench plot DIR`: write the ablation, learning-curve and accuracy-vs-cost figures of a results folder."""
from __future__ import annotations

import argparse

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"the metric on the y axes: {', '.join(TABLE_METRICS)} (default {DEFAULT_METRIC})")


def run(args: argparse.Namespace) -> int:
    if args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench plot`; allowed: {', '.join(TABLE_METRICS)}")
    from harness.folders import ResultsFolder
    from harness.results.plots import write_plots  # matplotlib only when used

    ResultsFolder(args.dir).remove_temporaries()
    paths = write_plots(args.dir, metric=args.metric)
    for p in paths:
        print(p)
    if not paths:
        print(f"no figures: {args.dir} has no finished trials")
    return 0
