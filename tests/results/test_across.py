"""Across data sets: the stratified bootstrap interval of each method's mean difference to CE (against an
independent numpy computation of the same bootstrap, and its coverage of a known difference), shown in the
summary's across section in markdown, LaTeX and CSV; and the all-pairs table only on request."""
from __future__ import annotations

import argparse
import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import table as cmd_table
from harness.results import simulate
from harness.results.bootstrap import stratified
from harness.results.summary import render_summary

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def numpy_stratified(blocks, *, replicates, seed, confidence=0.95):
    """The same bootstrap written out replicate by replicate: the draws in block order from one generator, the
    differences spread about their block mean by sqrt(n / (n - 1)), the mean over blocks of the resampled
    block means, and the percentile by linear interpolation between order statistics."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(d), size=(replicates, len(d))) for d in blocks]
    spread = []
    for d in blocks:
        d = np.asarray(d, dtype=float)
        m = sum(d) / len(d)
        spread.append([m + (x - m) * math.sqrt(len(d) / (len(d) - 1)) for x in d])
    stat = []
    for r in range(replicates):
        block_means = [sum(s[i] for i in idx[r]) / len(s) for s, idx in zip(spread, draws, strict=True)]
        stat.append(sum(block_means) / len(blocks))
    stat.sort()

    def percentile(q):
        pos = q * (replicates - 1)
        lo = int(math.floor(pos))
        return stat[lo] + (pos - lo) * (stat[min(lo + 1, replicates - 1)] - stat[lo])

    estimate = sum(sum(d) / len(d) for d in blocks) / len(blocks)
    return estimate, percentile((1 - confidence) / 2), percentile((1 + confidence) / 2)


def test_the_stratified_bootstrap_equals_an_independent_numpy_computation():
    blocks = [np.array([0.01, 0.03, -0.02]), np.array([0.05, 0.02, 0.04, 0.00, 0.03]), np.array([-0.01, 0.02])]
    res = stratified(blocks, replicates=3000, seed=7)
    mean, low, high = numpy_stratified(blocks, replicates=3000, seed=7)
    assert res.mean == pytest.approx(mean, abs=1e-15)
    assert (res.low, res.high) == pytest.approx((low, high), abs=1e-14)
    # the seed decides the draws: another seed, another interval; the same seed, the same one
    assert stratified(blocks, replicates=3000, seed=8).low != res.low
    assert stratified(blocks, replicates=3000, seed=7) == res
    with pytest.raises(ValueError, match="at least 2"):
        stratified([np.array([0.1])])


def _documented_coverage() -> dict[tuple[int, int], tuple[float, float]]:
    out = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(0\.\d+)\s*\|\s*(0\.\d+)\s*\|\s*$", line)
        if m:
            out[(int(m.group(1)), int(m.group(2)))] = (float(m.group(3)), float(m.group(4)))
    return out


def test_the_interval_covers_a_known_mean_difference_as_documented():
    """Synthetic data sets whose true mean differences average 0.7: at 10 seeds each the 95% interval covers
    0.7 close to 95% of the time; at 3 seeds it undercovers, as docs/results.md says, and less so than the
    plain percentile bootstrap. Both figures within Monte Carlo error of the documented table."""
    documented = _documented_coverage()
    assert set(documented) == set(simulate.ACROSS_CASES)
    sims = 400
    for n_sets, n in ((3, 10), (3, 3)):
        used, plain = simulate.across_coverage(sims, n_sets=n_sets, n=n, seed=21)
        for measured, figure in zip((used, plain), documented[(n_sets, n)], strict=True):
            assert abs(measured - figure) < 4 * math.sqrt(figure * (1 - figure) / sims), (n_sets, n, measured, figure)
        if n == 10:
            assert 0.90 <= used <= 0.98
        else:
            assert plain < used < 0.95


# --- the summary's across section ---------------------------------------------------------------------

# two data sets x CE, LS, Zipf x 4 seeds (top-1 as fractions)
TOP1 = {"a": {"ce": [0.70, 0.72, 0.71, 0.69], "ls": [0.72, 0.73, 0.74, 0.70], "zipf": [0.69, 0.70, 0.71, 0.66]},
        "b": {"ce": [0.50, 0.52, 0.51, 0.53], "ls": [0.53, 0.52, 0.55, 0.54], "zipf": [0.48, 0.50, 0.51, 0.50]}}


def _trials(folder: Path, datasets=("a", "b"), **sweep) -> Path:
    rows = []
    for ds in datasets:
        for m, values in TOP1[ds].items():
            for s, v in enumerate(values):
                rows.append({"key": f"{m}-{ds}-{s}", "status": "finished", "method": m, "dataset": ds,
                             "model": "tiny", "seed": s, "epochs": 2, "protocol": "clean", "select": "top1",
                             "selected_top1": v, "last_top1": v, "val_selected_top1": 0.9})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    if sweep:
        (folder / "sweep.yaml").write_text("".join(f"{k}: {v}\n" for k, v in sweep.items()))
    return folder


def _hand(method: str) -> tuple[float, float, float]:
    """The mean over data sets of each one's mean paired difference, and the same bootstrap by numpy."""
    blocks = [np.array(TOP1[ds][method]) - np.array(TOP1[ds]["ce"]) for ds in ("a", "b")]
    return numpy_stratified(blocks, replicates=10_000, seed=0)


def test_the_across_section_shows_each_methods_mean_difference_and_interval_in_md_tex_and_csv(tmp_path):
    out = render_summary(_trials(tmp_path / "r"), write=False)
    md = re.sub(r" +", " ", out["md"])
    assert "## Against CE across data sets (comparisons with a control)" in md
    section = md.split("## Against CE across data sets")[1].split("\n## ")[0]
    for method, label in (("ls", "LS"), ("zipf", "Zipf's LS")):
        mean, low, high = _hand(method)
        row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {100 * mean:+.2f} | [{100 * low:+.2f}, {100 * high:+.2f}] |" in row, row
        assert f"{100 * mean:+.2f}" in out["tex"] and f"[{100 * low:+.2f}, {100 * high:+.2f}]" in out["tex"]
        csv = pd.read_csv(io.StringIO(out["csv"]))
        ranked = csv[csv["method"] == method]
        assert len(ranked) == 2  # one row per data set, both carrying the across numbers
        assert ranked["across_diff_mean"].to_numpy() == pytest.approx([mean, mean], abs=1e-12)
        assert ranked["across_ci_low"].to_numpy() == pytest.approx([low, low], abs=1e-12)
        assert ranked["across_ci_high"].to_numpy() == pytest.approx([high, high], abs=1e-12)
        assert list(ranked["across_blocks"]) == [2, 2]
    assert csv.loc[csv["method"] == "ce", "across_ci_low"].isna().all()
    assert "paired_diffs" not in csv.columns
    # the all-pairs table is not shown by default
    assert "Pairs of methods across data sets" not in md and "--all-pairs" in md


def test_one_data_set_has_no_across_numbers(tmp_path):
    out = render_summary(_trials(tmp_path / "r", datasets=("a",)), write=False)
    assert "across data sets" not in out["md"]
    assert pd.read_csv(io.StringIO(out["csv"]))["across_ci_low"].isna().all()


def test_the_all_pairs_table_on_request_by_flag_and_by_sweep_file(tmp_path, capsys):
    folder = _trials(tmp_path / "r")
    parser = argparse.ArgumentParser()
    cmd_table.add_arguments(parser)
    assert cmd_table.run(parser.parse_args([str(folder), "--out", str(tmp_path / "o")])) == 0
    assert "Pairs of methods across data sets" not in capsys.readouterr().out
    assert cmd_table.run(parser.parse_args([str(folder), "--all-pairs", "--out", str(tmp_path / "o")])) == 0
    shown = capsys.readouterr().out
    assert "## Pairs of methods across data sets (Nemenyi)" in shown
    assert "The pairs table below tests every pair" in shown
    on = _trials(tmp_path / "on", schema_version=1, name="on", all_pairs="true")
    assert "Pairs of methods across data sets" in render_summary(on, write=False)["md"]
    bad = _trials(tmp_path / "bad", schema_version=1, name="bad", all_pairs="3")
    with pytest.raises(Exception, match="all_pairs is 3; allowed: true or false"):
        render_summary(bad, write=False)
