"""What the marks' rule does, measured by simulation: `python -m harness.results.simulate [--sims N]`.

Model: a table of k methods against CE over n seeds; per seed, every method's and CE's value is a shared
seed effect plus its own N(0, 1) noise, so that the k paired differences are correlated (0.5) as real
ones are, with sd sqrt(2). A/A: no method differs; power: the first method is better by one sd of the paired
differences (sqrt 2), the others equal. Rules (vectorised replicas of harness/results/stats.py's Holm and
harness/results/sequential.py's design; tests/results/test_sequential.py checks them against the real
functions on the same tables):

- `fixed n`: Holm over the k paired t-tests at n seeds (the summary's marks).
- `peeking`: the habit the design replaces: plain Holm after every seed from 3 to 10, stop at the first mark.
- `sequential`: seeds: {sequential: {start: 3, max: 10}} (O'Brien-Fleming-type spending, Holm per look,
  equivalence stop inside a ROPE of half an sd).

The output table is in docs/results.md; a test reruns it with fewer simulations and compares.

A second table measures the coverage of the across-data-set interval (harness/results/bootstrap.py
`stratified`): N data sets with known mean paired differences 0.7 + (-1 .. 1) (their mean, the target: 0.7)
and sds 0.5 .. 1.5, n seeds each; the share of 95% intervals that contain 0.7, with and without the
sqrt(n / (n - 1)) spread (1,000 replicates per interval).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from harness.results.sequential import Plan, spent

K = 6
ALPHA = 0.05
SHIFT = math.sqrt(2.0)  # one sd of the paired differences
ROPE = SHIFT / 2


def differences(rng: np.random.Generator, *, sims: int, n: int, k: int = K, shift: float = 0.0) -> np.ndarray:
    """(sims, n, k) paired differences: method i minus CE on each seed; the first method shifted."""
    base = rng.normal(size=(sims, n, 1))
    d = rng.normal(size=(sims, n, k)) - base
    d[:, :, 0] += shift
    return d


def t_p(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sd and two-sided paired t p over axis 1 of (sims, n, k): each (sims, k)."""
    n = d.shape[1]
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    p = 2 * stats.t.sf(np.abs(mean) / (sd / math.sqrt(n)), n - 1)
    return mean, sd, p


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p per row of (sims, k), as stats.holm does for one table."""
    k = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * (k - np.arange(k))
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=1), 1.0)
    out = np.empty_like(p)
    np.put_along_axis(out, order, ranked, axis=1)
    return out


def fixed(d: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """(sims, k) marks: +1 better, -1 worse, 0 none, Holm at alpha."""
    mean, _, p = t_p(d)
    return np.where(holm_rows(p) < alpha, np.sign(mean), 0.0)


def peeking(d: np.ndarray, start: int = 3, alpha: float = ALPHA) -> np.ndarray:
    """Plain Holm after every seed from `start`, keeping the first marks found: (sims, k)."""
    marks = np.zeros(d.shape[::2])
    for n in range(start, d.shape[1] + 1):
        found = fixed(d[:, :n], alpha)
        none_yet = ~np.any(marks != 0, axis=1, keepdims=True)
        marks = np.where(none_yet, found, marks)
    return marks


def sequential(d: np.ndarray, plan: Plan, *, alpha: float = ALPHA, rope: float = ROPE) -> tuple[np.ndarray, np.ndarray]:
    """The design on (sims, max, k): (marks (sims, k), seeds used per comparison (sims, k))."""
    sims, _, k = d.shape
    marks, used = np.zeros((sims, k)), np.zeros((sims, k))
    open_ = np.ones((sims, k), dtype=bool)
    for n, level in zip(plan.looks(), spent(plan, alpha), strict=True):
        mean, sd, p = t_p(d[:, :n])
        adjusted = holm_rows(np.where(open_, p, 1.0))
        mark = open_ & (adjusted < level)
        half = stats.t.ppf(0.95, n - 1) * sd / math.sqrt(n)
        equiv = open_ & ~mark & (mean - half > -rope) & (mean + half < rope)
        marks = np.where(mark, np.sign(mean), marks)
        stop = mark | equiv | (open_ & (n == plan.max))
        used = np.where(stop, n, used)
        open_ &= ~stop
    return marks, used


def table(sims: int, seed: int = 0) -> list[list[str]]:
    """Rows: rule, n, A/A false-mark rate (any of k), power (first method marked better), mean seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (3, 5, 10):
        aa = fixed(differences(rng, sims=sims, n=n))
        pw = fixed(differences(rng, sims=sims, n=n, shift=SHIFT))
        rows.append(["fixed n (Holm)", str(n), f"{np.any(aa != 0, axis=1).mean():.3f}",
                     f"{(pw[:, 0] > 0).mean():.3f}", str(n)])
    aa = peeking(differences(rng, sims=sims, n=10))
    rows.append(["peeking (Holm after every seed)", "3-10", f"{np.any(aa != 0, axis=1).mean():.3f}", "", ""])
    plan = Plan(start=3, max=10)
    aa, _ = sequential(differences(rng, sims=sims, n=10), plan)
    pw, used = sequential(differences(rng, sims=sims, n=10, shift=SHIFT), plan)
    rows.append(["sequential (obf, start 3, max 10)", "3-10", f"{np.any(aa != 0, axis=1).mean():.3f}",
                 f"{(pw[:, 0] > 0).mean():.3f}", f"{used[:, 0].mean():.1f}"])
    return rows


HEADERS = ["rule", "seeds", "A/A false-mark rate", "power at 1 sd", "seeds used (shifted method)"]

ACROSS_TRUE = 0.7
ACROSS_CASES = [(n_sets, n) for n_sets in (2, 3, 5) for n in (3, 5, 10)]


def across_coverage(sims: int, *, n_sets: int, n: int, seed: int = 0, replicates: int = 1000) -> tuple[float, float]:
    """(coverage of the stratified interval as used, coverage without the spread) over `sims` tables."""
    from harness.results.bootstrap import stratified

    rng = np.random.default_rng(seed)
    means = ACROSS_TRUE + np.linspace(-1.0, 1.0, n_sets)  # (N,): their mean is ACROSS_TRUE
    sds = np.linspace(0.5, 1.5, n_sets)
    hits = np.zeros(2)
    for s in range(sims):
        blocks = list(rng.normal(means[:, None], sds[:, None], size=(n_sets, n)))
        for j, adjust in enumerate((True, False)):
            ci = stratified(blocks, replicates=replicates, seed=s, adjust=adjust)
            hits[j] += ci.low <= ACROSS_TRUE <= ci.high
    return float(hits[0] / sims), float(hits[1] / sims)


def across_table(sims: int, seed: int = 0) -> list[list[str]]:
    rows = []
    for n_sets, n in ACROSS_CASES:
        used, plain = across_coverage(sims, n_sets=n_sets, n=n, seed=seed)
        rows.append([str(n_sets), str(n), f"{used:.3f}", f"{plain:.3f}"])
    return rows


ACROSS_HEADERS = ["data sets", "seeds each", "coverage (as used)", "coverage (plain percentile)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=20000, help="simulated tables per row (default 20000)")
    parser.add_argument("--across", type=int, default=0, metavar="SIMS",
                        help="also the coverage of the across-data-set interval, over SIMS tables per row")
    args = parser.parse_args(argv)
    from tabulate import tabulate

    print(f"k = {K} methods against CE, alpha = {ALPHA}, {args.sims} simulated tables per row")
    print(tabulate(table(args.sims), headers=HEADERS, tablefmt="github", disable_numparse=True))
    if args.across:
        print(f"\nthe across-data-set interval's coverage at 95%, {args.across} simulated tables per row")
        print(tabulate(across_table(args.across), headers=ACROSS_HEADERS, tablefmt="github", disable_numparse=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
