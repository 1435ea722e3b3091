"""Figures of loss landscapes: side-by-side contours (the seed's Fig. 3), overlaid 1-D curves, 3-D surfaces.

Every function takes arrays (a `harness.analysis.landscape.Grid`, or a dict with xs, ys, loss) and returns a matplotlib
Figure; writing files is the caller's job. Panels of one figure share contour levels, colour norm and one
colorbar, so equal colours mean equal loss in every panel: the comparison the figure exists for.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.results.plots import PAGE_WIDTH_IN, method_colors, styled
from harness.results.plots_style import plain_log_axis, wrap_text

CMAP = "viridis"


def new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure (no global state) on an Agg canvas, like harness.results.plots."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _field(grid: Any, name: str) -> np.ndarray:
    return np.asarray(grid[name] if isinstance(grid, Mapping) else getattr(grid, name), dtype=np.float64)


def shared_levels(losses: Sequence[np.ndarray], *, n_levels: int = 20, scale: str = "log",
                  vmax: float | None = None) -> np.ndarray:
    """Contour levels covering the pooled finite losses of every panel.

    `scale="log"` spaces them geometrically: the region near each minimum (small losses) gets as many
    contours as the steep walls, which is where flat and sharp minima differ. `vmax` caps the top level
    (values above it are drawn in the top colour).
    """
    pooled = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in losses])
    if pooled.size == 0:
        raise ValueError("no finite loss values to draw")
    lo, hi = float(pooled.min()), float(pooled.max() if vmax is None else min(vmax, pooled.max()))
    if scale == "log":
        lo = max(lo, 1e-4)
        hi = max(hi, lo * 1.01)
        return np.geomspace(lo, hi, n_levels)
    if scale == "linear":
        hi = max(hi, lo + 1e-6)
        return np.linspace(lo, hi, n_levels)
    raise ValueError(f"scale must be 'log' or 'linear', got {scale!r}")


def _norm(levels: np.ndarray, scale: str) -> mcolors.Normalize:
    if scale == "log":
        return mcolors.LogNorm(vmin=levels[0], vmax=levels[-1])
    return mcolors.Normalize(vmin=levels[0], vmax=levels[-1])


@styled
def contour_panels(grids: Mapping[str, Any], *, n_levels: int = 20, scale: str = "log", vmax: float | None = None,
                   title: str | None = None, per_row: int = 4) -> Figure:
    """One filled-contour panel of train loss per entry of `grids` ({label: grid}), `per_row` to a row, the
    figure two paper columns wide (`PAGE_WIDTH_IN`), each panel titled with its label (wrapped to fit).

    All panels use the same levels and colour norm and share one colorbar. The trained point (0, 0) is
    marked; axes are in filter-normalised units (see `harness.analysis.landscape`).
    """
    if not grids:
        raise ValueError("contour_panels needs at least one grid")
    levels = shared_levels([_field(g, "loss") for g in grids.values()], n_levels=n_levels, scale=scale, vmax=vmax)
    norm = _norm(levels, scale)
    n = len(grids)
    ncols = min(n, per_row)
    nrows = -(-n // ncols)
    panel = (PAGE_WIDTH_IN - 1.1) / ncols  # room for the y label and the colorbar
    fig = new_figure(PAGE_WIDTH_IN, nrows * (panel + 0.55) + (0.25 if title else 0.0))
    grid_axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    axes = list(grid_axes.ravel())
    for ax in axes[n:]:  # the grid's unused places
        fig.delaxes(ax)
    axes = axes[:n]
    filled = None
    for ax, (label, grid) in zip(axes, grids.items(), strict=True):
        xs, ys, loss = _field(grid, "xs"), _field(grid, "ys"), _field(grid, "loss")
        filled = ax.contourf(xs, ys, loss, levels=levels, norm=norm, cmap=CMAP, extend="both")
        ax.contour(xs, ys, loss, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
        ax.plot([0.0], [0.0], marker="+", color="w", markersize=8, mew=1.5)
        ax.set_title(wrap_text(label, int(0.9 * panel * 72 / (0.52 * 8))))  # 8 pt characters, 90% of a panel
        ax.set_aspect("equal")
        ax.set_xlabel("direction 1")
    for row in grid_axes:
        row[0].set_ylabel("direction 2")
    cbar = fig.colorbar(filled, ax=axes, shrink=0.9)
    cbar.set_label("train loss (cross-entropy)")
    if scale == "log":  # ticks at 1-2-5 values, not at the (irrational) level boundaries
        nice = [m * 10.0 ** e for e in range(-6, 7) for m in (1, 2, 5)]
        ticks = [t for t in nice if levels[0] <= t <= levels[-1]]
        if len(ticks) >= 2:
            cbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
            cbar.ax.minorticks_off()
    if title:
        fig.suptitle(title)
    return fig


@styled
def curves_1d(curves: Mapping[str, Any], *, colors: Mapping[str, Any] | None = None,
              title: str | None = None) -> Figure:
    """Train loss (log scale) and train accuracy along one direction, one line per entry ({label: curve}).

    `colors` maps labels to colours (the CLI passes each method's colour of harness.results.plots.method_colors).
    """
    if not curves:
        raise ValueError("curves_1d needs at least one curve")
    colors = dict(colors) if colors is not None else method_colors(curves)
    fig = new_figure(PAGE_WIDTH_IN, 2.6)  # two paper columns
    ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)
    for label, c in curves.items():
        a = _field(c, "alphas")
        color = colors[label]
        ax_loss.plot(a, _field(c, "loss"), label=label, color=color)
        ax_acc.plot(a, 100.0 * _field(c, "acc"), label=label, color=color)
    ax_loss.set_yscale("log")
    plain_log_axis(ax_loss.yaxis)  # STYLE draws text as written: matplotlib's log labels are mathtext
    ax_loss.set_ylabel("train loss (cross-entropy)")
    ax_acc.set_ylabel("train accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("step along direction 1 (filter-normalised)")
        ax.axvline(0.0, color="0.7", linewidth=0.8, zorder=0)
        ax.grid(alpha=0.3)
    ax_loss.legend()
    if title:
        fig.suptitle(title)
    return fig


@styled
def surface_3d(grids: Mapping[str, Any], *, scale: str = "log", vmax: float | None = None,
               title: str | None = None, per_row: int = 3) -> Figure:
    """3-D loss surfaces, `per_row` to a row, two paper columns wide, with one z range and colour norm (z is
    log10 loss when scale='log'); each box drawn smaller than its panel so that its axis labels stay inside."""
    if not grids:
        raise ValueError("surface_3d needs at least one grid")
    levels = shared_levels([_field(g, "loss") for g in grids.values()], n_levels=2, scale=scale, vmax=vmax)
    lo, hi = float(levels[0]), float(levels[-1])

    def z_of(v: np.ndarray) -> np.ndarray:
        v = np.clip(v, lo, hi)
        return np.log10(v) if scale == "log" else v

    zlim = (float(z_of(np.array(lo))), float(z_of(np.array(hi))))
    norm = mcolors.Normalize(vmin=zlim[0], vmax=zlim[1])
    n = len(grids)
    ncols = min(n, per_row)
    nrows = -(-n // ncols)
    panel = (PAGE_WIDTH_IN - 0.9) / ncols
    fig = new_figure(PAGE_WIDTH_IN, nrows * (panel + 0.3) + (0.25 if title else 0.0))
    surf = None
    for k, (label, grid) in enumerate(grids.items()):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        ax.set_box_aspect(None, zoom=0.78)  # matplotlib draws a 3-D axis's labels outside its box
        X, Y = np.meshgrid(_field(grid, "xs"), _field(grid, "ys"))          # (ny, nx) each
        surf = ax.plot_surface(X, Y, z_of(_field(grid, "loss")), cmap=CMAP, norm=norm, linewidth=0,
                               antialiased=True)
        ax.set_zlim(*zlim)
        ax.set_title(wrap_text(label, int(0.9 * panel * 72 / (0.52 * 8))))  # 8 pt characters, 90% of a panel
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # a 3-D axis's default ticks run into each other
            axis.set_major_locator(MaxNLocator(3))
        ax.set_xlabel("dir. 1")
        ax.set_ylabel("dir. 2")
        ax.set_zlabel("log10 loss" if scale == "log" else "loss")
    fig.colorbar(surf, ax=fig.axes, shrink=0.7, label="log10 train loss" if scale == "log" else "train loss")
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["contour_panels", "curves_1d", "shared_levels", "surface_3d"]
