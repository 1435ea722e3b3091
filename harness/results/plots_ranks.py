"""The critical-difference diagram of a ranking across data sets (harness/results/ranks.py)."""
from __future__ import annotations

import math

from matplotlib.figure import Figure

from harness.results.plots_style import caption_text, label_chars, new_figure, set_caption, styled, wrap_text
from harness.results.ranks import POSTHOCS, AcrossDatasets, p_phrase

# The diagram's y unit is one line of 8 pt text; y = 0 is the rank axis and y grows downwards.
_LINE_IN = 0.15
_CD_Y, _CLIQUE_Y0, _CLIQUE_DY, _ROW_DY = -1.7, 0.6, 0.5, 1.0


@styled
def critical_difference_diagram(result: AcrossDatasets, *, title: str | None = None) -> Figure:
    """Demšar's (2006, Figure 1) critical-difference diagram: an axis of ranks 1..k, best on the left; each
    method a line from its mean rank to its name and mean rank (the better half labelled on the left, the
    rest on the right, each name wrapped to fit a third of the width); thick bars join methods not
    significantly different (`result.cliques`) and, under Nemenyi, a bar above the axis is CD long. The
    title is `title` (default "Mean ranks across data sets"); the caption (`caption_of`) states N, k, alpha,
    the Friedman and Iman-Davenport p and the post-hoc.

    For reading back, every line drawn for the data carries a gid: `method:<name>` (xdata[0] = its mean
    rank), `clique:<i>` (xdata = the ends of result.cliques[i]), `cd` (xdata = [1, 1 + CD]); the name texts
    carry `label:<name>`."""
    mr = result.mean_ranks
    names, k = [str(m) for m in mr.index], result.k
    n_left = math.ceil(k / 2)
    n_rows = max(n_left, k - n_left)
    show_cd = result.posthoc == "nemenyi" and result.cd is not None
    shown_names = [wrap_text(n, label_chars(0.3)) for n in names]
    row_dy = _ROW_DY * max([1.0] + [0.85 * (n.count("\n") + 1) for n in shown_names])
    row_y0 = _CLIQUE_Y0 + _CLIQUE_DY * len(result.cliques) + 0.4 + (row_dy - _ROW_DY) / 2
    bottom = row_y0 + row_dy * max(n_rows - 1, 0) + row_dy / 2 + 0.1
    top = _CD_Y - 1.2 if show_cd else -1.4
    caption = [f"N = {result.n_blocks} blocks, k = {k} methods, alpha = {result.alpha:g}"]
    fr = result.friedman
    caption.append(f"Friedman {p_phrase(fr.p)}, Iman-Davenport {p_phrase(fr.f_p)}"
                   + (f", permutation {p_phrase(fr.perm_p)}" if fr.perm_p is not None else "") if not fr.reason
                   else "Friedman test: n/a")
    caption.append(f"bars: not different by {POSTHOCS[result.posthoc]}"
                   + (f" (CD = {result.cd:.2f})" if show_cd else ""))
    heading = title if title is not None else "Mean ranks across data sets"
    fig, (ax,) = new_figure(_LINE_IN * (bottom - top + 2.2))
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
    for i, (name, shown_name, r) in enumerate(zip(names, shown_names, mr.to_numpy(float), strict=True)):
        left = i < n_left
        # The better half is labelled left, best at the top; the rest right, worst at the top: no lines cross.
        y = row_y0 + row_dy * (i if left else k - 1 - i)
        x_end = 1 - reach if left else hi + reach
        ax.plot([r, r, x_end], [0, y, y], gid=f"method:{name}", **ink)
        shown = f"{r:.2f}" if math.isfinite(r) else "n/a"  # n/a: no complete block; NaN lines are not drawn
        ax.text(x_end, y, f"{shown_name} ({shown})" if left else f"({shown}) {shown_name}",
                ha="right" if left else "left", va="center", gid=f"label:{name}", linespacing=0.95)
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
    ax.set_title(heading)
    set_caption(fig, caption_text(heading, caption + ["best (rank 1) on the left; each method's mean rank "
                                                      "beside its name"]))
    return fig
