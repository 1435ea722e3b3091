"""Aggregation of a trials table: groups, mean / sample std / n, failures, cost ratios, paired comparisons.

Every expected number is computed by hand (or by numpy / scipy on the raw values), never by the code.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import key_of
from scipy import stats

from harness.errors import UserError
from harness.results.ablation import ablation_rows, swept_parameters
from harness.results.aggregate import (
    aggregate,
    aggregate_sharpness,
    best_per_method,
    config_columns,
    load_trials,
    mean_std_n,
)
from harness.results.curves import curve_stats, load_curves


def trial(method, seed, *, status="finished", dataset="cifar100", model="resnet18", epochs=3, top1=None,
          step=0.1, mem=1000.0, state=0.0, **params):
    row = {"key": key_of(method, dataset, seed, params, epochs), "status": status,
           "error": "" if status == "finished" else "RuntimeError: boom", "method": method, "dataset": dataset,
           "model": model, "seed": seed, "epochs": epochs,
           "p.lam": params.get("lam", math.nan), "p.alpha": params.get("alpha", math.nan)}
    if status == "finished":
        row.update(best_top1=top1, last_top1=top1 - 0.01, best_top5=0.9, last_top5=0.89, last_nll=1.0,
                   last_ece=0.05, train_top1=0.99, train_val_gap=0.99 - top1, step_time_s=step,
                   peak_mem_bytes=mem, state_bytes=state, best_epoch=3, images_per_s=100.0, wall_time_s=1.0)
    return row


def synthetic() -> pd.DataFrame:
    rows = [
        # CE: best_top1 0.70, 0.72, 0.74 -> mean 0.72, sample std 0.02 (deviations -0.02, 0, 0.02: 0.0008/2).
        trial("ce", 0, top1=0.70, step=0.10), trial("ce", 1, top1=0.72, step=0.10), trial("ce", 2, top1=0.74, step=0.10),
        # Zipf lam=0.1: 0.75, 0.76, 0.80 and one failed trial (counted, not averaged).
        trial("zipf", 0, top1=0.75, step=0.11, mem=1100.0, lam=0.1, alpha=1.0),
        trial("zipf", 1, top1=0.76, step=0.12, mem=1100.0, lam=0.1, alpha=1.0),
        trial("zipf", 2, top1=0.80, step=0.13, mem=1100.0, lam=0.1, alpha=1.0),
        trial("zipf", 3, status="failed", lam=0.1, alpha=1.0),
        # Zipf lam=0.5: a single seed -> std unavailable, p-value unavailable.
        trial("zipf", 0, top1=0.78, step=0.12, lam=0.5, alpha=1.0),
        # PS-KD with state.
        trial("pskd", 0, top1=0.73, step=0.2, state=2048.0), trial("pskd", 1, top1=0.75, step=0.2, state=2048.0),
        # Pending (an interrupted sweep): counted apart from failures.
        trial("pskd", 2, status="pending"),
    ]
    return pd.DataFrame(rows)


def group(groups: pd.DataFrame, method: str, **params) -> pd.Series:
    sel = groups["method"] == method
    for k, v in params.items():
        sel &= groups[f"p.{k}"] == v
    assert sel.sum() == 1, groups[["method", "p.lam"]]
    return groups[sel].iloc[0]


def test_mean_std_n_by_hand():
    mean, std, n = mean_std_n([0.70, 0.72, 0.74])
    assert (mean, n) == (pytest.approx(0.72), 3)
    assert std == pytest.approx(0.02)
    mean, std, n = mean_std_n([0.5, math.nan])
    assert (mean, n) == (0.5, 1) and math.isnan(std)  # one value: unavailable, never 0
    mean, std, n = mean_std_n([])
    assert n == 0 and math.isnan(mean) and math.isnan(std)


def test_groups_mean_std_n_and_failures():
    g = aggregate(synthetic())
    assert len(g) == 4  # ce, zipf lam 0.1, zipf lam 0.5, pskd: the seed is not part of a configuration
    ce = group(g, "ce")
    assert (ce["n"], ce["n_failed"], ce["n_pending"]) == (3, 0, 0)
    assert ce["best_top1_mean"] == pytest.approx(0.72)
    assert ce["best_top1_std"] == pytest.approx(0.02)
    z = group(g, "zipf", lam=0.1)
    assert (z["n"], z["n_failed"], z["best_top1_n"]) == (3, 1, 3)
    assert z["best_top1_mean"] == pytest.approx((0.75 + 0.76 + 0.80) / 3)
    # sample std by hand: mean 0.77; deviations -0.02, -0.01, 0.03 -> (4 + 1 + 9)e-4 / 2 = 7e-4
    assert z["best_top1_std"] == pytest.approx(math.sqrt(7e-4))
    single = group(g, "zipf", lam=0.5)
    assert single["n"] == 1 and math.isnan(single["best_top1_std"]) and math.isnan(single["p_value"])
    ps = group(g, "pskd")
    assert (ps["n"], ps["n_failed"], ps["n_pending"]) == (2, 0, 1)


def test_observed_cost_ratios_against_ce():
    g = aggregate(synthetic())
    z = group(g, "zipf", lam=0.1)
    assert z["time_x_observed"] == pytest.approx(0.12 / 0.10)           # mean(0.11, 0.12, 0.13) / 0.10
    assert z["time_x_observed_std"] == pytest.approx(0.01 / 0.10)       # sample std 0.01 over CE's mean
    assert z["mem_x_observed"] == pytest.approx(1.1)
    assert z["gain"] == pytest.approx(0.77 - 0.72)
    assert group(g, "pskd")["extra_state_bytes"] == 2048.0
    ce = group(g, "ce")
    assert ce["time_x_observed"] == pytest.approx(1.0) and math.isnan(ce["p_value"])
    # the summary's time x / memory x are the controlled measurement's only: none here, so n/a (never observed)
    assert math.isnan(z["time_x"]) and math.isnan(z["mem_x"]) and math.isnan(ce["time_x"])


def test_paired_comparison_against_ce_by_seed():
    # Zipf lam=0.1 minus CE per seed: 0.05, 0.04, 0.06 (seed 3 failed: not paired).
    d = np.array([0.75 - 0.70, 0.76 - 0.72, 0.80 - 0.74])
    sd = d.std(ddof=1)
    t = d.mean() / (sd / math.sqrt(3))
    p_hand = 2 * stats.t.sf(abs(t), 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    z = group(aggregate(synthetic()), "zipf", lam=0.1)
    assert z["n_paired"] == 3 and z["diff_mean"] == pytest.approx(0.05)
    assert z["diff_sd"] == pytest.approx(0.01)
    assert z["p_value"] == pytest.approx(p_hand)
    assert (z["diff_ci_low"], z["diff_ci_high"]) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    # the family of cifar100/resnet18 against CE: zipf lam=0.1 (p_hand), pskd (2 pairs), zipf lam=0.5 (1 pair:
    # no p). PS-KD - CE: 0.03, 0.03 -> sd 0 -> no p either. Both untestable comparisons stay in the family
    # as p = 1 (the family is the design, not the outcome): m = 3, so Holm gives 3 * p_hand.
    ps = group(aggregate(synthetic()), "pskd")
    assert ps["n_paired"] == 2 and ps["diff_mean"] == pytest.approx(0.03) and math.isnan(ps["p_value"])
    assert z["p_holm"] == pytest.approx(min(1.0, 3 * p_hand))
    # last top-1 is best top-1 - 0.01 on every trial: the same differences, so the companion agrees
    assert z["c_diff_mean"] == pytest.approx(0.05) and z["c_p_holm"] == pytest.approx(z["p_holm"])
    assert bool(z["significant"]) == (3 * p_hand < 0.05) and bool(z["better"]) == (3 * p_hand < 0.05)


def test_holm_family_is_one_dataset_model_and_excludes_other_cells():
    rows = [trial("ce", s, top1=v) for s, v in enumerate([0.70, 0.72, 0.74])]
    rows += [trial("ls", s, top1=v) for s, v in enumerate([0.72, 0.73, 0.77])]       # d = .02 .01 .03
    rows += [trial("pskd", s, top1=v) for s, v in enumerate([0.69, 0.73, 0.74])]     # d = -.01 .01 0
    rows += [trial("ce", s, top1=0.5 + s / 100, dataset="tiny") for s in range(3)]
    rows += [trial("ls", s, top1=v, dataset="tiny") for s, v in enumerate([0.52, 0.50, 0.53])]
    g = aggregate(pd.DataFrame(rows))
    p_ls = stats.ttest_rel([0.72, 0.73, 0.77], [0.70, 0.72, 0.74]).pvalue
    p_ps = stats.ttest_rel([0.69, 0.73, 0.74], [0.70, 0.72, 0.74]).pvalue
    lo, hi = sorted([p_ls, p_ps])
    adj_lo, adj_hi = min(1, 2 * lo), max(min(1, 2 * lo), min(1, hi))  # Holm with m = 2, by hand
    cifar = g[g["dataset"] == "cifar100"].set_index("method")
    assert cifar.loc["ls", "p_holm"] == pytest.approx(adj_lo if p_ls < p_ps else adj_hi)
    assert cifar.loc["pskd", "p_holm"] == pytest.approx(adj_lo if p_ps < p_ls else adj_hi)
    tiny_ls = g[(g["dataset"] == "tiny") & (g["method"] == "ls")].iloc[0]
    p_tiny = stats.ttest_rel([0.52, 0.50, 0.53], [0.50, 0.51, 0.52]).pvalue
    assert tiny_ls["p_holm"] == pytest.approx(p_tiny)  # alone in its family: m = 1


def test_legacy_records_fall_back_to_best_and_are_named_legacy():
    g = aggregate(synthetic())  # no protocol and no selected_* columns: recorded before protocols
    ce = group(g, "ce")
    assert ce["protocol"] == "legacy" and ce["selected_top1_mean"] == pytest.approx(0.72)
    df = synthetic()
    df["protocol"] = "clean"
    df["selected_top1"] = df["best_top1"] - 0.1
    assert group(aggregate(df), "ce")["selected_top1_mean"] == pytest.approx(0.62)


def test_baseline_matches_dataset_model_and_epochs():
    rows = [trial("ce", s, top1=0.5, step=0.1) for s in range(2)]
    rows += [trial("ce", s, top1=0.6, step=0.4, dataset="tiny") for s in range(2)]
    rows += [trial("ls", s, top1=0.61, step=0.2, dataset="tiny") for s in range(2)]
    rows += [trial("ls", s, top1=0.61, step=0.2, dataset="tiny", epochs=5) for s in range(2)]
    g = aggregate(pd.DataFrame(rows))
    ls3 = g[(g["method"] == "ls") & (g["epochs"] == 3)].iloc[0]
    assert ls3["time_x_observed"] == pytest.approx(0.2 / 0.4) and ls3["gain"] == pytest.approx(0.01)
    ls5 = g[(g["method"] == "ls") & (g["epochs"] == 5)].iloc[0]
    assert math.isnan(ls5["time_x_observed"]) and math.isnan(ls5["gain"])  # no CE at 5 epochs


def test_config_columns_and_labels():
    df = synthetic()
    assert config_columns(df) == ["method", "dataset", "model", "p.lam", "p.alpha", "epochs"]
    g = aggregate(df)
    assert list(g["label"]) == ["CE", "PS-KD", "Zipf's LS (lam=0.1)", "Zipf's LS (lam=0.5)"]


def test_preset_that_differs_between_datasets_is_not_a_sweep():
    rows = [trial("zipf", s, top1=0.7, lam=0.1, alpha=1.0) for s in range(2)]
    rows += [trial("zipf", s, top1=0.5, lam=1.0, alpha=1.0, dataset="tiny") for s in range(2)]
    g = aggregate(pd.DataFrame(rows))
    assert list(g["label"]) == ["Zipf's LS", "Zipf's LS"]
    assert swept_parameters(g) == []


def test_swept_parameters_and_one_at_a_time_ablation_rows():
    rows = []
    for ds, lam0 in (("cifar100", 0.1), ("tiny", 1.0)):
        for a in (0.5, 1.0, 2.0):
            rows += [trial("zipf", s, top1=0.7 + a / 100, dataset=ds, lam=lam0, alpha=a) for s in range(2)]
        for lam in (0.01, 0.5):
            rows += [trial("zipf", s, top1=0.7, dataset=ds, lam=lam, alpha=1.0) for s in range(2)]
    g = aggregate(pd.DataFrame(rows))
    assert swept_parameters(g) == [("zipf", "p.lam"), ("zipf", "p.alpha")]
    alpha_rows = ablation_rows(g, method="zipf", param="p.alpha")
    assert [(r.dataset, r.context) for r in alpha_rows] == [("cifar100", (("lam", 0.1),)), ("tiny", (("lam", 1.0),))]
    assert list(alpha_rows[0].groups["p.alpha"]) == [0.5, 1.0, 2.0]
    lam_rows = ablation_rows(g, method="zipf", param="p.lam")
    assert [list(r.groups["p.lam"]) for r in lam_rows] == [[0.01, 0.1, 0.5], [0.01, 0.5, 1.0]]
    assert all(r.context == (("alpha", 1.0),) for r in lam_rows)


def test_best_per_method_prefers_more_seeds():
    g = aggregate(synthetic())
    best = best_per_method(g, dataset="cifar100", model="resnet18")
    # lam=0.5 has the higher mean (0.78 > 0.77) but one seed; lam=0.1 has three.
    assert list(best["label"]) == ["CE", "PS-KD", "Zipf's LS (lam=0.1)"]


def test_load_trials_and_curves(tmp_path):
    df = synthetic()
    df.to_csv(tmp_path / "trials.csv", index=False)
    val = {0: [0.3, 0.6], 1: [0.5, 0.7], 2: [0.4, 0.8]}
    loss = {0: [2.0, 1.0], 1: [3.0, 1.5], 2: [2.5, 1.1]}
    for _, t in df[(df["method"] == "ce")].iterrows():
        folder = tmp_path / "trials" / t["key"]
        folder.mkdir(parents=True)
        lines = [json.dumps({"epoch": e + 1, "train_loss": loss[t["seed"]][e], "val_top1": val[t["seed"]][e]})
                 for e in range(2)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    trials = load_trials(tmp_path)
    curves = load_curves(tmp_path, trials)
    assert len(curves) == 6 and set(curves["label"]) == {"CE"}
    st = curve_stats(curves)
    e1 = st[st["epoch"] == 1].iloc[0]
    assert e1["val_top1_mean"] == pytest.approx(0.4) and e1["val_top1_std"] == pytest.approx(0.1)
    assert e1["train_loss_mean"] == pytest.approx(2.5) and e1["train_loss_std"] == pytest.approx(0.5)
    e2 = st[st["epoch"] == 2].iloc[0]
    assert e2["val_top1_mean"] == pytest.approx(0.7) and e2["val_top1_n"] == 3


def test_load_trials_without_csv_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no trials.csv"):
        load_trials(tmp_path)


def test_aggregate_sharpness_joins_configs_by_key():
    trials = synthetic()
    keys = trials[(trials["method"] == "zipf") & (trials["status"] == "finished")]["key"].tolist()
    sharp = pd.DataFrame({"key": keys, "method": "zipf", "dataset": "cifar100", "model": "resnet18",
                          "seed": [0, 1, 2, 0], "sharpness": [1.0, 2.0, 3.0, 5.0]})
    s = aggregate_sharpness(sharp, trials)
    assert list(s["label"]) == ["Zipf's LS (lam=0.1)", "Zipf's LS (lam=0.5)"]
    assert s["sharpness_mean"].tolist() == [2.0, 5.0]
    assert s["sharpness_std"].iloc[0] == pytest.approx(1.0) and math.isnan(s["sharpness_std"].iloc[1])
