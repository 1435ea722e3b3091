"""Figures of the supplement's analyses (Fig. 1, 2 and 4). Each function returns a matplotlib Figure built
without pyplot under the results figures' style (`harness.results.plots.styled`); the callers write it with
the one `harness.results.plots.save_figure` (PNG and PDF), so these figures look like every other one."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from harness.analysis.landscape_plots import new_figure
from harness.analysis.zipf import LawFit
from harness.analysis.zipf_models import CATEGORY_COLORS, Example
from harness.results.plots import save_figure, styled

__all__ = ["examples_figure", "rank_probability_figure", "save_figure", "snr_figure"]


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
    fig = new_figure(4.5, 3.5)
    ax = fig.subplots()
    ax.loglog(ranks, mean_sorted[:top], "o", ms=4, label="averaged sorted probability")
    fit_ranks = np.arange(1, min(top, k) + 1)
    line = zipf_fit.pmf[: len(fit_ranks)] * mean_sorted[:k].sum()
    ax.loglog(fit_ranks, line, "-", color="C3", label=f"Zipf fit, s = {zipf_fit.params['s']:.3g} (top {k})")
    ax.set_xlabel("rank")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


@styled
def snr_figure(snr: np.ndarray, *, top: int = 40, threshold: float = 1.0, title: str = "") -> Figure:
    """Fig. 2: SNR against rank over all ranks (a) and over the top `top` ranks (b), with a line at the
    threshold."""
    snr = np.asarray(snr, dtype=np.float64)
    ranks = np.arange(1, len(snr) + 1)
    fig = new_figure(9, 3.5)
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


@styled
def examples_figure(examples: Sequence[Example], classes: Sequence[str], *,
                    zipf_title: str = "Zipf's soft label (top-5 non-target)",
                    ce_title: str = "CE prediction (top-5)") -> Figure:
    """Fig. 4: one row per example: the image with its label, the Zipf soft label's top-5 bars and the CE
    model's top-5 bars, coloured ground truth (dark green), similar class (light green), unrelated (red)."""
    n = len(examples)
    fig = new_figure(11, 2.2 * n)
    axes = fig.subplots(n, 3, squeeze=False, gridspec_kw={"width_ratios": [1, 2, 2]})
    for row, ex in zip(axes, examples, strict=True):
        img_ax, zipf_ax, ce_ax = row
        img_ax.imshow(ex.image, cmap="gray" if ex.image.ndim == 2 else None, vmin=0, vmax=1)
        img_ax.set_title(f"GT: {classes[ex.label]}", fontsize=9)
        img_ax.set_xticks([])
        img_ax.set_yticks([])
        for ax, top, cats, title in ((zipf_ax, ex.zipf_top, ex.zipf_categories, zipf_title),
                                     (ce_ax, ex.ce_top, ex.ce_categories, ce_title)):
            names = [classes[c] for c, _ in top]
            values = [v for _, v in top]
            y = np.arange(len(top))[::-1]  # first entry at the top
            ax.barh(y, values, color=[CATEGORY_COLORS[c] for c in cats])
            ax.set_yticks(y, names, fontsize=8)
            ax.set_xlim(0, max(values) * 1.15 if values and max(values) > 0 else 1)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
    return fig
