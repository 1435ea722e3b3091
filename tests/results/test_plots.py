"""Figures: axes, labels, series, error bars, reference lines, legends and colours, read back from the Figure
objects. Expected values are computed here from the trial tables the tests build (numpy on the raw rows),
never read back from the aggregation under test."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import key_of
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from harness.results.aggregate import aggregate, best_per_method
from harness.results.plots import (
    BUILTIN_COLORS,
    ablation_curve,
    accuracy_vs_cost,
    caption_of,
    curve_stats,
    learning_curves,
    load_curves,
    method_colors,
    write_plots,
    y_range,
)

STATE = {"ce": 0, "zipf": 0, "pskd": 57480}


def trial(method, seed, top1, *, dataset="cifar100", step=0.1, epoch=3, n_epochs=3, **params):
    return {"key": key_of(method, dataset, seed, params), "status": "finished", "error": "",
            "method": method, "dataset": dataset, "model": "resnet18", "seed": seed, "epochs": n_epochs,
            "protocol": "clean", "select": "top1",
            "p.alpha": params.get("alpha", math.nan), "p.lam": params.get("lam", math.nan),
            "selected_top1": top1, "last_top1": top1, "val_selected_top1": top1, "val_selected_nll": 1.0,
            "selected_epoch": epoch, "best_top1": top1, "best_top5": 0.9, "last_top5": 0.9, "last_nll": 1.0,
            "last_ece": 0.05, "train_val_gap": 0.2, "step_time_s": step, "peak_mem_bytes": 1e9,
            "state_bytes": STATE.get(method, 0)}


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


def _legend_texts(fig) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def _caption(fig) -> str:
    """The caption is text beside the figure (`<stem>.txt`), never drawn: the legend has no title."""
    (legend,) = fig.legends
    assert legend.get_title().get_text() == ""
    return caption_of(fig)


def _span(artist, axis: str) -> tuple[float, float]:
    """The data extent of an axhspan (axis 'y') or axvspan ('x'): a Rectangle since matplotlib 3.9, a
    Polygon before."""
    if hasattr(artist, "get_height"):
        lo = artist.get_y() if axis == "y" else artist.get_x()
        return lo, lo + (artist.get_height() if axis == "y" else artist.get_width())
    v = np.asarray(artist.get_xy())[:, 1 if axis == "y" else 0]
    return float(v.min()), float(v.max())


def _by_gid(ax, gid):
    found = [a for a in (*ax.lines, *ax.patches, *ax.collections) if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def test_method_colors_fixed_and_deterministic():
    a = method_colors(["zipf", "mine", "ce", "another"])
    b = method_colors(["another", "ce", "mine", "zipf"])
    assert a == b
    assert a["zipf"] == BUILTIN_COLORS["zipf"] == "#d62728" and a["ce"] == BUILTIN_COLORS["ce"] == "#4d4d4d"
    assert a["another"] != a["mine"] and not {a["another"], a["mine"]} & set(BUILTIN_COLORS.values())
    assert len(set(BUILTIN_COLORS.values())) == len(BUILTIN_COLORS)


# --- ablation -----------------------------------------------------------------------------------------

def test_ablation_curve_axes_series_error_bars_and_n():
    t = ablation_trials()
    fig = ablation_curve(aggregate(t), method="zipf", param="p.alpha")
    assert len(fig.axes) == 2  # one panel per dataset
    assert fig.get_suptitle() == "Zipf's LS: ablation of alpha (protocol clean)"
    assert [ax.get_title() for ax in fig.axes] == ["cifar100 / resnet18", "tiny / resnet18"]
    assert all(ax.get_ylabel() == "selected top-1 (%)" for ax in fig.axes)
    assert fig.axes[-1].get_xlabel() == "alpha"
    (c,) = fig.axes[0].containers
    assert isinstance(c, ErrorbarContainer) and c.get_label() == "Zipf's LS (cifar100 / resnet18; n = 1-2)"
    np.testing.assert_allclose(c.lines[0].get_xdata(), [0.5, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(c.lines[0].get_ydata(), [71.0, 73.0, 72.0, 80.0])
    seg = _segments(c)
    half = 100 * 0.01 * math.sqrt(2)  # sample std of (x - 0.01, x + 0.01)
    for s, m in zip(seg[:3], [71.0, 73.0, 72.0], strict=True):
        np.testing.assert_allclose(s[:, 1], [m - half, m + half])
    assert len(seg[3]) == 0  # n = 1: std unavailable, no bar drawn
    # n differs along the line: each point says its own
    assert [t.get_text() for t in fig.axes[0].texts] == ["n=2", "n=2", "n=2", "n=1"]
    (c2,) = fig.axes[1].containers
    np.testing.assert_allclose(c2.lines[0].get_ydata(), [51.0, 53.0, 52.0])
    assert c2.get_label() == "Zipf's LS (tiny / resnet18; n = 2)" and not fig.axes[1].texts
    texts = _legend_texts(fig)
    # an entry names its panel only where the line reads differently between panels: zipf's n does, CE's not
    assert "CE (n = 3)" in texts and "Zipf's LS (tiny / resnet18; n = 2)" in texts
    assert not any(t.startswith("CE on") for t in texts)
    assert "\u00b11 sample std over seeds" in _caption(fig)
    assert to_hex(c.lines[0].get_color()) == BUILTIN_COLORS["zipf"]  # the method's colour, not a palette's


def test_ablation_curve_ce_reference_line_and_band():
    t = ablation_trials()
    fig = ablation_curve(aggregate(t), method="zipf", param="p.alpha")
    for ax, ds in zip(fig.axes, ("cifar100", "tiny"), strict=True):
        ce = t[(t["method"] == "ce") & (t["dataset"] == ds)]["selected_top1"].to_numpy() * 100
        mean, sd = ce.mean(), ce.std(ddof=1)
        line = _by_gid(ax, f"reference:{ds}/resnet18")
        np.testing.assert_allclose(line.get_ydata(), [mean, mean])
        band = _by_gid(ax, f"reference-band:{ds}/resnet18")
        assert _span(band, "y") == (pytest.approx(mean - sd), pytest.approx(mean + sd))
        lo, hi = ax.get_ylim()
        assert lo <= mean - sd and hi >= mean + sd  # CE's band is in view
    assert "grey line: CE's mean, band \u00b11 sample std over seeds" in _caption(fig)
    # CE is the neutral reference: solid, grey, no markers, never styled like one of the method's settings
    line = _by_gid(fig.axes[0], "reference:cifar100/resnet18")
    assert line.get_linestyle() == "-" and line.get_marker() in ("None", "", None)
    assert to_hex(line.get_color()) == BUILTIN_COLORS["ce"]


def test_ablation_curve_one_seed_has_no_error_bars_and_says_so():
    t = ablation_trials()
    t = t[(t["seed"] == 0) & (t["dataset"] == "cifar100")]
    fig = ablation_curve(aggregate(t), method="zipf", param="p.alpha")
    (ax,) = fig.axes
    (c,) = ax.containers
    assert not c.has_yerr
    assert c.get_label() == "Zipf's LS (n = 1, no error bars)"
    assert not [a for a in ax.patches if a.get_gid() and a.get_gid().startswith("reference-band")]
    assert "CE (n = 1, no band)" in _legend_texts(fig)
    assert "n = 1: no error bars" in _caption(fig)
    ce = t[t["method"] == "ce"]["selected_top1"].to_numpy() * 100
    np.testing.assert_allclose(_by_gid(ax, "reference:cifar100/resnet18").get_ydata(), [ce.mean()] * 2)


def test_ablation_curve_y_range_does_not_exaggerate_tiny_differences():
    rows = [trial("zipf", s, 0.990 + 0.001 * (a == 1.0) + 0.0001 * s, alpha=a) for a in (0.5, 1.0) for s in (0, 1)]
    rows += [trial("ce", s, 0.9895 + 0.0002 * s) for s in (0, 1)]
    fig = ablation_curve(aggregate(pd.DataFrame(rows)), method="zipf", param="p.alpha")
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= 5.0  # at least 5 points, though the means differ by 0.1
    assert hi <= 100.0 + 0.05 * (hi - lo) + 1e-9  # shifted under 100%, not past it
    assert "y range at least 5 points wide" in _caption(fig)


def test_y_range_rule():
    assert y_range([40.0, 41.0], span=5.0, percent=True) == pytest.approx((37.75, 43.25))  # 38..43, 5% margins
    lo, hi = y_range([99.0, 99.8], span=5.0, percent=True)
    assert (lo, hi) == (pytest.approx(95.0 - 0.25), pytest.approx(100.25))
    assert y_range([10.0, 30.0], span=5.0, percent=True) == pytest.approx((9.0, 31.0))  # wide enough already


# --- learning curves ----------------------------------------------------------------------------------

VAL = {"ce": [[0.2, 0.4, 0.5], [0.4, 0.6, 0.7]], "zipf": [[0.3, 0.5, 0.6], [0.3, 0.7, 0.8]]}
CE_PART = {"ce": [[2.0, 1.0, 0.5], [1.0, 0.5, 0.25]], "zipf": [[2.0, 1.2, 0.6], [1.6, 0.8, 0.4]]}
OWN = {"ce": CE_PART["ce"], "zipf": [[3.0, 2.0, 1.5], [3.0, 1.0, 0.5]]}  # zipf's objective: CE + lam KL
SELECTED = {"ce": [3, 2], "zipf": [2, 2]}


def curve_trials() -> pd.DataFrame:
    return pd.DataFrame([trial(m, s, VAL[m][s][-1], epoch=SELECTED[m][s]) for m in ("ce", "zipf") for s in (0, 1)])


def curves(*, with_ce: bool = True) -> pd.DataFrame:
    rows = []
    for m in ("ce", "zipf"):
        for s in range(2):
            for e in range(3):
                row = {"method": m, "dataset": "cifar100", "model": "resnet18", "epochs": 3, "protocol": "clean",
                       "select": "top1", "key": f"{m}{s}", "seed": s, "epoch": e + 1,
                       "val_top1": VAL[m][s][e], "train_loss": OWN[m][s][e]}
                if with_ce or m == "ce":
                    row["train_ce"] = CE_PART[m][s][e]
                rows.append(row)
    return pd.DataFrame(rows)


def test_learning_curves_val_top1_shared_train_ce_and_bands():
    t = curve_trials()
    fig = learning_curves(curve_stats(curves()), dataset="cifar100", model="resnet18", selected=aggregate(t))
    ax_acc, ax_sel, ax_loss = fig.axes
    # (a label longer than its panel is wrapped: compared with its line breaks as spaces)
    assert tuple(" ".join(t.split()) for t in (ax_acc.get_ylabel(), ax_loss.get_ylabel(), ax_loss.get_xlabel())) == (
        "val top-1 (%)", "train CE (nats, log)", "epoch")
    # wrapped to the column's width where it is longer
    assert " ".join(ax_acc.get_title().split()) == "cifar100 / resnet18, protocol clean: learning curves"
    np.testing.assert_allclose(ax_acc.lines[0].get_ydata(), [30.0, 50.0, 60.0])
    # the loss axis holds the plain CE part of both methods, never zipf's own objective
    for line, m in zip(ax_loss.lines, ("ce", "zipf"), strict=True):
        np.testing.assert_allclose(line.get_ydata(), np.mean(CE_PART[m], axis=0))
        assert to_hex(line.get_color()) == BUILTIN_COLORS[m]
    bands = [c for c in ax_acc.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    # CE val top-1: sample std of the two seeds at each epoch
    sd = np.std(np.array(VAL["ce"]) * 100, axis=0, ddof=1)
    mean = np.mean(np.array(VAL["ce"]) * 100, axis=0)
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx((mean - sd).min()) and ys.max() == pytest.approx((mean + sd).max())
    assert _legend_texts(fig) == ["CE (n = 2)", "Zipf's LS (n = 2)"]
    caption = _caption(fig)
    assert "band \u00b11 sample std over seeds" in caption and "cross-entropy on the hard labels" in caption


def test_learning_curves_mark_the_mean_selected_epoch():
    t = curve_trials()
    fig = learning_curves(curve_stats(curves()), dataset="cifar100", model="resnet18", selected=aggregate(t))
    ax_sel = fig.axes[1]
    assert ax_sel.get_title(loc="left") == "selected epoch"
    # rows named, not matched by colour: tick label i is configuration i
    assert [t.get_text() for t in ax_sel.get_yticklabels()] == ["CE", "Zipf's LS"]
    np.testing.assert_allclose(ax_sel.get_yticks(), [0, 1])
    for row, (m, label) in enumerate((("ce", "CE"), ("zipf", "Zipf's LS"))):
        want = t[t["method"] == m]["selected_epoch"].astype(float)
        (c,) = [c for c in ax_sel.containers if c.lines[0].get_gid() == f"selected:{label}"]
        assert c.lines[0].get_xdata()[0] == pytest.approx(want.mean())
        assert c.lines[0].get_ydata()[0] == row  # one row per configuration, in legend order
    ce_bar = next(c for c in ax_sel.containers if c.lines[0].get_gid() == "selected:CE")
    sd = t[t["method"] == "ce"]["selected_epoch"].std(ddof=1)
    seg = ce_bar.lines[2][0].get_segments()[0][:, 0]
    assert seg.min() == pytest.approx(2.5 - sd) and seg.max() == pytest.approx(3.0)  # clipped at the last epoch
    assert "selected epoch: mean" in _caption(fig)


def test_learning_curves_without_a_common_loss_give_each_objective_its_panel():
    """zipf logs no train_ce here: its own objective is not drawn on CE's axis but in a panel of its own."""
    stats = curve_stats(curves(with_ce=False))
    fig = learning_curves(stats, dataset="cifar100", model="resnet18")
    ax_acc, ax_ce, ax_zipf = fig.axes
    assert [ax.get_title(loc="left") for ax in (ax_ce, ax_zipf)] == [
        "CE: its own objective (train_loss)", "Zipf's LS: its own objective (train_loss)"]
    assert len(ax_ce.lines) == 1 and len(ax_zipf.lines) == 1
    np.testing.assert_allclose(ax_zipf.lines[0].get_ydata(), np.mean(OWN["zipf"], axis=0))
    assert _legend_texts(fig) == ["CE (n = 2)", "Zipf's LS (n = 2)"]  # n from the curves without `selected`


def test_learning_curves_restrict_to_labels_and_fall_back_to_each_objective():
    only = learning_curves(curve_stats(curves().drop(columns="train_ce")), dataset="cifar100", model="resnet18",
                           labels=["CE"])
    assert len(only.axes[0].lines) == 1
    assert _legend_texts(only) == ["CE (n = 2)"]
    assert only.axes[1].get_title(loc="left") == "CE: its own objective (train_loss)"  # no train_ce logged


def test_curve_stats_and_loader(tmp_path):
    t = curve_trials()
    t.to_csv(tmp_path / "trials.csv", index=False)
    for key, g in t.groupby("key"):
        m, s = g["method"].iloc[0], int(g["seed"].iloc[0])
        folder = tmp_path / "trials" / key
        folder.mkdir(parents=True)
        lines = [json.dumps({"epoch": e + 1, "val_top1": VAL[m][s][e], "train_loss": OWN[m][s][e],
                             "train_ce": CE_PART[m][s][e], "lr": 0.1}) for e in range(3)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    from harness.results.aggregate import load_trials

    loaded = load_curves(tmp_path, load_trials(tmp_path))
    assert {"train_ce", "train_loss", "val_top1"} <= set(loaded.columns) and "lr" not in loaded.columns
    stats = curve_stats(loaded)
    z = stats[stats["method"] == "zipf"].sort_values("epoch")
    np.testing.assert_allclose(z["train_ce_mean"], np.mean(CE_PART["zipf"], axis=0))
    np.testing.assert_allclose(z["train_ce_std"], np.std(CE_PART["zipf"], axis=0, ddof=1))
    assert list(z["val_top1_n"]) == [2, 2, 2]
    one = curve_stats(loaded[loaded["seed"] == 0])
    assert one["val_top1_std"].isna().all()  # one seed: no std, so no band


# --- cost ---------------------------------------------------------------------------------------------

def cost_trials() -> pd.DataFrame:
    steps = {"ce": [0.10, 0.12, 0.11], "zipf": [0.13, 0.15, 0.14], "pskd": [0.09, 0.10, 0.11]}
    top1 = {"ce": [0.70, 0.72, 0.71], "zipf": [0.72, 0.74, 0.73], "pskd": [0.71, 0.71, 0.72]}
    return pd.DataFrame([trial(m, s, top1[m][s], step=steps[m][s]) for m in steps for s in range(3)])


# a controlled measurement (harness/results/costs.py) as `with_costs` hands it to a trials table: time x and its
# sd over rounds per method, CE's own relative sd over rounds, CE's median step (11 ms)
CONTROLLED = {"ce": (1.0, 0.0, 0.04), "zipf": (1.3, 0.05, 0.03), "pskd": (0.95, 0.02, 0.05)}


def with_controlled(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    for col, i in (("cost_time_x", 0), ("cost_time_x_rounds_sd", 1), ("cost_time_rounds_sd_rel", 2)):
        t[col] = t["method"].map({m: v[i] for m, v in CONTROLLED.items()})
    t["cost_ref_step_s"], t["cost_status"], t["cost_how"] = 0.011, "measured", "cpu, 1 torch thread"
    return t


def test_accuracy_vs_cost_step_time_ratio_band_and_state():
    t = with_controlled(cost_trials())
    g = aggregate(t)
    fig = accuracy_vs_cost(g, dataset="cifar100", model="resnet18")
    ax_time, ax_state = fig.axes
    # (wrapped where longer than the column: compared with its line breaks as spaces)
    assert " ".join(ax_time.get_xlabel().split()) == "train step time (\u00d7 CE's median: 11 ms, controlled)"
    assert ax_time.get_ylabel() == "selected top-1 (%)"
    assert ax_state.get_xlabel() == "extra method state (bytes, symlog axis)"
    assert ax_time.get_title() == "cifar100 / resnet18, protocol clean: cost"
    for m, label in (("ce", "CE"), ("zipf", "Zipf's LS"), ("pskd", "PS-KD")):
        rows = t[t["method"] == m]
        (c,) = [c for c in ax_time.containers if c.lines[0].get_gid() == f"time:{label}"]
        x, half = CONTROLLED[m][:2]  # the controlled ratio, not the sweep's own step times (zipf: 0.14 / 0.11)
        assert c.lines[0].get_xdata()[0] == pytest.approx(x)
        assert c.lines[0].get_ydata()[0] == pytest.approx(rows["selected_top1"].mean() * 100)
        if half:  # x bar: the sd over rounds of the per-round ratio
            xbar = c.lines[2][0].get_segments()[0][:, 0]
            np.testing.assert_allclose(xbar, [x - half, x + half])
        dot = _by_gid(ax_state, f"state:{label}")
        assert dot.get_xdata()[0] == STATE[m]
    band = _by_gid(ax_time, "ce-step-band")
    assert _span(band, "x") == (pytest.approx(1 - 0.04), pytest.approx(1 + 0.04))  # CE's own sd over rounds
    assert ax_time.get_xlim()[0] == 0.0 and ax_time.get_xlim()[1] >= 1.5
    lo, hi = ax_time.get_ylim()
    assert hi - lo >= 5.0
    # the paper's order of methods, in the state rows as in the legend
    # (a size is never split from its unit: a no-break space between them)
    assert [a.get_text().replace("\u00a0", " ") for a in ax_state.texts] == ["CE: 0 B", "PS-KD: 56.1 KiB",
                                                                              "Zipf's LS: 0 B"]
    assert _legend_texts(fig) == ["CE (n = 3)", "PS-KD (n = 3)", "Zipf's LS (n = 3)",
                                  "CE's step-time spread over rounds (\u00b11 sd)"]
    caption = _caption(fig)
    assert "\u00b11 sample std over seeds" in caption and "tfbench bench step --sweep" in caption


def test_accuracy_vs_cost_without_a_controlled_measurement_draws_no_step_time():
    t = cost_trials()  # the sweep's own step times only: they are never drawn as the cost
    fig = accuracy_vs_cost(aggregate(t[t["seed"] == 0]), dataset="cifar100", model="resnet18")
    assert [ax.get_xlabel() for ax in fig.axes] == ["extra method state (bytes, symlog axis)"]
    caption = _caption(fig)
    assert "n = 1: no error bars" in caption and "no controlled measurement" in caption
    assert _legend_texts(fig) == ["CE (n = 1)", "PS-KD (n = 1)", "Zipf's LS (n = 1)"]


def test_accuracy_vs_cost_keeps_the_labels_of_the_whole_sweep():
    g = aggregate(ablation_trials())
    best = best_per_method(g, dataset="cifar100", model="resnet18")
    fig = accuracy_vs_cost(best, dataset="cifar100", model="resnet18", colors=method_colors(g["method"]))
    assert len(fig.axes) == 1  # no controlled measurement: the state panel only
    # best_per_method prefers the most seeds: alpha 1.0 (2 seeds, 73%) over alpha 4.0's single 80%
    assert _legend_texts(fig)[:2] == ["CE (n = 3)", "Zipf's LS (alpha=1.0; n = 2)"]


# --- the folder ---------------------------------------------------------------------------------------

def test_write_plots_writes_png_and_pdf(tmp_path):
    df = ablation_trials()
    df.to_csv(tmp_path / "trials.csv", index=False)
    for _, t in df.iterrows():
        folder = tmp_path / "trials" / t["key"]
        folder.mkdir(parents=True)
        lines = [json.dumps({"epoch": e, "train_loss": 3.0 / e, "train_ce": 2.0 / e, "val_top1": t["best_top1"] * e / 3})
                 for e in (1, 2, 3)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    paths = write_plots(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for stem in ("ablation_zipf_alpha", "learning_cifar100_resnet18",
                                                        "learning_tiny_resnet18", "cost_cifar100_resnet18",
                                                        "cost_tiny_resnet18", "critical_difference",
                                                        "differences_cifar100_resnet18", "differences_tiny_resnet18")
                            for ext in ("png", "pdf", "txt"))  # two data sets: ranked across them too
    for p in paths:
        assert p.parent == tmp_path / "plots"
        if p.suffix == ".txt":  # the caption: text beside the image, starting with the figure's title
            assert p.read_text().strip() and "\n" not in p.read_text().strip()
        else:
            assert p.read_bytes()[:4] == (b"\x89PNG" if p.suffix == ".png" else b"%PDF")
    assert (tmp_path / "plots" / "learning_tiny_resnet18.txt").read_text().startswith(
        "tiny / resnet18, protocol clean: learning curves.")
    # no temp files left; the one dotfile is the ownership record (harness/outputs.py)
    assert [p.name for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")] == [".tfbench-outputs.json"]
