"""Methods ranked over several data sets (Demšar 2006): mean ranks, the Friedman test with Iman-Davenport's
F, a post-hoc test (Nemenyi's critical difference or pairwise Wilcoxon signed-rank tests with Holm), and
the groups a critical-difference diagram joins. Pure functions on pandas / numpy; no file I/O.

Why ranks: top-1 on CIFAR-100 and on Tiny ImageNet are not on one scale, so averaging them (or their
differences) lets the data set with the widest spread decide. Ranking within each block first makes every
block one vote of equal weight, and the Friedman test asks whether the mean ranks differ more than chance.

Input everywhere: `scores`, a DataFrame with one row per block (a data set / model cell; the index names
it) and one column per method (the column label names it); a value is that method's score in that block
(e.g. the mean top-1 over seeds). `higher_is_better` says which way is better (False for NLL, ECE).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.results.render import Table, format_p, is_finite
from harness.results.stats import DEFAULT_ALPHA, holm

POSTHOCS = {"nemenyi": "Nemenyi", "wilcoxon-holm": "Wilcoxon-Holm"}
DEFAULT_POSTHOC = "nemenyi"
# Demšar's rule of thumb: below about 10 blocks the chi-square (and F) approximations are rough and the
# tests have little power; the note says so.
MIN_BLOCKS = 10
# Demšar (2006) splits the ranks of zero differences evenly between the two signs (and drops one when
# their number is odd, which scipy does not) rather than dropping them all (scipy's default, "wilcox"),
# which would discard the blocks where two methods tie.
# It changes the p only where scipy uses the normal approximation: with zero or tied differences in at
# most 13 blocks, scipy (1.17) computes an exact sign-flip permutation p, on which it has no effect.
ZERO_METHOD = "zsplit"
PAIRWISE_COLUMNS = ["a", "b", "mean_rank_diff", "p_wilcoxon", "p_holm", "significant"]


@dataclass(frozen=True)
class Friedman:
    """The Friedman test and Iman-Davenport's F over complete blocks; None values with a reason when the
    test cannot be computed (fewer than 3 methods or 2 blocks, or every block fully tied)."""
    chi2: float | None          # scipy.stats.friedmanchisquare (tie-corrected), df = k - 1
    p: float | None
    df: int | None
    f: float | None             # Iman-Davenport: (N-1) chi2 / (N(k-1) - chi2); inf when every block agrees
    f_p: float | None           # F upper tail with df (k-1, (k-1)(N-1)); the p that decides
    f_df: tuple[int, int] | None
    reason: str = ""            # one line when the values are None, else ""
    perm_p: float | None = None  # N < MIN_BLOCKS: the permutation p of chi2 (exact when enumerable), which decides
    perm_exact: bool = False

    @property
    def decision_p(self) -> float | None:
        """The p that decides: the permutation p below MIN_BLOCKS blocks (the F approximation is too lax
        there: size 0.070 at N = 2, k = 7), Iman-Davenport's beyond."""
        return self.perm_p if self.perm_p is not None else self.f_p


@dataclass(frozen=True)
class AcrossDatasets:
    """Methods ranked across blocks, with the Friedman test, a post-hoc test and the diagram's groups."""
    higher_is_better: bool
    k: int                          # methods
    n_blocks: int                   # N: complete blocks used
    blocks_used: list               # index labels of the blocks used, in input order
    blocks_left_out: dict           # block label -> why it was left out
    ranks: pd.DataFrame             # (N, k) per-block ranks, 1 = best; columns best first
    mean_ranks: pd.Series           # (k,) mean rank per method, best (lowest) first
    friedman: Friedman
    alpha: float
    posthoc: str                    # a key of POSTHOCS
    cd: float | None                # Nemenyi critical difference at alpha (also given under Wilcoxon-Holm)
    pairwise: pd.DataFrame          # PAIRWISE_COLUMNS, one row per pair; a ranked no worse than b
    cliques: list[tuple[str, ...]]  # maximal runs (in mean-rank order) of methods not significantly different
    note: str                       # what the tests mean and their caveats at this N

    @property
    def rejects(self) -> bool | None:
        """Whether Iman-Davenport's F rejects "all methods rank alike" at alpha; None when not computed."""
        p = self.friedman.decision_p
        return None if p is None else bool(p < self.alpha)


def _label(x) -> str:
    """A block or method label as text: a (dataset, model) tuple reads `dataset / model`."""
    return " / ".join(map(str, x)) if isinstance(x, tuple) else str(x)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def complete_blocks(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The blocks where every method has a finite score (the Friedman test needs complete blocks), and for
    each block left out, why: {label: "no finite score for: a, b"}."""
    values = scores.to_numpy(dtype=float)  # (N, k)
    finite = np.isfinite(values)           # (N, k)
    keep = finite.all(axis=1)              # (N,)
    left_out = {block: "no finite score for: " + ", ".join(_label(m) for m, ok in zip(scores.columns, row,
                                                                                        strict=True) if not ok)
                for block, row, kept in zip(scores.index, finite, keep, strict=True) if not kept}
    return scores[keep], left_out


def ranks(scores: pd.DataFrame, *, higher_is_better: bool) -> pd.DataFrame:
    """Per-block ranks, 1 = best, ties sharing the average of the ranks they span (scipy.stats.rankdata);
    same shape and labels as `scores`. A block with a NaN ranks NaN throughout: pass complete blocks."""
    values = scores.to_numpy(dtype=float)  # (N, k)
    # rankdata gives 1 to the smallest: negate so that 1 is the best score either way.
    r = stats.rankdata(-values if higher_is_better else values, method="average", axis=1)  # (N, k)
    return pd.DataFrame(r, index=scores.index, columns=scores.columns)


def mean_ranks(block_ranks: pd.DataFrame) -> pd.Series:
    """Mean rank of each method over the blocks, best (lowest) first; equal means keep the column order."""
    return block_ranks.mean(axis=0).sort_values(kind="stable")


def friedman(scores: pd.DataFrame) -> Friedman:
    """The Friedman test over complete blocks (scipy.stats.friedmanchisquare, tie-corrected) and
    Iman-Davenport's F, which Demšar recommends over the conservative chi-square. Never raises: None
    values with a one-line reason when it cannot be computed."""
    n, k = scores.shape

    def none(reason: str) -> Friedman:
        return Friedman(None, None, None, None, None, None, reason)

    if n == 0:
        return none("no block has a finite score for every method")
    if k < 3:
        two = "; for two, the pair's Wilcoxon test is the test" if k == 2 else ""
        return none(f"{_count(k, 'method')}: the Friedman test needs at least 3{two}")
    if n < 2:
        return none("1 complete block: the Friedman test needs at least 2")
    values = scores.to_numpy(dtype=float)  # (N, k)
    if (values == values[:, :1]).all():
        return none("every block ties all methods: there is no ranking to test")
    # One sample per method, each over the same blocks in the same order: (k,) of (N,).
    res = stats.friedmanchisquare(*values.T)
    chi2, p = float(res.statistic), float(res.pvalue)
    df1, df2 = k - 1, (k - 1) * (n - 1)
    denom = n * (k - 1) - chi2
    # chi2 reaches N(k-1) when every block ranks the methods the same way: F is then infinite, and the
    # rounding of chi2 may leave a denominator of -1e-15 rather than 0.
    if denom <= 1e-12 * n * (k - 1):
        f, f_p = math.inf, 0.0
    else:
        f = (n - 1) * chi2 / denom
        f_p = float(stats.f.sf(f, df1, df2))
    if n >= MIN_BLOCKS:
        return Friedman(chi2, p, df1, f, f_p, (df1, df2))
    perm, exact = permutation_p(stats.rankdata(values, axis=1))
    return Friedman(chi2, p, df1, f, f_p, (df1, df2), perm_p=perm, perm_exact=exact)


EXACT_LIMIT = 50_000      # enumerate every arrangement up to this many, else sample
PERMUTATIONS = 20_000


def permutation_p(block_ranks: np.ndarray, *, seed: int = 0) -> tuple[float, bool]:
    """P(sum_j R_j^2 >= observed) when each block's ranks (N, k) are permuted independently (the Friedman null:
    within a block every order is equally likely; ties keep their pattern). The Friedman chi2 (tie-corrected
    or not) is increasing in the sum of squared rank sums R_j, so this is its permutation p. Exact (block 0
    held fixed, every arrangement of the rest) when (k!)^(N-1) <= EXACT_LIMIT, else a Monte Carlo p
    (1 + hits) / (1 + PERMUTATIONS) with a fixed seed, so the summary is reproducible. Returns (p, exact)."""
    import itertools

    n, k = block_ranks.shape
    observed = float((block_ranks.sum(axis=0) ** 2).sum())
    tol = 1e-9 * max(observed, 1.0)
    if math.factorial(k) ** (n - 1) <= EXACT_LIMIT:
        perms = np.array(list(itertools.permutations(range(k))))  # (k!, k)
        sums = block_ranks[0][None, :]                              # (1, k)
        for b in range(1, n):
            sums = (sums[:, None, :] + block_ranks[b][perms][None, :, :]).reshape(-1, k)  # (k!^b, k)
        stat = (sums ** 2).sum(axis=1)
        return float((stat >= observed - tol).mean()), True
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((PERMUTATIONS, n, k)), axis=2)     # (B, N, k)
    shuffled = np.take_along_axis(np.broadcast_to(block_ranks, order.shape), order, axis=2)
    stat = (shuffled.sum(axis=1) ** 2).sum(axis=1)                    # (B,)
    return float((1 + (stat >= observed - tol).sum()) / (1 + PERMUTATIONS)), False


def q_alpha(*, k: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Nemenyi's critical value: the studentized range quantile for k groups and infinite df, over sqrt(2)
    (Demšar's table of critical values: k = 3 at alpha 0.05 gives 2.343)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)


def critical_difference(*, k: int, n_blocks: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Nemenyi's CD = q_alpha * sqrt(k (k + 1) / (6 N)): two methods differ when their mean ranks differ by
    at least this much."""
    return q_alpha(k=k, alpha=alpha) * math.sqrt(k * (k + 1) / (6 * n_blocks))


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of the per-block differences d, (N,)."""
    if not np.any(d):
        # Identical scores in every block: no evidence of a difference. scipy returns 1.0 here too, but
        # through a 0/0 that warns.
        return 1.0
    return float(stats.wilcoxon(d, zero_method=ZERO_METHOD).pvalue)


def pairwise_tests(scores: pd.DataFrame, *, higher_is_better: bool, alpha: float = DEFAULT_ALPHA,
                   posthoc: str = DEFAULT_POSTHOC) -> pd.DataFrame:
    """Every pair of methods over complete blocks: a (ranked no worse) and b, mean_rank_diff (b's minus a's,
    >= 0), p_wilcoxon (two-sided signed-rank test of the per-block score differences, zero differences
    split between the signs: zero_method="zsplit"), p_holm (Holm over all k(k-1)/2 pairs) and significant
    by the chosen post-hoc: mean_rank_diff >= CD for "nemenyi", p_holm < alpha for "wilcoxon-holm"."""
    if posthoc not in POSTHOCS:
        raise ValueError(f"posthoc must be one of {', '.join(POSTHOCS)}, not {posthoc!r}")
    n, k = scores.shape
    if n == 0 or k < 2:
        return pd.DataFrame(columns=PAIRWISE_COLUMNS)
    mr = mean_ranks(ranks(scores, higher_is_better=higher_is_better))
    order = list(mr.index)
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    p = [_wilcoxon_p(scores[a].to_numpy(float) - scores[b].to_numpy(float)) for a, b in pairs]
    out = pd.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs],
                        "mean_rank_diff": [float(mr[b] - mr[a]) for a, b in pairs],
                        "p_wilcoxon": p, "p_holm": holm(p)})
    if posthoc == "nemenyi":
        out["significant"] = out["mean_rank_diff"] >= critical_difference(k=k, n_blocks=n, alpha=alpha)
    else:
        out["significant"] = out["p_holm"] < alpha
    return out


def cliques(*, order: list, pairwise: pd.DataFrame) -> list[tuple]:
    """Maximal runs of consecutive methods in `order` (best first) of which no two differ significantly
    (pairwise's `significant`); runs of one method are left out. Why runs: a diagram's bar spans every
    method between its ends, so a bar only says what it means if those are in the group too. Under
    Nemenyi every group is such a run; under Wilcoxon-Holm a pair not different across a method that
    differs from one of them is in no bar (the pairwise table still shows it)."""
    different = {frozenset((a, b)) for a, b, s in zip(pairwise["a"], pairwise["b"], pairwise["significant"],
                                                      strict=True) if s}
    out, last_end = [], 0
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and not any(frozenset((order[j + 1], m)) in different for m in order[i:j + 1]):
            j += 1
        # The end of the run from i never moves left as i grows (a sub-run of a run is a run), so a run is
        # maximal exactly when it reaches further than the previous one.
        if j > i and j > last_end:
            out.append(tuple(order[i:j + 1]))
        last_end = max(last_end, j)
    return out


def _note(*, k: int, n: int, fr: Friedman, alpha: float, posthoc: str, cd: float | None,
          left_out: dict) -> str:
    parts = [f"Ranks: 1 = best in each of the N = {n} blocks with a finite score for every method (ties share "
             f"the average rank), then the mean over blocks." if n else "No block has a score for every method."]
    if left_out:
        parts.append("Left out: " + "; ".join(f"{_label(b)} ({why})" for b, why in left_out.items()) + ".")
    if fr.reason:
        parts.append(f"Friedman test not computed: {fr.reason}.")
    elif fr.perm_p is not None:
        verdict = "rejects" if fr.decision_p < alpha else "does not reject"
        how = "exact (every arrangement of ranks within blocks)" if fr.perm_exact else \
            f"Monte Carlo over {PERMUTATIONS:,} arrangements of ranks within blocks"
        parts.append(f"Friedman test of 'all {k} methods rank alike' with N = {n} < {MIN_BLOCKS} blocks: the "
                     f"permutation p, {how}, {verdict} it at alpha = {alpha:g} (Iman-Davenport's F is "
                     f"shown but too lax at so few blocks); read the post-hoc test only when it is rejected.")
    else:
        verdict = "rejects" if fr.f_p < alpha else "does not reject"
        parts.append(f"Friedman test of 'all {k} methods rank alike': Iman-Davenport's F (less conservative than "
                     f"the chi-square, as Demšar 2006 recommends) and its p {verdict} it at alpha = {alpha:g}; "
                     f"read the post-hoc test only when it is rejected.")
    if not fr.reason and math.isinf(fr.f):
        parts.append("Every block ranks the methods the same way: F is infinite and its p = 0 is a formula's "
                     f"limit, not a probability (without ties, that agreement has probability "
                     f"(k!)^(1-N) = {math.factorial(k) ** (1 - n):.2g} under the null).")
    if cd is not None and posthoc == "nemenyi":
        parts.append(f"Post-hoc: Nemenyi; two methods differ when their mean ranks differ by at least "
                     f"CD = {cd:.2f}.")
        if cd > k - 1:
            parts.append(f"CD exceeds k - 1 = {k - 1}, the largest possible difference of mean ranks: no pair can "
                         f"differ with so few blocks.")
    elif cd is not None:
        m = k * (k - 1) // 2
        parts.append(f"Post-hoc: Wilcoxon signed-rank test of each pair's per-block scores (zero differences "
                     f"split between the signs), Holm-adjusted over {_count(m, 'pair')}; it assumes score differences "
                     f"are comparable across blocks.")
        # The smallest two-sided p of the exact (or sign-flip permutation) test is 2 / 2^N, and Holm
        # multiplies the smallest p by m; scipy uses those tests up to 13 blocks.
        if n <= 13 and m * 2.0 ** (1 - n) >= alpha:
            parts.append(f"With N = {n} a two-sided Wilcoxon p is at least 2/2^N = {2.0 ** (1 - n):.3g}, so no "
                         f"pair can reach Holm p < {alpha:g}.")
    if cd is not None:
        parts.append("Bars join methods not significantly different.")
    if 0 < n < MIN_BLOCKS:
        parts.append(f"Only {_count(n, 'block')}: Demšar asks for about {MIN_BLOCKS} or more for the chi-square "
                     f"approximation, and with few blocks the tests have little power; a bar is no evidence "
                     f"that methods perform alike.")
    return " ".join(parts)


def across_datasets(scores: pd.DataFrame, *, higher_is_better: bool, alpha: float = DEFAULT_ALPHA,
                    posthoc: str = DEFAULT_POSTHOC) -> AcrossDatasets:
    """Rank the methods (columns) within each complete block (row), test with Friedman / Iman-Davenport, and
    compare every pair by the chosen post-hoc ("nemenyi" or "wilcoxon-holm"). Blocks with a missing or
    non-finite score are left out and listed. Never raises for lack of data: what cannot be computed is None
    (or empty) and the note says why."""
    if posthoc not in POSTHOCS:
        raise ValueError(f"posthoc must be one of {', '.join(POSTHOCS)}, not {posthoc!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    for axis, labels in (("method", scores.columns), ("block", scores.index)):
        if labels.has_duplicates:
            raise ValueError(f"duplicate {axis} labels: {', '.join(map(_label, labels[labels.duplicated()]))}")
    used, left_out = complete_blocks(scores)
    n, k = used.shape
    block_ranks = ranks(used, higher_is_better=higher_is_better)
    mr = mean_ranks(block_ranks)
    fr = friedman(used)
    cd = critical_difference(k=k, n_blocks=n, alpha=alpha) if n >= 1 and k >= 2 else None
    with warnings.catch_warnings():
        # Some scipy releases warn, once per pair, that zero or tied differences make the exact
        # distribution inexact (and switch to the normal one); a warning per pair would bury the tables.
        warnings.simplefilter("ignore", UserWarning)
        pairs = pairwise_tests(used, higher_is_better=higher_is_better, alpha=alpha, posthoc=posthoc)
    groups = cliques(order=list(mr.index), pairwise=pairs) if cd is not None else []
    return AcrossDatasets(
        higher_is_better=higher_is_better, k=k, n_blocks=n, blocks_used=list(used.index),
        blocks_left_out=left_out, ranks=block_ranks[list(mr.index)], mean_ranks=mr, friedman=fr, alpha=alpha,
        posthoc=posthoc, cd=cd, pairwise=pairs, cliques=groups,
        note=_note(k=k, n=n, fr=fr, alpha=alpha, posthoc=posthoc, cd=cd, left_out=left_out))


def control_tests(scores: pd.DataFrame, *, control: str, higher_is_better: bool,
                  alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """Each method against the control over complete blocks (Demšar 2006, comparisons with a control): z =
    (R_m - R_control) / sqrt(k (k + 1) / (6 N)) on the mean ranks, two-sided normal p, Holm over the k - 1
    comparisons. Columns: method, mean_rank_diff (the method's minus the control's: negative is better),
    z, p, p_holm, significant. Why not all pairs: where the question is each method against CE, the k(k-1)/2
    pairs spend power on comparisons nobody asked (Bonferroni-Dunn CD 4.65 instead of Nemenyi's 5.20 at
    k = 7, N = 3)."""
    columns = ["method", "mean_rank_diff", "z", "p", "p_holm", "significant"]
    n, k = scores.shape
    if n == 0 or k < 2 or control not in scores.columns:
        return pd.DataFrame(columns=columns)
    mr = ranks(scores, higher_is_better=higher_is_better).mean(axis=0)
    se = math.sqrt(k * (k + 1) / (6 * n))
    others = [m for m in scores.columns if m != control]
    diff = np.array([mr[m] - mr[control] for m in others])
    z = diff / se
    p = 2 * stats.norm.sf(np.abs(z))
    adjusted = holm(p)
    return pd.DataFrame({"method": others, "mean_rank_diff": diff, "z": z, "p": p, "p_holm": adjusted,
                         "significant": np.asarray(adjusted) < alpha})


def bonferroni_dunn_cd(*, k: int, n_blocks: int, alpha: float = DEFAULT_ALPHA) -> float:
    """The critical difference of comparisons with a control: z_{1 - alpha / (2 (k - 1))} sqrt(k (k + 1) / (6 N))."""
    return float(stats.norm.ppf(1 - alpha / (2 * (k - 1)))) * math.sqrt(k * (k + 1) / (6 * n_blocks))


def p_phrase(p: float | None) -> str:
    """`p = 0.012`, `p < 0.001` or `p = n/a`: a p-value inside a sentence."""
    text = format_p(math.nan if p is None else p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def friedman_line(result: AcrossDatasets) -> str:
    """One line of the test's numbers: `Friedman chi2 = 7.80 (df 3), p = 0.050; Iman-Davenport F = ...`."""
    fr = result.friedman
    if fr.reason:
        return f"N = {result.n_blocks}, k = {result.k}; Friedman test: n/a"
    f = "inf" if math.isinf(fr.f) else f"{fr.f:.2f}"
    line = (f"N = {result.n_blocks}, k = {result.k}; Friedman chi2 = {fr.chi2:.2f} (df {fr.df}), "
            f"{p_phrase(fr.p)}; Iman-Davenport F = {f} (df {fr.f_df[0]}, {fr.f_df[1]}), {p_phrase(fr.f_p)}")
    if fr.perm_p is not None:
        line += f"; permutation {p_phrase(fr.perm_p)} ({'exact' if fr.perm_exact else 'Monte Carlo'}, decides)"
    if result.cd is not None and result.posthoc == "nemenyi":
        line += f"; Nemenyi CD = {result.cd:.2f} at alpha {result.alpha:g}"
    return line


def across_tables(result: AcrossDatasets, *, all_pairs: bool = False) -> list[Table]:
    """Tables for render.py's to_markdown / to_latex / to_csv: mean ranks (method, mean rank, one column per
    block's rank), best first; and with `all_pairs`, every pair with its mean-rank difference, Wilcoxon p,
    Holm p and the post-hoc's verdict (only on request: where the question is each method against CE, the
    comparisons with a control are the test; harness/results/across.py)."""
    blocks = list(result.ranks.index)
    rank_rows = [[_label(m), f"{r:.2f}" if is_finite(r) else "n/a", *(f"{result.ranks.at[b, m]:g}" for b in blocks)]
                 for m, r in result.mean_ranks.items()]
    ranks_table = Table("Mean ranks across data sets", ["method", "mean rank", *map(_label, blocks)], rank_rows,
                        note=f"{friedman_line(result)}. {result.note}")
    if not all_pairs:
        return [ranks_table]
    name = POSTHOCS[result.posthoc]
    pair_rows = []
    for _, r in result.pairwise.iterrows():
        pair_rows.append([_label(r["a"]), _label(r["b"]), f"{r['mean_rank_diff']:.2f}", format_p(r["p_wilcoxon"]),
                          format_p(r["p_holm"]), "yes" if r["significant"] else "no"])
    if result.cd is None:
        rule = "not tested (fewer than 2 methods or no complete block)"
    elif result.posthoc == "nemenyi":
        rule = f"mean rank difference >= CD = {result.cd:.2f}"
    else:
        rule = f"Holm p < {result.alpha:g}"
    pairs_table = Table(f"Pairs of methods across data sets ({name})",
                        ["method a", "method b", "mean rank difference", "Wilcoxon p", "Holm p",
                         f"different ({name})"], pair_rows,
                        note=(f"a is ranked no worse than b; mean rank difference: b's minus a's over "
                              f"{_count(result.n_blocks, 'block')}; Wilcoxon p: two-sided signed-rank test of the per-block "
                              f"score differences (zero differences split between the signs); Holm p: adjusted "
                              f"over the {_count(len(pair_rows), 'pair')}; different: {rule}."))
    return [ranks_table, pairs_table]
