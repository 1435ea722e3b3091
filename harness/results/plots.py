"""Figures of a results folder: ablation curves, learning curves, accuracy against cost, and the ranking across
data sets; `save_figure`, the one writer of every figure, and `write_plots`, which makes a folder's figures.

Each figure function takes aggregated DataFrames (harness.results.aggregate) and returns a matplotlib `Figure`
built without pyplot (no global state, Agg canvas); `write_plots` saves them as PNG and PDF under
results/<sweep>/plots/. Sizes fit a paper column (3.3 in wide) with fonts still readable there.
A method has the same colour in every figure (`method_colors`). The builders live in one module each
(plots_ablation, plots_curves, plots_cost, plots_ranks) on the shared style of plots_style; their names are
importable from here.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from harness.io import atomic_write_bytes
from harness.results import records
from harness.results.aggregate import (
    DEFAULT_METRIC,
    METRICS,
    TABLE_METRICS,
    ablation_rows,
    across_scores,
    aggregate,
    best_per_method,
    cells,
    load_trials,
    swept_parameters,
)
from harness.results.curves import curve_stats, load_curves
from harness.results.plots_ablation import ablation_curve, min_span, reference_row, y_range
from harness.results.plots_cost import accuracy_vs_cost
from harness.results.plots_curves import learning_curves
from harness.results.plots_ranks import critical_difference_diagram
from harness.results.plots_style import (
    BUILTIN_COLORS,
    COLUMN_WIDTH_IN,
    STYLE,
    method_colors,
    new_figure,
    styled,
)

__all__ = ["BUILTIN_COLORS", "COLUMN_WIDTH_IN", "STYLE", "new_figure", "ablation_curve", "accuracy_vs_cost",
           "critical_difference_diagram", "curve_stats", "learning_curves", "load_curves", "method_colors",
           "min_span", "reference_row", "save_figure", "styled", "write_plots", "y_range"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def save_figure(fig: Figure, path_stem: str | Path) -> list[Path]:
    """`<stem>.png` (300 dpi) and `<stem>.pdf` next to each other, each written atomically: the one writer of
    every figure (results, landscapes, the Zipf analyses)."""
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=300)
        path = Path(f"{path_stem}.{fmt}")  # not with_suffix: a stem may hold a dot (a value such as 0.1)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def write_plots(results_dir: str | Path, metric: str | None = None, out: str | Path | None = None) -> list[Path]:
    """All figures of a results folder under `out` (default results/<sweep>/plots/); returns the written
    paths. `metric`: the y axes' (default: the sweep's primary metric). Figures of an earlier run that this
    one did not write again (a configuration no longer in the sweep) are removed from the folder, so that
    plots/ shows one sweep's figures only; with `out`, the results folder is not written at all.

    Learning curves and accuracy-vs-cost show one line / point per method: its configuration chosen on the
    selection split in that dataset / model (`best_per_method`; the only one in a sweep without ablations)."""
    results_dir = Path(results_dir)
    metric = metric or records.sweep_primary(results_dir, DEFAULT_METRIC, TABLE_METRICS)
    out = Path(out) if out is not None else results_dir / "plots"
    paths = _figures(results_dir, metric, out, write=out.resolve().is_relative_to(results_dir.resolve()))
    for old in [*out.glob("*.png"), *out.glob("*.pdf")]:
        if old not in paths:
            old.unlink(missing_ok=True)
    return paths


def _figures(results_dir: Path, metric: str, out: Path, *, write: bool) -> list[Path]:
    trials = load_trials(results_dir, write=write)
    groups = aggregate(trials, metric=metric)
    if groups.empty:
        return []
    colors = method_colors(trials["method"].astype(str))
    stats = curve_stats(load_curves(results_dir, trials))
    paths: list[Path] = []
    for method, param in swept_parameters(groups):
        if ablation_rows(groups, method=method, param=param):
            fig = ablation_curve(groups, method=method, param=param, metric=metric)
            paths += save_figure(fig, out / _safe(f"ablation_{method}_{param[2:]}"))
    for dataset, model in cells(groups):
        best = best_per_method(groups, dataset=dataset, model=model)
        in_cell = ((stats["dataset"].astype(str) == dataset) & (stats["model"].astype(str) == model)
                   & stats["label"].isin(best["label"]))
        if in_cell.any():
            fig = learning_curves(stats, dataset=dataset, model=model, labels=list(best["label"]),
                                  colors=colors, selected=best)
            paths += save_figure(fig, out / _safe(f"learning_{dataset}_{model}"))
        if np.isfinite(best["time_x"].astype(float)).any():
            fig = accuracy_vs_cost(best, dataset=dataset, model=model, metric=metric, colors=colors)
            paths += save_figure(fig, out / _safe(f"cost_{dataset}_{model}"))
    from harness.results.plots_reliability import prediction_figures  # from predictions.npz, where kept

    paths += prediction_figures(results_dir, trials, groups, colors, out, save_figure, _safe)
    if len(cells(groups)) >= 2:
        from harness.results.ranks import across_datasets

        result = across_datasets(across_scores(groups, metric=metric),
                                 higher_is_better=METRICS[metric].higher_is_better)
        if result.n_blocks >= 2 and result.k >= 2:
            paths += save_figure(critical_difference_diagram(result), out / "critical_difference")
    return paths
