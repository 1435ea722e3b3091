"""Test-set noise in the comparison: a paired bootstrap over test images and seeds (two levels), from each
trial's per-image predictions (trials/<key>/predictions.npz, written by `tfbench evaluate`); and across data
sets, a stratified bootstrap over each data set's seeds (`stratified`).

Why: the seed-only interval (stats.py) sees how runs vary, not that every run was scored on one sample of
test images. That sample is shared by every seed and both methods, so its noise does not average out over
seeds; its size depends on how many images the two models disagree on, which no binomial SE of one
accuracy can say. Resampling the images (the same draw for every seed and both methods: the pairing) and
the seeds gives both sources at once.

The interval: mean +- t_{0.975, n-1} * SE, SE^2 = var_images + var_seeds * n / (n - 1), both read off the
bootstrap (var_images: images resampled, seeds fixed; var_seeds: the rest of the two-level variance,
scaled up by n / (n - 1) because a bootstrap over n seeds has ddof = 0, which at 3 seeds is a third too
small). The test set's share is var_images / SE^2.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from harness.metrics import LAST, REPORTED, SELECTED, SELECTION, VOCABULARY

NO_PREDICTIONS = "n/a (no predictions.npz: tfbench evaluate)"
REPLICATES = 2000
CHUNK = 200
# predictions.npz's key prefix of each (split, epoch) it keeps; the best epoch's predictions are not kept
_PREFIXES = {(REPORTED, SELECTED): "test_", (REPORTED, LAST): "last_test_", (SELECTION, SELECTED): "val_"}
# the metric -> (the file's key prefix for its epoch and split, k of top-k): every top-k of the vocabulary kept there
SOURCES = {m.name: (_PREFIXES[(m.split, m.epoch)], int(m.quantity[3:])) for m in VOCABULARY.values()
           if m.quantity in ("top1", "top5") and (m.split, m.epoch) in _PREFIXES}

Reader = Callable[[str], "dict | None"]


def read_predictions(trial_dir: str | Path) -> dict | None:
    """The arrays of trials/<key>/predictions.npz (harness/results/predictions.py), or None when there is none.
    A damaged file counts as missing here: the tables still come out, and its bootstrap cell says n/a."""
    from harness.errors import UserError
    from harness.results.predictions import read_predictions as read

    try:
        return read(trial_dir)
    except UserError:
        return None


def correct(pred: dict, prefix: str, k: int) -> np.ndarray | None:
    """Whether each image's target is among the top-k scores, (N,) float; None when the file lacks them."""
    targets = pred.get(f"{prefix}targets", pred.get("test_targets") if prefix == "last_test_" else None)
    if targets is None:
        return None
    targets = np.asarray(targets, dtype=np.int64)  # (N,)
    if k == 1 and f"{prefix}pred" in pred:  # the arg-max of the float32 logits, kept beside the float16 ones
        top = np.asarray(pred[f"{prefix}pred"], dtype=np.int64)[:, None]  # (N, 1)
    elif f"{prefix}logits" in pred:
        logits = np.asarray(pred[f"{prefix}logits"], dtype=np.float32)  # (N, C)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]          # (N, k)
    elif f"{prefix}top_logits" in pred and f"{prefix}top_indices" in pred:
        order = np.argsort(-np.asarray(pred[f"{prefix}top_logits"], dtype=np.float32), axis=1, kind="stable")
        top = np.take_along_axis(np.asarray(pred[f"{prefix}top_indices"]), order, axis=1)[:, :k]  # (N, k)
    else:
        return None
    return (top == targets[:, None]).any(axis=1).astype(np.float64)


@dataclass(frozen=True)
class TwoLevel:
    low: float
    high: float
    test_share: float  # var_images / SE^2


def two_level(d: np.ndarray, *, confidence: float = 0.95, replicates: int = REPLICATES,
              seed: int = 0) -> TwoLevel:
    """The two-level bootstrap interval of the mean over seeds of the per-image differences d, (n, N):
    d[s, i] = method's score minus the baseline's on image i at seed s. Needs n >= 2."""
    n, N = d.shape
    mean = float(d.mean())
    rng = np.random.default_rng(seed)
    per_seed = np.empty((n, replicates))  # (n, B): each seed's mean difference on the resampled images
    for start in range(0, replicates, CHUNK):
        b = min(CHUNK, replicates - start)
        idx = rng.integers(0, N, size=(b, N))                                            # (b, N)
        counts = np.bincount((idx + np.arange(b)[:, None] * N).ravel(), minlength=b * N).reshape(b, N)
        per_seed[:, start:start + b] = d @ counts.T / N                                   # (n, b)
    seeds = rng.integers(0, n, size=(replicates, n))                                      # (B, n)
    both = per_seed[seeds, np.arange(replicates)[:, None]].mean(axis=1)                   # (B,)
    var_images = float(per_seed.mean(axis=0).var(ddof=1))
    var_seeds = max(0.0, float(both.var(ddof=1)) - var_images) * n / (n - 1)
    total = var_images + var_seeds
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * math.sqrt(total)
    return TwoLevel(mean - half, mean + half, var_images / total if total > 0 else math.nan)


def bootstrap_cells(keys: list[tuple[str, str]], metric: str, read: Reader) -> dict:
    """`boot_ci_low`, `boot_ci_high`, `test_var_share` (NaN) and `boot_note` ('' or why not) of one comparison
    over its paired seeds' trial keys [(method's key, baseline's key), ...]."""
    out = {"boot_ci_low": math.nan, "boot_ci_high": math.nan, "test_var_share": math.nan, "boot_note": ""}
    if metric not in SOURCES:
        out["boot_note"] = "n/a (top-1 / top-5 only)"
        return out
    if len(keys) < 2:
        out["boot_note"] = "n/a (fewer than 2 paired seeds)"
        return out
    prefix, k = SOURCES[metric]
    rows = []
    for a, b in keys:
        pa, pb = read(a), read(b)
        if pa is None or pb is None:
            out["boot_note"] = NO_PREDICTIONS
            return out
        ca, cb = correct(pa, prefix, k), correct(pb, prefix, k)
        if ca is None or cb is None or ca.shape != cb.shape or (rows and ca.shape != rows[0].shape):
            out["boot_note"] = "n/a (predictions.npz lacks this split or its images differ)"
            return out
        rows.append(ca - cb)
    res = two_level(np.stack(rows))
    out.update(boot_ci_low=res.low, boot_ci_high=res.high, test_var_share=res.test_share)
    return out


# --- across data sets: the stratified bootstrap ---------------------------------------------------------

STRATIFIED_REPLICATES = 10_000
STRATIFIED_SEED = 0


@dataclass(frozen=True)
class Stratified:
    mean: float  # the statistic: the mean over blocks of each block's mean paired difference
    low: float
    high: float


def stratified(blocks: list[np.ndarray], *, confidence: float = 0.95, replicates: int = STRATIFIED_REPLICATES,
               seed: int = STRATIFIED_SEED, adjust: bool = True) -> Stratified:
    """The percentile interval of a stratified bootstrap of the mean over blocks (data sets) of each block's
    mean paired difference; `blocks`: one (n_b,) array per block of a method's per-seed differences to the
    baseline, in block order, every n_b >= 2.

    Each replicate resamples n_b seeds with replacement within each block (stratified: every data set keeps
    its own seeds and its weight 1/N; a seed's difference keeps its pairing). Why the differences are first
    spread about their block's mean by sqrt(n_b / (n_b - 1)) (Davison & Hinkley 1997, stratified resampling of
    small strata): a bootstrap of n values has the variance of a ddof = 0 estimate, a third too small at 3
    seeds; with the spread restored the interval covers more often (docs/results.md has both coverages).
    The generator is seeded, and its draws follow the block order: block b draws (replicates, n_b) indices.
    `adjust=False`: the plain percentile bootstrap (for the coverage comparison of harness/results/simulate.py)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)  # (B,)
    for d in blocks:
        d = np.asarray(d, dtype=float)  # (n_b,)
        n = d.size
        if n < 2:
            raise ValueError(f"a block has {n} paired difference(s); the stratified bootstrap needs at least 2")
        centre = d.mean()
        spread = centre + (d - centre) * math.sqrt(n / (n - 1)) if adjust else d
        total += spread[rng.integers(0, n, size=(replicates, n))].mean(axis=1)  # (B,)
    stat = total / len(blocks)
    low, high = np.quantile(stat, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Stratified(float(np.mean([np.mean(d) for d in blocks])), float(low), float(high))
