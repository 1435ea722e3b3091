"""Paired statistics against scipy and worked examples: paired t, t-based CI, Holm, seeds needed."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.results.stats import (
    holm,
    min_detectable,
    pair_by_seed,
    paired_difference,
    paired_power,
    seeds_needed,
)


def test_paired_difference_matches_ttest_rel_and_a_hand_ci():
    a = np.array([0.75, 0.76, 0.80, 0.71, 0.78])
    b = np.array([0.70, 0.74, 0.77, 0.70, 0.74])
    d = a - b  # 0.05, 0.02, 0.03, 0.01, 0.04: mean 0.03, sample sd sqrt(0.001 / 4)
    res = paired_difference(a, b)
    assert res.n == 5 and res.mean == pytest.approx(0.03)
    assert res.sd == pytest.approx(math.sqrt(0.001 / 4))
    t = 0.03 / (math.sqrt(0.001 / 4) / math.sqrt(5))
    assert res.p == pytest.approx(2 * stats.t.sf(t, 4))
    assert res.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (res.ci_low, res.ci_high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    # a 90% interval is narrower, with t_{0.95, 4}
    half90 = stats.t.ppf(0.95, 4) * d.std(ddof=1) / math.sqrt(5)
    assert paired_difference(a, b, confidence=0.9).ci_high == pytest.approx(0.03 + half90)


def test_paired_difference_degenerate_cases():
    one = paired_difference([0.8], [0.7])
    assert one.n == 1 and one.mean == pytest.approx(0.1)
    assert all(math.isnan(x) for x in (one.sd, one.ci_low, one.ci_high, one.p))
    none = paired_difference([], [])
    assert none.n == 0 and math.isnan(none.mean)
    same = paired_difference([0.8, 0.9], [0.7, 0.8])  # one repeated non-zero difference: sd 0, t undefined
    assert same.sd == 0 and math.isnan(same.p) and same.ci_low == pytest.approx(0.1) == same.ci_high
    assert not same.identical
    # equal on every seed: identical, p = 1 (no evidence of any difference), never "untestable"
    twin = paired_difference([0.81, 0.9, 0.7], [0.81, 0.9, 0.7])
    assert twin.identical and twin.p == 1.0 and twin.mean == 0.0 and twin.sd == 0.0


def test_pair_by_seed_keeps_only_seeds_present_and_finite_on_both_sides():
    a, b = pair_by_seed({0: 0.7, 1: 0.8, 2: math.nan, 5: 0.9}, {1: 0.6, 0: 0.5, 2: 0.4, 3: 0.3})
    np.testing.assert_allclose(a, [0.7, 0.8])  # seeds 0, 1 in seed order
    np.testing.assert_allclose(b, [0.5, 0.6])


def test_holm_worked_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # an untestable comparison (NaN) stays in the family as p = 1: m = 3 here; it stays NaN itself
    out = holm([0.2, math.nan, 0.01, ])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.03)
    # dropping a member must not shrink the family: identical results (p = 1) and NaN count alike
    assert holm([0.02, math.nan])[0] == pytest.approx(0.04) == holm([0.02, 1.0])[0]
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_holm_equals_statsmodels_multipletests():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9):
        p = rng.uniform(0, 0.2, size=m)
        assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    # with a member that could not be tested: statsmodels on the same family with that p set to 1
    p = [0.01, math.nan, 0.03, 0.002]
    expected = multipletests([0.01, 1.0, 0.03, 0.002], method="holm")[1]
    got = holm(p)
    assert [got[i] for i in (0, 2, 3)] == pytest.approx([expected[i] for i in (0, 2, 3)]) and math.isnan(got[1])


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_min_detectable_equals_statsmodels_and_reaches_the_power(n):
    TTestPower = pytest.importorskip("statsmodels.stats.power").TTestPower
    d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert min_detectable(n, sd=0.5) == pytest.approx(d * 0.5, rel=1e-5)  # scales with the sd
    # and by definition, with scipy's noncentral t written out here: the power at it is 80%
    crit = stats.t.ppf(0.975, n - 1)
    nc = min_detectable(n, sd=1.0) * math.sqrt(n)
    lower = stats.nct.cdf(-crit, n - 1, nc)
    assert stats.nct.sf(crit, n - 1, nc) + (0 if math.isnan(lower) else lower) == pytest.approx(0.8, abs=1e-6)


def test_min_detectable_edges():
    assert math.isnan(min_detectable(1, sd=1.0))         # one pair: no sd
    assert math.isnan(min_detectable(5, sd=0.0))         # no spread to scale by
    assert math.isnan(min_detectable(5, sd=math.nan))
    # G*Power: 10 pairs detect d = 1 with 80.3% power, so the detectable d at 10 is just below 1
    assert 0.99 < min_detectable(10, sd=1.0) < 1.0
    assert min_detectable(10, sd=1.0, alpha=0.01) > min_detectable(10, sd=1.0)


@pytest.mark.parametrize(("d", "expected"), [(1.0, 10), (0.5, 34), (0.8, 15), (0.2, 199)])
def test_seeds_needed_matches_published_paired_t_sample_sizes(d, expected):
    # Two-sided paired t, alpha 0.05, power 0.8: G*Power's (Faul et al. 2007) sample sizes for effect size
    # d = mean / sd of the differences; scale-free, so an effect of 0.5 points at sd 0.5 is d = 1.
    assert seeds_needed(effect=d * 0.5, sd=0.5) == expected
    # and the definition, with scipy's noncentral t written out here: n reaches 80%, n - 1 does not
    def power(n):
        crit = stats.t.ppf(0.975, n - 1)
        return stats.nct.sf(crit, n - 1, d * math.sqrt(n)) + stats.nct.cdf(-crit, n - 1, d * math.sqrt(n))
    assert power(expected) >= 0.8 > power(expected - 1)
    assert paired_power(expected, effect=d, sd=1.0) == pytest.approx(power(expected))


def test_seeds_needed_edges_and_the_normal_approximation_as_a_floor():
    assert seeds_needed(effect=0.0, sd=1.0) is None            # no effect: no number of seeds finds it
    assert seeds_needed(effect=math.nan, sd=1.0) is None
    assert seeds_needed(effect=1.0, sd=0.0) == 2               # no spread: the smallest testable n
    assert seeds_needed(effect=1e-4, sd=1.0) is None           # beyond MAX_SEEDS
    assert seeds_needed(effect=-1.0, sd=1.0) == 10             # two-sided: the sign does not matter
    # the t-test never needs fewer seeds than the normal approximation ((z_.975 + z_.8) / d)^2
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for d in (0.3, 0.7, 1.5):
        assert seeds_needed(effect=d, sd=1.0) >= (z / d) ** 2
    # a stricter alpha needs more seeds
    assert seeds_needed(effect=0.5, sd=1.0, alpha=0.01) > 34
