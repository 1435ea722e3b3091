"""A metric is one definition (harness/metrics.py) plus its computation: a toy metric added in that one place
reaches result.json, trials.csv, the record checks and summary.csv without another edit."""
from __future__ import annotations

import csv
import io

import pytest
from helpers import quick_trial, read_csv

import harness.train.loop as loop
from harness import metrics
from harness.folders import result_problem
from harness.results import records
from harness.results.summary import render_summary
from harness.train.loop import train_trial

# the toy quantity: half the top-1 of the same split and weights, so the expected value is known by hand
TOY = {epoch: metrics.Metric(f"{epoch}_toy", f"toy at the {epoch} epoch", "toy", 1.0, 3, True,
                             bounds=metrics.FRACTION, split=metrics.REPORTED, epoch=epoch, quantity="toy",
                             summary=100 + i)
       for i, epoch in enumerate((metrics.SELECTED, metrics.LAST))}


@pytest.fixture
def toy(monkeypatch):
    for m in TOY.values():
        monkeypatch.setitem(metrics.VOCABULARY, m.name, m)
    evaluate = loop.evaluate

    def with_toy(*args, **kw):  # the toy's computation, beside the evaluation's own
        out = evaluate(*args, **kw)
        return {**out, "val_toy": out["val_top1"] / 2}

    monkeypatch.setattr(loop, "evaluate", with_toy)


def test_a_toy_metric_defined_once_reaches_trials_csv_and_the_summary(toy, tmp_path):
    folder = tmp_path / "sweep"
    specs = [quick_trial("ce", seed=s, epochs=2) for s in (0, 1)]
    results = [train_trial(s, folder / "trials" / s.key(), log=lambda _: None) for s in specs]
    for r in results:
        assert r["selected_toy"] == r["selected_top1"] / 2 and r["last_toy"] == r["last_top1"] / 2

    records.write_trials_csv(folder, [(s.key(), s.to_dict()) for s in specs])
    rows = read_csv(folder / "trials.csv")
    assert [float(row["selected_toy"]) for row in rows] == [r["selected_toy"] for r in results]
    assert [float(row["last_toy"]) for row in rows] == [r["last_toy"] for r in results]

    [row] = list(csv.DictReader(io.StringIO(render_summary(folder, warn=lambda _: None, write=False)["csv"])))
    expected = sum(r["selected_toy"] for r in results) / 2
    assert float(row["selected_toy_mean"]) == pytest.approx(expected, abs=1e-12)
    assert row["last_toy_n"] == "2"


def test_the_toy_metrics_bounds_are_checked_like_every_other(toy):
    assert result_problem({"selected_toy": 0.5}, None) is None
    assert result_problem({"selected_toy": 1.5}, None) == "selected_toy is 1.5; allowed: a fraction in [0, 1]"
    assert "selected_toy" in metrics.columns() and "selected_toy" in metrics.aggregated()
    # not declared a table or primary metric: the tables cannot be ranked on it
    assert "selected_toy" not in metrics.table_metrics() and "selected_toy" not in metrics.primary_metrics()


def test_a_cost_is_never_compared_or_primary_and_never_negative():
    costs = [m for m in metrics.VOCABULARY.values() if m.cost]
    assert {"step_time_s", "peak_mem_bytes", "wall_time_s"} <= {m.name for m in costs}
    for m in costs:
        assert not (m.table or m.primary) and m.bounds == metrics.NON_NEGATIVE
        assert metrics.problem(m.name, -1.0) == f"{m.name} is -1.0; allowed: >= 0"
