"""`tfbench table DIR`: print the tables of a results folder (protocol, mean +- std, paired differences with
CE, CIs, Holm-adjusted p) and write its summary.{md,tex,csv}."""
from __future__ import annotations

import argparse

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS

FORMATS = ("md", "tex", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"the metric the tables rank and compare: {', '.join(TABLE_METRICS)} "
                             f"(default {DEFAULT_METRIC})")
    parser.add_argument("--alpha", type=float, default=None,
                        help="significance level of the bold rule (Holm-adjusted paired p < alpha); default: the "
                             "sweep file's `alpha:`, else 0.05")
    parser.add_argument("--format", default="md", help=f"what to print: {', '.join(FORMATS)} (default md); "
                                                        f"all three files are written either way")


def run(args: argparse.Namespace) -> int:
    # Checked here, not with argparse `choices`, so that a bad value is one line like every user error.
    if args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench table`; allowed: {', '.join(TABLE_METRICS)}")
    if args.format not in FORMATS:
        raise UserError(f"unknown format {args.format!r} for `tfbench table`; allowed: {', '.join(FORMATS)}")
    from pathlib import Path

    from harness.results.records import remove_stale_temporaries
    from harness.results.tables import render_summary, write_outputs  # pandas/tabulate only when used

    remove_stale_temporaries(Path(args.dir))
    outputs = render_summary(args.dir, metric=args.metric, alpha=args.alpha)
    write_outputs(args.dir, outputs)
    print(outputs[args.format], end="" if outputs[args.format].endswith("\n") else "\n")
    return 0
