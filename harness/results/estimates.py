"""Estimates beside the marks: pure functions on the per-seed paired differences of one comparison.

A mark says "decided"; a reader also needs "by how much, and how sure". Three numbers, each consistent with
the rule that makes the marks (harness/results/stats.py: Holm over the table's k comparisons):

- `simultaneous_ci`: the paired t interval at level 1 - alpha/k (Bonferroni over the family). Why this one:
  it holds for all k comparisons at once, and it excludes 0 only where Holm rejects too (Holm's first step
  is alpha/k and every later step is more lenient), so an unmarked row never shows an interval that
  excludes 0. The converse is Holm's step-down gain: a marked row whose interval touches 0 is possible.
- `posterior`: the Bayesian paired posterior of the mean difference (Benavoli et al. 2017, the correlated
  t-test with correlation 0: the seeds are independent runs) under the flat prior, a Student t with n - 1
  degrees of freedom, location the mean difference and scale sd / sqrt(n); split at a region of practical
  equivalence (ROPE, `rope:` in the sweep file) into P(worse), P(equivalent), P(better).
- `seeds_won`: on how many of the n paired seeds the method came out ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Posterior:
    worse: float       # P(the true difference is worse than the ROPE)
    equivalent: float  # P(inside [-rope, +rope])
    better: float


NO_POSTERIOR = Posterior(math.nan, math.nan, math.nan)


def simultaneous_ci(*, mean: float, sd: float, n: int, alpha: float, k: int) -> tuple[float, float]:
    """mean +- t_{1 - alpha/(2k), n-1} sd / sqrt(n); (NaN, NaN) when n < 2 or sd is unknown."""
    if n < 2 or not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan, math.nan
    half = float(stats.t.ppf(1 - alpha / (2 * max(k, 1)), n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def posterior(*, mean: float, sd: float, n: int, rope: float, higher_is_better: bool) -> Posterior:
    """P(worse), P(equivalent), P(better) of the true mean difference, `rope` in the differences' units.

    mu | d ~ mean + sd / sqrt(n) * T_{n-1}. sd == 0 (every seed differs by the same amount): the posterior
    is a point mass at the mean. NaN throughout when n < 2."""
    if n < 2 or not (math.isfinite(mean) and math.isfinite(sd)):
        return NO_POSTERIOR
    if sd == 0:
        below, above = float(mean < -rope), float(mean > rope)
    else:
        scale = sd / math.sqrt(n)
        below = float(stats.t.cdf((-rope - mean) / scale, n - 1))
        above = float(stats.t.sf((rope - mean) / scale, n - 1))
    inside = max(0.0, 1.0 - below - above)
    return Posterior(below, inside, above) if higher_is_better else Posterior(above, inside, below)


def seeds_won(diffs: np.ndarray, *, higher_is_better: bool) -> int:
    """How many paired differences (n,) favour the method (a tie favours neither)."""
    d = np.asarray(diffs, dtype=float)
    return int((d > 0).sum() if higher_is_better else (d < 0).sum())


def add_estimates(groups: pd.DataFrame, *, alpha: float, power: float, higher_is_better: bool) -> None:
    """The power and estimate columns of aggregate's table, in place (raw units), for the rule the marks use:
    Holm over each family (`_family`), whose first step tests at alpha / k. Reads `n_paired`, `diff_mean`,
    `diff_sd`, `_diffs`, `effect`, `rope`, `_is_base`, `_family`; the baseline's own row gets NaN / ''."""
    from harness.results.stats import min_detectable, paired_power, seeds_needed

    members = groups[~groups["_is_base"]]
    k_of = members.groupby("_family", sort=False).size().to_dict()
    cols: dict[str, list] = {c: [] for c in ("family_size", "mdd", "power_at_effect", "seeds_for_effect",
                                             "sim_ci_low", "sim_ci_high", "prob_worse", "prob_equivalent",
                                             "prob_better", "seeds_won")}
    for _, r in groups.iterrows():
        n, mean, sd = int(r["n_paired"]), float(r["diff_mean"]), float(r["diff_sd"])
        if r["_is_base"]:
            for c in cols:
                cols[c].append("" if c == "seeds_won" else math.nan)
            continue
        k = int(k_of[r["_family"]])
        level = alpha / k  # Holm's first step: no comparison is marked at a laxer level than this
        need = seeds_needed(effect=float(r["effect"]), sd=sd, alpha=level, power=power) if n >= 2 else None
        low, high = simultaneous_ci(mean=mean, sd=sd, n=n, alpha=alpha, k=k)
        post = posterior(mean=mean, sd=sd, n=n, rope=float(r["rope"]), higher_is_better=higher_is_better)
        ok_sd = n >= 2 and math.isfinite(sd) and sd > 0
        cols["family_size"].append(k)
        cols["mdd"].append(min_detectable(n, sd=sd, alpha=level, power=power))
        cols["power_at_effect"].append(paired_power(n, effect=float(r["effect"]), sd=sd, alpha=level)
                                       if ok_sd else math.nan)
        cols["seeds_for_effect"].append(math.nan if need is None else float(need))
        cols["sim_ci_low"].append(low)
        cols["sim_ci_high"].append(high)
        cols["prob_worse"].append(post.worse)
        cols["prob_equivalent"].append(post.equivalent)
        cols["prob_better"].append(post.better)
        cols["seeds_won"].append(f"{seeds_won(r['_diffs'], higher_is_better=higher_is_better)}/{n}" if n else "")
    for c, values in cols.items():
        groups[c] = values
