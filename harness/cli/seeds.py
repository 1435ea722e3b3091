"""`tfbench seeds DIR`: what the seeds of a results folder can detect, per method against the baseline (CE).
It only prints: the results folder is read, never written.

Per dataset / model and configuration: the seeds paired with CE, the observed mean paired difference and
the sd of the paired differences; the smallest true difference these seeds detect with `--power` (80%) at
`--alpha` / k, Holm's first step over the table's k comparisons: the level the marks are made at
(`min_detectable`); and the seeds a difference of `--effect` needs (default: 1 point of accuracy,
0.01 of NLL). Both come from the sd of the paired differences under the noncentral t
(harness/results/stats.py), never from the observed difference: power computed at the observed
difference only restates its p-value.
"""
from __future__ import annotations

import argparse
import math

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default=None,
                        help=f"the compared metric: {', '.join(TABLE_METRICS)} (default: the sweep's primary_metric, "
                             f"else {DEFAULT_METRIC})")
    parser.add_argument("--effect", type=float, default=None,
                        help="the difference to detect, in the table's units (accuracy points for top-1: --effect "
                             "0.5 is half a point; default 1 point, 0.01 for NLL)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="two-sided significance level; default: the sweep file's `alpha:`, else 0.05")
    parser.add_argument("--power", type=float, default=0.8, help="the power to reach (default 0.8)")


def seeds_rows(groups, *, metric: str) -> dict[str, list[list[str]]]:
    """'dataset / model' -> rows: label, n pairs, mean diff, sd of diffs, detectable difference, seeds for the
    effect. `groups` from `aggregate(..., alpha=, power=, effect=)`, which computes the last two."""
    from harness.results.aggregate import BASELINE, METRICS, cells

    spec = METRICS[metric]
    d = spec.decimals
    out: dict[str, list[list[str]]] = {}
    for ds, model in cells(groups):
        g = groups[(groups["dataset"].astype(str) == ds) & (groups["model"].astype(str) == model)]
        rows = []
        for _, r in g.iterrows():
            if r["method"] == BASELINE or int(r.get("n_paired", 0)) == 0:
                continue
            n, mean, sd = int(r["n_paired"]), float(r["diff_mean"]), float(r["diff_sd"])
            if r["verdict"] == "identical":
                rows.append([str(r["label"]), str(n), f"{0:+.{d}f}", f"{0:.{d}f}", "identical", "identical"])
                continue
            mdd, need = float(r["mdd"]), float(r["seeds_for_effect"])
            rows.append([str(r["label"]), str(n), f"{mean * spec.scale:+.{d}f}",
                         f"{sd * spec.scale:.{d}f}" if math.isfinite(sd) else "n/a",
                         f"{mdd * spec.scale:.{d}f}" if math.isfinite(mdd) else "n/a",
                         str(int(need)) if math.isfinite(need) else ("n/a" if n < 2 else "> 10000")])
        out[f"{ds} / {model}"] = rows
    return out


def run(args: argparse.Namespace) -> int:
    if args.metric is not None and args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench seeds`; allowed: {', '.join(TABLE_METRICS)}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha:g} is out of range; allowed: a number in (0, 1), e.g. 0.05")
    if not 0 < args.power < 1:
        raise UserError(f"--power {args.power:g} is out of range; allowed: a number in (0, 1), e.g. 0.8")
    if args.effect is not None and not (math.isfinite(args.effect) and args.effect > 0):
        raise UserError(f"--effect {args.effect:g} is not a positive number; give e.g. --effect 0.5 (points)")
    from pathlib import Path

    from tabulate import tabulate

    from harness.config.schema import DEFAULT_PRIMARY, PRIMARY_METRICS
    from harness.results import records
    from harness.results.aggregate import METRICS, aggregate, load_trials
    from harness.results.stats import DEFAULT_ALPHA

    folder = Path(args.dir)
    alpha = args.alpha if args.alpha is not None else records.sweep_alpha(folder, DEFAULT_ALPHA)
    metric = args.metric or records.sweep_primary(folder, DEFAULT_PRIMARY, PRIMARY_METRICS)
    spec = METRICS[metric]
    effect = spec.effect if args.effect is None else args.effect
    groups = aggregate(load_trials(folder, write=False), metric=metric, alpha=alpha, power=args.power, effect=effect)
    unit = "points" if spec.scale == 100.0 else "units"
    headers = ["method", "n pairs", f"mean diff ({unit})", "sd of diffs", f"detectable at n ({args.power:.0%})",
               f"seeds for {effect:g} {unit}"]
    print(f"What the seeds detect: {spec.label} against CE, two-sided paired t-test at the marks' level (Holm's "
          f"first step: alpha / k, alpha = {alpha:g}, k = the configurations compared with CE in the table), "
          f"{args.power:.0%} power (exact noncentral t, from the sd of the paired differences; n/a: fewer than "
          f"2 pairs, or no spread).")
    for cell, rows in seeds_rows(groups, metric=metric).items():
        print(f"\n{cell}\n")
        if rows:
            print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        else:
            print("no configuration with seeds paired with CE")
    return 0
