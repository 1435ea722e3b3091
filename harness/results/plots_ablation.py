"""The ablation figure: a metric against one swept parameter (the seed's Table 3 as a figure), with CE as the
reference the ablation is read against."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.results.ablation import ablation_rows, ordered_values
from harness.results.aggregate import (
    BASELINE,
    DEFAULT_METRIC,
    METRICS,
    fmt_value,
    method_label,
    value_sort_key,
)
from harness.results.plots_style import (
    MARKERS,
    SPREAD,
    SUPTITLE_PT,
    caption_text,
    is_numeric,
    legend_below,
    method_colors,
    metric_note,
    min_span,
    n_phrase,
    new_figure,
    protocol_phrase,
    setting_colors,
    styled,
    y_range,
)

_SETTINGS = ("epochs", "protocol", "select")


def reference_row(groups: pd.DataFrame, *, dataset: str, model: str, like: pd.DataFrame) -> pd.Series | None:
    """CE's configuration in this dataset / model with the ablated rows' settings (epochs, protocol, selection
    rule) where it has them: the one an ablation is compared with. Several left: the one with most seeds."""
    ce = groups[(groups["method"].astype(str) == BASELINE) & (groups["dataset"].astype(str) == dataset)
                & (groups["model"].astype(str) == model)]
    for c in _SETTINGS:
        if c in ce.columns and c in like.columns:
            same = ce[ce[c].isin(like[c])]
            ce = same if len(same) else ce
    ce = ce[ce["n"].astype(int) > 0]
    if ce.empty:
        return None
    return ce.loc[ce["n"].astype(int).idxmax()]


@styled
def ablation_curve(groups: pd.DataFrame, *, method: str, param: str, metric: str = DEFAULT_METRIC) -> Figure:
    """Metric against one swept parameter: one panel per dataset / model (its own y range: the accuracy
    levels of two datasets differ far more than the effect of the parameter), sharing the x axis; one line
    per fixed setting of the other swept parameters (one line in a one-at-a-time sweep).

    - Points: mean over seeds. Error bars: sample std over seeds (ddof=1) where a point has n >= 2 seeds,
      none where n = 1 (its legend entry says "n = 1, no error bars"). The legend gives each line's n;
      where n differs along a line, each point is labelled with its own n.
    - Lines of one method are told apart by colour (viridis, in the order of the other parameters' values)
      and marker; with one line it has the method's colour.
    - CE, when the sweep has it in that dataset / model (same epochs, protocol and selection rule where it
      has them): the neutral reference, its mean as a solid grey line without markers, its +-1 std over
      seeds as a band; labelled CE with its n in the legend.
    - The y range holds every mean, bar end and CE's band and is at least `min_span(metric)` wide (5 points
      for metrics in percent, 0.1 for NLL) around their middle, kept inside [0, 100] for percentages, so
      that a difference far inside the seed noise is not drawn as a trend across the whole panel.

    Read back (tests): the method's lines are ErrorbarContainers labelled as in the legend; CE's line has
    gid `reference:<dataset>/<model>`, its band `reference-band:<dataset>/<model>`."""
    spec = METRICS[metric]
    rows = ablation_rows(groups, method=method, param=param)
    values = ordered_values(v for r in rows for v in r.groups[param])
    numeric = is_numeric(values)
    panels = list(dict.fromkeys((r.dataset, r.model) for r in rows)) or [("", "")]
    color = method_colors([method, BASELINE])
    by_value = sorted(rows, key=lambda r: tuple(value_sort_key(v) for _, v in r.context))
    contexts = list(dict.fromkeys(r.context for r in by_value))
    line_colors = (dict(zip(contexts, setting_colors(len(contexts)), strict=True)) if len(contexts) > 1
                   else {c: color[method] for c in contexts})
    # A legend entry names its panel only where the same line reads differently between panels (another n):
    # otherwise one entry, its colour, stands for that setting in every panel.
    texts: dict[tuple, set[str]] = {}
    refs: dict[tuple[str, str], pd.Series | None] = {}
    for dataset, model in panels:
        in_panel = [r for r in rows if (r.dataset, r.model) == (dataset, model)]
        for r in in_panel:
            texts.setdefault(("line", r.context), set()).add(_n_text(r.groups, metric))
        ref = reference_row(groups, dataset=dataset, model=model,
                            like=pd.concat([r.groups for r in in_panel]) if in_panel else groups.iloc[:0])
        refs[(dataset, model)] = ref
        if ref is not None:
            texts.setdefault(("ce",), set()).add(_ref_text(ref, metric))
    fig, axes = new_figure(0.6 + 1.35 * len(panels), nrows=len(panels), sharex=True)
    any_bars, any_reference = False, False
    bands: dict[str, tuple] = {}  # CE's legend entry: its line drawn over its band
    for i, (dataset, model) in enumerate(panels):
        ax = axes[i]
        name = f"{dataset} / {model}"
        multi = len(panels) > 1
        in_panel = [r for r in rows if (r.dataset, r.model) == (dataset, model)]
        ys: list[float] = []
        for r in in_panel:
            j = contexts.index(r.context)
            g = r.groups
            x = (g[param].astype(float).to_numpy() if numeric
                 else np.array([values.index(v) for v in g[param]], dtype=float))
            mean = g[f"{metric}_mean"].to_numpy(float) * spec.scale
            n = g[f"{metric}_n"].to_numpy(int)
            std = np.where(n >= 2, g[f"{metric}_std"].to_numpy(float) * spec.scale, np.nan)
            has_bars = bool(np.isfinite(std).any())
            any_bars |= has_bars
            parts = [name] if multi and len(texts[("line", r.context)]) > 1 else []
            if r.context:
                parts.append(", ".join(f"{k}={fmt_value(v)}" for k, v in r.context))
            parts.append(_n_text(g, metric))
            label = f"{method_label(method)} ({'; '.join(parts)})"
            ax.errorbar(x, mean, yerr=std if has_bars else None, label=label, capsize=2,
                        color=line_colors[r.context], marker=MARKERS[j % len(MARKERS)], linestyle="-")
            if len(set(n)) > 1:  # the legend's "n = 1-3" does not say which point has which
                for xi, top, ni in zip(x, mean + np.nan_to_num(std), n, strict=True):
                    ax.annotate(f"n={ni}", (xi, top), textcoords="offset points", xytext=(0, 2), ha="center",
                                va="bottom", fontsize=5.5, color=line_colors[r.context])  # above the bar, off the line
            ys += [*mean, *(mean - np.nan_to_num(std)), *(mean + np.nan_to_num(std))]
        ref = refs[(dataset, model)]
        if ref is not None:
            any_reference = True
            label, handle, needed = _draw_reference(ax, ref, metric=metric, color=color[BASELINE],
                                                    name=name if multi and len(texts[("ce",)]) > 1 else "")
            bands[label] = handle
            ys += needed
        ax.set_ylim(*y_range(ys, span=min_span(metric), percent=spec.scale == 100.0))
        ax.set_title(name)
        ax.set_ylabel(spec.short)
    pname = param[2:] if param.startswith("p.") else param
    ax = axes[-1]
    if numeric and values and min(values) > 0 and max(values) / min(values) >= 50:
        ax.set_xscale("log")  # lambda's grid spans 0.01 .. 1.5
    if numeric:
        ax.set_xticks([float(v) for v in values], [fmt_value(v) for v in values])
        ax.minorticks_off()
    else:
        ax.set_xticks(range(len(values)), [fmt_value(v) for v in values], rotation=20)
    ax.set_xlabel(pname + (" (log scale)" if ax.get_xscale() == "log" else ""))
    protocol = protocol_phrase(pd.concat([r.groups["protocol"] for r in rows])) if rows and (
        "protocol" in groups.columns) else ""
    title = f"{method_label(method)}: ablation of {pname}" + (f" ({protocol})" if protocol else "")
    fig.suptitle(title, fontsize=SUPTITLE_PT)
    notes = [f"points: mean; bars: {SPREAD}" if any_bars else "points: mean (n = 1: no error bars)"]
    if len(contexts) > 1:
        notes.append("one line per setting of the other swept parameters, coloured in their order (viridis)")
    if any_reference:
        notes.append(f"grey line: {method_label(BASELINE)}'s mean, band {SPREAD}")
    protocols = list(pd.concat([r.groups["protocol"] for r in rows]).astype(str)) if rows and (
        "protocol" in groups.columns) else []
    notes.append(metric_note(metric, spec.short, protocols))
    notes.append(f"y range at least {min_span(metric):g}{' points' if spec.scale == 100.0 else ''} wide")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(bands.get(lab, h))
                labels.append(lab)
    legend_below(fig, handles, labels, caption=caption_text(title, notes))
    return fig


def _n_text(g: pd.DataFrame, metric: str) -> str:
    """A line's n in its legend entry: 'n = 2', 'n = 1-3', 'n = 1, no error bars'."""
    n = g[f"{metric}_n"].to_numpy(int)
    bars = bool(np.isfinite(np.where(n >= 2, g[f"{metric}_std"].to_numpy(float), np.nan)).any())
    return n_phrase(n) + ("" if bars else ", no error bars")


def _ref_text(ref: pd.Series, metric: str) -> str:
    n = int(ref[f"{metric}_n"])
    return n_phrase([n]) + ("" if n >= 2 and math.isfinite(float(ref[f"{metric}_std"])) else ", no band")


def _draw_reference(ax: Any, ref: pd.Series, *, metric: str, color: str, name: str
                    ) -> tuple[str, tuple, list[float]]:
    """CE's mean line and +-std band across the panel: (its legend label, its legend handle, the y values it
    needs in view)."""
    spec = METRICS[metric]
    mean = float(ref[f"{metric}_mean"]) * spec.scale
    n = int(ref[f"{metric}_n"])
    std = float(ref[f"{metric}_std"]) * spec.scale if n >= 2 else math.nan
    where = f"{ref['dataset']}/{ref['model']}"
    label = f"{method_label(BASELINE)}{' on ' + name if name else ''} ({_ref_text(ref, metric)})"
    line = ax.axhline(mean, color=color, linestyle="-", linewidth=1.0, label=label, gid=f"reference:{where}",
                      zorder=1)
    if not math.isfinite(std):
        return label, (line,), [mean]
    band = ax.axhspan(mean - std, mean + std, color=color, alpha=0.15, linewidth=0,
                      gid=f"reference-band:{where}", zorder=0)
    return label, (band, line), [mean - std, mean + std]
