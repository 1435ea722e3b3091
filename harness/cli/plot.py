"""`tfbench plot DIR`: write the figures of a results folder (ablations, learning curves, paired differences,
cost, search trials, across data sets; each as PNG, PDF and its caption as .txt) into DIR/plots/, or `--out`,
at a paper's width (`--width`)."""
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
    parser.add_argument("--width", default=None, metavar="W",
                        help="figure width: column (3.3 in), page (6.9 in, both columns) or inches (default: the "
                             "sweep file's `figures: {width: ...}`, else column)")


def run(args: argparse.Namespace) -> int:
    if args.metric is not None and args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench plot`; allowed: {', '.join(TABLE_METRICS)}")
    from harness.folders import ResultsFolder
    from harness.results.plots import figure_width, plots_target, write_plots  # matplotlib only when used

    width = None if args.width is None else figure_width(args.width)

    plots_target(args.dir, args.out)  # before any work: a file, a read-only folder, a link out: one line
    if args.out is None:  # writing into the results folder: a killed writer's leftovers go first
        ResultsFolder(args.dir).remove_temporaries()
    paths = write_plots(args.dir, metric=args.metric, out=args.out, width=width)
    for p in paths:
        print(p)
    if not paths:
        print(f"no figures: {args.dir} has no finished trials (the figures already there are kept)")
    return 0
