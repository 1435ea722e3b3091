"""The summary's section "Across data sets": the methods ranked over the data set / model cells with the
Friedman test (harness/results/ranks.py), each method against CE by its mean rank (Demšar 2006's comparisons
with a control, Holm on the rank z) with the stratified bootstrap interval of its mean difference to CE beside
it, and every pair (Nemenyi / Wilcoxon-Holm) only on request (`tfbench table --all-pairs`, the sweep file's
`all_pairs: true`).

Why a difference beside the ranks: ranks make every data set one vote (accuracies of different data sets are
not on one scale) but say nothing of how large a gain is; the mean over data sets of each one's mean paired
difference says it in the metric's units, and its interval resamples the seeds within each data set
(harness/results/bootstrap.py `stratified`), so it covers seed noise in these data sets, not the choice of
data sets. Why all pairs only on request: where the question is each method against CE, the k(k-1)/2 pairs
spend power on comparisons nobody asked.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.results.aggregate import BASELINE, METRICS, across_scores, best_per_method, cells, method_label
from harness.results.bootstrap import STRATIFIED_REPLICATES, STRATIFIED_SEED, Stratified, stratified
from harness.results.ranks import (
    across_datasets,
    across_tables,
    bonferroni_dunn_cd,
    complete_blocks,
    control_tests,
)
from harness.results.render import Table, format_p

# summary.csv's columns (raw units), on each method's configuration ranked in a block used; NaN elsewhere
ACROSS_COLUMNS = ("across_diff_mean", "across_ci_low", "across_ci_high", "across_blocks")
ALL_PAIRS_HINT = "Every pair of methods: `tfbench table --all-pairs`, or `all_pairs: true` in the sweep file."


def ranked_rows(groups: pd.DataFrame) -> dict[str, dict[str, int]]:
    """method label -> block ('dataset / model') -> the row of `groups` ranked there (the configuration
    chosen on the selection split: aggregate's `best_per_method`, as `across_scores`)."""
    out: dict[str, dict[str, int]] = {}
    for dataset, model in cells(groups):
        for i, r in best_per_method(groups, dataset=dataset, model=model).iterrows():
            out.setdefault(method_label(str(r["method"])), {})[f"{dataset} / {model}"] = i
    return out


def across_intervals(groups: pd.DataFrame, *, blocks: list[str],
                     baseline: str = BASELINE) -> dict[str, tuple[Stratified | None, str]]:
    """method label -> (the stratified bootstrap interval of its mean difference to the baseline over
    `blocks`, or None with why not). Reads `paired_diffs` (aggregate's per-seed differences, raw units)."""
    out: dict[str, tuple[Stratified | None, str]] = {}
    base = method_label(baseline)
    for label, rows in ranked_rows(groups).items():
        if label == base:
            continue
        diffs = [np.asarray(groups.at[rows[b], "paired_diffs"], dtype=float) if b in rows else np.array([])
                 for b in blocks]
        short = [b for b, d in zip(blocks, diffs, strict=True) if d.size < 2]
        if not blocks:
            out[label] = (None, "no block with every method")
        elif short:
            out[label] = (None, f"fewer than 2 seeds paired with {base} in {short[0]}")
        else:
            out[label] = (stratified(diffs), "")
    return out


def add_across_columns(groups: pd.DataFrame, *, metric: str) -> None:
    """ACROSS_COLUMNS in place: on the rows ranked in the blocks used (every method has a number there),
    the method's mean difference to the baseline over those blocks and its stratified bootstrap interval."""
    for c in ACROSS_COLUMNS:
        groups[c] = math.nan
    if groups.empty or "paired_diffs" not in groups.columns or len(cells(groups)) < 2:
        return
    used, _ = complete_blocks(across_scores(groups, metric=metric))
    blocks = list(used.index)
    rows = ranked_rows(groups)
    for label, (res, _) in across_intervals(groups, blocks=blocks).items():
        if res is None:
            continue
        at = [rows[label][b] for b in blocks]
        groups.loc[at, list(ACROSS_COLUMNS)] = [res.mean, res.low, res.high, len(blocks)]


def control_table(groups: pd.DataFrame, scores: pd.DataFrame, *, metric: str, alpha: float,
                  all_pairs: bool) -> Table | None:
    """Each method against CE across the complete blocks: mean rank difference, rank z, p, Holm p (Demšar's
    comparisons with a control), and the mean difference to CE with its stratified bootstrap interval."""
    spec = METRICS[metric]
    control = method_label(BASELINE)
    used, _ = complete_blocks(scores)
    res = control_tests(used, control=control, higher_is_better=spec.higher_is_better, alpha=alpha)
    if res.empty:
        return None
    n, k = used.shape
    intervals = across_intervals(groups, blocks=list(used.index)) if "paired_diffs" in groups.columns else {}
    unit = "points" if spec.scale == 100.0 else "units"
    d = spec.decimals
    rows = []
    for _, r in res.iterrows():
        ci, why = intervals.get(str(r["method"]), (None, "no per-seed differences"))
        rows.append([str(r["method"]), f"{r['mean_rank_diff']:+.2f}", f"{r['z']:+.2f}", format_p(r["p"]),
                     format_p(r["p_holm"]), "yes" if r["significant"] else "no",
                     f"{ci.mean * spec.scale:+.{d}f}" if ci else "n/a",
                     f"[{ci.low * spec.scale:+.{d}f}, {ci.high * spec.scale:+.{d}f}]" if ci else f"n/a ({why})"])
    pairs = ("The pairs table below tests every pair (more comparisons: less power for each)." if all_pairs
             else ALL_PAIRS_HINT)
    return Table(f"Against {control} across data sets (comparisons with a control)",
                 ["method", f"mean rank - {control}'s", "z", "p", "Holm p", "different",
                  f"mean difference to {control} ({unit})", "95% CI (stratified bootstrap)"], rows,
                 note=(f"Demšar 2006: z on the mean ranks over {n} blocks, two-sided normal p, Holm over the "
                       f"{k - 1} comparisons with {control}; negative is better ranked. Bonferroni-Dunn "
                       f"CD = {bonferroni_dunn_cd(k=k, n_blocks=n, alpha=alpha):.2f} at alpha {alpha:g}. Mean "
                       f"difference: the mean over the {n} blocks of each block's mean paired difference to "
                       f"{control} ({spec.label}; the configuration ranked there, paired by seed); its 95% CI: "
                       f"percentile interval of a stratified bootstrap ({STRATIFIED_REPLICATES:,} replicates, "
                       f"seed {STRATIFIED_SEED}; each block's seeds resampled within it, their differences spread "
                       f"by sqrt(n/(n-1))): seed noise within these data sets, not the choice of data sets, and "
                       f"not adjusted for the {k - 1} comparisons. {pairs}"))


def across_section(groups: pd.DataFrame, *, metric: str, alpha: float,
                   all_pairs: bool = False) -> tuple[list[Table], str]:
    """(tables, line): mean ranks over the data sets / models of `groups` with the Friedman test, the
    comparisons with CE (with the mean differences and their intervals), and the all-pairs table only when
    `all_pairs`. No tables with fewer than two data sets; with fewer than two where every method has a
    number, the line says why instead."""
    if len(cells(groups)) < 2:
        return [], ""
    scores = across_scores(groups, metric=metric)
    result = across_datasets(scores, higher_is_better=METRICS[metric].higher_is_better, alpha=alpha)
    if result.n_blocks < 2 or result.k < 2:
        left = "; ".join(f"{b}: {why}" for b, why in result.blocks_left_out.items())
        return [], (f"Not ranked across data sets: fewer than two data sets / models where every method has a "
                    f"number ({left or 'fewer than two methods'}).")
    tables = across_tables(result, all_pairs=all_pairs)
    control = control_table(groups, scores, metric=metric, alpha=alpha, all_pairs=all_pairs)
    if control is not None:
        tables.insert(1, control)
    lead = (f"{METRICS[metric].label}, each method's configuration chosen on the selection split per data set / "
            f"model; rank 1 = best.")
    tables[0].note = " ".join(p for p in (lead, tables[0].note) if p)
    return tables, ""
