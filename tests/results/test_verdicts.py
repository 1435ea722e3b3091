"""Verdicts on cases whose answer is known: the shipped controls (an A/A twin of CE is never marked, a CE
on noisy targets is marked worse), and the false-positive rate of the verdict rule on simulated A/A data."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config.sweep_file import load_sweep
from harness.results import records
from harness.results.aggregate import aggregate
from harness.results.summary import render_summary
from harness.train.loop import train_trial

CONTROLS = Path(__file__).resolve().parents[2] / "sweeps" / "controls.yaml"


def test_the_controls_sweep_in_small_marks_the_noisy_ce_worse_and_never_the_twin(tmp_path):
    """sweeps/controls.yaml as shipped, shortened to 5 epochs and 3 seeds and trained without Ray."""
    torch.set_num_threads(1)
    sweep = load_sweep(CONTROLS, ["train.epochs=5", "train.threads=1"])
    trials = [t for t in sweep.trials if t.seed < 3]
    assert sorted({t.method for t in trials}) == ["ce", "ce_noisy", "ce_twin"] and len(trials) == 9
    folder = tmp_path / "controls"
    for t in trials:
        train_trial(t, folder / "trials" / t.key(), log=lambda line: None)
    records.write_trials_csv(folder, [(t.key(), t.to_dict()) for t in trials])
    g = aggregate(records.load_trials(folder)).set_index("method")
    assert g.loc["ce_twin", "verdict"] not in ("better", "worse")
    assert g.loc["ce_noisy", "verdict"] == "worse"
    # worse at both epochs: the mark is confirmed at the last epoch
    assert g.loc["ce_noisy", "diff_mean"] < 0 and g.loc["ce_noisy", "c_diff_mean"] < 0
    md = re.sub(r" +", " ", render_summary(folder)["md"])
    noisy = next(line for line in md.splitlines() if line.startswith("| ce_noisy |"))
    twin = next(line for line in md.splitlines() if line.startswith("| ce_twin |"))
    assert "▼" in noisy and "▲" not in noisy and "▼" not in twin and "▲" not in twin


def _simulated(rng: np.random.Generator, *, shift: float, seeds: int, others: int) -> pd.DataFrame:
    """A trials table: CE plus `others` methods, each the same per-seed accuracy plus independent noise, the
    first of them shifted by `shift`; the last epoch moves with the selected one plus its own noise."""
    seed_effect = rng.normal(0.0, 0.01, size=seeds)  # what a seed does to every method alike
    rows = []
    for m in ["ce", *[f"m{i}" for i in range(others)]]:
        delta = shift if m == "m0" else 0.0
        for s in range(seeds):
            sel = 0.80 + seed_effect[s] + delta + rng.normal(0.0, 0.005)
            rows.append({"key": f"{m}-{s}", "status": "finished", "method": m, "dataset": "d", "model": "x",
                         "seed": s, "epochs": 10, "protocol": "clean", "select": "top1", "selected_top1": sel,
                         "last_top1": sel + rng.normal(0.0, 0.002)})
    return pd.DataFrame(rows)


def test_aa_methods_are_marked_at_most_at_the_nominal_rate():
    """Methods equal to CE in distribution (an A/A comparison) are marked in at most alpha of the tables:
    Holm controls the family-wise error (the rule has no other gate)."""
    rng = np.random.default_rng(0)
    tables, marked = 150, 0
    for _ in range(tables):
        g = aggregate(_simulated(rng, shift=0.0, seeds=5, others=3))
        marked += int(g["verdict"].isin(["better", "worse"]).any())
    assert marked / tables <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / tables)  # alpha + two binomial SEs


def test_a_clearly_worse_method_is_marked_worse_and_the_rest_not():
    rng = np.random.default_rng(1)
    worse = 0
    for _ in range(30):
        g = aggregate(_simulated(rng, shift=-0.02, seeds=5, others=3)).set_index("method")
        worse += g.loc["m0", "verdict"] == "worse"
        assert g.loc["m0", "verdict"] != "better"
    assert worse >= 27  # 4 noise sds below CE: found nearly always with 5 seeds
