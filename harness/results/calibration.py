"""Calibration from per-image predictions: ECE (15 equal-width bins of the top label, as the loop's), adaptive
ECE (equal-mass bins), classwise ECE, the Brier score, NLL, and temperature scaling fitted on another split.
Pure numpy functions of arrays; docs/results.md gives each one's definition and source."""
from __future__ import annotations

import numpy as np

from harness.results.predictions import logsumexp

ECE_BINS = 15  # the loop's (harness/train/metrics.py)


def bin_index(conf: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bins (0, 1/b], (1/b, 2/b], ...: computed in float32 like the loop's, so the two agree at the edges."""
    idx = np.ceil(conf.astype(np.float32) * np.float32(bins)).astype(np.int64) - 1
    return np.clip(idx, 0, bins - 1)


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, ...]:
    """Per equal-width bin: (count, mean confidence, accuracy); empty bins hold NaN means."""
    idx = bin_index(conf, bins)
    n = np.bincount(idx, minlength=bins).astype(np.float64)
    s_conf = np.bincount(idx, weights=conf.astype(np.float64), minlength=bins)
    s_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n, s_conf / n, s_acc / n


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017): sum_b |acc_b - conf_b| n_b / N."""
    idx = bin_index(conf, bins)
    s_conf = np.bincount(idx, weights=conf.astype(np.float64), minlength=bins)
    s_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins)
    return float(np.abs(s_acc - s_conf).sum() / max(len(conf), 1))


def adaptive_ece(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over equal-mass bins (Nguyen & O'Connor 2015; Nixon et al. 2019): the images sorted by confidence
    and cut into `bins` groups of sizes differing by at most one."""
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, bins):
        if len(group):
            total += abs(correct[group].astype(np.float64).sum() - conf[group].astype(np.float64).sum())
    return total / max(len(conf), 1)


def classwise_ece(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Classwise ECE (Kull et al. 2019): per class k, the equal-width-binned |freq(y = k) - mean p_k| over
    all images, averaged over the classes."""
    n, c = probs.shape
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), targets] = 1.0
    idx = bin_index(probs, bins) + np.arange(c)[None, :] * bins              # (N, C): a bin per class
    s_p = np.bincount(idx.ravel(), weights=probs.ravel(), minlength=c * bins)
    s_y = np.bincount(idx.ravel(), weights=onehot.ravel(), minlength=c * bins)
    return float(np.abs(s_y - s_p).sum() / (n * c))


def brier(probs: np.ndarray, targets: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950): mean over images of sum_k (p_k - 1[y = k])^2, in [0, 2]."""
    sq = (probs ** 2).sum(axis=1) - 2 * probs[np.arange(len(targets)), targets] + 1
    return float(sq.mean())


def nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    return float((logsumexp(logits) - logits[np.arange(len(targets)), targets]).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """T minimising the NLL of softmax(logits / T) (Guo et al. 2017). Why bisection: the NLL is convex in
    1/T, so its derivative, mean(E_p[z] - z_y), is increasing; its root is found to machine precision in log
    1/T on [1e-3, 1e3] with no optimiser settings to tune."""
    z = logits - logits.max(axis=1, keepdims=True)                           # (N, C): shift-invariant
    zy = z[np.arange(len(targets)), targets]

    def slope(beta: float) -> float:
        p = np.exp(beta * z)
        p /= p.sum(axis=1, keepdims=True)
        return float(((p * z).sum(axis=1) - zy).mean())

    lo, hi = np.log(1e-3), np.log(1e3)
    if slope(np.exp(hi)) <= 0:  # every image right with margin: sharper always helps; the bound is the answer
        return float(np.exp(-hi))
    if slope(np.exp(lo)) >= 0:
        return float(np.exp(-lo))
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(np.exp(mid)) < 0 else (lo, mid)
    return float(np.exp(-(lo + hi) / 2))
