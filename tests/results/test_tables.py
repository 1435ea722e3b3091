"""Tables: cell text, the bold rule (significantly better than CE after Holm, never the largest mean),
n and failures shown, paired differences with CIs, the protocol line, well-formed booktabs LaTeX, markdown
and CSV, the summary files and `tfbench table`. Expected strings are written out by hand or with scipy."""
from __future__ import annotations

import argparse
import math
import re

import pandas as pd
import pytest
from helpers import key_of
from scipy import stats

from harness.cli import table as cmd_table
from harness.errors import UserError
from harness.results.aggregate import aggregate
from harness.results.summary import write_summary
from harness.results.tables import (
    ablation_tables,
    comparison_table,
    format_mean_std,
    human_bytes,
    paired_tables,
    to_csv,
    to_latex,
    to_markdown,
)


def trial(method, seed, top1, *, dataset="cifar_100", status="finished", step=0.1, state=0.0, **params):
    row = {"key": key_of(method, dataset, seed, params), "status": status,
           "error": "" if status == "finished" else "ValueError: loss is nan\ntraceback...", "method": method,
           "dataset": dataset, "model": "resnet18", "seed": seed, "epochs": 2,
           "p.alpha": params.get("alpha", math.nan), "p.lam": params.get("lam", math.nan)}
    if status == "finished":
        row.update(best_top1=top1, last_top1=top1, best_top5=0.9, last_top5=0.9, last_nll=1.0, last_ece=0.05,
                   train_val_gap=0.2, step_time_s=step, peak_mem_bytes=2 ** 30, state_bytes=state)
    return row


def synthetic() -> pd.DataFrame:
    rows = []
    # cifar_100: CE 72.00 +- 2.00; LS and Zipf both display 74.00 (74.001 vs 73.998): a tie, both bold.
    rows += [trial("ce", s, v) for s, v in enumerate([0.70, 0.72, 0.74])]
    rows += [trial("ls", s, v, step=0.1) for s, v in enumerate([0.74003, 0.74, 0.74])]
    rows += [trial("zipf", s, v, step=0.12, alpha=1.0, lam=0.1) for s, v in enumerate([0.73994, 0.74, 0.74])]
    # tiny: CE 50.00; Zipf 55.00 with one failed trial (n=2); PS-KD on a single seed.
    rows += [trial("ce", s, v, dataset="tiny") for s, v in enumerate([0.49, 0.50, 0.51])]
    rows += [trial("zipf", s, v, dataset="tiny", alpha=1.0, lam=0.1) for s, v in enumerate([0.54, 0.56])]
    rows += [trial("zipf", 2, None, dataset="tiny", status="failed", alpha=1.0, lam=0.1)]
    rows += [trial("pskd", 0, 0.53, dataset="tiny", state=5 * 2 ** 20)]
    return pd.DataFrame(rows)


def test_format_mean_std():
    assert format_mean_std(77.384, 0.3171) == "77.38 +- 0.32"
    assert format_mean_std(77.384, math.nan) == "77.38 +- n/a"  # unavailable, never 0
    assert format_mean_std(math.nan, math.nan) == "n/a"
    assert human_bytes(0) == "0 B" and human_bytes(10 * 2 ** 20) == "10.0 MiB" and human_bytes(1536) == "1.5 KiB"


def test_comparison_cells_no_bold_without_significance_failures_and_single_seed():
    t = comparison_table(aggregate(synthetic()), metric="best_top1")
    assert t.headers == ["method", "cifar_100 / resnet18", "tiny / resnet18"]
    assert [r[0] for r in t.rows] == ["CE", "LS", "PS-KD", "Zipf's LS"]
    cells = {r[0]: r[1:] for r in t.rows}
    assert cells["CE"] == ["72.00 +- 2.00", "50.00 +- 1.00"]
    assert cells["LS"] == ["74.00 +- 0.00", ""]                         # not run on tiny: empty
    # std of 0.54, 0.56 = 0.01 * sqrt(2); seeds 0 and 1 only, where CE has 0, 1, 2: said in the cell
    assert cells["Zipf's LS"][1] == "55.00 +- 1.41 (n=2, 1 failed, seeds 0,1)"
    assert cells["PS-KD"][1] == "53.00 +- n/a (n=1, seeds 0)"
    # LS - CE per seed on cifar_100: 0.04003, 0.02, 0.0 -> paired p = 0.18 at n = 3: the largest mean is not
    # bold any more; nothing in this table is significant.
    p_ls = stats.ttest_rel([0.74003, 0.74, 0.74], [0.70, 0.72, 0.74]).pvalue
    assert p_ls > 0.05
    assert not any(any(m) for m in t.marks)
    assert "n = 3 seeds per cell unless marked" in t.note
    assert "protocol: paper (recorded before protocols existed" in t.note
    assert "Holm-adjusted paired t-test p < alpha = 0.05" in t.note
    md = re.sub(r" +", " ", to_markdown(t))
    assert "| LS | 74.00 +- 0.00 | |" in md and "**" not in md and "▲" not in md.split("|", 1)[1]


def test_marks_are_holm_adjusted_p_below_alpha_both_ways():
    rows = [trial("ce", s, v) for s, v in enumerate([0.70, 0.72, 0.74, 0.71])]
    rows += [trial("ls", s, v) for s, v in enumerate([0.75, 0.78, 0.79, 0.77])]    # d = 5, 6, 5, 6 points
    rows += [trial("pskd", s, v) for s, v in enumerate([0.66, 0.67, 0.69, 0.65])]  # d = -4, -5, -5, -6
    rows += [trial("ols", s, v) for s, v in enumerate([0.72, 0.71, 0.76, 0.71])]   # d = 2, -1, 2, 0
    df = pd.DataFrame(rows)
    base = [0.70, 0.72, 0.74, 0.71]
    p = {m: stats.ttest_rel(df[df["method"] == m]["best_top1"], base).pvalue for m in ("ls", "pskd", "ols")}
    # Holm by hand over the three, smallest first: x3, x2, x1 with a running maximum.
    order = sorted(p, key=p.get)
    adj, running = {}, 0.0
    for i, m in enumerate(order):
        running = max(running, min(1.0, (3 - i) * p[m]))
        adj[m] = running
    assert adj["ls"] < 0.05 and adj["pskd"] < 0.05 and adj["ols"] > 0.05
    g = aggregate(df, metric="best_top1")
    assert dict(zip(g["method"], g["p_holm"], strict=True))["ols"] == pytest.approx(adj["ols"])
    t = comparison_table(g, metric="best_top1")
    marks = {r[0]: m[1] for r, m in zip(t.rows, t.marks, strict=True)}
    # LS: significantly better; PS-KD: significantly WORSE, marked too; OLS: not significant.
    assert marks == {"CE": "", "LS": "better", "PS-KD": "worse", "OLS": ""}
    assert dict(zip(g["method"], g["verdict"], strict=True)) == {"ce": "none", "ls": "better", "pskd": "worse",
                                                                 "ols": "none"}
    # every format shows both, consistently with summary.csv's verdict column
    md = re.sub(r" +", " ", to_markdown(t))
    assert "| LS | **77.25 +- 1.71** ▲ |" in md and "| PS-KD | 66.75 +- 1.71 ▼ |" in md and "| OLS | 72.50" in md
    assert "▲ / ▼: significantly higher / lower than CE" in md
    tex = to_latex(t)
    assert r"\textbf{77.25 $\pm$ 1.71}$^{\blacktriangle}$" in tex and r"66.75 $\pm$ 1.71$^{\blacktriangledown}$" in tex
    assert to_csv(t).splitlines()[2:4] == ["LS,77.25 +- 1.71 (better)", "PS-KD,66.75 +- 1.71 (worse)"]
    # a stricter alpha below LS's adjusted p takes both marks away
    strict = comparison_table(aggregate(df, metric="best_top1", alpha=adj["ls"] / 2), metric="best_top1",
                              alpha=adj["ls"] / 2)
    assert not any(m[1] for m in strict.marks)
    assert f"alpha = {adj['ls'] / 2:g}" in strict.note


def test_a_mark_not_confirmed_at_the_last_epoch_is_still_marked_and_says_so():
    """One decision rule (Holm on the primary metric): a result significantly worse at the selected epoch
    and not at the last is marked, and the sensitivity column says the last epoch does not confirm it."""
    ce = [0.98, 0.985, 0.975, 0.98]
    rows = [dict(trial("ce", s, v), selected_top1=v, protocol="clean") for s, v in enumerate(ce)]
    # zipf: selected 2 points below CE on every seed (d = -2.0, -2.1, -1.9, -2.0); last: 0.1 above, noisy
    rows += [dict(trial("zipf", s, v), selected_top1=v - d, last_top1=v + e, protocol="clean")
             for s, (v, d, e) in enumerate(zip(ce, [0.02, 0.021, 0.019, 0.02], [0.004, -0.003, 0.002, 0.001],
                                               strict=True))]
    # ls: 2 points above at both epochs
    rows += [dict(trial("ls", s, v + 0.02 + j), selected_top1=v + 0.02 + j, protocol="clean")
             for s, (v, j) in enumerate(zip(ce, [0.0, 0.001, -0.001, 0.0005], strict=True))]
    g = aggregate(pd.DataFrame(rows), metric="selected_top1").set_index("method")
    p_sel = stats.ttest_rel([v - d for v, d in zip(ce, [0.02, 0.021, 0.019, 0.02], strict=True)], ce).pvalue
    assert 2 * p_sel < 0.05 and g.loc["zipf", "p_holm"] < 0.05  # significant at the selected epoch ...
    assert g.loc["zipf", "c_p_holm"] > 0.05                      # ... not at the last
    assert g.loc["zipf", "verdict"] == "worse" and g.loc["zipf", "confirmed"] == "no"
    assert g.loc["ls", "verdict"] == "better" and g.loc["ls", "confirmed"] == "yes"
    t = paired_tables(g.reset_index(), metric="selected_top1")[0]
    by = {r[0]: r for r in t.rows}
    assert by["Zipf's LS"][t.headers.index("confirmed at last top-1 (%)")] == "no"
    assert t.headers[2] == "last top-1 (%)"
    assert {r[0]: m[1] for r, m in zip(t.rows, t.marks, strict=True)} == {"CE": "", "LS": "better",
                                                                           "Zipf's LS": "worse"}


def test_lower_is_better_metric_bolds_a_significantly_lower_value():
    df = synthetic()
    df.loc[df["method"] == "ls", "last_nll"] = [0.80, 0.81, 0.79]  # CE 1.0: d = -0.2, -0.19, -0.21
    t = comparison_table(aggregate(df, metric="last_nll"), metric="last_nll")
    ls_row = [i for i, r in enumerate(t.rows) if r[0] == "LS"][0]
    assert t.rows[ls_row][1] == "0.800 +- 0.010" and t.marks[ls_row][1] == "better"
    assert sum(bool(m[1]) for m in t.marks) == 1
    assert "significantly lower / higher than CE" in t.note


def _check_booktabs(tex: str) -> list[list[str]]:
    """Parse every tabular: rules in order, `\\` row ends, & per row = columns - 1; return the rows."""
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert body.count(r"\begin{table}") == body.count(r"\end{table}") >= 1
    tabulars = re.findall(r"\\begin\{tabular\}\{([lrc]+)\}\n(.*?)\n\\end\{tabular\}", body, re.S)
    assert len(tabulars) == body.count(r"\begin{tabular}") == body.count(r"\end{tabular}")
    rows = []
    for spec, inner in tabulars:
        lines = inner.splitlines()
        assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule"
        assert sum(line.strip() in (r"\toprule", r"\midrule", r"\bottomrule") for line in lines) == 3
        for line in [lines[1], *lines[3:-1]]:
            assert line.rstrip().endswith(r"\\"), line
            cells = re.split(r"(?<!\\)&", line.rstrip()[:-2])
            assert len(cells) == len(spec), line
            rows.append([c.strip() for c in cells])
    # braces balanced once escaped ones are removed, never closing before opening
    depth = 0
    for ch in body.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    # no unescaped underscore or percent sign in the text
    assert re.search(r"(?<!\\)[_%]", body) is None
    return rows


def test_latex_is_well_formed_booktabs_with_raw_bold():
    df = synthetic()
    df.loc[df["method"] == "ls", "best_top1"] = [0.75, 0.78, 0.79]  # d = 5, 6, 5 points: p_holm < 0.05
    t = comparison_table(aggregate(df, metric="best_top1"), metric="best_top1")
    tex = to_latex(t)
    rows = _check_booktabs(tex)
    assert rows[0] == ["method", r"cifar\_100 / resnet18", "tiny / resnet18"]
    assert r"\textbf{77.33 $\pm$ 2.08}" in tex  # mean 77.33, sample std of 75, 78, 79 = 2.0817
    assert r"selection-split top-1 (\%)" in tex
    assert r"\textbackslash{}textbf" not in tex  # the bold survived as LaTeX, not as escaped text


def test_summary_latex_is_well_formed(tmp_path):
    synthetic().to_csv(tmp_path / "trials.csv", index=False)
    write_summary(tmp_path)
    _check_booktabs((tmp_path / "summary.tex").read_text())


def with_controlled_costs(trials: pd.DataFrame) -> pd.DataFrame:
    """The columns `results.costs.with_costs` gives a trials table, as if a controlled measurement had timed zipf
    at 1.25 and memory 0.9 of CE's (the observed step times, 0.12 / 0.10, say 1.20)."""
    trials = trials.copy()
    trials["cost_time_x"] = trials["method"].map({"zipf": 1.25}).fillna(1.0)
    trials["cost_mem_x"] = trials["method"].map({"zipf": 0.9}).fillna(1.0)
    trials["cost_status"], trials["cost_how"] = "measured", "cpu, 1 torch thread"
    return trials


def test_paired_table_difference_ci_p_holm_and_ratios():
    tables = paired_tables(aggregate(with_controlled_costs(synthetic()), metric="best_top1"), metric="best_top1")
    assert [t.title for t in tables] == ["Against CE: cifar_100 / resnet18", "Against CE: tiny / resnet18"]
    assert tables[0].headers == ["method", "best val top-1 (%)", "difference vs CE [95% CI]", "n pairs", "p",
                                 "Holm p", "verdict", "simultaneous 95% CI", "seeds + test images CI",
                                 "P(worse / within 0.5 / better)", "seeds won", "detectable (points, 80%)",
                                 "power at 1 point", "seeds for 1 point", "time x", "memory x", "extra state"]
    rows = {r[0]: r for r in tables[0].rows}
    z, ce = [0.73994, 0.74, 0.74], [0.70, 0.72, 0.74]
    d = [a - b for a, b in zip(z, ce, strict=True)]
    mean, sd = sum(d) / 3, pd.Series(d).std(ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / 3 ** 0.5
    p_z = stats.ttest_rel(z, ce).pvalue
    p_ls = stats.ttest_rel([0.74003, 0.74, 0.74], ce).pvalue
    holm_z = max(min(1, 2 * min(p_z, p_ls)), p_z) if p_z > p_ls else min(1, 2 * p_z)
    assert rows["Zipf's LS"][2] == f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"
    assert rows["Zipf's LS"][3:7] == ["3", f"{p_z:.3f}", f"{holm_z:.3f}", ""]
    # simultaneous over the k = 2 comparisons of the family: the t interval at 1 - 0.05 / 2
    sim = stats.t.ppf(1 - 0.05 / 4, 2) * sd / 3 ** 0.5
    assert rows["Zipf's LS"][7] == f"[{100 * (mean - sim):+.2f}, {100 * (mean + sim):+.2f}]"
    # detectable at n = 3 and the marks' level (Holm's first step, alpha / k with k = 2): statsmodels' power
    # there is 80% (its solve_power is not used: at df 2 and alpha 0.025 its root finder lands off the root)
    TTestPower = pytest.importorskip("statsmodels.stats.power").TTestPower
    mdd = float(rows["Zipf's LS"][11]) / 100
    at = [TTestPower().power(effect_size=x / sd, nobs=3, alpha=0.05 / 2, alternative="two-sided")
          for x in (mdd - 0.00005, mdd + 0.00005)]  # the cell is rounded to 0.01 points
    assert at[0] < 0.8 < at[1]
    power = TTestPower().power(effect_size=0.01 / sd, nobs=3, alpha=0.05 / 2, alternative="two-sided")
    assert rows["Zipf's LS"][12] == f"{power:.2f}"
    assert rows["Zipf's LS"][10] == "2/3"  # differences +0.04, +0.02, -0.00006
    assert rows["Zipf's LS"][14:] == ["1.25x", "0.90x", "0 B"]  # the controlled measurement's, not the observed 1.20
    assert rows["CE"][2:14] == ["ref"] * 12
    tiny = {r[0]: r for r in tables[1].rows}
    assert tiny["PS-KD"][2:7] == ["+4.00 [n/a]", "1", "n/a", "n/a", ""]  # seed 0 only: no CI, no p
    assert tiny["PS-KD"][11:14] == ["n/a", "n/a", "n/a"]
    assert tiny["PS-KD"][16] == "5.0 MiB"
    assert "protocol: paper" in tables[0].note and "the Holm family" in tables[0].note


def test_ablation_table_layout_and_row_bold():
    rows = []
    for ds, lam, base in (("cifar_100", 0.1, 0.70), ("tiny", 1.0, 0.50)):
        for a, bump in ((0.5, 0.01), (1.0, 0.03), (2.0, 0.02)):
            rows += [trial("zipf", s, base + bump + d, dataset=ds, alpha=a, lam=lam)
                     for s, d in enumerate([-0.01, 0.01])]
        rows += [trial("zipf", s, base, dataset=ds, alpha=1.0, lam=lam * 5) for s in range(2)]
    tables = ablation_tables(aggregate(pd.DataFrame(rows)), metric="best_top1")
    by_title = {t.title: t for t in tables}
    assert set(by_title) == {"Ablation: alpha (Zipf's LS)", "Ablation: lam (Zipf's LS)"}
    t = by_title["Ablation: alpha (Zipf's LS)"]
    assert t.headers == ["alpha", "fixed", "0.5", "1.0", "2.0"]
    assert t.rows[0] == ["cifar_100", "lam=0.1", "71.00 +- 1.41", "73.00 +- 1.41", "72.00 +- 1.41"]
    assert t.rows[1][:2] == ["tiny", "lam=1.0"]
    assert t.marks == [[""] * 5] * 2  # no CE in this sweep: nothing can be significantly better than it
    lam = by_title["Ablation: lam (Zipf's LS)"]
    assert lam.headers == ["lam", "fixed", "0.1", "0.5", "1.0", "5.0"]
    assert lam.rows[0][2:] == ["73.00 +- 1.41", "70.00 +- 0.00", "", ""]
    assert lam.rows[1][2:] == ["", "", "53.00 +- 1.41", "50.00 +- 0.00"]


def test_csv_render():
    t = comparison_table(aggregate(synthetic()), metric="best_top1")
    lines = to_csv(t).splitlines()
    assert lines[0] == "method,cifar_100 / resnet18,tiny / resnet18"
    assert lines[1] == "CE,72.00 +- 2.00,50.00 +- 1.00"


def test_write_summary_files(tmp_path):
    synthetic().to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "landscape").mkdir()
    keys = synthetic().query("method == 'ce' and dataset == 'tiny'")["key"]
    pd.DataFrame({"key": keys, "method": "ce", "dataset": "tiny", "model": "resnet18", "seed": [0, 1, 2],
                  "sharpness": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "landscape" / "sharpness.csv", index=False)
    md = write_summary(tmp_path)
    assert (tmp_path / "summary.md").read_text() == md
    assert md.startswith(f"# Results: {tmp_path.name}\n")
    assert "Trials: 16 (15 finished, 1 failed) in 6 configurations." in md
    assert "## Comparison" in md and "## Ablation" not in md and "## Against CE: tiny / resnet18" in md
    assert "Protocol: paper (recorded before protocols existed" in md
    assert "## Sharpness" in md and "2.00 +- 1.00" in md
    assert "ValueError: loss is nan" in md and "traceback" not in md  # first line of the error only
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert len(csv) == 6 and {"label", "n", "n_failed", "selected_top1_mean", "p_value", "p_holm", "diff_ci_low", "time_x"} <= set(csv.columns)
    assert (tmp_path / "summary.tex").read_text().count(r"\begin{tabular}") == 4  # comparison, 2 paired, sharpness
    assert not list(tmp_path.glob(".summary*"))  # no temporary files left behind


def _args(*argv):
    p = argparse.ArgumentParser()
    cmd_table.add_arguments(p)
    return p.parse_args(list(argv))


def test_cmd_table(tmp_path, capsys):
    with pytest.raises(UserError, match="no trials.csv"):
        cmd_table.run(_args(str(tmp_path)))
    synthetic().to_csv(tmp_path / "trials.csv", index=False)
    with pytest.raises(UserError, match="unknown metric 'top1'.*best_top1"):
        cmd_table.run(_args(str(tmp_path), "--metric", "top1"))
    with pytest.raises(UserError, match="unknown format"):
        cmd_table.run(_args(str(tmp_path), "--format", "html"))
    assert cmd_table.run(_args(str(tmp_path), "--metric", "last_top1", "--format", "tex")) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}" in out and "top-1 at the last epoch" in out and "Secondary metric (exploratory)" in out
    # a secondary metric never overwrites the summary of the primary one
    assert not (tmp_path / "summary.md").exists()
    assert (tmp_path / "summary-last_top1.md").exists() and (tmp_path / "summary-last_top1.csv").exists()
    assert cmd_table.run(_args(str(tmp_path))) == 0
    assert (tmp_path / "summary.md").exists() and "Verdicts on the primary metric" in capsys.readouterr().out


def test_the_summary_ranks_methods_across_data_sets(tmp_path):
    """Three data sets x three methods: the summary's mean ranks by hand, its Friedman chi2 and p as scipy's."""
    top1 = {"a": {"ce": 0.70, "ls": 0.72, "zipf": 0.74},   # ranks 3, 2, 1
            "b": {"ce": 0.60, "ls": 0.59, "zipf": 0.65},   # ranks 2, 3, 1
            "c": {"ce": 0.50, "ls": 0.52, "zipf": 0.51}}   # ranks 3, 1, 2
    rows = [dict(trial(m, s, v + 0.001 * s, dataset=d), selected_top1=v + 0.001 * s, val_selected_top1=0.9,
                 protocol="clean") for d, by in top1.items() for m, v in by.items() for s in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    md = re.sub(r" +", " ", write_summary(tmp_path))
    assert "## Mean ranks across data sets" in md
    # mean ranks by hand: Zipf (1 + 1 + 2) / 3, LS (2 + 3 + 1) / 3, CE (3 + 2 + 3) / 3
    assert "| Zipf's LS | 1.33 | 1 | 1 | 2 |" in md and "| LS | 2.00 | 2 | 3 | 1 |" in md
    assert "| CE | 2.67 | 3 | 2 | 3 |" in md
    chi2, p = stats.friedmanchisquare([0.70, 0.60, 0.50], [0.72, 0.59, 0.52], [0.74, 0.65, 0.51])
    assert f"Friedman chi2 = {chi2:.2f} (df 2), p = {p:.3f}" in md
    assert (tmp_path / "summary.tex").read_text().count("Mean ranks across data sets") == 1


def test_pooled_table_with_out_writes_the_critical_difference_figure(tmp_path, capsys):
    """`tfbench table A B --out OUT` over two data sets: OUT/plots/critical_difference.{png,pdf}, and the
    Against-CE-across-data-sets table (comparisons with a control)."""
    rows = {"a": [], "b": []}
    for folder, ds, shift in (("a", "cifar_100", 0.0), ("b", "tiny", 0.1)):
        for s in range(3):
            rows[folder] += [trial("ce", s, 0.70 + shift + 0.01 * s, dataset=ds),
                             trial("ls", s, 0.72 + shift + 0.01 * s, dataset=ds),
                             trial("pskd", s, 0.69 + shift + 0.01 * s, dataset=ds)]
        (tmp_path / folder).mkdir()
        pd.DataFrame(rows[folder]).to_csv(tmp_path / folder / "trials.csv", index=False)
    out = tmp_path / "out"
    cmd_table.run(_args(str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--metric", "best_top1"))
    assert (out / "plots" / "critical_difference.png").is_file()
    assert (out / "plots" / "critical_difference.pdf").is_file()
    md = (out / "summary-best_top1.md").read_text()  # a metric other than the primary: its own file
    assert "Against CE across data sets" in md and "permutation" in md
