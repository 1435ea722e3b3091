"""`tfbench seeds DIR`: how many seeds a claim needs, per method against the baseline (CE).

Per dataset / model and configuration: the seeds paired with CE, the observed mean paired difference,
the sd of the paired differences, and the seeds needed for `--power` (80%) at `--alpha` for the observed
difference and, with `--effect E`, for a difference of E (display units: accuracy points). The count is
the smallest n whose two-sided paired t-test reaches the power under the noncentral t
(harness/results/stats.py `seeds_needed`), with the sd of the observed paired differences.
"""
from __future__ import annotations

import argparse
import math

from harness.errors import UserError
from harness.results.aggregate import DEFAULT_METRIC, TABLE_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a results folder (results/<sweep>/, holding trials.csv)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"the compared metric: {', '.join(TABLE_METRICS)} (default {DEFAULT_METRIC})")
    parser.add_argument("--effect", type=float, default=None,
                        help="also the seeds needed to detect a difference of this size, in the table's units "
                             "(accuracy points for top-1: --effect 0.5 is half a point)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="two-sided significance level; default: the sweep file's `alpha:`, else 0.05")
    parser.add_argument("--power", type=float, default=0.8, help="the power to reach (default 0.8)")


def _needed(n: int | None) -> str:
    return "n/a" if n is None else str(n)


def seeds_rows(groups, *, metric: str, alpha: float, power: float, effect: float | None) -> dict[str, list[list[str]]]:
    """'dataset / model' -> rows: label, n pairs, mean diff, sd of diffs, needed (observed), needed (effect).
    `groups` from `aggregate(..., alpha=alpha, power=power)`, whose n_needed is the observed column."""
    from harness.results.aggregate import BASELINE, METRICS, cells
    from harness.results.stats import seeds_needed

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
            observed = int(r["n_needed"]) if math.isfinite(float(r["n_needed"])) else None  # aggregate's, same power
            row = [str(r["label"]), str(n), f"{mean * spec.scale:+.{d}f}",
                   f"{sd * spec.scale:.{d}f}" if math.isfinite(sd) else "n/a", _needed(observed)]
            if effect is not None:
                given = seeds_needed(effect=effect / spec.scale, sd=sd, alpha=alpha, power=power) if n >= 2 else None
                row.append(_needed(given))
            rows.append(row)
        out[f"{ds} / {model}"] = rows
    return out


def run(args: argparse.Namespace) -> int:
    if args.metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {args.metric!r} for `tfbench seeds`; allowed: {', '.join(TABLE_METRICS)}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha:g} is out of range; allowed: a number in (0, 1), e.g. 0.05")
    if not 0 < args.power < 1:
        raise UserError(f"--power {args.power:g} is out of range; allowed: a number in (0, 1), e.g. 0.8")
    if args.effect is not None and not (math.isfinite(args.effect) and args.effect > 0):
        raise UserError(f"--effect {args.effect:g} is not a positive number; give e.g. --effect 0.5 (points)")
    from pathlib import Path

    from tabulate import tabulate

    from harness.results import records
    from harness.results.aggregate import METRICS, aggregate, load_trials
    from harness.results.stats import DEFAULT_ALPHA

    folder = Path(args.dir)
    alpha = args.alpha if args.alpha is not None else records.sweep_alpha(folder, DEFAULT_ALPHA)
    spec = METRICS[args.metric]
    groups = aggregate(load_trials(folder), metric=args.metric, alpha=alpha, power=args.power)
    unit = "points" if spec.scale == 100.0 else "units"
    headers = ["method", "n pairs", f"mean diff ({unit})", "sd of diffs", "seeds needed (observed)"]
    if args.effect is not None:
        headers.append(f"seeds needed ({args.effect:g} {unit})")
    print(f"Seeds for {args.power:.0%} power, two-sided paired t-test at alpha = {alpha:g}, {spec.label} against "
          f"CE (exact noncentral t; n/a: no finite number of seeds, or fewer than 2 pairs to estimate sd).")
    for cell, rows in seeds_rows(groups, metric=args.metric, alpha=alpha, power=args.power,
                                 effect=args.effect).items():
        print(f"\n{cell}\n")
        if rows:
            print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        else:
            print("no configuration with seeds paired with CE")
    return 0
