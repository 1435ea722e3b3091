"""The house style of every figure: STYLE, one paper column (3.3 in), a method's fixed colour, the pyplot-free
`new_figure`, the `styled` decorator, the legend under the axes and the small phrases every caption uses
(n over seeds, the error-bar rule). The figure builders (plots_ablation, plots_curves, plots_cost,
plots_ranks) import from here; harness.results.plots re-exports the public names and writes the files.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.config import catalog
from harness.results.aggregate import METRICS

COLUMN_WIDTH_IN = 3.3
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 6.5, "legend.frameon": False, "lines.linewidth": 1.2, "lines.markersize": 3.5,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    # labels hold a user's text (a method's name, a parameter's value): shown as written, never parsed as
    # mathtext, where `$\fzbogus{a}$` would end the figure (and every figure after it) with a parse error
    "text.parse_math": False,
}
# matplotlib's default suptitle is 12 pt: larger than anything else in a 3.3 in figure.
SUPTITLE_PT = 8.5

_TAB10 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
# The built-ins' colours, declared on each method (CE a neutral grey, the seed's method red).
BUILTIN_COLORS = {name: record["color"] for name, record in catalog.builtins().items() if record.get("color")}
# For other methods: the rest of tab10, then the light half of tab20, then repeat.
_EXTRA = [c for c in _TAB10 if c not in BUILTIN_COLORS.values()] + [
    matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]
# Ablation lines are datasets, not methods: their own palette and markers.
DATASET_COLORS = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["Dark2"].colors]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
# The caption's wording of every error bar and band, so that all figures say the same thing.
SPREAD = "\u00b11 sample std over seeds"
# Characters of 6.5 pt text in one line of a 3.3 in column.
CAPTION_CHARS = 66


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Built-ins get their declared colour; other methods, in name order, the next free palette colour."""
    methods = set(map(str, methods))
    colors = {m: BUILTIN_COLORS[m] for m in methods if m in BUILTIN_COLORS}
    for i, m in enumerate(sorted(methods - set(BUILTIN_COLORS))):
        colors[m] = _EXTRA[i % len(_EXTRA)]
    return colors


def new_figure(height_in: float, nrows: int = 1, sharex: bool = False, sharey: bool = False,
            height_ratios: list[float] | None = None) -> tuple[Figure, list]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, height_in), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, 1, sharex=sharex, sharey=sharey, squeeze=False,
                            height_ratios=height_ratios)[:, 0]
    return fig, list(axes)


def styled(fn):
    """Run a figure builder under STYLE: rcParams are read when artists are created."""
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def legend_below(fig: Figure, handles: list | None = None, labels: list[str] | None = None, *,
                 caption: str = "", ncol: int | None = None) -> None:
    """Legend under the axes, so that it never hides a line, with `caption` (the figure's note: what a band
    or a bar is) as its title; the figure grows by the rows it adds, so the axes keep their size."""
    if handles is None:
        handles, labels = [], []
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    n = len(handles)
    if n == 0 and not caption:
        return
    # A legend title is one centred block as wide as its longest line; wider than the column it is cut off.
    caption = "\n".join(textwrap.fill(part, CAPTION_CHARS) for part in caption.split("\n")) if caption else ""
    ncol = ncol or _legend_columns([str(lab) for lab in labels or []])
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, title=caption or None,
               title_fontsize=STYLE["legend.fontsize"])
    w, h = fig.get_size_inches()
    lines = math.ceil(n / ncol) + (caption.count("\n") + 1 if caption else 0)
    fig.set_size_inches(w, h + 0.14 * lines)


def _legend_columns(labels: list[str]) -> int:
    """The most columns (at most 3) whose widest entries fit one line of the column together. matplotlib
    fills a legend column by column, so the widths are of those slices; a handle takes about 6 characters."""
    n = len(labels)
    for c in range(min(n, 3), 1, -1):
        rows = math.ceil(n / c)
        width = sum(max(len(lab) for lab in labels[i:i + rows]) + 6 for i in range(0, n, rows))
        if width <= CAPTION_CHARS:
            return c
    return 1


def n_phrase(ns: Iterable[int]) -> str:
    """'n = 3' or 'n = 1-3' (seeds), for a legend entry."""
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "n = 0"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"


def protocol_phrase(protocols: Iterable[str]) -> str:
    """The protocol(s) of a figure's data, as its title names them."""
    ps = list(dict.fromkeys(str(p) for p in protocols))
    return "protocol " + "/".join(ps) if ps else ""


def metric_note(metric: str, short: str, protocols: Iterable[str]) -> str:
    """Where a trials.csv metric was measured, for a caption: the axis label `short` is too short to say
    that 'selected top-1' is read on the test split under `clean` but on the evaluation split that also
    picked the epoch under `paper`."""
    name = short.replace(" (%)", "")
    clean = all(str(p) == "clean" for p in protocols)
    if metric.startswith(("val_", "best_")):
        return f"{name}: on the selection split"
    split = "test split" if clean else "eval split"
    if metric.startswith("selected_"):
        return f"{name}: {split}, at the epoch chosen on " + ("val" if clean else "it (paper protocol)")
    if metric.startswith("last_"):
        return f"{name}: {split}, at the last epoch"
    return name


def with_n(label: str, n_text: str) -> str:
    """'CE (n = 3)'; a label that already ends in a parenthesis gets n inside it: 'Zipf's LS (lam=0.1; n = 3)'."""
    if label.endswith(")") and "(" in label:
        return f"{label[:-1]}; {n_text})"
    return f"{label} ({n_text})"


# The y range's least span in display units: a few points of accuracy (or ECE) in percent, a tenth of a nat
# of NLL. Why: matplotlib's autoscale blows a 0.3-point wiggle up to the whole panel height.
MIN_SPAN_PERCENT = 5.0
MIN_SPAN_OTHER = 0.1


def min_span(metric: str) -> float:
    return MIN_SPAN_PERCENT if METRICS[metric].scale == 100.0 else MIN_SPAN_OTHER


def y_range(values: list[float], *, span: float, percent: bool) -> tuple[float, float]:
    """Every value (means, their bars' ends, CE's line and band) in view, the range at least `span` wide
    around their middle; percentages stay inside [0, 100] (the range is shifted, not cut); 5% margins."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return (0.0, 100.0) if percent else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        if percent and hi > 100.0:
            lo, hi = lo - (hi - 100.0), 100.0
        if percent and lo < 0.0:
            lo, hi = 0.0, hi - lo
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad
