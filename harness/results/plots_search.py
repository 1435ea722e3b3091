"""The search figure of a tuned sweep (`search:`, docs/tuning.md): per method, data set and model, each search
trial's validation top-1 against each tuned parameter, trials the scheduler stopped early drawn apart from
those that ran to the end. Reads the groups of `search.json` (harness/sweep/search.py); nothing from the test
split, as the search itself."""
from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.results.aggregate import fmt_value, method_label
from harness.results.plots_style import (
    SUPTITLE_PT,
    caption_text,
    current_width,
    legend_below,
    new_figure,
    plain_log_axis,
    styled,
    y_range,
)

PANEL_IN = 1.55  # the least width of one parameter's panel


def tuned_parameters(group: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """The parameters a group's trials varied: the sweep's space for its method, in the file's order, else
    every parameter its trials name."""
    declared = list((space or {}).get(group["method"], {}))
    named = list(dict.fromkeys(p for r in group["rows"] for p in (r.get("params") or {})))
    return [p for p in declared if p in named] + [p for p in named if p not in declared]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


@styled
def search_figure(group: dict[str, Any], *, space: dict[str, Any] | None = None, color: str = "#1f77b4",
                  scheduler: str = "asha") -> Figure:
    """One panel per tuned parameter (`tuned_parameters`), side by side as the width allows, sharing the y
    axis: each search trial of `group` (one entry of search.json's `groups`) at its parameter value and its
    validation top-1 (%) at the epoch `train.select` picks; a trial the scheduler stopped early (`stopped`)
    at the best epoch it reached, as an open marker; one that ran to the end as a filled one; the selected
    trial ringed. Trials without a validation number (failed, pending) are not drawn and the caption counts
    them. An x axis is logarithmic where the space is `loguniform`; a `choice` of non-numbers is one tick
    per choice. Read back (tests): the markers carry gid `finished:<key>`, `stopped:<key>`, the ring
    `selected:<key>`."""
    space = space or {}
    rows = group["rows"]
    params = tuned_parameters(group, space) or ["(none)"]
    drawn = [r for r in rows if _number(r.get("val")) is not None]
    n = len(params)
    ncols = max(1, min(n, int(current_width() // PANEL_IN)))
    nrows = -(-n // ncols)
    fig, axes = new_figure(0.5 + 1.35 * nrows, nrows=nrows, ncols=ncols, sharey=True)
    for ax in axes[n:]:  # the grid's unused places
        fig.delaxes(ax)
    axes = axes[:n]
    ys = [100.0 * float(r["val"]) for r in drawn]
    kinds = {p: next(iter(space.get(group["method"], {}).get(p) or {"": None}), "") for p in params}
    for i, (ax, p) in enumerate(zip(axes, params, strict=False)):
        values = [(r.get("params") or {}).get(p) for r in drawn]
        numeric = all(_number(v) is not None for v in values)
        cats = list(dict.fromkeys(fmt_value(v) for v in values))
        for r, v in zip(drawn, values, strict=True):
            x = float(v) if numeric else float(cats.index(fmt_value(v)))
            y = 100.0 * float(r["val"])
            stopped = r.get("status") == "stopped"
            ax.plot([x], [y], "o", markersize=4, color=color, markerfacecolor="white" if stopped else color,
                    markeredgewidth=0.9, linestyle="none", gid=f"{'stopped' if stopped else 'finished'}:{r['key']}",
                    zorder=3 if stopped else 4)
            if r.get("selected"):
                ax.plot([x], [y], "o", markersize=8.5, markerfacecolor="none", markeredgecolor="black",
                        markeredgewidth=0.8, linestyle="none", gid=f"selected:{r['key']}", zorder=5)
        if numeric and values:
            positive = all(float(v) > 0 for v in values)
            if positive and (kinds[p] == "loguniform" or max(map(float, values)) / min(map(float, values)) >= 50):
                ax.set_xscale("log")
                plain_log_axis(ax.xaxis)
        elif cats:
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        if numeric:
            ax.margins(x=0.1)  # a ringed point at the edge of the range stays whole
        ax.set_xlabel(p + (" (log scale)" if ax.get_xscale() == "log" else ""))
        if i % ncols == 0:
            ax.set_ylabel("val top-1 (%)")
        ax.grid(linewidth=0.3, alpha=0.5)
    axes[0].set_ylim(*y_range(ys, span=5.0, percent=True))
    where = f"{group['dataset']} / {group['model']}"
    title = f"{method_label(group['method'])}: search on {where}"
    fig.suptitle(title, fontsize=SUPTITLE_PT)
    status = [str(r.get("status")) for r in rows]
    n_done, n_stopped = status.count("finished"), status.count("stopped")
    handles: dict[str, object] = {
        f"ran to the end ({n_done})": Line2D([], [], marker="o", color=color, linestyle="none", markersize=4)}
    if n_stopped:
        handles[f"stopped early by {scheduler.upper()} ({n_stopped})"] = Line2D(
            [], [], marker="o", color=color, markerfacecolor="white", linestyle="none", markersize=4)
    if any(r.get("selected") for r in drawn):
        handles["selected (then run with every seed)"] = Line2D(
            [], [], marker="o", markersize=8.5, markerfacecolor="none", markeredgecolor="black", linestyle="none")
    notes = [f"each of the {len(rows)} search trials (budget {group.get('budget', len(rows))}) at its "
             "parameter values and its validation top-1 at the epoch train.select picks, on the held-out split"]
    if n_stopped:
        trained = [int(r.get("epochs_trained", 0)) for r in rows if r.get("status") == "stopped"]
        notes.append(f"open: stopped early by the scheduler after {min(trained)}-{max(trained)} of "
                     f"{group.get('epochs', rows[0].get('epochs'))} epochs, at the best epoch it reached "
                     f"(a lower number partly because it trained less)")
    if n > 1:
        notes.append("each panel shows one parameter; the others vary between the points")
    missing = len(rows) - len(drawn)
    if missing:
        notes.append(f"{missing} trial(s) without a validation number (failed or pending) not drawn")
    legend_below(fig, list(handles.values()), list(handles), caption=caption_text(title, notes))
    return fig


def search_figures(record: dict[str, Any], colors: dict[str, str], *, width: float) -> list[tuple[str, Figure]]:
    """(file stem `search_<method>_<dataset>_<model>`, figure) of every group of a search record (search.json)
    that tuned something; the caller makes the stem a safe file name."""
    out = []
    for g in record.get("groups", []):
        if not tuned_parameters(g, record.get("space") or {}) or not g.get("rows"):
            continue  # CE: nothing to tune, one trial
        fig = search_figure(g, space=record.get("space") or {}, color=colors.get(str(g["method"]), "#1f77b4"),
                            scheduler=str(record.get("scheduler") or "asha"), width=width)
        out.append((f"search_{g['method']}_{g['dataset']}_{g['model']}", fig))
    return out


__all__ = ["search_figure", "search_figures", "tuned_parameters"]
