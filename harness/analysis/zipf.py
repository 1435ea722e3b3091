"""The supplement's analyses of Zipf's label smoothing, as pure functions (no files, no printing).

- Algorithm 1 (the toy): Gaussian logits, sorted, softmaxed, averaged over samples.
- Table 1: maximum-likelihood fits of Zipf's law, the exponential and the log-normal to the averaged
  sorted probabilities of the top K ranks, and the goodness-of-fit metrics R^2, KL, JS, chi-square and
  Kolmogorov-Smirnov.
- Section 2.2 / Fig. 2: the signal-to-noise ratio of each rank.
(What needs a trained model, the sorted-probability moments over a loader and the data of Fig. 4's
soft-label examples, is in zipf_models.py: this module stays numpy and scipy only.)

The three laws are all discrete distributions over the ranks 1..K, normalised over those K ranks:
  zipf         q_r = r^-s / sum_j j^-s                         (scipy.stats.zipfian(s, K))
  exponential  q_r = exp(-lam r) / sum_j exp(-lam j)
  lognormal    q_r = lognorm.pdf(r; sigma, scale=e^mu) / sum_j lognorm.pdf(j; sigma, scale=e^mu)
Each is an exponential family in a statistic of the rank (ln r; r; (ln r, (ln r)^2)), so the maximum-
likelihood fit to a distribution p over ranks (the limit of infinitely many rank samples drawn from p)
minimises the cross-entropy -sum_r p_r ln q_r, a convex problem in the natural parameters with a single
optimum: it matches the expected statistic under q to the one under p.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special, stats
from scipy.spatial import distance

LAWS: tuple[str, ...] = ("zipf", "exponential", "lognormal")
LAW_TITLES: dict[str, str] = {"zipf": "Zipf's law", "exponential": "Exponential", "lognormal": "Log-normal"}

# Fig. 4 colours: ground truth, similar class (same super-class), unrelated class.


# ----------------------------------------------------------------------------------------------------
# Algorithm 1: softmax of sorted Gaussian logits
# ----------------------------------------------------------------------------------------------------

def toy_sorted_probs(*, samples: int = 1000, classes: int = 1000, seed: int = 0) -> np.ndarray:
    """Algorithm 1 without the final average: (samples, classes) softmax probabilities, each row sorted
    in descending order (column r-1 holds the r-th largest probability). Deterministic for a seed."""
    if samples < 1 or classes < 2:
        raise ValueError(f"toy needs samples >= 1 and classes >= 2, got {samples} and {classes}")
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((samples, classes))  # (N, C)
    # Softmax is permutation-equivariant, so sorting logits or probabilities gives the same rows.
    probs = special.softmax(logits, axis=1)
    return -np.sort(-probs, axis=1)


def toy_mean_sorted_probs(*, samples: int = 1000, classes: int = 1000, seed: int = 0) -> np.ndarray:
    """Algorithm 1: the averaged sorted probabilities, rank 1 first. (classes,)"""
    return toy_sorted_probs(samples=samples, classes=classes, seed=seed).mean(axis=0)


def sort_probs(probs: np.ndarray) -> np.ndarray:
    """Each row sorted in descending order: column r-1 is the r-th largest probability. (N, C)"""
    return -np.sort(-np.asarray(probs, dtype=np.float64), axis=1)


def top_k_distribution(mean_sorted: np.ndarray, *, k: int) -> np.ndarray:
    """The top k averaged probabilities renormalised to a distribution over the ranks 1..k. (k,)"""
    mean_sorted = np.asarray(mean_sorted, dtype=np.float64)
    if not 1 < k <= mean_sorted.shape[0]:
        raise ValueError(f"k must be in [2, {mean_sorted.shape[0]}] (the number of ranks), got {k}")
    if np.any(np.diff(mean_sorted[:k]) > 1e-12):
        raise ValueError("mean_sorted must be in descending order (rank 1 first)")
    top = mean_sorted[:k]
    return top / top.sum()


# ----------------------------------------------------------------------------------------------------
# The three laws and their maximum-likelihood fits
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LawFit:
    law: str
    params: dict[str, float]   # zipf: s; exponential: lam; lognormal: mu, sigma
    pmf: np.ndarray            # (K,) the fitted distribution over ranks 1..K
    n_params: int
    converged: bool = True
    note: str = ""


def law_pmf(law: str, params: dict[str, float], *, k: int) -> np.ndarray:
    """The law's distribution over the ranks 1..k, normalised over those k ranks. (k,)"""
    r = np.arange(1, k + 1, dtype=np.float64)
    if law == "zipf":
        return stats.zipfian.pmf(r, params["s"], k)
    if law == "exponential":
        return _normalise_log(-params["lam"] * r)
    if law == "lognormal":
        # lognorm.logpdf(r, sigma, scale=e^mu) written through the normal density of ln r, which stays
        # finite for the huge mu of a nearly power-law fit (e^mu would overflow)
        return _normalise_log(stats.norm.logpdf(np.log(r), loc=params["mu"], scale=params["sigma"]) - np.log(r))
    raise ValueError(f"unknown law {law!r}; allowed: {', '.join(LAWS)}")


def _normalise_log(logw: np.ndarray) -> np.ndarray:
    return np.exp(logw - special.logsumexp(logw))


def _sufficient_stats(law: str, k: int) -> np.ndarray:
    """T (k, d): the law's pmf is q = softmax(T @ theta) over ranks, theta its natural parameters."""
    r = np.arange(1, k + 1, dtype=np.float64)
    lr = np.log(r)
    if law == "zipf":
        return -lr[:, None]                       # theta = s
    if law == "exponential":
        return -r[:, None]                        # theta = lam
    if law == "lognormal":
        # ln pdf = -ln r - (ln r - mu)^2 / (2 sigma^2) + const = a ln r + b (ln r)^2 + const with
        # b = -1/(2 sigma^2), a = mu/sigma^2 - 1; b < 0 for a proper log-normal.
        return np.stack([lr, lr**2], axis=1)     # theta = (a, b)
    raise ValueError(f"unknown law {law!r}; allowed: {', '.join(LAWS)}")


def fit_law(p: np.ndarray, law: str) -> LawFit:
    """Maximum-likelihood fit of `law` to the distribution p over ranks 1..K (see the module docstring).

    The objective A(theta) - theta . E_p[T] (A = log-partition) is convex; L-BFGS-B with its exact
    gradient E_q[T] - E_p[T] reaches the unique optimum. The log-normal's b is kept below zero (a finite
    sigma); when the optimum sits on that bound the best log-normal is the sigma -> infinity limit, which
    is a power law, and the fit says so in `note`."""
    p = np.asarray(p, dtype=np.float64)
    k = p.shape[0]
    T = _sufficient_stats(law, k)                 # (K, d)
    target = p @ T                                # (d,) E_p[T]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = T @ theta                        # (K,)
        a = special.logsumexp(logits)
        q = np.exp(logits - a)
        return float(a - theta @ target), q @ T - target

    if law == "lognormal":
        x0, bounds = np.array([-1.0, -0.1]), [(None, None), (None, -1e-8)]
    else:
        x0, bounds = np.array([1.0 if law == "zipf" else 0.1]), [(None, None)]
    res = optimize.minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12})
    theta = res.x
    note = ""
    if law == "zipf":
        params = {"s": float(theta[0])}
    elif law == "exponential":
        params = {"lam": float(theta[0])}
    else:
        a, b = theta
        sigma = float(np.sqrt(-1.0 / (2.0 * b)))
        params = {"mu": float((a + 1.0) * sigma**2), "sigma": sigma}
        if b >= -1.01e-8:
            note = "optimum on the sigma -> infinity bound (a power law)"
    pmf = _normalise_log(T @ theta)  # (K,) from the natural parameters: exact even on the sigma bound
    return LawFit(law=law, params=params, pmf=pmf, n_params=T.shape[1], converged=bool(res.success), note=note)


def fit_all(p: np.ndarray) -> dict[str, LawFit]:
    return {law: fit_law(p, law) for law in LAWS}


# ----------------------------------------------------------------------------------------------------
# Table 1 metrics
# ----------------------------------------------------------------------------------------------------

def r_squared(*, observed: np.ndarray, fitted: np.ndarray) -> float:
    """Coefficient of determination of the fitted pmf against the empirical one, on the linear probability
    scale (not log): 1 - sum (p - q)^2 / sum (p - mean p)^2."""
    observed = np.asarray(observed, dtype=np.float64)
    ss_res = np.sum((observed - fitted) ** 2)
    ss_tot = np.sum((observed - observed.mean()) ** 2)
    return float(1.0 - ss_res / ss_tot)


def kl_divergence(*, p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats, p the empirical and q the fitted distribution."""
    return float(np.sum(special.rel_entr(p, q)))


def js_divergence(*, p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon DIVERGENCE in nats: the square of scipy's Jensen-Shannon distance. (The
    supplement's JS values are about a quarter of its KL values, as the divergence is for close
    distributions; the distance would be about their square root.)"""
    return float(distance.jensenshannon(p, q) ** 2)


def sample_ranks(p: np.ndarray, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """n ranks (1-based) drawn from the distribution p over ranks 1..K. (n,)"""
    return rng.choice(np.arange(1, len(p) + 1), size=n, p=np.asarray(p) / np.sum(p))


def chi_square(*, samples: np.ndarray, q: np.ndarray, ddof: int = 0) -> tuple[float, float]:
    """Pearson's chi-square of the rank counts of `samples` against the expected counts n * q
    (scipy.stats.chisquare; K - 1 - ddof degrees of freedom). Returns (statistic, p-value)."""
    k = len(q)
    observed = np.bincount(samples, minlength=k + 1)[1:]   # (K,) counts of ranks 1..K
    expected = len(samples) * np.asarray(q) / np.sum(q)
    res = stats.chisquare(observed, expected, ddof=ddof)
    return float(res.statistic), float(res.pvalue)


def ks_test(*, samples: np.ndarray, fitted_samples: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of the empirical rank samples against
    rank samples drawn from the fitted law. Returns (D, p-value).

    Why two samples: ranks are discrete, and ks_1samp's one-sided statistic compares the fitted CDF after
    a jump with the empirical CDF before it, which for a discrete law overstates D by up to a whole rank's
    mass. ks_2samp evaluates both empirical CDFs on the pooled values (ties handled), so its D is the exact
    sup |F_emp - F_fit| between the two samples; its p-value assumes continuous data and is conservative
    for discrete ranks."""
    res = stats.ks_2samp(samples, fitted_samples)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class Table1:
    k: int
    n_samples: int
    seed: int
    p: np.ndarray                        # (K,) empirical distribution over ranks
    fits: dict[str, LawFit]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # law -> metric -> value

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k, "n_samples": self.n_samples, "seed": self.seed,
            "empirical": self.p.tolist(),
            "laws": {law: {"params": f.params, "n_params": f.n_params, "converged": f.converged,
                           "note": f.note, "pmf": f.pmf.tolist(), "metrics": self.metrics[law]}
                     for law, f in self.fits.items()},
        }


def table1(mean_sorted: np.ndarray, *, k: int = 50, n_samples: int = 100_000, seed: int = 0) -> Table1:
    """Fit the three laws to the top-k averaged sorted probabilities and compute the supplement's Table 1
    metrics. Chi-square and KS use n_samples ranks drawn from the empirical distribution (and, for KS,
    n_samples drawn from each fitted law) with a Generator seeded by `seed`."""
    p = top_k_distribution(mean_sorted, k=k)
    fits = fit_all(p)
    rng = np.random.default_rng(seed)
    samples = sample_ranks(p, n=n_samples, rng=rng)
    metrics: dict[str, dict[str, float]] = {}
    for law, fit in fits.items():
        chi2, chi2_p = chi_square(samples=samples, q=fit.pmf, ddof=fit.n_params)
        d, ks_p = ks_test(samples=samples, fitted_samples=sample_ranks(fit.pmf, n=n_samples, rng=rng))
        metrics[law] = {
            "r2": r_squared(observed=p, fitted=fit.pmf),
            "kl": kl_divergence(p=p, q=fit.pmf),
            "js": js_divergence(p=p, q=fit.pmf),
            "chi2": chi2, "chi2_p": chi2_p,
            "ks_d": d, "ks_p": ks_p,
        }
    return Table1(k=k, n_samples=n_samples, seed=seed, p=p, fits=fits, metrics=metrics)


METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("r2", "R^2"),
    ("kl", "Kullback-Leibler divergence"),
    ("js", "Jensen-Shannon divergence"),
    ("chi2", "Chi-square"),
    ("ks", "Kolmogorov-Smirnov"),
)


def table1_rows(t: Table1, *, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of Table 1 as in the supplement: one row per metric, one column per law, plus the
    fitted parameters."""
    def g(x: float) -> str:
        return f"{x:.{digits}g}"

    header = ["Metric"] + [LAW_TITLES[law] for law in t.fits]
    rows = []
    for key, title in METRIC_ROWS:
        if key == "ks":
            rows.append([title] + [f"D={g(t.metrics[law]['ks_d'])} p={g(t.metrics[law]['ks_p'])}" for law in t.fits])
        else:
            rows.append([title] + [g(t.metrics[law][key]) for law in t.fits])
    rows.append(["Fitted parameters"] + [", ".join(f"{k}={g(v)}" for k, v in f.params.items()) for f in t.fits.values()])
    return header, rows


# ----------------------------------------------------------------------------------------------------
# Rank signal-to-noise ratio (section 2.2, Fig. 2)
# ----------------------------------------------------------------------------------------------------

@dataclass
class RankMoments:
    """Running mean and sum of squared deviations of each rank's probability over samples (Chan et al.'s
    pairwise merge, so a large val set is reduced batch by batch in float64 without cancellation)."""
    n: int
    mean: np.ndarray   # (C,)
    m2: np.ndarray     # (C,)

    @classmethod
    def of(cls, sorted_probs: np.ndarray) -> RankMoments:
        x = np.asarray(sorted_probs, dtype=np.float64)     # (N, C)
        mean = x.mean(axis=0)
        return cls(n=x.shape[0], mean=mean, m2=((x - mean) ** 2).sum(axis=0))

    def merge(self, other: RankMoments) -> RankMoments:
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return RankMoments(n=n, mean=self.mean + delta * other.n / n,
                           m2=self.m2 + other.m2 + delta**2 * self.n * other.n / n)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0) of each rank's probability."""
        return np.sqrt(self.m2 / self.n)


def rank_snr(*, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """SNR of each rank: mean over samples of the r-th largest probability / its standard deviation.
    A rank whose probability never varies has infinite SNR. (C,)"""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.inf)


def snr_of_probs(probs: np.ndarray) -> np.ndarray:
    """Rank SNR straight from (N, C) probabilities (unsorted rows). (C,)"""
    m = RankMoments.of(sort_probs(probs))
    return rank_snr(mean=m.mean, std=m.std)


def snr_summary(snr: np.ndarray, *, threshold: float = 1.0) -> dict[str, int]:
    """`last_rank_above`: the last (1-based) rank whose SNR exceeds the threshold (0 if none);
    `leading_ranks_above`: how many ranks from rank 1 on exceed it without a break (the two differ when
    the SNR rises again in the tail)."""
    above = np.asarray(snr) > threshold
    last = int(np.flatnonzero(above)[-1] + 1) if above.any() else 0
    leading = int(np.argmin(above)) if not above.all() else len(above)
    return {"last_rank_above": last, "leading_ranks_above": leading, "num_ranks": len(above)}
