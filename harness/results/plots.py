"""Figures of a results folder: ablation curves, learning curves, paired differences, accuracy against cost,
search trials and the ranking across data sets; `save_figure`, the one writer of every figure, and
`write_plots`, which makes a folder's figures.

Each figure function takes aggregated DataFrames (harness.results.aggregate) and returns a matplotlib `Figure`
built without pyplot (no global state, Agg canvas); `write_plots` saves them as PNG and PDF under
results/<sweep>/plots/, each with its caption as `<stem>.txt` (the caption is not drawn in the image).
Widths are a paper's: one column (3.3 in, the default) or two (6.9 in), `width=` on every builder, `--width`
on `tfbench plot`, `figures: {width: page}` in the sweep file; fonts are in points, so they read the same
at either. A method has the same colour in every figure (`method_colors`). The builders live in one module
each (plots_ablation, plots_curves, plots_cost, plots_differences, plots_ranks, plots_reliability,
plots_search) on the shared style of plots_style; their names are importable from here.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from harness.io import atomic_write_bytes, atomic_write_text, file_stem
from harness.outputs import OutputFolder, source_of
from harness.results import records
from harness.results.ablation import ablation_rows, swept_parameters
from harness.results.aggregate import (
    BASELINE,
    DEFAULT_METRIC,
    METRICS,
    TABLE_METRICS,
    across_scores,
    aggregate,
    best_per_method,
    cells,
    load_trials,
)
from harness.results.captions import FIGURE_STEMS
from harness.results.curves import curve_stats, load_curves
from harness.results.plots_ablation import ablation_curve, min_span, reference_row, y_range
from harness.results.plots_cost import accuracy_vs_cost
from harness.results.plots_curves import learning_curves
from harness.results.plots_ranks import critical_difference_diagram
from harness.results.plots_style import (
    BUILTIN_COLORS,
    COLUMN_WIDTH_IN,
    PAGE_WIDTH_IN,
    STYLE,
    caption_of,
    figure_width,
    method_colors,
    new_figure,
    styled,
)

__all__ = ["BUILTIN_COLORS", "COLUMN_WIDTH_IN", "PAGE_WIDTH_IN", "STYLE", "new_figure", "ablation_curve",
           "accuracy_vs_cost", "caption_of", "critical_difference_diagram", "curve_stats", "figure_width",
           "learning_curves", "load_curves", "method_colors", "min_span", "reference_row", "save_figure", "styled",
           "write_plots", "y_range"]


FORMATS = ("png", "pdf")


def save_figure(fig: Figure, path_stem: str | Path, *, caption: str | None = None) -> list[Path]:
    """`<stem>.png` (300 dpi) and `<stem>.pdf` next to each other, and with `caption` its text as `<stem>.txt`,
    each written atomically: the one writer of every figure (results, landscapes, the Zipf analyses)."""
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        with matplotlib.rc_context(STYLE):  # tick labels are made when drawn: plain text too (STYLE)
            fig.savefig(buf, format=fmt, dpi=300)
        path = Path(f"{path_stem}.{fmt}")  # not with_suffix: a stem may hold a dot (a value such as 0.1)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    if caption is not None:
        path = Path(f"{path_stem}.txt")
        atomic_write_text(path, caption.rstrip("\n") + "\n")
        paths.append(path)
    return paths


# What write_plots writes: in plots/ of a results folder, its own by name. A caption is a .txt of a figure's
# stem only: a user's notes.txt beside the figures is never taken for one.
FIGURE_KINDS = (r".+\.(png|pdf)", rf"({'|'.join(FIGURE_STEMS)})_.+\.txt", r"critical_difference\.txt")
CAPTION = "txt"


def sweep_width(results_dir: str | Path) -> float:
    """The figures' width of a results folder: `figures: {width: ...}` of its sweep file, else one column."""
    from harness.folders import ResultsFolder

    figures = ResultsFolder(results_dir).sweep_value("figures")
    width = figures.get("width") if isinstance(figures, dict) else None
    return COLUMN_WIDTH_IN if width is None else figure_width(width, where=f"{Path(results_dir) / 'sweep.yaml'}: "
                                                                           f"figures.width")


def plots_target(results_dir: str | Path, out: str | Path | None = None) -> OutputFolder:
    """Where a folder's figures go, checked before any work (harness/outputs.py): results/<sweep>/plots/ (its
    own place, inside the results folder) or `--out` (only the figures an earlier plot of the same folder
    recorded there are replaced)."""
    results_dir = Path(results_dir)
    own_place = results_dir / "plots"
    own = out is None or os.path.abspath(out) == os.path.abspath(own_place)
    return OutputFolder(own_place if out is None else out, source=source_of(results_dir), own=own,
                        kinds=FIGURE_KINDS, within=results_dir if own else None).open()


def write_plots(results_dir: str | Path, metric: str | None = None, out: str | Path | None = None,
                width: float | None = None) -> list[Path]:
    """All figures of a results folder under `out` (default results/<sweep>/plots/), each as PNG, PDF and its
    caption (.txt); returns the written paths. `metric`: the y axes' (default: the sweep's primary metric).
    `width`: inches (default: the sweep file's `figures: {width:}`, else one column). Figures of an earlier run of the
    same folder that this one did not write again (a configuration no longer in the sweep) are removed, so
    that the folder shows one sweep's figures only; nothing else there is touched, a figure of the same name
    that is not this folder's own is refused before anything is written, and with nothing to plot the
    previous figures stay. With `out`, the results folder is not written at all.

    Learning curves and accuracy-vs-cost show one line / point per method: its configuration chosen on the
    selection split in that dataset / model (`best_per_method`; the only one in a sweep without ablations)."""
    results_dir = Path(results_dir)
    target = plots_target(results_dir, out)
    metric = metric or records.sweep_primary(results_dir, DEFAULT_METRIC, TABLE_METRICS)
    width = sweep_width(results_dir) if width is None else width
    figures = _figures(results_dir, metric, write=target.own, width=width)
    if not figures:
        return []
    names = [f"{stem}.{fmt}" for stem, _ in figures for fmt in (*FORMATS, CAPTION)]
    target.claim(names)
    paths = [p for stem, fig in figures for p in save_figure(fig, target / stem, caption=caption_of(fig))]
    target.remove_earlier(names)
    return paths


def write_across_figure(trials, out: str | Path, metric: str, source: str,
                        width: float = COLUMN_WIDTH_IN) -> list[Path]:
    """The critical-difference diagram of pooled results folders' trials (`tfbench table A B --out OUT`):
    OUT/plots/critical_difference.{png,pdf,txt}, under the rule for output targets (harness/outputs.py: a file
    of that name that an earlier table of the same folders did not write is refused); nothing when fewer
    than two data sets can be ranked."""
    from harness.results.ranks import across_datasets

    groups = aggregate(trials, metric=metric)
    if len(cells(groups)) < 2:
        return []
    result = across_datasets(across_scores(groups, metric=metric), higher_is_better=METRICS[metric].higher_is_better)
    if result.n_blocks < 2 or result.k < 2:
        return []
    target = OutputFolder(Path(out) / "plots", source=source, own=False, kinds=FIGURE_KINDS).open()
    names = [f"critical_difference.{fmt}" for fmt in (*FORMATS, CAPTION)]
    target.claim(names)
    fig = critical_difference_diagram(result, width=width)
    return save_figure(fig, target / "critical_difference", caption=caption_of(fig))


def _figures(results_dir: Path, metric: str, *, write: bool, width: float = COLUMN_WIDTH_IN
             ) -> list[tuple[str, Figure]]:
    """(file stem, figure) of every figure of the folder, made before any is written."""
    trials = load_trials(results_dir, write=write)
    from harness.results.sequential import apply_sequential
    from harness.results.stats import DEFAULT_ALPHA
    from harness.results.summary import predictions_reader

    primary = records.sweep_primary(results_dir, DEFAULT_METRIC, TABLE_METRICS)
    alpha = records.sweep_alpha(results_dir, DEFAULT_ALPHA)
    groups = aggregate(trials, metric=metric, alpha=alpha, rope=records.sweep_rope(results_dir) if metric == primary
                       else None, predictions=predictions_reader([results_dir]))
    if groups.empty or not (trials["status"].astype(str) == "finished").any():  # nothing to plot: empty axes
        return []
    apply_sequential(groups, trials, results_dir, metric=metric, primary=primary, alpha=alpha)
    colors = method_colors(trials["method"].astype(str))
    stats = curve_stats(load_curves(results_dir, trials))
    figures: list[tuple[str, Figure]] = []
    for method, param in swept_parameters(groups):
        if ablation_rows(groups, method=method, param=param):
            fig = ablation_curve(groups, method=method, param=param, metric=metric, width=width)
            figures.append((file_stem(f"ablation_{method}_{param[2:]}"), fig))
    for dataset, model in cells(groups):
        best = best_per_method(groups, dataset=dataset, model=model)
        in_cell = ((stats["dataset"].astype(str) == dataset) & (stats["model"].astype(str) == model)
                   & stats["label"].isin(best["label"]))
        if in_cell.any():
            fig = learning_curves(stats, dataset=dataset, model=model, labels=list(best["label"]),
                                  colors=colors, selected=best, width=width)
            figures.append((file_stem(f"learning_{dataset}_{model}"), fig))
        if (groups["method"] != BASELINE).any():
            from harness.results.plots_differences import differences_figure

            fig = differences_figure(groups, dataset=dataset, model=model, metric=metric, colors=colors,
                                     width=width)
            figures.append((file_stem(f"differences_{dataset}_{model}"), fig))
        if np.isfinite(best[["time_x", "extra_state_bytes"]].astype(float)).any(axis=None):  # a cost to draw
            fig = accuracy_vs_cost(best, dataset=dataset, model=model, metric=metric, colors=colors, width=width)
            figures.append((file_stem(f"cost_{dataset}_{model}"), fig))
    from harness.results.plots_reliability import prediction_figures  # from predictions.npz, where kept

    figures += prediction_figures(results_dir, trials, groups, colors, width=width)
    from harness.results.plots_search import search_figures  # tuned sweeps: search.json
    from harness.results.search_tables import read_search

    record = read_search(results_dir)
    if record is not None:
        searched = method_colors({*colors, *(str(g["method"]) for g in record["groups"])})
        figures += [(file_stem(stem), fig) for stem, fig in search_figures(record, searched, width=width)]
    if len(cells(groups)) >= 2:
        from harness.results.ranks import across_datasets

        result = across_datasets(across_scores(groups, metric=metric),
                                 higher_is_better=METRICS[metric].higher_is_better)
        if result.n_blocks >= 2 and result.k >= 2:
            figures.append(("critical_difference", critical_difference_diagram(result, width=width)))
    return figures
