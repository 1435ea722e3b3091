"""Learning curves: what the epoch is selected on (validation top-1) and one training objective per axis.

Every method logs its loss parts per epoch as `train_<part>` in metrics.jsonl; `train_loss` is each method's
own objective (LS's smoothed loss, TF-KD's KD-weighted sum, ...), which are different functions and not
comparable on one axis. `train_ce`, the plain cross-entropy on the hard labels, is logged by every built-in,
so that is the shared loss axis; a method without it gets its own panel of its own objective.
The per-epoch records come from harness/results/curves.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.results.plots_style import (
    LINESTYLES,
    SPREAD,
    caption_text,
    label_chars,
    legend_below,
    method_colors,
    n_phrase,
    new_figure,
    plain_log_axis,
    protocol_phrase,
    short_label,
    styled,
    with_n,
)

COMMON_LOSS = "train_ce"


def _select_split(protocols: list[str]) -> tuple[str, str]:
    """(axis label, caption phrase) of the per-epoch val_* curves: under `clean` the held-out split carved
    from train, under `paper` (and legacy records) the evaluation split itself."""
    if protocols and all(p == "clean" for p in protocols):
        return "val top-1 (%)", "val: the held-out split that selects the epoch"
    return "eval-split top-1 (%)", "eval split: selects the epoch and is reported (paper protocol)"


@styled
def learning_curves(stats: pd.DataFrame, *, dataset: str, model: str, labels: list[str] | None = None,
                    colors: dict[str, str] | None = None, selected: pd.DataFrame | None = None) -> Figure:
    """Per epoch, one line per configuration label (`labels` restricts them; `stats` from `curve_stats`, or
    `aggregate.curve_stats`): the mean over seeds with a band of +-1 sample std over seeds (none for one seed).

    - Top: top-1 on the selection split (what `train.select` picks the epoch on).
    - Middle, with `selected` (aggregate rows, e.g. `best_per_method`): each configuration's selected epoch,
      one row per configuration in legend order (top to bottom), named by its label (wrapped to fit), a dot
      at the mean over its seeds
      (`selected_epoch_mean`, gid `selected:<label>`) and a bar of +-1 sample std (where n >= 2). A strip of
      its own rather than dots on the curves: on a saturated split the curves lie on one another and so
      would the dots. Its legend entries carry the finished seeds (`n`); without it, n is the curve's
      largest per-epoch count.
    - Bottom: the plain cross-entropy on the hard labels (`train_ce`), on one log axis, when every shown
      configuration logs it; otherwise one panel per configuration with its own objective (`train_loss`),
      since different objectives on one axis would read as one quantity."""
    s = stats[(stats["dataset"].astype(str) == dataset) & (stats["model"].astype(str) == model)]
    if labels is not None:
        s = s[s["label"].isin(labels)]
    colors = colors or method_colors(s["method"])
    shown = list(dict.fromkeys(s["label"]))
    common = COMMON_LOSS + "_mean" in s.columns and all(
        np.isfinite(s.loc[s["label"] == lab, COMMON_LOSS + "_mean"].astype(float)).any() for lab in shown)
    sel = selected.set_index("label") if selected is not None and len(selected) else None
    n_loss = 1 if common else max(len(shown), 1)
    # rows named by their labels, at most two lines each (the legend has the whole label)
    row_names = [short_label(label, label_chars(0.3, 6.0)) for label in shown]
    row_lines = max([name.count("\n") + 1 for name in row_names] or [1])
    heights = [1.25] + ([0.15 + 0.1 * row_lines * len(shown)] if sel is not None else []) + [
        0.95 if common else 0.7] * n_loss
    fig, axes = new_figure(0.4 + sum(heights), nrows=len(heights), sharex=True, height_ratios=heights)
    ax_acc = axes[0]
    ax_sel = axes[1] if sel is not None else None
    loss_axes = axes[2:] if sel is not None else axes[1:]
    protocols = sorted(set(s["protocol"].astype(str))) if "protocol" in s.columns else []
    acc_label, split_phrase = _select_split(protocols)
    seen: dict[str, int] = {}
    handles, texts = [], []
    for k, label in enumerate(shown):
        g = s[s["label"] == label].sort_values("epoch")
        method = str(g["method"].iloc[0])
        style = LINESTYLES[seen.get(method, 0) % len(LINESTYLES)]
        seen[method] = seen.get(method, 0) + 1
        color = colors[method]
        epoch = g["epoch"].to_numpy(float)
        loss_col = COMMON_LOSS if common else "train_loss"
        for ax, col, scale in ((ax_acc, "val_top1", 100.0), (loss_axes[0 if common else k], loss_col, 1.0)):
            mean = g[f"{col}_mean"].to_numpy(float) * scale
            std = g[f"{col}_std"].to_numpy(float) * scale
            line, = ax.plot(epoch, mean, color=color, linestyle=style)
            # NaN std (one seed) leaves no band rather than a zero-width one.
            ax.fill_between(epoch, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
            if ax is ax_acc:
                handles.append(line)
        has_sel = sel is not None and label in sel.index
        n = int(sel.at[label, "n"]) if has_sel else int(g["val_top1_n"].max())
        texts.append(with_n(label, n_phrase([n])))
        if has_sel:
            x = float(sel.at[label, "selected_epoch_mean"])
            sd = float(sel.at[label, "selected_epoch_std"]) if int(sel.at[label, "selected_epoch_n"]) >= 2 else np.nan
            # clipped to the epochs run: a bar past the last epoch would mark epochs that do not exist
            xerr = [[x - max(x - sd, epoch.min())], [min(x + sd, epoch.max()) - x]] if np.isfinite(sd) else None
            c = ax_sel.errorbar([x], [k], xerr=xerr, fmt="o", markersize=3, color=color, capsize=1.5,
                                elinewidth=0.9, gid=f"selected:{label}")
            for bar in c.lines[2]:
                bar.set_linestyle(style)
        if not common:
            ax = loss_axes[k]
            ax.set_ylabel("train loss")
            ax.set_title(f"{label}: its own objective (train_loss)", loc="left")
    ax_acc.set_ylabel(acc_label)
    lo, hi = ax_acc.get_ylim()
    ax_acc.set_ylim(lo, min(hi, 100.5))  # a +-std band may pass 100%; the axis need not follow it
    if ax_sel is not None:
        ax_sel.set_ylim(len(shown) - 0.5, -0.5)  # the legend's order, top to bottom
        ax_sel.set_yticks(range(len(shown)), row_names, fontsize=6, linespacing=0.95)
        ax_sel.tick_params(axis="y", length=0, pad=2)
        ax_sel.spines["left"].set_visible(False)
        ax_sel.set_title("selected epoch", loc="left", fontsize=7, pad=2)
        ax_sel.grid(axis="x", linewidth=0.3, alpha=0.5)
    if common:
        ax = loss_axes[0]
        ax.set_ylabel("train CE (nats)")
        if (s[COMMON_LOSS + "_mean"].astype(float) > 0).all():
            ax.set_yscale("log")  # the plain CE of CE itself falls by decades; the smoothed methods' does not
            plain_log_axis(ax.yaxis)
            ax.set_ylabel("train CE (nats, log)")
    loss_axes[-1].set_xlabel("epoch")
    loss_axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{dataset} / {model}, {protocol_phrase(protocols)}: learning curves"
    ax_acc.set_title(title)
    banded = bool(np.isfinite(s["val_top1_std"].astype(float)).any())
    notes = [f"lines: mean, band {SPREAD}" if banded else "lines: one seed each (n = 1: no bands)", split_phrase]
    if ax_sel is not None:
        notes.append((f"selected epoch: mean, bar {SPREAD} (within the epochs run)" if banded else
                      "selected epoch") + ", one row per configuration")
    if common:
        notes.append("train CE: the cross-entropy on the hard labels that every method logs, not its objective")
    legend_below(fig, handles, texts, caption=caption_text(title, notes))
    return fig
