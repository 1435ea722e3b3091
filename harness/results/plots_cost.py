"""Accuracy against cost: the step time of the controlled measurement (harness/results/costs.py, with its
spread over rounds drawn) and the method's extra state (exact)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from harness.results.aggregate import BASELINE, DEFAULT_METRIC, METRICS, method_label
from harness.results.plots_style import (
    MARKERS,
    SPREAD,
    caption_text,
    label_chars,
    legend_below,
    method_colors,
    metric_note,
    min_span,
    n_phrase,
    new_figure,
    protocol_phrase,
    short_label,
    styled,
    with_n,
    y_range,
)
from harness.results.render import human_bytes


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@styled
def accuracy_vs_cost(groups: pd.DataFrame, *, dataset: str, model: str, metric: str = DEFAULT_METRIC,
                     colors: dict[str, str] | None = None) -> Figure:
    """Accuracy against the controlled step time, and next to it the one cost that is not measured but exact:
    one point / row per row of `groups` in this dataset / model (pass `best_per_method` rows for one per method).

    - Top: the metric (mean, bar +-1 sample std over seeds) against the train step time over CE's in the same
      settings from the controlled measurement (`time_x`: `tfbench bench step --sweep`, the configurations
      round-robin on one machine, median over rounds; bar: the sample std over rounds of the per-round ratio,
      `time_x_rounds_sd`), with a grey band of 1 +- CE's own relative std over rounds (`time_rounds_sd_rel`):
      how much a step time moved while it was measured. The sweep's own step times (observed on a shared
      machine beside other trials, 10-50% apart from run to run) are not drawn. The x label gives CE's median
      step time in ms, the unit the ratio is of; the axis starts at 0, so that lengths read as ratios, and
      reaches 1.5 at least. Without a controlled measurement there is no ratio and no top panel (the summary
      says why). The y range follows the ablation's rule (`y_range`, at least `min_span(metric)` wide: 5 points
      of accuracy).
    - Bottom (when the rows record it): the method's extra state in bytes (`extra_state_bytes`: PS-KD's
      per-sample table, OLS's class matrix; CE keeps none), one row per point in legend order, each named
      with its size, on a symmetric-log axis so that 0 B has a place. Why: it is exact, the same on every run
      and machine, and grows with the data set (PS-KD's table is images x classes), which a step time on a
      small set does not show. Peak memory is not drawn: on CPU it is the process's resident size, dominated
      by the framework, not by the method.
    Read back (tests): the points carry gid `time:<label>`, the state dots `state:<label>`, the band
    `ce-step-band`."""
    spec = METRICS[metric]
    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)]
    g = g[np.isfinite(g[f"{metric}_mean"].astype(float))]
    colors = colors or method_colors(g["method"])
    timed = g[np.isfinite(g["time_x"].astype(float))] if "time_x" in g.columns else g.iloc[:0]
    state_col = "extra_state_bytes"
    stated = g[np.isfinite(g[state_col].astype(float))] if state_col in g.columns else g.iloc[:0]
    state_lines = sum(_state_name(r).count("\n") + 1 for _, r in stated.iterrows())
    heights = ([1.6] if len(timed) else []) + ([0.3 + 0.11 * state_lines] if len(stated) else [])
    fig, axes = new_figure(0.45 + sum(heights or [1.0]), nrows=max(len(heights), 1), height_ratios=heights or None)
    base = g[g["method"].astype(str) == BASELINE]
    protocols = list(g["protocol"].astype(str)) if "protocol" in g.columns else []
    handles: dict[str, object] = {}
    any_bars, band = False, False
    if len(timed):
        ax = axes[0]
        ys, xs = [], [0.0, 1.5]
        for i, (_, r) in enumerate(timed.iterrows()):
            n = int(r[f"{metric}_n"])
            y = float(r[f"{metric}_mean"]) * spec.scale
            yerr = float(r[f"{metric}_std"]) * spec.scale if n >= 2 else math.nan
            xerr = float(r["time_x_rounds_sd"]) if "time_x_rounds_sd" in r else math.nan
            text = with_n(str(r["label"]), n_phrase([n]))
            c = ax.errorbar([float(r["time_x"])], [y], xerr=[xerr] if _finite(xerr) else None,
                            yerr=[yerr] if _finite(yerr) else None, fmt=MARKERS[i % len(MARKERS)],
                            color=colors[str(r["method"])], capsize=2, label=text, gid=f"time:{r['label']}")
            handles.setdefault(text, c)
            any_bars |= _finite(yerr) or _finite(xerr)
            ys += [y, y - np.nan_to_num(yerr), y + np.nan_to_num(yerr)]
            xs += [float(r["time_x"]) + np.nan_to_num(xerr)]
        ax.set_ylabel(spec.short)
        ax.set_ylim(*y_range(ys, span=min_span(metric), percent=spec.scale == 100.0))
        ax.set_xlim(0.0, 1.05 * max(xs))
        band = _time_axis(ax, base, timed)
        if band:
            handles[f"{method_label(BASELINE)}'s step-time spread over rounds (\u00b11 sd)"] = Patch(
                color=_BAND, alpha=0.35, linewidth=0)
    if len(stated):
        ax = axes[-1]
        _state_axis(ax, stated, colors=colors, gid_of=lambda r: f"state:{r['label']}")
        for _, r in stated.iterrows():
            text = with_n(str(r["label"]), n_phrase([int(r[f"{metric}_n"])]))
            if text not in handles:
                handles[text] = Line2D([], [], marker="o", color=colors[str(r["method"])], linestyle="none")
    if not heights:
        axes[0].text(0.5, 0.5, "no step time or state recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    title = f"{dataset} / {model}, {protocol_phrase(protocols)}: cost"
    axes[0].set_title(title)
    caption = [f"points: mean; bars: {SPREAD}" if any_bars else "points: mean (n = 1: no error bars)",
               metric_note(metric, spec.short, protocols)]
    if len(timed):
        caption.append("step time: controlled measurement (`tfbench bench step --sweep`, round-robin, median "
                       "over rounds; x bars: sd over rounds)")
        caption.append(f"y range at least {min_span(metric):g}{' points' if spec.scale == 100.0 else ''} wide")
    elif len(g):
        caption.append("train step time: no controlled measurement (the summary says why)")
    if len(stated):
        caption.append("extra state: exact")
    legend_below(fig, list(handles.values()), list(handles), caption=caption_text(title, caption))
    return fig


_BAND = "#999999"


def _time_axis(ax, base: pd.DataFrame, timed: pd.DataFrame) -> bool:
    """Step-time panel: CE's median in ms (the controlled measurement's) in the label, CE's relative spread over
    rounds as a band around 1 (True when drawn)."""
    ref = [float(v) for v in timed.get("cost_ref_step_s", pd.Series(dtype=float)) if _finite(v)]
    ms = f": {ref[0] * 1000:.3g} ms" if ref else ""
    drawn = False
    if len(base) and _finite(base.iloc[0].get("time_rounds_sd_rel", math.nan)):
        rel = float(base.iloc[0]["time_rounds_sd_rel"])
        ax.axvspan(1 - rel, 1 + rel, color=_BAND, alpha=0.35, linewidth=0, zorder=0, gid="ce-step-band")
        drawn = True
    ax.axvline(1.0, color=_BAND, linewidth=0.6, zorder=0)
    ax.set_xlabel(f"train step time (\u00d7 {method_label(BASELINE)}'s median{ms}, controlled)")
    return drawn


def _state_name(r: pd.Series) -> str:
    """'LS: 0 B', in at most two lines of half the width (the size never split from its unit)."""
    size = human_bytes(float(r["extra_state_bytes"])).replace(" ", "\u00a0")
    return short_label(f"{r['label']}: {size}", label_chars(0.5, 6.0, 2.6))


def _state_axis(ax, rows: pd.DataFrame, *, colors: dict[str, str], gid_of) -> None:
    """Extra-state panel: one row per configuration, a dot at its bytes named with its size; symlog so that
    0 B and a table of gigabytes share an axis, ticks at 0, 1 KiB, 1 MiB, ..."""
    values = rows["extra_state_bytes"].astype(float).to_numpy()
    top = max(float(np.nanmax(values)), 1.0)
    lo, hi = -0.6, 2.0 ** (math.ceil(math.log2(top)) + 6)  # room right of the largest for its name
    ax.set_xscale("symlog", linthresh=1.0, base=2, linscale=0.5)
    ax.set_xlim(lo, hi)
    ticks = [0.0] + [float(2 ** e) for e in range(10, int(math.log2(hi)) + 1, 10)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [human_bytes(t).replace(".0 ", " ") if t else "0" for t in ticks])
    tr = ax.xaxis.get_transform()
    span = float(tr.transform(hi) - tr.transform(lo))
    for k, (_, r) in enumerate(rows.iterrows()):
        x = float(r["extra_state_bytes"])
        ax.plot([x], [k], "o", color=colors[str(r["method"])], markersize=3.5, gid=gid_of(r))
        right = float(tr.transform(x) - tr.transform(lo)) / span > 0.65  # name on the side with room
        ax.annotate(_state_name(r), (x, k),
                    textcoords="offset points", xytext=(-4 if right else 4, 0), ha="right" if right else "left",
                    va="center", fontsize=6, linespacing=0.95)
    last = _state_name(rows.iloc[-1]).count("\n") if len(rows) else 0
    ax.set_ylim(len(rows) - 0.5 + 0.35 * last, -0.5)  # a name of two lines needs room under its row
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlabel("extra method state (bytes, symlog axis)")
