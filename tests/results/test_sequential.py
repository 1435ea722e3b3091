"""Seeds until decided, and the simulation of the marks' rule that docs/results.md quotes: the vectorised
replica against the real decision function, the design's A/A rate at or below alpha, and a small rerun of
the documented table within Monte-Carlo error."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.results import simulate
from harness.results.sequential import Plan, decide, decisions, spent

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def test_spending_sums_to_alpha_and_obf_is_strict_early():
    plan = Plan(start=3, max=10)
    levels = spent(plan, 0.05)
    assert plan.looks() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert sum(levels) == pytest.approx(0.05) and all(x > 0 for x in levels)
    # Lan-DeMets O'Brien-Fleming at t = 0.3: 2 - 2 Phi(1.95996 / sqrt 0.3) = 2 * norm.sf(3.5784)
    assert levels[0] == pytest.approx(2 * stats.norm.sf(1.959964 / math.sqrt(0.3)), rel=1e-4)
    pocock = spent(Plan(start=3, max=10, spending="pocock"), 0.05)
    assert pocock[0] == pytest.approx(0.05 * math.log(1 + (math.e - 1) * 0.3))
    assert Plan(start=3, max=10, step=3).looks() == [3, 6, 9, 10]


def test_the_vectorised_simulation_decides_as_the_real_function():
    rng = np.random.default_rng(3)
    plan = Plan(start=3, max=10)
    d = simulate.differences(rng, sims=60, n=10, k=3, shift=2.0)
    marks, used = simulate.sequential(d, plan, rope=0.7)
    for s in range(60):
        found = decide([d[s, :, i] for i in range(3)], plan, alpha=0.05, rope=0.7, higher_is_better=True)
        assert [{"better": 1, "worse": -1}.get(f.outcome, 0) for f in found] == list(marks[s])
        assert [f.n for f in found] == list(used[s])


def test_a_comparison_waits_for_its_next_look_and_the_rest_of_its_family():
    found = decide([np.array([0.1, -0.1, 0.2]), np.array([0.3, 0.1])], Plan(start=3, max=10), alpha=0.05,
                   rope=0.0, higher_is_better=True)
    assert [(f.outcome, f.needs) for f in found] == [("open", 3), ("open", 3)]
    big = np.array([-5.0, -5.1, -4.9, -5.05, -4.95])  # huge effect, tiny spread: marked at the first look
    found = decide([big], Plan(start=3, max=10), alpha=0.05, rope=0.5, higher_is_better=True)
    assert (found[0].outcome, found[0].n, found[0].look) == ("worse", 3, 1)


def test_decisions_from_a_trials_table_pair_by_seed():
    rows = []
    for s in range(4):
        rows += [{"key": f"ce{s}", "status": "finished", "method": "ce", "dataset": "d", "model": "m", "seed": s,
                  "epochs": 1, "protocol": "clean", "select": "top1", "selected_top1": 0.9 + 0.01 * s},
                 {"key": f"x{s}", "status": "finished" if s < 3 else "pending", "method": "x", "dataset": "d",
                  "model": "m", "seed": s, "epochs": 1, "protocol": "clean", "select": "top1",
                  "selected_top1": 0.9 + 0.01 * s + 0.001 * (s % 2) if s < 3 else None}]
    [(comp, d)] = decisions(pd.DataFrame(rows), Plan(start=3, max=4), metric="selected_top1", baseline="ce",
                            alpha=0.05, rope=0.005, higher_is_better=True)
    assert list(comp["diffs"]) == pytest.approx([0.0, 0.001, 0.0])
    # 90% interval of (0, 0.001, 0) inside +-0.005: equivalent at the first look
    assert (d.outcome, d.n) == ("equivalent", 3)


def _documented() -> dict[str, list[float]]:
    """rule -> [A/A rate, power] from docs/results.md's simulation table."""
    out = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\|\s*(fixed n \(Holm\)\s*|peeking[^|]*|sequential[^|]*)\|\s*(\S+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]*)", line)
        if m:
            out[f"{m.group(1).strip()} {m.group(2)}"] = [float(m.group(3)), float(m.group(4) or "nan")]
    return out


def test_the_documented_simulation_table_within_monte_carlo_error():
    documented = _documented()
    sims = 3000
    rows = simulate.table(sims, seed=11)
    assert len(documented) == len(rows) == 5
    for rule, n, aa, power, _ in rows:
        doc = documented[f"{rule} {n}"]
        for measured, figure in ((float(aa), doc[0]), (float(power or "nan"), doc[1])):
            if math.isnan(figure):
                continue
            se = math.sqrt(max(figure * (1 - figure), 1e-4) / sims)
            assert abs(measured - figure) < 4 * se, (rule, n, measured, figure)


def test_the_sequential_design_keeps_the_aa_rate_at_or_below_alpha():
    """The design's family-wise A/A rate, simulated at k = 6 over looks 3..10: at most alpha (one-sided,
    three binomial SEs of slack); peeking with plain Holm over the same looks exceeds it."""
    rng = np.random.default_rng(5)
    sims = 4000
    d = simulate.differences(rng, sims=sims, n=10)
    marks, _ = simulate.sequential(d, Plan(start=3, max=10))
    rate = np.any(marks != 0, axis=1).mean()
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
    assert np.any(simulate.peeking(d) != 0, axis=1).mean() > 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
