"""Paired statistics of a method against the baseline over seeds: pure functions on arrays.

Why paired: every method of a sweep runs the same seeds, and a seed fixes the initial weights and the
data order (docs/training.md), so the per-seed difference removes the seed-to-seed spread that methods
share. Why Holm: a table makes one comparison per method; Holm-Bonferroni keeps the chance of any false
claim in the table at alpha without assuming the comparisons are independent. The family is every
comparison the table makes, decided by the design, never by the outcome: identical results count with
p = 1 and an untestable comparison (one pair, or no spread) with p = 1, so neither shrinks the family.

Power is reported prospectively, never from the observed difference (post-hoc power only restates p):
the smallest difference the current seeds detect with 80% power (`min_detectable`), and the seeds a
stated difference needs (`seeds_needed`), both from the sd of the paired differences.

Values are in whatever unit the caller uses (fractions in aggregate.py); nothing here scales them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, stats

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
MAX_SEEDS = 10_000  # seeds_needed gives up (returns None) beyond this: the effect is too small to chase


@dataclass(frozen=True)
class Paired:
    """A method minus the baseline over the seeds both have."""
    n: int              # seeds present (finite) for both
    mean: float         # mean of the per-seed differences
    sd: float           # sample sd (ddof=1) of the differences; NaN when n < 2
    ci_low: float       # t-based confidence interval of the mean difference; NaN when n < 2
    ci_high: float
    p: float            # two-sided paired t-test (scipy.stats.ttest_rel); 1 when identical; NaN when n < 2
                        # or every seed differs by the same non-zero amount (sd == 0: t is undefined)
    identical: bool = False  # every paired difference is zero: the two are the same on these seeds


def pair_by_seed(values: Mapping[int, float], baseline: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The two value vectors over the seeds where both are finite, in seed order: (n,), (n,)."""
    seeds = sorted(s for s in set(values) & set(baseline)
                   if math.isfinite(float(values[s])) and math.isfinite(float(baseline[s])))
    return (np.array([float(values[s]) for s in seeds]), np.array([float(baseline[s]) for s in seeds]))


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Paired:
    """a - b, element by element (a[i] and b[i] from the same seed): mean, sd, CI and paired t p-value.

    CI: mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n). Differences that agree to 1e-9 of the values'
    size count as equal. All zero: `identical`, p = 1. Equal but not zero: the CI collapses to the mean and
    p is NaN (t is undefined; no claim should rest on one repeated difference from a handful of seeds).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b  # (n,)
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    # Differences equal up to float rounding (0.74 - 0.64 vs 0.84 - 0.74) are identical: without this,
    # an sd of 1e-17 would give p ~ 0 and a bold cell from nothing.
    tol = 1e-9 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    if float(np.abs(d).max()) <= tol:
        return Paired(n, 0.0, 0.0, 0.0, 0.0, 1.0, identical=True)
    if sd <= tol:
        sd = 0.0
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    p = math.nan if sd == 0 else float(stats.ttest_rel(a, b).pvalue)
    return Paired(n, mean, sd, mean - half, mean + half, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order. Every entry is a member of the family: a NaN
    (a comparison that could not be tested) counts in m as p = 1 and stays NaN in the output.

    The i-th smallest of m p-values (i from 0) is multiplied by m - i, then made non-decreasing along
    the sorted order (a running maximum) and capped at 1. Rejecting where adjusted p < alpha is Holm's
    step-down test. Why not statsmodels' multipletests: it is this loop, and statsmodels is not a
    dependency (the tests use it as the oracle where it is installed).
    """
    p = np.asarray(pvalues, dtype=float)
    filled = np.where(np.isfinite(p), p, 1.0)
    m = p.size
    out = np.empty(p.shape)
    running = 0.0
    for rank, i in enumerate(np.argsort(filled, kind="stable")):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        out[i] = running
    out[~np.isfinite(p)] = math.nan
    return out.tolist()


def paired_power(n: int, *, effect: float, sd: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs at true mean difference `effect` and sd `sd`.

    Under the alternative, t = mean / (sd / sqrt(n)) follows a noncentral t with n - 1 degrees of freedom
    and noncentrality effect / sd * sqrt(n); power = P(|t| > t_{1-alpha/2, n-1}).
    """
    if n < 2:
        return math.nan
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return _two_sided(crit, df, abs(effect) / sd * math.sqrt(n))


def _two_sided(crit: float, df: int, nc: float) -> float:
    """P(|T| > crit) for T ~ noncentral t(df, nc >= 0). The lower tail is at most alpha / 2 and shrinks
    with nc; scipy's nct.cdf returns NaN for some far-tail arguments (e.g. df 2, nc 8), where it is ~0."""
    lower = float(stats.nct.cdf(-crit, df, nc))
    upper = float(stats.nct.sf(crit, df, nc))
    if not math.isfinite(upper):  # NaN far out too (nc ~ 1e15): P(T > crit) = E[Phi(nc - crit sqrt(V / df))], V ~ chi2(df)
        upper = integrate.quad(lambda v: stats.norm.cdf(nc - crit * math.sqrt(v / df)) * stats.chi2.pdf(v, df),
                               0, math.inf)[0]
    return min(1.0, upper + (lower if math.isfinite(lower) else 0.0))


def seeds_needed(*, effect: float, sd: float, alpha: float = DEFAULT_ALPHA,
                 power: float = DEFAULT_POWER) -> int | None:
    """Smallest number of seeds (pairs) n >= 2 whose paired t-test reaches `power` (exact noncentral t).

    Starts from the normal approximation n0 = ((z_{1-alpha/2} + z_power) * sd / effect)^2, which is too
    small for a t-test, and counts up from there (never below 2). None when no finite n can do it (a zero
    or unknown effect, an unknown sd) or when it exceeds MAX_SEEDS. sd == 0 with a non-zero effect gives 2.
    """
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0 or sd < 0:
        return None
    if sd == 0:
        return 2
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    ratio = z * sd / abs(effect)  # inf for an effect of 1e-320: no float is too small or too large here
    if ratio > math.sqrt(MAX_SEEDS + 2):  # the normal approximation already needs more; the t-test more still
        return None
    n = max(2, math.floor(ratio ** 2) - 1)
    while n <= MAX_SEEDS:
        if paired_power(n, effect=effect, sd=sd, alpha=alpha) >= power:
            return n
        n += 1
    return None


def min_detectable(n: int, *, sd: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """The smallest true mean difference the two-sided paired t-test detects with `power` at n pairs whose
    differences have sd `sd`: delta = nc * sd / sqrt(n), with nc the noncentrality at which the noncentral
    t (n - 1 degrees of freedom) exceeds the critical value with probability `power`.

    NaN when it cannot be estimated: n < 2, or sd not positive (no spread to scale by)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(nc: float) -> float:
        return _two_sided(crit, df, nc) - power

    hi = crit + float(stats.norm.ppf(power)) + 1.0
    while gap(hi) < 0:  # small n: the t distribution's tails need a larger noncentrality
        hi *= 2
    return optimize.brentq(gap, 0.0, hi, xtol=1e-10) * sd / math.sqrt(n)
