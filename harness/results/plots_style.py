"""The house style of every figure: STYLE, the journal widths (one column 3.3 in, two columns 6.9 in), a
method's fixed colour, the pyplot-free `new_figure`, the `styled` decorator (STYLE, the width, and the fitting
of every text inside the figure), the legend under the axes sized to its content, the caption kept beside the
figure as text (`set_caption`, `caption_of`) and the small phrases every caption uses (n over seeds, the
error-bar rule). The figure builders (plots_ablation, plots_curves, plots_cost, plots_ranks, ...) import from
here; harness.results.plots re-exports the public names and writes the files.
"""
from __future__ import annotations

import contextvars
import math
import textwrap
from collections.abc import Iterable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.config import catalog
from harness.errors import UserError
from harness.results.aggregate import METRICS

COLUMN_WIDTH_IN = 3.3   # one column of a two-column paper
PAGE_WIDTH_IN = 6.9     # both columns (the text width)
WIDTHS = {"column": COLUMN_WIDTH_IN, "page": PAGE_WIDTH_IN}
MIN_WIDTH_IN, MAX_WIDTH_IN = 2.0, 20.0
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
# For other methods: what tab10 has left, then the saturated colours of tab20b, then the light half of
# tab20, then repeat; never a grey, which is CE's, the neutral reference every figure compares with.
_GREYS = {"#7f7f7f", "#c7c7c7"}
_TAB20B = [matplotlib.colors.to_hex(matplotlib.colormaps["tab20b"].colors[i]) for i in (4, 12, 16, 1, 8, 13, 17, 5)]
_EXTRA = [c for c in (*_TAB10, *_TAB20B, *(matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]))
          if c not in BUILTIN_COLORS.values() and c not in _GREYS]
# Ablation lines are datasets, not methods: their own palette and markers.
DATASET_COLORS = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["Dark2"].colors]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
# The caption's wording of every error bar and band, so that all figures say the same thing.
SPREAD = "\u00b11 sample std over seeds"
# Room kept between a text and the figure's edge, in inches (constrained layout's own pad is 3 pt).
EDGE_IN = 0.05

_WIDTH = contextvars.ContextVar("figure_width_in", default=COLUMN_WIDTH_IN)
_CAPTION = "_tfbench_caption"


def figure_width(value: object, *, where: str = "--width") -> float:
    """A figure width in inches from `column` (3.3 in), `page` (6.9 in) or a number of inches; anything else
    is one line naming `where` and what is allowed."""
    if isinstance(value, str) and value in WIDTHS:
        return WIDTHS[value]
    try:
        inches = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        inches = math.nan
    if isinstance(value, bool) or not MIN_WIDTH_IN <= inches <= MAX_WIDTH_IN:
        raise UserError(f"{where}: found {value!r}; allowed: column ({COLUMN_WIDTH_IN} in), page "
                        f"({PAGE_WIDTH_IN} in) or a width in inches from {MIN_WIDTH_IN:g} to {MAX_WIDTH_IN:g}")
    return inches


def current_width() -> float:
    """The width the figure being built is for (`styled(..., width=)`; default one column)."""
    return _WIDTH.get()


def set_caption(fig: Figure, text: str) -> None:
    """The figure's caption: written beside it as `<stem>.txt` and listed in summary.md, never drawn in it."""
    setattr(fig, _CAPTION, text)


def caption_of(fig: Figure) -> str:
    return str(getattr(fig, _CAPTION, ""))


def caption_text(title: str, notes: Iterable[str]) -> str:
    """'Title. First note; second note.': a figure's caption from its title and the notes on its marks."""
    notes = [n for n in notes if n]
    body = "; ".join(notes)
    body = body[:1].upper() + body[1:] if body else ""
    return f"{title.rstrip('.')}." + (f" {body.rstrip('.')}." if body else "")


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Built-ins get their declared colour; other methods, in name order, the next free palette colour."""
    methods = set(map(str, methods))
    colors = {m: BUILTIN_COLORS[m] for m in methods if m in BUILTIN_COLORS}
    for i, m in enumerate(sorted(methods - set(BUILTIN_COLORS))):
        colors[m] = _EXTRA[i % len(_EXTRA)]
    return colors


def setting_colors(n: int) -> list[str]:
    """n distinct colours in order along viridis, for the settings of one method (its lines of an ablation):
    ordered like the values they stand for; the yellow end is left out, it vanishes on white."""
    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(x)) for x in (np.linspace(0.0, 0.82, n) if n > 1 else [0.35])]


def new_figure(height_in: float, nrows: int = 1, sharex: bool = False, sharey: bool = False,
               height_ratios: list[float] | None = None, ncols: int = 1) -> tuple[Figure, list]:
    """A figure of the current width (`current_width`) and `height_in`, on an Agg canvas, with constrained
    layout; its axes as a flat list (row by row)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(current_width(), height_in), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False,
                            height_ratios=height_ratios)
    return fig, list(axes.ravel())


def styled(fn):
    """Run a figure builder under STYLE at a width (`width=` inches, popped from the keyword arguments;
    default one column), then fit its texts inside the figure (`fit_texts`). rcParams are read when
    artists are created, so the style must be on while the builder runs."""
    def wrapper(*args, width: float | None = None, **kwargs):
        token = _WIDTH.set(float(width) if width is not None else _WIDTH.get())
        try:
            with matplotlib.rc_context(STYLE):
                fig = fn(*args, **kwargs)
                if isinstance(fig, Figure):
                    fit_texts(fig)
                return fig
        finally:
            _WIDTH.reset(token)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


def wrap_text(text: str, chars: int) -> str:
    """`text` broken at spaces into lines of at most `chars` characters; a word longer than that (a registered
    name such as `my_long_method_name`) is cut, since a whole one would leave the figure."""
    return "\n".join(textwrap.fill(part, max(chars, 4), break_on_hyphens=False) or part
                     for part in str(text).split("\n"))


def short_label(text: str, chars: int, lines: int = 2) -> str:
    """`text` wrapped to `chars` (`wrap_text`) in at most `lines` lines: where it needs more, as much of its
    end as fills `lines` - 1 lines (a configuration's parameters, `(beta=0.1)`) is kept whole and its start
    cut at a word with an ellipsis: `Cross-entropy with a…` / `label (control) (beta=0.1)`. For row names
    where a legend or the caption has the whole label."""
    wrapped = wrap_text(text, chars)
    if wrapped.count("\n") < lines or lines < 2:
        return wrapped if lines >= 2 or "\n" not in wrapped else textwrap.shorten(text, chars, placeholder="\u2026")
    words = str(text).split(" ")
    parts = wrapped.split("\n")
    ends = "\n".join([parts[0][:-1] + "\u2026", *parts[-(lines - 1):]])  # a long word: its first and last pieces
    k = len(words) - 1  # the longest end of whole words that wraps into lines - 1 lines
    while k > 1 and wrap_text(" ".join(words[k - 1:]), chars).count("\n") < lines - 1:
        k -= 1
    head = textwrap.shorten(" ".join(words[:k]), max(chars, 2), placeholder="\u2026")
    if head == "\u2026":
        head = " ".join(words[:k])[:max(chars - 1, 1)] + "\u2026"
    out = head + "\n" + wrap_text(" ".join(words[k:]), chars)
    return out if out.count("\n") < lines and k > 0 else ends


def label_chars(fraction: float = 0.36, pt: float = 7.0, most_in: float = 1.6) -> int:
    """How many characters of `pt` text fit in `fraction` of the current width, and in at most `most_in`
    inches (a page-wide figure keeps its plot wide): where row labels (the selected-epoch strip, the
    differences figure) are wrapped. A character is about half its size wide."""
    return max(8, int(min(fraction * current_width(), most_in) * 72 / (0.52 * pt)))


def _room(text, fig: Figure, renderer, vertical: bool) -> float:
    """How long `text` may be, in pixels along its reading axis, before it leaves the figure (less EDGE_IN
    on each side): from where it is anchored (its alignment) to the nearer edge."""
    bb = text.get_window_extent(renderer)
    e = EDGE_IN * fig.dpi
    lo, hi, size = (bb.y0, bb.y1, fig.bbox.height) if vertical else (bb.x0, bb.x1, fig.bbox.width)
    align = text.get_verticalalignment() if vertical else text.get_horizontalalignment()
    if vertical:  # a y label is rotated: its 'center' is the middle of the axes' height
        align = "center"
    if align == "left":
        return size - e - lo
    if align == "right":
        return hi - e
    mid = (lo + hi) / 2
    return 2 * max(min(mid - e, size - e - mid), 0.0)


def _fit_one(text, fig: Figure, renderer, *, vertical: bool = False, most: float = math.inf) -> bool:
    """Wrap `text` (a Text artist) until it fits in the figure (`_room`) and in `most` pixels; True if it was
    changed. Each try wraps the original lines anew, narrower, so that a title breaks into as few lines as
    fit."""
    original = text.get_text().split("\n")
    chars = max(len(line) for line in original)
    for _ in range(12):
        bb = text.get_window_extent(renderer)
        size = bb.height if vertical else bb.width
        room = min(_room(text, fig, renderer, vertical), most)
        if size <= room or chars <= 8:
            break
        chars = max(8, min(chars - 1, int(chars * room / size)))
        text.set_text("\n".join(wrap_text(line, chars) for line in original))
    return text.get_text() != "\n".join(original)


def fit_texts(fig: Figure) -> None:
    """Wrap every title and axis label that would leave the figure. Why: constrained layout keeps axes
    decorations inside the figure except for their length: it ignores a title's and an x label's width
    (matplotlib's `for_layout_only`), so a long method name in a title runs off the edge. Two rounds:
    wrapping changes the layout, which changes the room."""
    for _ in range(2):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        texts = [(fig._suptitle, False, math.inf)] if fig._suptitle is not None else []
        for ax in fig.axes:
            if ax.get_visible():  # a y label longer than its axes' height runs into the panel above
                texts += [(ax.title, False, math.inf), (ax._left_title, False, math.inf),
                          (ax._right_title, False, math.inf), (ax.xaxis.label, False, math.inf),
                          (ax.yaxis.label, True, max(ax.bbox.height * 1.25, 0.5 * fig.dpi))]
        changed = False
        for text, vertical, most in texts:
            if text.get_visible() and text.get_text():
                changed |= _fit_one(text, fig, renderer, vertical=vertical, most=most)
        if not changed:
            return
    fig.draw_without_rendering()


class PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers (0.6, 1, 10), and between
    decades only at 2 and 5. Why: STYLE turns mathtext off (labels hold a user's text), and the default log
    labels are mathtext, which would then be drawn as written: `$\\mathdefault{10^{0}}$`."""

    def set_locs(self, locs=None):
        super().set_locs(locs)
        if self._sublabels is not None and len(self._sublabels) > 1:
            self._sublabels = {1, 2, 5}

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def plain_log_axis(axis) -> None:
    """Label a log-scaled axis (`ax.xaxis` / `ax.yaxis`) with plain numbers: the decades, and 2 and 5 in
    between where too few decades are in view (on an x axis only where none is: its labels are wide)."""
    axis.set_major_formatter(PlainLogFormatter())
    horizontal = axis.axis_name == "x"
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(0 if horizontal else 1, 0.1)))


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def legend_below(fig: Figure, handles: list | None = None, labels: list[str] | None = None, *,
                 caption: str = "", ncol: int | None = None) -> None:
    """Legend under the axes, so that it never hides a line, sized to its content: as many columns as fit
    the figure's width (at most one per 1.1 in and `ncol`), then, in one column, its labels wrapped until it
    fits; the figure grows by the legend's height, so the axes keep their size. `caption` (what a band or a
    bar is) becomes the figure's caption (`set_caption`), not a part of the image."""
    if caption:
        set_caption(fig, caption)
    if handles is None:
        handles, labels = [], []
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    labels = [str(lab) for lab in labels or []]
    n = len(handles)
    if n == 0:
        return
    w_in, h_in = fig.get_size_inches()
    renderer = fig.canvas.get_renderer()
    room = (w_in - 2 * EDGE_IN) * fig.dpi
    ncol = max(1, min(n, ncol or n, int(w_in / 1.1)))
    shown, chars = labels, max(len(lab) for lab in labels)
    while True:
        with matplotlib.rc_context(STYLE):
            legend = fig.legend(handles, shown, loc="outside lower center", ncol=ncol)
        width = legend.get_window_extent(renderer).width
        if width <= room or (ncol == 1 and chars <= 12):
            break
        legend.remove()
        if ncol > 1:
            ncol -= 1
            continue
        chars = max(12, min(chars - 2, int(chars * room / width)))
        shown = [wrap_text(lab, chars) for lab in labels]
    fig.set_size_inches(w_in, h_in + legend.get_window_extent(renderer).height / fig.dpi + 0.04)


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
