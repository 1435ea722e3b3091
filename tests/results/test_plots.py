"""Figures: axes, labels, series, error bars and colours, read back from the Figure objects."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from harness.results.aggregate import aggregate, curve_stats
from harness.results.plots import (
    BUILTIN_COLORS,
    ablation_curve,
    accuracy_vs_cost,
    learning_curves,
    method_colors,
    write_plots,
)


def trial(method, seed, top1, *, dataset="cifar100", step=0.1, **params):
    return {"key": f"{method}-{dataset}-{seed}-{sorted(params.items())}", "status": "finished", "error": "",
            "method": method, "dataset": dataset, "model": "resnet18", "seed": seed, "epochs": 3,
            "p.alpha": params.get("alpha", math.nan), "p.lam": params.get("lam", math.nan),
            "best_top1": top1, "last_top1": top1, "best_top5": 0.9, "last_top5": 0.9, "last_nll": 1.0,
            "last_ece": 0.05, "train_val_gap": 0.2, "step_time_s": step, "peak_mem_bytes": 1e9, "state_bytes": 0}


def ablation_trials() -> pd.DataFrame:
    rows = []
    for ds, base in (("cifar100", 0.70), ("tiny", 0.50)):
        for a, bump in ((0.5, 0.01), (1.0, 0.03), (2.0, 0.02)):
            rows += [trial("zipf", s, base + bump + d, dataset=ds, alpha=a, lam=0.1, step=0.11)
                     for s, d in enumerate([-0.01, 0.01])]
        rows += [trial("ce", s, base + d, dataset=ds) for s, d in enumerate([-0.02, 0.0, 0.02])]
    rows.append(trial("zipf", 0, 0.80, alpha=4.0, lam=0.1))  # one seed: no error bar, not a zero one
    return pd.DataFrame(rows)


def _segments(container: ErrorbarContainer) -> list[np.ndarray]:
    (bars,) = container.lines[2]
    return bars.get_segments()


def test_method_colors_fixed_and_deterministic():
    a = method_colors(["zipf", "mine", "ce", "another"])
    b = method_colors(["another", "ce", "mine", "zipf"])
    assert a == b
    assert a["zipf"] == BUILTIN_COLORS["zipf"] and a["ce"] == BUILTIN_COLORS["ce"]
    assert a["another"] != a["mine"] and not {a["another"], a["mine"]} & set(BUILTIN_COLORS.values())
    assert len(set(BUILTIN_COLORS.values())) == len(BUILTIN_COLORS)


def test_ablation_curve_axes_series_and_error_bars():
    g = aggregate(ablation_trials())
    fig = ablation_curve(g, method="zipf", param="p.alpha")
    assert len(fig.axes) == 2  # one panel per dataset
    assert fig.get_suptitle() == "Zipf's LS: ablation of alpha"
    assert [ax.get_title() for ax in fig.axes] == ["cifar100", "tiny"]
    assert all(ax.get_ylabel() == "selected top-1 (%)" for ax in fig.axes)
    assert fig.axes[-1].get_xlabel() == "alpha"
    (c,) = fig.axes[0].containers
    assert isinstance(c, ErrorbarContainer) and c.get_label() == "cifar100"
    np.testing.assert_allclose(c.lines[0].get_xdata(), [0.5, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(c.lines[0].get_ydata(), [71.0, 73.0, 72.0, 80.0])
    seg = _segments(c)
    half = 100 * 0.01 * math.sqrt(2)  # sample std of (x - 0.01, x + 0.01)
    for s, m in zip(seg[:3], [71.0, 73.0, 72.0], strict=True):
        np.testing.assert_allclose(s[:, 1], [m - half, m + half])
    assert len(seg[3]) == 0  # n = 1: std unavailable, no bar drawn
    (c2,) = fig.axes[1].containers
    np.testing.assert_allclose(c2.lines[0].get_ydata(), [51.0, 53.0, 52.0])


def curves() -> pd.DataFrame:
    rows = []
    val = {"ce": [[0.2, 0.4, 0.5], [0.4, 0.6, 0.7]], "zipf": [[0.3, 0.5, 0.6], [0.3, 0.7, 0.8]]}
    loss = {"ce": [[3.0, 2.0, 1.0], [2.0, 1.0, 0.5]], "zipf": [[3.0, 2.0, 1.5], [3.0, 1.0, 0.5]]}
    for m in ("ce", "zipf"):
        for s in range(2):
            for e in range(3):
                rows.append({"method": m, "dataset": "cifar100", "model": "resnet18", "epochs": 3,
                             "key": f"{m}{s}", "seed": s, "epoch": e + 1,
                             "val_top1": val[m][s][e], "train_loss": loss[m][s][e]})
    return pd.DataFrame(rows)


def test_learning_curves_lines_bands_and_legend():
    fig = learning_curves(curve_stats(curves()), dataset="cifar100", model="resnet18")
    ax_acc, ax_loss = fig.axes
    assert (ax_acc.get_ylabel(), ax_loss.get_ylabel(), ax_loss.get_xlabel()) == ("val top-1 (%)", "train loss",
                                                                                   "epoch")
    assert [ln.get_label() for ln in ax_acc.lines] == ["CE", "Zipf's LS"]
    np.testing.assert_allclose(ax_acc.lines[0].get_ydata(), [30.0, 50.0, 60.0])
    np.testing.assert_allclose(ax_loss.lines[1].get_ydata(), [3.0, 1.5, 1.0])
    assert to_hex(ax_acc.lines[1].get_color()) == BUILTIN_COLORS["zipf"]
    bands = [c for c in ax_acc.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    # CE val top-1 at epoch 1: mean 30, sample std of (20, 40) = 10*sqrt(2)
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(min(30 - 10 * math.sqrt(2), 50 - 10 * math.sqrt(2), 60 - 10 * math.sqrt(2)))
    assert ys.max() == pytest.approx(60 + 10 * math.sqrt(2))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["CE", "Zipf's LS"]
    only = learning_curves(curve_stats(curves()), dataset="cifar100", model="resnet18", labels=["CE"])
    assert [ln.get_label() for ln in only.axes[0].lines] == ["CE"]


def test_accuracy_vs_cost_points_and_error_bars():
    g = aggregate(ablation_trials())
    g = g[g["p.alpha"].isna() | (g["p.alpha"] == 1.0)]  # one point per method
    colors = method_colors(g["method"])
    fig = accuracy_vs_cost(g, dataset="cifar100", model="resnet18", colors=colors)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "train step time (x CE)" and ax.get_ylabel() == "top-1 at the selected epoch (%)"
    assert len(ax.containers) == 2
    ce, zipf = ax.containers
    assert ce.has_xerr and ce.has_yerr
    assert (ce.lines[0].get_xdata()[0], ce.lines[0].get_ydata()[0]) == (pytest.approx(1.0), pytest.approx(70.0))
    assert (zipf.lines[0].get_xdata()[0], zipf.lines[0].get_ydata()[0]) == (pytest.approx(1.1),
                                                                            pytest.approx(73.0))
    ce_bars = ce.lines[2]  # (x bars, y bars): y bar is +- std of (68, 70, 72) = 2
    np.testing.assert_allclose(ce_bars[1].get_segments()[0][:, 1], [68.0, 72.0])
    assert to_hex(zipf.lines[0].get_color()) == colors["zipf"]
    (legend,) = fig.legends  # labels name the swept parameter of the whole sweep
    assert [t.get_text() for t in legend.get_texts()] == ["CE", "Zipf's LS (alpha=1.0)"]


def test_write_plots_writes_png_and_pdf(tmp_path):
    df = ablation_trials()
    df.to_csv(tmp_path / "trials.csv", index=False)
    for _, t in df.iterrows():
        folder = tmp_path / "trials" / t["key"]
        folder.mkdir(parents=True)
        lines = [json.dumps({"epoch": e, "train_loss": 3.0 / e, "val_top1": t["best_top1"] * e / 3})
                 for e in (1, 2, 3)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    paths = write_plots(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for stem in ("ablation_zipf_alpha", "learning_cifar100_resnet18",
                                                        "learning_tiny_resnet18", "cost_cifar100_resnet18",
                                                        "cost_tiny_resnet18", "critical_difference")
                            for ext in ("png", "pdf"))  # two data sets: ranked across them too
    for p in paths:
        assert p.parent == tmp_path / "plots"
        assert p.read_bytes()[:4] == (b"\x89PNG" if p.suffix == ".png" else b"%PDF")
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]  # no temp files left
