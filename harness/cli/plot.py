"""`tfbench plot DIR`: write the ablation, learning-curve, accuracy-vs-cost and across-data-set figures of a
results folder (into DIR/plots/, or `--out`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default=None,
                        help=f"the metric on the y axes: {', '.join(TABLE_METRICS)} (default: the sweep's "
                             f"primary_metric, else {DEFAULT_METRIC})")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write the figures into DIR and leave the results folder untouched (a shared or "
                             "read-only folder)")


def run(args: argparse.Namespace) -> int:
    if args.metric is not None and args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench plot`; allowed: {', '.join(TABLE_METRICS)}")
    from harness.folders import ResultsFolder
    from harness.results.plots import plots_target, write_plots  # matplotlib only when used

    plots_target(args.dir, args.out)  # before any work: a file, a read-only folder, a link out: one line
    if args.out is None:  # writing into the results folder: a killed writer's leftovers go first
        ResultsFolder(args.dir).remove_temporaries()
    paths = write_plots(args.dir, metric=args.metric, out=args.out)
    for p in paths:
        print(p)
    if not paths:
        print(f"no figures: {args.dir} has no finished trials (the figures already there are kept)")
    return 0
