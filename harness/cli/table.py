"""`tfbench table DIR`: print the tables of a results folder (protocol, mean +- std, paired differences with
CE, CIs, Holm-adjusted p) and write its summary.{md,tex,csv}."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS

FORMATS = ("md", "tex", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="+", help="a results folder (results/<sweep>/, holding trials.csv); several "
                                                "are pooled: their data sets side by side and ranked across")
    parser.add_argument("--metric", default=None,
                        help=f"the metric the tables compare: {', '.join(TABLE_METRICS)} (default: the sweep's "
                             f"primary_metric, else {DEFAULT_METRIC}; any other metric is secondary: exploratory)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="significance level of the marks (Holm-adjusted paired p < alpha); default: the "
                             "sweep file's `alpha:`, else 0.05")
    parser.add_argument("--effect", type=float, default=None,
                        help="the difference the power columns are for, in the table's units (accuracy points "
                             "for top-1; default 1 point, 0.01 for NLL)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write summary.{md,tex,csv} into DIR and leave the results folder untouched (for a "
                             "shared or read-only folder; pooled folders are only printed without it)")
    parser.add_argument("--measure-costs", action="store_true",
                        help="first measure time x and memory x where results/<sweep>/costs/ has no fitting "
                             "measurement (`tfbench bench step --sweep`'s, on this machine: the trials' device and "
                             "threads); without it the tables only read what `tfbench run` measured")
    parser.add_argument("--all-pairs", action="store_true",
                        help="across data sets, also the table of every pair of methods (Nemenyi / Wilcoxon-Holm); "
                             "default: only each method against CE (and the sweep file's `all_pairs:`)")
    parser.add_argument("--format", default="md", help=f"what to print: {', '.join(FORMATS)} (default md); "
                                                        f"all three files are written either way")


def run(args: argparse.Namespace) -> int:
    # Checked here, not with argparse `choices`, so that a bad value is one line like every user error.
    if args.metric is not None and args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench table`; allowed: {', '.join(TABLE_METRICS)}")
    if args.format not in FORMATS:
        raise UserError(f"unknown format {args.format!r} for `tfbench table`; allowed: {', '.join(FORMATS)}")
    from harness.config.schema import DEFAULT_PRIMARY, PRIMARY_METRICS
    from harness.folders import ResultsFolder
    from harness.results.records import sweep_primary
    from harness.results.summary import (  # pandas: only when used
        render_summary,
        summary_target,
        write_outputs,
    )

    if args.effect is not None and not (math.isfinite(args.effect) and args.effect > 0):
        raise UserError(f"--effect {args.effect:g} is not a positive number; give e.g. --effect 0.5 (points)")
    if args.measure_costs and args.out is not None:
        raise UserError("--measure-costs writes into the results folder (its costs/); it cannot be given with "
                        "--out, which leaves the results folder untouched")
    folders = [Path(d) for d in args.dir]
    into = args.out if args.out is not None else (folders[0] if len(folders) == 1 else None)
    source = folders[0] if len(folders) == 1 else folders
    # before any work: the target is a folder tfbench may write (a read-only one is one line, exit 2)
    target = summary_target(into, source) if into is not None else None
    if args.out is None and len(folders) == 1:  # writing into the results folder: a killed writer's leftovers go
        ResultsFolder(folders[0]).remove_temporaries()
    if args.measure_costs:  # after the checks of the target, before the tables read the measurement
        from harness.bench.costs import measure_folder

        for folder in folders:
            measure_folder(folder, log=lambda line: print(line, file=sys.stderr, flush=True))
    outputs = render_summary(source, metric=args.metric, alpha=args.alpha, effect=args.effect,
                             write=args.out is None, into=into, all_pairs=True if args.all_pairs else None)
    if target is not None:
        # summary.* hold the primary metric's verdicts; a secondary metric's tables go beside them
        primary = sweep_primary(folders[0], DEFAULT_PRIMARY, PRIMARY_METRICS)
        write_outputs(target, outputs, stem="summary" if args.metric in (None, primary) else f"summary-{args.metric}")
        if len(folders) > 1 and args.out is not None:  # the pooled ranking's diagram (docs/results.md)
            from harness.outputs import source_of
            from harness.results.plots import write_across_figure
            from harness.results.summary import pooled_trials

            write_across_figure(pooled_trials(folders, warn=lambda line: None), args.out, args.metric or primary,
                                source=source_of(folders))
    print(outputs[args.format], end="" if outputs[args.format].endswith("\n") else "\n")
    return 0
