"""Figures from the trials' per-image predictions (predictions.npz), one of each per data set / model: reliability
diagrams (methods side by side), risk-coverage curves, and accuracy against corruption severity. A method is
drawn from its configuration chosen on the selection split (`best_per_method`), its seeds' images pooled."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.io import file_stem
from harness.results import calibration as cal
from harness.results.aggregate import best_per_method, cells, config_labels
from harness.results.beyond import corruption_accuracy, risk_coverage
from harness.results.plots_style import (
    STYLE,
    caption_text,
    current_width,
    label_chars,
    legend_below,
    new_figure,
    set_caption,
    styled,
    wrap_text,
)
from harness.results.predictions import read_predictions, split

PANEL_IN = 1.1  # the least width of one reliability panel: as many to a row as fit the figure's width


def pooled(results_dir: Path, trials: pd.DataFrame, groups: pd.DataFrame, dataset: str,
           model: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """method label -> the predictions of its chosen configuration's finished trials in this cell."""
    best = best_per_method(groups, dataset=dataset, model=model)
    t = trials[(trials["dataset"].astype(str) == dataset) & (trials["model"].astype(str) == model)
               & (trials["status"].astype(str) == "finished")].copy()
    if t.empty:
        return {}
    t["label"] = config_labels(t)
    out: dict[str, list[dict[str, np.ndarray]]] = {}
    for label in best["label"]:
        for key in t.loc[t["label"] == label, "key"]:
            pred = read_predictions(results_dir / "trials" / str(key))
            if pred is not None and split(pred, "test") is not None:
                out.setdefault(str(label), []).append(pred)
    return out


def _test(preds: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    views = [split(p, "test") for p in preds]
    return np.concatenate([v.msp for v in views]), np.concatenate([v.correct for v in views])


@styled
def reliability_diagrams(by_label: dict[str, list[dict[str, np.ndarray]]], colors: dict[str, str], *,
                         dataset: str, model: str) -> Figure:
    """Per method: the accuracy of each of the 15 equal-width confidence bins (bars) against the diagonal,
    with the gap to it shaded, and the method's ECE over the pooled images. Panels in rows of as many as
    fit the figure's width (`PANEL_IN` each), every panel titled with its (wrapped) label."""
    n = len(by_label)
    width = current_width()
    ncols = max(1, min(n, int(width // PANEL_IN)))
    nrows = -(-n // ncols)
    panel = width / ncols
    titles = [wrap_text(label, label_chars(0.8 / ncols, 6.5)) for label in by_label]
    title_in = 0.1 * max(t.count("\n") + 2 for t in titles)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, nrows * (min(panel, 1.35) + title_in + 0.3) + 0.3), layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:  # the grid's unused places
        fig.delaxes(ax)
    edges = np.linspace(0, 1, cal.ECE_BINS + 1)
    bin_w = edges[1] - edges[0]
    for i, (label, preds) in enumerate(by_label.items()):
        ax = axes[i]
        conf, correct = _test(preds)
        count, mean_conf, acc = cal.reliability(conf, correct)
        filled = count > 0
        ax.bar(edges[:-1][filled], acc[filled], width=bin_w, align="edge", color=colors.get(label, "C0"),
               alpha=0.65, edgecolor="black", linewidth=0.3)
        gaps = ax.bar(edges[:-1][filled], (mean_conf - acc)[filled], bottom=acc[filled], width=bin_w,
                      align="edge", color="none", edgecolor="black", hatch="///", linewidth=0.3)
        for bar in gaps:  # matplotlib's 1 pt hatch drowns a 1.6 in panel
            bar.set_hatch_linewidth(0.4)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.6)
        ax.set_title(f"{titles[i]}\nECE {100 * cal.ece(conf, correct):.2f}%", fontsize=6.5,
                     linespacing=0.95)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])  # four labels run into the next panel's
        if i + ncols >= n:  # the lowest panel of its column
            ax.set_xlabel("confidence")
        else:
            ax.tick_params(labelbottom=False)
    for ax in grid[:, 0]:
        ax.set_ylabel("accuracy")
    title = f"{dataset} / {model}: reliability"
    fig.suptitle(title, fontsize="small")
    set_caption(fig, caption_text(title, [
        "test split, each method's seeds pooled", f"bars: the accuracy of each of {cal.ECE_BINS} equal-width "
        "confidence bins", "hatched: the gap to the diagonal (perfect calibration)",
        "ECE: the bins' gaps weighted by their share of images"]))
    return fig


@styled
def risk_coverage_curves(by_label: dict[str, list[dict[str, np.ndarray]]], colors: dict[str, str], *,
                         dataset: str, model: str) -> Figure:
    """Error rate among the accepted images against the fraction accepted, most confident first (MSP)."""
    fig, (ax,) = new_figure(1.8)
    for label, preds in by_label.items():
        conf, correct = _test(preds)
        coverage, risk = risk_coverage(conf, correct)
        ax.plot(coverage, 100 * risk, color=colors.get(label), linewidth=0.9, label=label)
    ax.set_xlabel("coverage")
    ax.set_ylabel("error among accepted (%)")
    ax.set_xlim(0, 1)
    title = f"Risk-coverage, {dataset} / {model}"
    ax.set_title(title, fontsize="small")
    legend_below(fig, caption=caption_text(title, ["test split, each method's seeds pooled", "images accepted "
                                                   "most confident first (maximum softmax probability)"]))
    return fig


@styled
def corruption_curves(by_label: dict[str, list[dict[str, np.ndarray]]], colors: dict[str, str], *,
                      dataset: str, model: str) -> Figure:
    """Top-1 averaged over the corruptions against severity (0: the same test images uncorrupted)."""
    fig, (ax,) = new_figure(1.8)
    for label, preds in by_label.items():
        rows = []
        for p in preds:
            acc = corruption_accuracy(p)
            if acc:
                m = p["corruption_correct"].shape[2]
                clean = float(split(p, "test").correct[:m].mean())
                rows.append([clean, *np.mean(list(acc.values()), axis=0)])
        if rows:
            ax.plot(range(6), 100 * np.mean(rows, axis=0), marker="o", markersize=3, color=colors.get(label),
                    linewidth=0.9, label=label)
    ax.set_xlabel("severity")
    ax.set_ylabel("top-1 (%)")
    title = f"Corruptions, {dataset} / {model}"
    ax.set_title(title, fontsize="small")
    legend_below(fig, caption=caption_text(title, ["top-1 averaged over the corruptions, then over seeds",
                                                   "severity 0: the same test images uncorrupted"]))
    return fig


def prediction_figures(results_dir: Path, trials: pd.DataFrame, groups: pd.DataFrame, colors: dict[str, str],
                       *, width: float | None = None) -> list[tuple[str, Figure]]:
    """(file stem, figure) of the three figures of every data set / model whose trials kept predictions."""
    figures: list[tuple[str, Figure]] = []
    by_method = {label: colors.get(str(m)) for label, m in zip(groups["label"], groups["method"], strict=True)}
    for dataset, model in cells(groups):
        by_label = pooled(results_dir, trials, groups, dataset, model)
        if not by_label:
            continue
        figures.append((file_stem(f"reliability_{dataset}_{model}"),
                        reliability_diagrams(by_label, by_method, dataset=dataset, model=model, width=width)))
        figures.append((file_stem(f"risk_coverage_{dataset}_{model}"),
                        risk_coverage_curves(by_label, by_method, dataset=dataset, model=model, width=width)))
        if any("corruption_correct" in p for preds in by_label.values() for p in preds):
            figures.append((file_stem(f"corruptions_{dataset}_{model}"),
                            corruption_curves(by_label, by_method, dataset=dataset, model=model, width=width)))
    return figures
