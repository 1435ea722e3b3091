"""Ranks across data sets against hand-computed tables, Demšar's (2006) formulas and critical values, and
scipy on the same columns; the critical-difference diagram read back from its Axes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.results.plots import caption_of, critical_difference_diagram
from harness.results.ranks import (
    across_datasets,
    across_tables,
    cliques,
    critical_difference,
    friedman,
    mean_ranks,
    q_alpha,
    ranks,
)
from harness.results.render import to_csv, to_latex, to_markdown


def tied_table() -> pd.DataFrame:
    return pd.DataFrame({"A": [0.9, 0.6, 0.5], "B": [0.8, 0.7, 0.5], "C": [0.8, 0.5, 0.5], "D": [0.7, 0.7, 0.9]},
                        index=["b1", "b2", "b3"])


def test_ranks_best_is_one_and_ties_share_the_average():
    r = ranks(tied_table(), higher_is_better=True)
    # b1: A best; B and C tie for places 2 and 3; D last.  b2: B and D tie for 1-2; A 3; C 4.
    # b3: D best; A, B, C tie for places 2-4.
    expected = pd.DataFrame({"A": [1, 3, 3], "B": [2.5, 1.5, 3], "C": [2.5, 4, 3], "D": [4, 1.5, 1]},
                            index=["b1", "b2", "b3"], dtype=float)
    pd.testing.assert_frame_equal(r, expected)
    # lower is better: the order reverses, rank -> k + 1 - rank
    pd.testing.assert_frame_equal(ranks(tied_table(), higher_is_better=False), 5 - expected)
    m = mean_ranks(r)
    assert list(m.index) == ["D", "A", "B", "C"]  # A and B tie at 7/3 and keep the column order
    np.testing.assert_allclose(m.to_numpy(), [6.5 / 3, 7 / 3, 7 / 3, 9.5 / 3])


# Hand ranks (1 = best) of four methods in six blocks, without ties; scores are built to produce them.
HAND_RANKS = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4], [1, 2, 4, 3], [2, 1, 3, 4], [1, 2, 3, 4]])


def hand_scores() -> pd.DataFrame:
    offsets = np.array([[70.0], [55.0], [81.0], [64.0], [77.0], [90.0]])  # blocks on different scales
    return pd.DataFrame(offsets - HAND_RANKS, index=[f"d{i}" for i in range(6)], columns=list("ABCD"))


def test_friedman_matches_scipy_and_demsar_formula():
    scores = hand_scores()
    res = across_datasets(scores, higher_is_better=True)
    np.testing.assert_allclose(res.ranks[list("ABCD")].to_numpy(), HAND_RANKS)
    n, k = HAND_RANKS.shape
    r = HAND_RANKS.mean(axis=0)  # A 8/6, B 11/6, C 18/6, D 23/6
    chi2 = 12 * n / (k * (k + 1)) * ((r ** 2).sum() - k * (k + 1) ** 2 / 4)
    assert chi2 == pytest.approx(13.8)  # 3.6 * (1038/36 - 25), worked by hand
    fr = res.friedman
    assert fr.reason == "" and fr.df == 3
    assert fr.chi2 == pytest.approx(chi2)
    scipy_res = stats.friedmanchisquare(*(scores[c] for c in scores.columns))
    assert fr.chi2 == pytest.approx(scipy_res.statistic) and fr.p == pytest.approx(scipy_res.pvalue)
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)  # 5 * 13.8 / 4.2
    assert fr.f == pytest.approx(69 / 4.2) == pytest.approx(f)
    assert fr.f_df == (3, 15) and fr.f_p == pytest.approx(stats.f.sf(f, 3, 15))
    assert res.rejects is True
    assert list(res.mean_ranks.index) == list("ABCD")
    # the same verdict when lower is better and the scores are negated
    neg = across_datasets(-scores, higher_is_better=False)
    assert neg.friedman.chi2 == pytest.approx(chi2)
    pd.testing.assert_series_equal(neg.mean_ranks, res.mean_ranks)


@pytest.mark.parametrize(("alpha", "k", "q"), [
    (0.05, 2, 1.960), (0.05, 3, 2.343), (0.05, 4, 2.569), (0.05, 5, 2.728), (0.05, 6, 2.850),
    (0.05, 7, 2.949), (0.05, 8, 3.031), (0.05, 9, 3.102), (0.05, 10, 3.164),
    (0.10, 2, 1.645), (0.10, 3, 2.052), (0.10, 4, 2.291), (0.10, 5, 2.459)])
def test_q_alpha_matches_demsar_table(alpha, k, q):
    # to the table's last digit: Demšar's values are not all rounded the same way (k = 3: 2.3437 -> 2.343,
    # k = 7: 2.9483 -> 2.949)
    assert q_alpha(k=k, alpha=alpha) == pytest.approx(q, abs=1e-3)


def test_critical_difference_demsar_example():
    # Demšar 2006's worked example: four classifiers on 14 data sets, CD = 2.569 sqrt(4 * 5 / (6 * 14)) = 1.25
    assert critical_difference(k=4, n_blocks=14, alpha=0.05) == pytest.approx(1.25, abs=0.005)
    assert critical_difference(k=4, n_blocks=6) == pytest.approx(2.569 * math.sqrt(20 / 36), abs=1e-3)


def pair_table() -> pd.DataFrame:
    """Three methods in six blocks, in integer percent so that equal scores are exactly equal.
    A - B = 1..6 (A better everywhere); A - C = 1, -2, 3, 4, -5, 6; B - C = 0, -4, 0, 0, -10, 0."""
    a = np.array([80, 70, 90, 60, 75, 85])
    return pd.DataFrame({"A": a, "B": a - np.array([1, 2, 3, 4, 5, 6]), "C": a - np.array([1, -2, 3, 4, -5, 6])},
                        index=[f"d{i}" for i in range(6)]).astype(float)


def _pair(res, x, y) -> pd.Series:
    rows = res.pairwise[res.pairwise.apply(lambda r: {r["a"], r["b"]} == {x, y}, axis=1)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_wilcoxon_holm_against_exact_values_scipy_and_hand_holm():
    scores = pair_table()
    res = across_datasets(scores, higher_is_better=True, alpha=0.1, posthoc="wilcoxon-holm")
    # Mean ranks by hand: A 8/6 (1, 2, 1, 1, 2, 1), C 12/6, B 16/6 (B and C tie where B - C = 0).
    np.testing.assert_allclose(res.mean_ranks.to_numpy(), [8 / 6, 2.0, 16 / 6])
    assert list(res.mean_ranks.index) == ["A", "C", "B"]
    assert list(zip(res.pairwise["a"], res.pairwise["b"], strict=True)) == [("A", "C"), ("A", "B"), ("C", "B")]
    np.testing.assert_allclose(res.pairwise["mean_rank_diff"], [4 / 6, 8 / 6, 4 / 6])
    # Exact two-sided signed-rank p with six distinct differences: all positive, 2 / 2^6; for A - C the
    # negative ranks sum to 2 + 5 = 7, and 18 of the 64 subsets of {1..6} have a sum <= 7
    # (sums 0..7: 1, 1, 1, 2, 2, 3, 4, 4).
    p_ab, p_ac = _pair(res, "A", "B")["p_wilcoxon"], _pair(res, "A", "C")["p_wilcoxon"]
    assert p_ab == pytest.approx(2 / 64) and p_ac == pytest.approx(36 / 64)
    for x, y in (("A", "B"), ("A", "C"), ("B", "C")):
        expected = stats.wilcoxon(scores[x], scores[y], zero_method="zsplit").pvalue
        assert _pair(res, x, y)["p_wilcoxon"] == pytest.approx(expected)
    p_bc = _pair(res, "B", "C")["p_wilcoxon"]
    assert p_ab < p_bc < p_ac  # the sorted order the hand Holm below assumes
    holm_ab, holm_bc = 3 * p_ab, max(3 * p_ab, 2 * p_bc)
    holm_ac = max(holm_bc, 1 * p_ac)
    assert _pair(res, "A", "B")["p_holm"] == pytest.approx(holm_ab)
    assert _pair(res, "B", "C")["p_holm"] == pytest.approx(holm_bc)
    assert _pair(res, "A", "C")["p_holm"] == pytest.approx(holm_ac)
    # Sixteen blocks with zero differences: scipy's normal approximation, where the zero method matters.
    rng = np.random.default_rng(1)
    many = pd.DataFrame(np.round(rng.normal(size=(16, 3)), 1) + [0.3, 0.0, 0.0], columns=list("ABC"))
    many.loc[:5, "B"] = many.loc[:5, "C"]
    wide = across_datasets(many, higher_is_better=True, posthoc="wilcoxon-holm")
    for x, y in (("A", "B"), ("A", "C"), ("B", "C")):
        expected = stats.wilcoxon(many[x], many[y], zero_method="zsplit").pvalue
        assert _pair(wide, x, y)["p_wilcoxon"] == pytest.approx(expected)
    assert stats.wilcoxon(many["B"], many["C"]).pvalue != pytest.approx(_pair(wide, "B", "C")["p_wilcoxon"])
    # 3/32 < 0.1: only A and B differ, so the bars join A with C and C with B
    assert res.pairwise["significant"].tolist() == [False, True, False]
    assert res.cliques == [("A", "C"), ("C", "B")]
    # at alpha 0.05, A - B's own p (1/32) would pass, but its Holm p (3/32) does not
    strict = across_datasets(scores, higher_is_better=True, alpha=0.05, posthoc="wilcoxon-holm")
    assert not strict.pairwise["significant"].any() and strict.cliques == [("A", "C", "B")]


def test_nemenyi_significance_is_by_cd():
    scores = pair_table()
    # k = 3, N = 6: CD = 2.052 sqrt(12 / 36) = 1.185 at alpha 0.10, 2.343 sqrt(12 / 36) = 1.353 at 0.05;
    # A and B are 8/6 = 1.333 apart.
    loose = across_datasets(scores, higher_is_better=True, alpha=0.1)
    assert loose.cd == pytest.approx(2.052 / math.sqrt(3), abs=1e-3)
    assert loose.pairwise["significant"].tolist() == [False, True, False]
    assert loose.cliques == [("A", "C"), ("C", "B")]
    strict = across_datasets(scores, higher_is_better=True, alpha=0.05)
    assert strict.cd == pytest.approx(2.343 / math.sqrt(3), abs=1e-3)
    assert not strict.pairwise["significant"].any()
    assert strict.cliques == [("A", "C", "B")]


def _pairs(order, different) -> pd.DataFrame:
    rows = [(a, b, frozenset((a, b)) in different) for i, a in enumerate(order) for b in order[i + 1:]]
    return pd.DataFrame(rows, columns=["a", "b", "significant"])


def test_cliques_are_maximal_runs_in_rank_order():
    order = ["a", "b", "c", "d"]
    only_ad = {frozenset("ad")}
    assert cliques(order=order, pairwise=_pairs(order, only_ad)) == [("a", "b", "c"), ("b", "c", "d")]
    chain = {frozenset("ac"), frozenset("bd")}
    assert cliques(order=order, pairwise=_pairs(order, chain)) == [("a", "b"), ("b", "c"), ("c", "d")]
    everything = {frozenset((x, y)) for x in order for y in order if x != y}
    assert cliques(order=order, pairwise=_pairs(order, everything)) == []  # no bar of one method
    # b and d do not differ, but c between them differs from b: no run holds both
    skip = {frozenset("bc"), frozenset("ad"), frozenset("ac")}
    assert cliques(order=order, pairwise=_pairs(order, skip)) == [("a", "b"), ("c", "d")]


def test_missing_scores_leave_the_block_out_and_say_why():
    scores = hand_scores()
    holed = scores.copy()
    holed.loc["d2", "B"] = math.nan
    holed.loc["d4", ["A", "D"]] = [math.inf, math.nan]
    res = across_datasets(holed, higher_is_better=True)
    assert res.n_blocks == 4 and res.blocks_used == ["d0", "d1", "d3", "d5"]
    assert res.blocks_left_out == {"d2": "no finite score for: B", "d4": "no finite score for: A, D"}
    assert "d2 (no finite score for: B)" in res.note
    complete = across_datasets(scores.drop(index=["d2", "d4"]), higher_is_better=True)
    pd.testing.assert_series_equal(res.mean_ranks, complete.mean_ranks)
    assert res.friedman == complete.friedman


def test_too_few_methods_or_blocks_give_none_with_a_reason():
    scores = hand_scores()
    two = across_datasets(scores[["A", "B"]], higher_is_better=True)
    assert two.friedman.chi2 is None and two.friedman.p is None and two.friedman.f_p is None
    assert "at least 3" in two.friedman.reason and two.rejects is None
    assert len(two.pairwise) == 1  # two methods: their Wilcoxon test is still there
    one_block = across_datasets(scores.iloc[:1], higher_is_better=True)
    assert one_block.friedman.f is None and "at least 2" in one_block.friedman.reason
    assert one_block.friedman.reason in one_block.note
    none_complete = scores.copy()
    none_complete["B"] = math.nan
    empty = across_datasets(none_complete, higher_is_better=True)
    assert empty.n_blocks == 0 and empty.friedman.chi2 is None and empty.cd is None
    assert empty.pairwise.empty and empty.cliques == [] and len(empty.blocks_left_out) == 6
    tied = across_datasets(pd.DataFrame({"A": [1.0, 2.0], "B": [1.0, 2.0], "C": [1.0, 2.0]}),
                           higher_is_better=True)
    assert tied.friedman.chi2 is None and "ties" in tied.friedman.reason
    assert (tied.pairwise["p_wilcoxon"] == 1.0).all() and tied.cliques == [("A", "B", "C")]
    with pytest.raises(ValueError, match="posthoc"):
        across_datasets(scores, higher_is_better=True, posthoc="tukey")
    assert friedman(scores.iloc[:, :2]).reason  # the function alone, too


def test_blocks_in_full_agreement_give_an_infinite_f_and_say_so():
    scores = pd.DataFrame({"A": [3.0, 30.0, 0.3], "B": [2.0, 20.0, 0.2], "C": [1.0, 10.0, 0.1]})
    res = across_datasets(scores, higher_is_better=True)
    assert res.friedman.chi2 == pytest.approx(3 * 2)  # N (k - 1): the largest chi2
    assert math.isinf(res.friedman.f) and res.friedman.f_p == 0.0
    assert "infinite" in res.note and f"{1 / 36:.2g}" in res.note  # (3!)^(1-3)


def test_note_warns_about_few_blocks():
    small = across_datasets(pair_table(), higher_is_better=True, posthoc="wilcoxon-holm")
    assert "little power" in small.note
    assert "no pair can reach Holm p < 0.05" in small.note  # 3 pairs * 2/2^6 = 0.094
    rng = np.random.default_rng(0)
    big = pd.DataFrame(rng.normal(size=(12, 3)) + [0.0, 0.5, 1.0], columns=list("ABC"))
    assert "little power" not in across_datasets(big, higher_is_better=True).note


def test_tables_render_ranks_and_pairs_only_on_request():
    res = across_datasets(pair_table(), higher_is_better=True, alpha=0.1)
    [alone] = across_tables(res)  # by default the mean ranks only: every pair is asked for by name
    ranks_table, pairs_table = across_tables(res, all_pairs=True)
    assert alone.rows == ranks_table.rows
    assert ranks_table.headers == ["method", "mean rank", "d0", "d1", "d2", "d3", "d4", "d5"]
    assert ranks_table.rows[0] == ["A", "1.33", "1", "2", "1", "1", "2", "1"]
    assert ranks_table.rows[2] == ["B", "2.67", "2.5", "3", "2.5", "2.5", "3", "2.5"]
    assert "Friedman chi2" in ranks_table.note and "Nemenyi CD = 1.18" in ranks_table.note
    assert [r[:2] for r in pairs_table.rows] == [["A", "C"], ["A", "B"], ["C", "B"]]
    assert [r[-1] for r in pairs_table.rows] == ["no", "yes", "no"]
    assert "| A " in to_markdown(ranks_table) and "yes" in to_markdown(pairs_table)
    assert "yes" in to_latex(pairs_table)
    assert to_csv(pairs_table).splitlines()[2].startswith("A,B,1.33,0.031,0.094,yes")


def test_critical_difference_diagram_draws_the_ranks_cd_and_cliques():
    res = across_datasets(pair_table(), higher_is_better=True, alpha=0.1)
    fig = critical_difference_diagram(res, title="top-1")
    (ax,) = fig.axes
    assert fig.get_figwidth() == pytest.approx(3.3)
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    texts = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert texts == {"label:A": "A (1.33)", "label:C": "C (2.00)", "label:B": "(2.67) B"}
    for name, r in (("A", 8 / 6), ("C", 2.0), ("B", 16 / 6)):
        assert lines[f"method:{name}"].get_xdata()[0] == pytest.approx(r)
    cd = lines["cd"].get_xdata()
    assert cd[1] - cd[0] == pytest.approx(2.052 / math.sqrt(3), abs=1e-3)
    np.testing.assert_allclose(lines["clique:0"].get_xdata(), [8 / 6, 2.0])       # A - C
    np.testing.assert_allclose(lines["clique:1"].get_xdata(), [2.0, 16 / 6])      # C - B
    assert "clique:2" not in lines
    assert ax.get_xlim()[0] < 1 < 3 < ax.get_xlim()[1]  # best (rank 1) on the left
    assert ax.get_title() == "top-1"  # the statistics are the caption (<stem>.txt), not drawn
    caption = caption_of(fig)
    assert caption.startswith("top-1. N = 6 blocks, k = 3 methods")
    assert "Friedman p = " in caption and "Nemenyi (CD = 1.18)" in caption
    # Wilcoxon-Holm: the same cliques, and no CD bar
    wh = critical_difference_diagram(across_datasets(pair_table(), higher_is_better=True, alpha=0.1,
                                                     posthoc="wilcoxon-holm"))
    gids = {line.get_gid() for line in wh.axes[0].lines}
    assert "cd" not in gids and {"clique:0", "clique:1"} <= gids
    assert "Wilcoxon-Holm" in caption_of(wh)
