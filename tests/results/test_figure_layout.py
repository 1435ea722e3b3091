"""Every kind of figure, drawn with a long method label and many settings, at one column (3.3 in) and at two
(6.9 in): every visible text lies inside the figure (matplotlib's own renderer measures it), the written PNG
has no ink on its outermost pixels, the PDF is written beside it, and no caption is drawn in the image.

Synthetic aggregated frames only (no training): seconds, not minutes."""
from __future__ import annotations

import functools
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from helpers import key_of
from matplotlib.image import imread
from matplotlib.text import Text

from harness.config import catalog
from harness.results.aggregate import aggregate, best_per_method
from harness.results.plots import (
    COLUMN_WIDTH_IN,
    PAGE_WIDTH_IN,
    STYLE,
    ablation_curve,
    accuracy_vs_cost,
    caption_of,
    critical_difference_diagram,
    curve_stats,
    learning_curves,
    method_colors,
    save_figure,
)
from harness.results.plots_differences import differences_figure
from harness.results.plots_reliability import corruption_curves, reliability_diagrams, risk_coverage_curves
from harness.results.plots_search import search_figure
from harness.results.ranks import across_datasets

LONG = "Cross-entropy with a deliberately long display label (control)"
LAMS = (0.01, 0.1, 1.0)
ALPHAS = (0.5, 1.0, 1.5, 2.0)
SEEDS = (0, 1)


@pytest.fixture(autouse=True)
def long_label(monkeypatch):
    """The user's method `mine` shows as LONG, as a results folder that recorded its label does."""
    monkeypatch.setitem(catalog._RECORDED, "mine", LONG)


def _trial(method, seed, top1, *, dataset="cifar100", epoch=3, **params):
    return {"key": key_of(method, dataset, seed, params), "status": "finished", "error": "", "method": method,
            "dataset": dataset, "model": "resnet18", "seed": seed, "epochs": 3, "protocol": "clean",
            "select": "top1", "p.alpha": params.get("alpha", math.nan), "p.lam": params.get("lam", math.nan),
            "p.beta": params.get("beta", math.nan), "selected_top1": top1, "last_top1": top1,
            "val_selected_top1": top1, "val_selected_nll": 1.0, "selected_epoch": epoch, "best_top1": top1,
            "step_time_s": 0.1 + 0.01 * seed + (0.02 if method == "zipf" else 0.0), "peak_mem_bytes": 1e9,
            "state_bytes": 57480 if method == "pskd" else 0}


def trials() -> pd.DataFrame:
    """Two data sets; CE, LS, PS-KD, the long-labelled user method (6 settings of beta) and Zipf on a grid of
    3 lam x 4 alpha, 2 seeds each."""
    rng = np.random.default_rng(0)
    rows = []
    for ds, base in (("cifar100", 0.70), ("tiny_imagenet_with_a_long_name", 0.50)):
        for s in SEEDS:
            rows.append(_trial("ce", s, base + 0.002 * s, dataset=ds))
            rows.append(_trial("ls", s, base + 0.01 + 0.002 * s, dataset=ds))
            rows.append(_trial("pskd", s, base - 0.03 + 0.002 * s, dataset=ds))
            for b in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0):
                rows.append(_trial("mine", s, base + 0.004 * b + rng.normal(0, 0.003), dataset=ds, beta=b))
            for lam in LAMS:
                for a in ALPHAS:
                    rows.append(_trial("zipf", s, base + 0.01 * a * lam + 0.002 * s + rng.normal(0, 0.002),
                                       dataset=ds, alpha=a, lam=lam))
    return pd.DataFrame(rows)


def curves(groups: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, g in groups.iterrows():
        for s in SEEDS:
            for e in range(1, 4):
                rows.append({"method": g["method"], "dataset": g["dataset"], "model": "resnet18", "epochs": 3,
                             "protocol": "clean", "select": "top1", "key": f"{g['label']}{s}", "seed": s,
                             "epoch": e, "label": g["label"], "val_top1": 0.2 * e + 0.01 * s,
                             "train_loss": 2.0 / e, "train_ce": 1.5 / e + 0.01 * s})
    return pd.DataFrame(rows)


def predictions(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, k = 400, 10
    targets = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.8, targets, rng.integers(0, k, n))
    msp = rng.uniform(0.3, 1.0, n).astype(np.float32)
    return {"test_targets": targets, "test_pred": pred, "test_msp": msp,
            "test_logsumexp": np.zeros(n, np.float32), "test_target_logits": np.zeros(n, np.float32),
            "corruption_correct": rng.random((3, 5, 100)) < 0.6, "corruption_names": np.array(["a", "b", "c"])}


def search_group() -> dict:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        stopped = i % 3 != 0
        rows.append({"key": f"k{i}", "status": "stopped" if stopped else "finished", "method": "mine",
                     "dataset": "digits", "model": "tiny_cnn", "seed": 0, "epochs": 10,
                     "epochs_trained": 2 if stopped else 10, "val": float(rng.uniform(0.85, 0.99)),
                     "val_nll": 0.1, "params": {"beta": float(10 ** rng.uniform(-2, 0)),
                                                "temperature_of_the_soft_targets": float(rng.uniform(1, 40)),
                                                "form": ["uniform", "zipf"][i % 2]},
                     "selected": i == 3})
    rows.append({**rows[0], "key": "failed", "status": "failed", "val": None})
    return {"method": "mine", "dataset": "digits", "model": "tiny_cnn", "budget": 13, "epochs": 10, "rows": rows}


SPACE = {"mine": {"beta": {"loguniform": [0.01, 1.0]}, "temperature_of_the_soft_targets": {"uniform": [1, 40]},
                  "form": {"choice": ["uniform", "zipf"]}}}


@functools.cache
def groups() -> pd.DataFrame:
    return aggregate(trials(), rope=0.5)


@functools.cache  # built once per width; the tests only read them
def figures(width: float) -> dict:
    g = groups()
    colors = method_colors(g["method"])
    cell = g[g["dataset"] == "cifar100"]
    labels = [lab for lab in cell["label"] if not lab.startswith("Zipf") or "lam=0.1," in lab][:7]
    stats = curve_stats(curves(cell[cell["label"].isin(labels)]))
    preds = {lab: [predictions(i), predictions(i + 10)] for i, lab in enumerate(["CE", "LS", LONG, "PS-KD"])}
    by_label = {"CE": colors["ce"], "LS": colors["ls"], LONG: colors["mine"], "PS-KD": colors["pskd"]}
    best = best_per_method(g, dataset="cifar100", model="resnet18")
    scores = pd.DataFrame({name: np.random.default_rng(i).random(6) for i, name in
                           enumerate(["CE", "LS", LONG, "Zipf's LS", "PS-KD", "TF-KD", "OLS"])},
                          index=[f"d{i}" for i in range(6)])
    w = {"width": width}
    return {
        "ablation_grid": ablation_curve(g, method="zipf", param="p.alpha", **w),
        "ablation_long": ablation_curve(g, method="mine", param="p.beta", **w),
        "learning": learning_curves(stats, dataset="cifar100", model="resnet18", colors=colors,
                                    selected=cell[cell["label"].isin(labels)], **w),
        "learning_own_objective": learning_curves(stats.drop(columns=[c for c in stats.columns if "train_ce" in c]),
                                                  dataset="cifar100", model="resnet18", labels=labels[:4],
                                                  colors=colors, **w),
        "differences": differences_figure(g, dataset="cifar100", model="resnet18", metric="selected_top1",
                                          colors=colors, **w),
        "cost": accuracy_vs_cost(best, dataset="cifar100", model="resnet18", colors=colors, **w),
        "search": search_figure(search_group(), space=SPACE, color=colors["mine"], **w),
        "critical_difference": critical_difference_diagram(across_datasets(scores, higher_is_better=True),
                                                           title="selected top-1", **w),
        "reliability": reliability_diagrams(preds, by_label, dataset="cifar100", model="resnet18", **w),
        "risk_coverage": risk_coverage_curves(preds, by_label, dataset="cifar100", model="resnet18", **w),
        "corruptions": corruption_curves(preds, by_label, dataset="cifar100", model="resnet18", **w),
    }


def texts_outside(fig) -> list[str]:
    """Every visible, non-empty text whose drawn extent leaves the figure (half a pixel of slack)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    # a tick outside the axis's view keeps a label that is never drawn: only the drawn ticks' labels count
    ticks, drawn = set(), set()
    for ax in fig.axes:
        for axis in ax._axis_map.values():
            for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks()):
                ticks |= {id(tick.label1), id(tick.label2)}
            if ax.axison and axis.get_visible():
                drawn |= {id(label) for tick in axis._update_ticks() for label in (tick.label1, tick.label2)}
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or (id(text) in ticks and id(text) not in drawn):
            continue
        bb = text.get_window_extent(renderer)
        if bb.x0 < box.x0 - 0.5 or bb.y0 < box.y0 - 0.5 or bb.x1 > box.x1 + 0.5 or bb.y1 > box.y1 + 0.5:
            out.append(f"{text.get_text()!r} at {bb.bounds}")
    return out


def border_ink(png) -> int:
    """Pixels of the outermost rows and columns that are not the white background."""
    img = imread(png)[..., :3]
    edges = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return int((edges < 1.0).any(axis=1).sum())


@pytest.mark.parametrize("width", [COLUMN_WIDTH_IN, PAGE_WIDTH_IN])
def test_every_figure_keeps_its_texts_inside_at_the_journal_widths(width, tmp_path):
    made = figures(width)
    for name, fig in made.items():
        assert fig.get_figwidth() == pytest.approx(width), name
        assert texts_outside(fig) == [], name
        # the caption is text beside the figure, not a legend title or any other drawn text
        caption = caption_of(fig)
        assert caption and caption.endswith("."), name
        drawn = " ".join(t.get_text() for t in fig.findobj(Text))
        assert caption[-40:-1] not in drawn, name  # its notes (it opens with the drawn title)
        assert all(not legend.get_title().get_text() for legend in fig.legends), name
        if width == COLUMN_WIDTH_IN:  # the files as tfbench writes them (300 dpi PNG, PDF, caption)
            paths = save_figure(fig, tmp_path / name, caption=caption)
            assert [p.suffix for p in paths] == [".png", ".pdf", ".txt"], name
            assert paths[1].read_bytes()[:4] == b"%PDF" and paths[2].read_text() == caption + "\n"
            png = paths[0]
        else:  # the same check on a 100 dpi raster: a third of the time
            png = tmp_path / f"{name}.png"
            with matplotlib.rc_context(STYLE):
                fig.savefig(png, dpi=100)
        assert border_ink(png) == 0, name


def test_long_labels_are_wrapped_not_lost():
    fig = figures(COLUMN_WIDTH_IN)["learning"]
    (legend,) = fig.legends
    shown = [" ".join(t.get_text().split()) for t in legend.get_texts()]
    assert any(s.startswith(LONG) and s.endswith("(beta=0.1; n = 2)") for s in shown), shown  # every entry there, CE and LS included
    assert any(s.startswith("CE (") for s in shown) and any(s.startswith("LS (") for s in shown)
    strip = fig.axes[1]
    rows = [" ".join(t.get_text().split()) for t in strip.get_yticklabels()]
    # the selected-epoch strip names its rows: short ones whole, a long one by its start and its parameters
    assert rows[:3] == ["CE", "LS", "PS-KD"]
    assert rows[3].startswith("Cross-entropy with a\u2026") and rows[3].endswith("(beta=0.1)")


def test_settings_of_one_method_get_distinct_colours_and_ce_stays_grey():
    fig = figures(COLUMN_WIDTH_IN)["ablation_grid"]
    ax = fig.axes[0]
    line_colors = [matplotlib.colors.to_hex(c.lines[0].get_color()) for c in ax.containers]
    assert len(ax.containers) == len(LAMS) and len(set(line_colors)) == len(LAMS)
    viridis = matplotlib.colormaps["viridis"]
    assert line_colors == [matplotlib.colors.to_hex(viridis(x)) for x in np.linspace(0.0, 0.82, len(LAMS))]
    ref = next(line for line in ax.lines if str(line.get_gid()).startswith("reference:"))
    assert ref.get_linestyle() == "-" and matplotlib.colors.to_hex(ref.get_color()) == catalog.color("ce")
    assert all(c.lines[0].get_linestyle() == "-" for c in ax.containers)
    assert len({c.lines[0].get_marker() for c in ax.containers}) == len(LAMS)


def test_search_figure_marks_stopped_trials_apart():
    fig = search_figure(search_group(), space=SPACE, color="#123456")
    gids = [str(line.get_gid()) for ax in fig.axes for line in ax.lines]
    rows = search_group()["rows"]
    stopped = [r["key"] for r in rows if r["status"] == "stopped"]
    finished = [r["key"] for r in rows if r["status"] == "finished"]
    assert sorted(g.split(":")[1] for g in gids if g.startswith("stopped:")) == sorted(stopped * 3)  # 3 panels
    assert sorted(g.split(":")[1] for g in gids if g.startswith("finished:")) == sorted(finished * 3)
    beta_ax = next(ax for ax in fig.axes if ax.get_xlabel().startswith("beta"))
    assert beta_ax.get_xscale() == "log"  # loguniform
    line = next(ln for ln in beta_ax.lines if ln.get_gid() == "stopped:k1")
    assert line.get_markerfacecolor() == "white" and line.get_xdata()[0] == pytest.approx(rows[1]["params"]["beta"])
    assert line.get_ydata()[0] == pytest.approx(100 * rows[1]["val"])
    assert [ln.get_gid() for ln in beta_ax.lines if str(ln.get_gid()).startswith("selected:")] == ["selected:k3"]
    caption = caption_of(fig)
    assert "1 trial(s) without a validation number" in caption and "after 2-2 of 10 epochs" in caption


def test_a_usual_figure_is_not_taller_than_a_column_needs():
    """CE, LS and Zipf's LS with short labels: the learning curves and the differences fit in about a third of
    a page's height at one column (they were 5 in and more with the caption drawn in)."""
    g = groups()
    cell = g[(g["dataset"] == "cifar100") & g["label"].isin(["CE", "LS", "Zipf's LS (alpha=1.0, lam=0.1)"])]
    fig = learning_curves(curve_stats(curves(cell)), dataset="cifar100", model="resnet18", selected=cell)
    assert fig.get_figheight() < 3.8
    fig = differences_figure(cell, dataset="cifar100", model="resnet18", metric="selected_top1",
                             colors=method_colors(cell["method"]))
    assert fig.get_figheight() < 2.0
