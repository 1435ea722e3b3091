"""Figures of a results folder: ablation curves, learning curves, accuracy against cost.

Each figure function takes aggregated DataFrames (harness.results.aggregate) and returns a matplotlib `Figure`
built without pyplot (no global state, Agg canvas); `write_plots` saves them as PNG and PDF under
results/<sweep>/plots/. Sizes fit a paper column (3.3 in wide) with fonts still readable there.
A method has the same colour in every figure (`method_colors`).
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.io import atomic_write_bytes
from harness.results.aggregate import (
    BASELINE,
    DEFAULT_METRIC,
    METRICS,
    ablation_rows,
    across_scores,
    aggregate,
    best_per_method,
    cells,
    curve_stats,
    fmt_value,
    load_curves,
    load_trials,
    method_label,
    ordered_values,
    swept_parameters,
)
from harness.results.ranks import POSTHOCS, AcrossDatasets, p_phrase

COLUMN_WIDTH_IN = 3.3
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 6.5, "legend.frameon": False, "lines.linewidth": 1.2, "lines.markersize": 3.5,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
}

_TAB10 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
# Fixed colours of the built-ins; CE (the reference) is a neutral grey, the seed's method red.
BUILTIN_COLORS = {"ce": "#4d4d4d", "ls": _TAB10[0], "tfkd": _TAB10[1], "cskd": _TAB10[2], "pskd": _TAB10[4],
                  "ols": _TAB10[5], "zipf": _TAB10[3]}
# For other methods: the rest of tab10, then the light half of tab20, then repeat.
_EXTRA = [c for c in _TAB10 if c not in BUILTIN_COLORS.values()] + [
    matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]
# Ablation lines are datasets, not methods: their own palette and markers.
_DATASET_COLORS = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["Dark2"].colors]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_LINESTYLES = ["-", "--", ":", "-."]


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Built-ins get their fixed colour; other methods, in name order, the next palette colour."""
    methods = set(map(str, methods))
    colors = {m: BUILTIN_COLORS[m] for m in methods if m in BUILTIN_COLORS}
    for i, m in enumerate(sorted(methods - set(BUILTIN_COLORS))):
        colors[m] = _EXTRA[i % len(_EXTRA)]
    return colors


def _figure(height_in: float, nrows: int = 1, sharex: bool = False) -> tuple[Figure, list]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, height_in), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def styled(fn):
    """Run a figure builder under STYLE: rcParams are read when artists are created."""
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def _legend_below(fig: Figure, n_entries: int) -> None:
    """Legend under the axes, so that it never hides a line; the figure grows to make room."""
    if n_entries == 0:
        return
    ncol = 2 if n_entries > 3 else n_entries
    fig.legend(loc="outside lower center", ncol=ncol)
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + 0.14 * math.ceil(n_entries / ncol))


@styled
def ablation_curve(groups: pd.DataFrame, *, method: str, param: str, metric: str = DEFAULT_METRIC) -> Figure:
    """Metric against one swept parameter (the seed's Table 3 as a figure), error bars = sample std over
    seeds: one line per dataset, each dataset / model in its own panel (its own y range: the accuracy
    levels of two datasets differ far more than the effect of the parameter), sharing the x axis.
    A grid sweep adds one line per fixed setting of the other swept parameters."""
    spec = METRICS[metric]
    rows = ablation_rows(groups, method=method, param=param)
    values = ordered_values(v for r in rows for v in r.groups[param])
    numeric = _is_numeric(values)
    panels = list(dict.fromkeys((r.dataset, r.model) for r in rows)) or [("", "")]
    multi_model = len({m for _, m in panels}) > 1
    fig, axes = _figure(0.5 + 1.5 * len(panels), nrows=len(panels), sharex=True)
    for i, (dataset, model) in enumerate(panels):
        ax = axes[i]
        name = f"{dataset} / {model}" if multi_model else dataset
        in_panel = [r for r in rows if (r.dataset, r.model) == (dataset, model)]
        for j, r in enumerate(in_panel):
            g = r.groups
            x = (g[param].astype(float).to_numpy() if numeric
                 else np.array([values.index(v) for v in g[param]], dtype=float))
            label = name if len(in_panel) == 1 else name + " (" + ", ".join(
                f"{k}={fmt_value(v)}" for k, v in r.context) + ")"
            # A NaN std (one seed) draws no bar at all, never a zero-length one.
            ax.errorbar(x, g[f"{metric}_mean"].to_numpy(float) * spec.scale,
                        yerr=g[f"{metric}_std"].to_numpy(float) * spec.scale, label=label, capsize=2,
                        color=_DATASET_COLORS[i % len(_DATASET_COLORS)], marker=_MARKERS[j % len(_MARKERS)],
                        linestyle=_LINESTYLES[j % len(_LINESTYLES)])
        ax.set_title(name)
        ax.set_ylabel(spec.short)
        if len(in_panel) > 1:
            ax.legend()
    pname = param[2:] if param.startswith("p.") else param
    ax = axes[-1]
    if numeric and values and min(values) > 0 and max(values) / min(values) >= 50:
        ax.set_xscale("log")  # lambda's grid spans 0.01 .. 1.5
    if numeric:
        ax.set_xticks([float(v) for v in values], [fmt_value(v) for v in values])
        ax.minorticks_off()
    else:
        ax.set_xticks(range(len(values)), [fmt_value(v) for v in values], rotation=20)
    ax.set_xlabel(pname)
    fig.suptitle(f"{method_label(method)}: ablation of {pname}")
    return fig


@styled
def learning_curves(stats: pd.DataFrame, *, dataset: str, model: str, labels: list[str] | None = None,
                    colors: dict[str, str] | None = None) -> Figure:
    """Val top-1 (top) and train loss (bottom) per epoch: mean line and a +- std band over seeds,
    one line per configuration label (`labels` restricts them; `stats` from `aggregate.curve_stats`)."""
    s = stats[(stats["dataset"].astype(str) == dataset) & (stats["model"].astype(str) == model)]
    if labels is not None:
        s = s[s["label"].isin(labels)]
    colors = colors or method_colors(s["method"])
    fig, (ax_acc, ax_loss) = _figure(3.0, nrows=2, sharex=True)
    seen: dict[str, int] = {}
    shown = list(dict.fromkeys(s["label"]))
    for label in shown:
        g = s[s["label"] == label].sort_values("epoch")
        method = str(g["method"].iloc[0])
        style = _LINESTYLES[seen.get(method, 0) % len(_LINESTYLES)]
        seen[method] = seen.get(method, 0) + 1
        epoch = g["epoch"].to_numpy(float)
        for ax, col, scale in ((ax_acc, "val_top1", 100.0), (ax_loss, "train_loss", 1.0)):
            mean = g[f"{col}_mean"].to_numpy(float) * scale
            std = g[f"{col}_std"].to_numpy(float) * scale
            ax.plot(epoch, mean, color=colors[method], linestyle=style, label=label if ax is ax_acc else None)
            # NaN std (one seed) leaves no band rather than a zero-width one.
            ax.fill_between(epoch, mean - std, mean + std, color=colors[method], alpha=0.2, linewidth=0)
    ax_acc.set_ylabel("val top-1 (%)")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_title(f"{dataset} / {model} (band: +- std over seeds)")
    _legend_below(fig, len(shown))
    return fig


@styled
def accuracy_vs_cost(groups: pd.DataFrame, *, dataset: str, model: str, metric: str = DEFAULT_METRIC,
                     colors: dict[str, str] | None = None) -> Figure:
    """One point per row of `groups` in this dataset/model: metric (+- std) against train step time
    relative to CE (+- the row's own step-time std over CE's mean). Pass `best_per_method` rows for
    one point per method."""
    spec = METRICS[metric]
    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)]
    g = g[np.isfinite(g["time_x"].astype(float)) & np.isfinite(g[f"{metric}_mean"].astype(float))]
    colors = colors or method_colors(g["method"])
    fig, (ax,) = _figure(2.2)
    for i, (_, r) in enumerate(g.iterrows()):
        ax.errorbar([r["time_x"]], [r[f"{metric}_mean"] * spec.scale], xerr=[r["time_x_std"]],
                    yerr=[r[f"{metric}_std"] * spec.scale], fmt=_MARKERS[i % len(_MARKERS)],
                    color=colors[str(r["method"])], capsize=2, label=r["label"])
    ax.set_xlabel(f"train step time (x {method_label(BASELINE)})")
    ax.set_ylabel(spec.label)
    ax.set_title(f"{dataset} / {model}")
    _legend_below(fig, len(g))
    return fig


# --- writing ------------------------------------------------------------------------------------------

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


def write_plots(results_dir: str | Path, metric: str = DEFAULT_METRIC) -> list[Path]:
    """All figures of a results folder under results/<sweep>/plots/; returns the written paths.

    Learning curves and accuracy-vs-cost show one line / point per method: its configuration chosen on the
    selection split in that dataset / model (`best_per_method`; the only one in a sweep without ablations)."""
    results_dir = Path(results_dir)
    out = results_dir / "plots"
    trials = load_trials(results_dir)
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
                                  colors=colors)
            paths += save_figure(fig, out / _safe(f"learning_{dataset}_{model}"))
        if np.isfinite(best["time_x"].astype(float)).any():
            fig = accuracy_vs_cost(best, dataset=dataset, model=model, metric=metric, colors=colors)
            paths += save_figure(fig, out / _safe(f"cost_{dataset}_{model}"))
    if len(cells(groups)) >= 2:
        from harness.results.ranks import across_datasets

        result = across_datasets(across_scores(groups, metric=metric),
                                 higher_is_better=METRICS[metric].higher_is_better)
        if result.n_blocks >= 2 and result.k >= 2:
            paths += save_figure(critical_difference_diagram(result), out / "critical_difference")
    return paths


# --- across data sets ---------------------------------------------------------------------------------

# The diagram's y unit is one line of 8 pt text; y = 0 is the rank axis and y grows downwards.
_LINE_IN = 0.15
_CD_Y, _CLIQUE_Y0, _CLIQUE_DY, _ROW_DY = -1.7, 0.6, 0.5, 1.0


@styled
def critical_difference_diagram(result: AcrossDatasets, *, title: str | None = None) -> Figure:
    """Demšar's (2006, Figure 1) critical-difference diagram: an axis of ranks 1..k, best on the left; each
    method a line from its mean rank to its name and mean rank (the better half labelled on the left, the
    rest on the right); thick bars join methods not significantly different (`result.cliques`) and, under
    Nemenyi, a bar above the axis is CD long. The title (after `title`, if given) states N, k, alpha, the
    Friedman and Iman-Davenport p and the post-hoc.

    For reading back, every line drawn for the data carries a gid: `method:<name>` (xdata[0] = its mean
    rank), `clique:<i>` (xdata = the ends of result.cliques[i]), `cd` (xdata = [1, 1 + CD]); the name texts
    carry `label:<name>`."""
    mr = result.mean_ranks
    names, k = [str(m) for m in mr.index], result.k
    n_left = math.ceil(k / 2)
    n_rows = max(n_left, k - n_left)
    show_cd = result.posthoc == "nemenyi" and result.cd is not None
    row_y0 = _CLIQUE_Y0 + _CLIQUE_DY * len(result.cliques) + 0.4
    bottom = row_y0 + _ROW_DY * max(n_rows - 1, 0) + 0.6
    top = _CD_Y - 1.2 if show_cd else -1.4
    caption = [f"N = {result.n_blocks} blocks, k = {k} methods, alpha = {result.alpha:g}"]
    fr = result.friedman
    caption.append(f"Friedman {p_phrase(fr.p)}, Iman-Davenport {p_phrase(fr.f_p)}" if not fr.reason
                   else "Friedman test: n/a")
    caption.append(f"bars: not different by {POSTHOCS[result.posthoc]}"
                   + (f" (CD = {result.cd:.2f})" if show_cd else ""))
    if title is not None:
        caption.insert(0, title)
    fig, (ax,) = _figure(_LINE_IN * (bottom - top + len(caption) + 0.8))
    hi = max(k, 1 + result.cd if show_cd else k, 2)
    reach = 0.08 * (hi - 1)  # how far the name lines run past the axis ends
    ax.set_xlim(1 - reach, hi + reach)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()
    ink = {"color": "black", "linewidth": 0.8}

    ax.plot([1, max(k, 1)], [0, 0], **ink)
    for t in range(1, max(k, 1) + 1):
        ax.plot([t, t], [0, -0.3], **ink)
        ax.text(t, -0.4, str(t), ha="center", va="bottom", fontsize=7)
    for i, (name, r) in enumerate(zip(names, mr.to_numpy(float), strict=True)):
        left = i < n_left
        # The better half is labelled left, best at the top; the rest right, worst at the top: no lines cross.
        y = row_y0 + _ROW_DY * (i if left else k - 1 - i)
        x_end = 1 - reach if left else hi + reach
        ax.plot([r, r, x_end], [0, y, y], gid=f"method:{name}", **ink)
        shown = f"{r:.2f}" if math.isfinite(r) else "n/a"  # n/a: no complete block; NaN lines are not drawn
        ax.text(x_end, y, f"{name} ({shown})" if left else f"({shown}) {name}", ha="right" if left else "left",
                va="center", gid=f"label:{name}")
    for j, group in enumerate(result.cliques):
        xs = [float(mr[m]) for m in group]
        y = _CLIQUE_Y0 + _CLIQUE_DY * j
        # Round caps: a group of equal mean ranks still shows as a dot, and the data ends stay the ranks.
        ax.plot([min(xs), max(xs)], [y, y], color="black", linewidth=2.5, solid_capstyle="round",
                gid=f"clique:{j}")
    if show_cd:
        ax.plot([1, 1 + result.cd], [_CD_Y, _CD_Y], gid="cd", **ink)
        for x in (1, 1 + result.cd):
            ax.plot([x, x], [_CD_Y - 0.2, _CD_Y + 0.2], **ink)
        ax.text(1 + result.cd / 2, _CD_Y - 0.3, "CD", ha="center", va="bottom", fontsize=7)
    ax.set_title("\n".join(caption))
    return fig
