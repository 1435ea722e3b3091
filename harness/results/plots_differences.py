"""The figure that answers the question: each method's paired difference to CE in one dataset / model, with
its seed-only interval (95% t), its seeds + test images interval where predictions.npz exists, the ROPE
band, and the mark."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.results.aggregate import BASELINE, METRICS, method_label
from harness.results.plots_style import (
    caption_text,
    label_chars,
    legend_below,
    metric_note,
    new_figure,
    protocol_phrase,
    short_label,
    styled,
)

MARK_TEXT = {"better": "▲", "worse": "▼"}
_ROPE_GREY, _ZERO_GREY = "0.88", "0.4"


@styled
def differences_figure(groups: pd.DataFrame, *, dataset: str, model: str, metric: str,
                       colors: dict[str, str]) -> Figure:
    """One row per configuration compared with CE (aggregate's rows of this cell), top to bottom in the
    table's order, named by its label (wrapped to fit the column) followed by ▲ / ▼ where marked: the mean
    paired difference (a dot), its 95% t interval over seeds (thick) and the two-level bootstrap interval
    over seeds and test images (thin, just under it, where computed), the ROPE as a grey band around 0, and
    a vertical line at 0 (no difference). The legend names each kind of mark; the caption says how they
    were computed. For reading back, each row's interval line has gid `seed:<label>` (xdata = its ends),
    the bootstrap's `boot:<label>`."""
    spec = METRICS[metric]
    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)
               & (groups["method"] != BASELINE)]
    g = g[np.isfinite(g["diff_mean"].astype(float))]
    names = [short_label(str(lbl) + (f" {MARK_TEXT[str(v)]}" if str(v) in MARK_TEXT else ""), label_chars(0.38), 3)
             for lbl, v in zip(g["label"], g["verdict"] if "verdict" in g.columns else [""] * len(g), strict=True)]
    row_h = [0.1 + 0.11 * (name.count("\n") + 1) for name in names]
    fig, (ax,) = new_figure(0.55 + max(sum(row_h), 0.3))
    rope = float(g["rope"].iloc[0]) * spec.scale if len(g) and "rope" in g.columns else math.nan
    handles: dict[str, object] = {}
    if math.isfinite(rope) and rope > 0:
        ax.axvspan(-rope, rope, color=_ROPE_GREY, zorder=0, linewidth=0)
        handles[f"ROPE \u00b1{rope:g}"] = Patch(color=_ROPE_GREY, linewidth=0)
    ax.axvline(0.0, color=_ZERO_GREY, linewidth=0.6, zorder=1)
    ys = np.cumsum([0.0, *row_h[:-1]]) + np.asarray(row_h) / 2 if row_h else np.array([])  # row centres, top down
    boot_any, seed_any = False, False
    xs: list[float] = [0.0]
    for y, (_, r) in zip(ys, g.iterrows(), strict=True):
        color = colors.get(str(r["method"]), "black")
        mean = float(r["diff_mean"]) * spec.scale
        if math.isfinite(float(r["diff_ci_low"])):
            lo, hi = float(r["diff_ci_low"]) * spec.scale, float(r["diff_ci_high"]) * spec.scale
            ax.plot([lo, hi], [y, y], color=color, linewidth=2.2, solid_capstyle="butt", gid=f"seed:{r['label']}")
            seed_any, xs = True, xs + [lo, hi]
        if math.isfinite(float(r.get("boot_ci_low", math.nan))):
            lo, hi = float(r["boot_ci_low"]) * spec.scale, float(r["boot_ci_high"]) * spec.scale
            ax.plot([lo, hi], [y + 0.09, y + 0.09], color=color, linewidth=0.8, gid=f"boot:{r['label']}")
            boot_any, xs = True, xs + [lo, hi]
        ax.plot([mean], [y], "o", color=color, markersize=3.5, markeredgecolor="white", markeredgewidth=0.4,
                zorder=3)
        xs.append(mean)
    ax.set_yticks(ys, names, fontsize=6.5, linespacing=0.95)
    ax.tick_params(axis="y", length=0, pad=3)
    ax.spines["left"].set_visible(False)
    ax.set_ylim(max(sum(row_h), 0.3), 0.0)
    span = max(max(xs) - min(xs), 2 * rope if math.isfinite(rope) else 0.0, 1e-9)
    ax.set_xlim(min(min(xs), -rope if math.isfinite(rope) else 0.0) - 0.08 * span,
                max(max(xs), rope if math.isfinite(rope) else 0.0) + 0.08 * span)
    unit = " (points)" if spec.scale == 100.0 else ""
    ax.set_xlabel(f"{spec.short.replace(' (%)', '')} minus {method_label(BASELINE)}'s{unit}")
    protocols = list(g["protocol"].astype(str)) if "protocol" in g.columns else []
    title = f"{dataset} / {model}" + (f", {protocol_phrase(protocols)}" if protocols else "") + ": against CE"
    ax.set_title(title)
    line = {"color": "0.25", "solid_capstyle": "butt"}
    if seed_any:
        handles["95% CI over seeds (paired t)"] = Line2D([], [], linewidth=2.2, **line)
    if boot_any:
        handles["95% CI over seeds + test images"] = Line2D([], [], linewidth=0.8, **line)
    handles["mean paired difference"] = Line2D([], [], marker="o", linestyle="none", color="0.25", markersize=3.5)
    marked = sorted({str(v) for v in g.get("verdict", pd.Series(dtype=str)) if str(v) in MARK_TEXT})
    notes = ["dot: the mean over seeds of the per-seed difference to CE (seeds finished by both)",
             "thick: its 95% t interval over seeds" if seed_any else
             "no interval over seeds (it needs 2 or more paired seeds that differ)"]
    notes.append("thin: the paired bootstrap interval over seeds and test images" if boot_any else
                 "no interval over seeds and test images (it needs predictions.npz, from tfbench evaluate, "
                 "and 2 or more paired seeds)")
    if math.isfinite(rope) and rope > 0:
        notes.append(f"grey band: the region of practical equivalence (ROPE), \u00b1{rope:g}"
                     + (" points" if spec.scale == 100.0 else ""))
    if marked:
        notes.append(" / ".join(f"{MARK_TEXT[v]} {v} than CE" for v in marked) + ": the summary's verdict")
    notes.append(metric_note(metric, spec.short, protocols))
    legend_below(fig, list(handles.values()), list(handles), caption=caption_text(title, notes))
    return fig
