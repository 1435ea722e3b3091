"""The figure that answers the question: each method's paired difference to CE in one dataset / model, with
its seed-only interval (95% t), its seeds + test images interval where predictions.npz exists, the ROPE
band, and the mark."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.results.aggregate import BASELINE, METRICS, method_label
from harness.results.plots_style import new_figure, styled

MARK_TEXT = {"better": "▲", "worse": "▼"}


@styled
def differences_figure(groups: pd.DataFrame, *, dataset: str, model: str, metric: str,
                       colors: dict[str, str]) -> Figure:
    """One row per configuration compared with CE (aggregate's rows of this cell): the mean paired difference
    (a dot), its 95% t interval (thick) and the two-level bootstrap interval (thin, where computed), the ROPE
    as a grey band around 0, and ▲ / ▼ beside a marked row. For reading back, each row's interval line has
    gid `seed:<label>` (xdata = its ends) and the bootstrap's `boot:<label>`."""
    spec = METRICS[metric]
    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)
               & (groups["method"] != BASELINE)]
    g = g[np.isfinite(g["diff_mean"].astype(float))]
    fig, (ax,) = new_figure(0.6 + 0.28 * max(len(g), 1))
    rope = float(g["rope"].iloc[0]) * spec.scale if len(g) and "rope" in g.columns else math.nan
    if math.isfinite(rope) and rope > 0:
        ax.axvspan(-rope, rope, color="0.88", zorder=0, label=f"ROPE +-{rope:g}")
    ax.axvline(0.0, color="0.4", linewidth=0.6, zorder=1)
    for y, (_, r) in enumerate(g.iloc[::-1].iterrows()):
        color = colors.get(str(r["method"]), "black")
        mean = float(r["diff_mean"]) * spec.scale
        if math.isfinite(float(r["diff_ci_low"])):
            ax.plot([r["diff_ci_low"] * spec.scale, r["diff_ci_high"] * spec.scale], [y, y], color=color,
                    linewidth=2.2, solid_capstyle="butt", gid=f"seed:{r['label']}")
        if math.isfinite(float(r.get("boot_ci_low", math.nan))):
            ax.plot([r["boot_ci_low"] * spec.scale, r["boot_ci_high"] * spec.scale], [y - 0.22, y - 0.22],
                    color=color, linewidth=0.8, gid=f"boot:{r['label']}")
        ax.plot([mean], [y], "o", color=color, markersize=3.5)
        mark = MARK_TEXT.get(str(r["verdict"]), "")
        if mark:
            ax.annotate(mark, (1.0, y), xycoords=("axes fraction", "data"), xytext=(2, 0),
                        textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(range(len(g)), [str(lbl) for lbl in g["label"].iloc[::-1]])
    ax.set_ylim(-0.7, max(len(g), 1) - 0.3)
    unit = " (points)" if spec.scale == 100.0 else ""
    ax.set_xlabel(f"{spec.short} minus {method_label(BASELINE)}'s{unit}")
    ax.set_title(f"{dataset} / {model}\nthick: 95% over seeds; thin: seeds + test images", fontsize=7)
    return fig
