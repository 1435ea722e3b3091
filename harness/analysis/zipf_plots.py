"""Figures of the supplement's analyses (Fig. 1, 2 and 4). Each function returns a matplotlib Figure built
without pyplot under the results figures' style (`harness.results.plots.styled`); the callers write it with
the one `harness.results.plots.save_figure` (PNG and PDF), so these figures look like every other one."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis.landscape_plots import new_figure
from harness.analysis.zipf import LawFit
from harness.analysis.zipf_models import CATEGORY_COLORS, Example
from harness.results.plots import STYLE, save_figure, styled
from harness.results.plots_style import COLUMN_WIDTH_IN, PAGE_WIDTH_IN, SUPTITLE_PT, plain_log_axis

__all__ = ["EXAMPLES_WIDTH_IN", "OTHER_COLOR", "example_colors", "examples_figure", "rank_probability_figure",
           "save_figure", "snr_figure"]


@styled
def rank_probability_figure(mean_sorted: np.ndarray, zipf_fit: LawFit, *, top: int = 32,
                            title: str = "softmax Gaussian logits fit Zipf's law") -> Figure:
    """Fig. 1: the averaged sorted probabilities of the top ranks in log-log space with the fitted Zipf
    line. The fit is a distribution over its K ranks; it is drawn scaled by the empirical mass of those K
    ranks so it sits on the probabilities themselves."""
    mean_sorted = np.asarray(mean_sorted, dtype=np.float64)
    k = len(zipf_fit.pmf)
    top = min(top, len(mean_sorted))
    ranks = np.arange(1, top + 1)
    fig = new_figure(COLUMN_WIDTH_IN, 2.8)
    ax = fig.subplots()
    ax.loglog(ranks, mean_sorted[:top], "o", ms=4, label="averaged sorted probability")
    fit_ranks = np.arange(1, min(top, k) + 1)
    line = zipf_fit.pmf[: len(fit_ranks)] * mean_sorted[:k].sum()
    ax.loglog(fit_ranks, line, "-", color="C3", label=f"Zipf fit, s = {zipf_fit.params['s']:.3g} (top {k})")
    plain_log_axis(ax.xaxis)  # STYLE draws text as written: matplotlib's log labels are mathtext
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("rank")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(fontsize=6.5)
    return fig


@styled
def snr_figure(snr: np.ndarray, *, top: int = 40, threshold: float = 1.0, title: str = "") -> Figure:
    """Fig. 2: SNR against rank over all ranks (a) and over the top `top` ranks (b), with a line at the
    threshold."""
    snr = np.asarray(snr, dtype=np.float64)
    ranks = np.arange(1, len(snr) + 1)
    fig = new_figure(PAGE_WIDTH_IN, 2.8)
    a, b = fig.subplots(1, 2)
    for ax, n, sub in ((a, len(snr), "(a) all ranks"), (b, min(top, len(snr)), f"(b) top {min(top, len(snr))} ranks")):
        ax.plot(ranks[:n], snr[:n], "-" if n > 60 else "o-", ms=3)
        ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"SNR = {threshold:g}")
        ax.set_xlabel("rank")
        ax.set_ylabel("SNR (mean / std)")
        ax.set_title(sub)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# Fig. 4 spans the text width of a two-column paper: an image and two bar panels with class names per row
# do not fit one 3.3 in column.
EXAMPLES_WIDTH_IN = 6.9
# Without super-classes every non-target class is just that: one neutral colour, not the paper's red.
OTHER_COLOR = "#8c8c8c"
_CATEGORY_TEXT = {"gt": "ground truth", "similar": "same super-class as the ground truth",
                  "unrelated": "another super-class", "other": "another class"}


def example_colors(has_superclasses: bool) -> dict[str, str]:
    """Bar colour of each category: the paper's three with super-classes; without them, the ground truth and
    every other class in one neutral colour ('unrelated' would claim a relation that was never looked up)."""
    if has_superclasses:
        return dict(CATEGORY_COLORS)
    return {"gt": CATEGORY_COLORS["gt"], "other": OTHER_COLOR}


@styled
def examples_figure(examples: Sequence[Example], classes: Sequence[str], *,
                    zipf_title: str = "Zipf's soft label (top-5 non-target)",
                    ce_title: str = "CE prediction (top-5)", has_superclasses: bool = True,
                    dataset: str = "", title: str = "") -> Figure:
    """Fig. 4: one row per example: the image with its label, the Zipf soft label's top-5 bars and the CE
    model's top-5 bars, each bar labelled with its value (a CE probability of 0.001 is no visible bar).

    Colours (`example_colors`): with super-classes (`has_superclasses`; CIFAR-100, synthetic) ground truth
    (dark green), a class of the ground truth's super-class (light green), a class of another super-class
    (red), as the paper. Without them every non-target class is one grey "another class" (whatever
    category the data say: Example's 'unrelated' then only means 'no super-class to compare'), and the
    legend says that `dataset` has no super-classes. The legend is the figure's (fig.legends[0]); its title
    is the note. Two paper columns wide (EXAMPLES_WIDTH_IN)."""
    n = len(examples)
    colors = example_colors(has_superclasses)
    fig = new_figure(EXAMPLES_WIDTH_IN, 0.6 + 0.75 * n)
    # One x scale per column: the rows' bars are compared with each other, not only within a row.
    axes = fig.subplots(n, 3, squeeze=False, sharex="col", gridspec_kw={"width_ratios": [0.7, 2, 2]})
    peak = {1: max((v for ex in examples for _, v in ex.zipf_top), default=0.0),
            2: max((v for ex in examples for _, v in ex.ce_top), default=0.0)}
    for i, (row, ex) in enumerate(zip(axes, examples, strict=True)):
        img_ax, zipf_ax, ce_ax = row
        img_ax.imshow(ex.image, cmap="gray" if ex.image.ndim == 2 else None, vmin=0, vmax=1)
        img_ax.set_title(f"GT: {classes[ex.label]}")
        img_ax.set_xticks([])
        img_ax.set_yticks([])
        for spine in img_ax.spines.values():  # STYLE keeps left and bottom: a frame on two sides of an image
            spine.set_visible(False)
        for col, ax, top, cats, head in ((1, zipf_ax, ex.zipf_top, ex.zipf_categories, zipf_title),
                                         (2, ce_ax, ex.ce_top, ex.ce_categories, ce_title)):
            names = [classes[c] for c, _ in top]
            values = [v for _, v in top]
            y = np.arange(len(top))[::-1]  # first entry at the top
            cats = [c if has_superclasses or c == "gt" else "other" for c in cats]
            ax.barh(y, values, color=[colors[c] for c in cats])
            for yi, v in zip(y, values, strict=True):
                ax.annotate(f"{v:.3f}" if v >= 5e-4 else "<0.001", (v, yi), textcoords="offset points", xytext=(2, 0), va="center",
                            fontsize=5.5)
            ax.set_yticks(y, names)
            ax.set_xlim(0, peak[col] * 1.2 if peak[col] > 0 else 1)  # room for the value texts
            if i == 0:
                ax.set_title(head)
    zipf_ax, ce_ax = axes[-1][1], axes[-1][2]
    zipf_ax.set_xlabel("soft-label weight (non-target classes sum to 1)")
    ce_ax.set_xlabel("CE softmax probability")
    handles = [Patch(color=c, label=_CATEGORY_TEXT[k]) for k, c in colors.items()]
    note = "" if has_superclasses else (
        f"{dataset or 'this data set'} has no super-classes: non-target classes are not split into similar and "
        "unrelated")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), title=note or None,
               title_fontsize=STYLE["legend.fontsize"])
    if title:
        fig.suptitle(title, fontsize=SUPTITLE_PT)
    return fig
