"""Beyond top-1, from a trial's per-image predictions: selective prediction (risk-coverage, AURC, E-AURC),
OOD detection (AUROC, FPR at 95% TPR for the maximum softmax probability and the energy score), corruption
accuracy, the penultimate layer's class separation, and `record_metrics`: every such number of result.json,
computed from predictions.npz alone (so `tfbench evaluate` and any recomputation agree).
Pure numpy functions; the names are the vocabulary's (harness/metrics.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.results import calibration as cal
from harness.results.predictions import split


def risk_coverage(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): accepting the i most confident images (stable order among equal confidences),
    coverage i/N and risk the error rate among them, i = 1..N."""
    order = np.argsort(-conf.astype(np.float64), kind="stable")
    errors = np.cumsum(~correct[order])
    i = np.arange(1, len(conf) + 1)
    return i / len(conf), errors / i


def aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al., ICLR 2019): the mean risk over the N coverages."""
    return float(risk_coverage(conf, correct)[1].mean())


def optimal_aurc(correct: np.ndarray) -> float:
    """The AURC of a perfect ranking (every error after every correct image), exact for N images."""
    n, right = len(correct), int(correct.sum())
    i = np.arange(1, n + 1)
    return float((np.maximum(i - right, 0) / i).mean())


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties: the Mann-Whitney form of the ROC area."""
    scores = np.concatenate([pos, neg]).astype(np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float = 0.95) -> float:
    """The fraction of negatives accepted at the highest threshold that accepts at least `tpr` of positives."""
    ranked = np.sort(pos.astype(np.float64))[::-1]
    threshold = ranked[int(np.ceil(tpr * len(pos))) - 1]
    return float((neg.astype(np.float64) >= threshold).mean())


def class_separation(sums: np.ndarray, sqnorms: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(within-class / total variance, mean cosine between centred class means) of penultimate features,
    from per-class sums (C, D), sums of squared norms (C,) and counts (C,). Classes without images are left out."""
    keep = counts > 0
    s, q, n = sums[keep], sqnorms[keep], counts[keep].astype(np.float64)
    within = float((q - (s ** 2).sum(axis=1) / n).sum())
    total = float(q.sum() - (s.sum(axis=0) ** 2).sum() / n.sum())
    means = s / n[:, None] - s.sum(axis=0) / n.sum()                         # (C, D) centred on the global mean
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-300)
    cos = unit @ unit.T
    k = len(cos)
    mean_cos = float((cos.sum() - np.trace(cos)) / (k * (k - 1))) if k > 1 else float("nan")
    return (within / total if total > 0 else float("nan")), mean_cos


def corruption_accuracy(pred: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """corruption name -> accuracy per severity 1..5 (5,), from the file's corruption_correct (K, 5, M)."""
    if "corruption_correct" not in pred:
        return None
    acc = pred["corruption_correct"].astype(np.float64).mean(axis=2)         # (K, 5)
    return {str(name): acc[i] for i, name in enumerate(pred["corruption_names"])}


def record_metrics(pred: dict[str, np.ndarray]) -> dict[str, Any]:
    """The beyond-top-1 values of result.json that `pred` allows (absent parts give absent values)."""
    out: dict[str, Any] = {}
    test, val = split(pred, "test"), split(pred, "val")
    if test is not None:
        out["selected_aece"] = cal.adaptive_ece(test.msp, test.correct)
        out["selected_aurc"] = aurc(test.msp, test.correct)
        out["selected_eaurc"] = out["selected_aurc"] - optimal_aurc(test.correct)
        probs = test.probs
        if probs is not None:
            out["selected_cwece"] = cal.classwise_ece(probs, test.targets)
            out["selected_brier"] = cal.brier(probs, test.targets)
            if val is not None and val.logits is not None:
                t = cal.fit_temperature(val.logits, val.targets)
                scaled = test.logits / t
                p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                out["temperature"] = t
                out["selected_nll_ts"] = cal.nll(scaled, test.targets)
                out["selected_ece_ts"] = cal.ece(p.max(axis=1), test.correct)
    if "test_feature_sums" in pred and test is not None:
        counts = np.bincount(test.targets, minlength=len(pred["test_feature_sums"]))
        out["repr_within_ratio"], out["repr_class_cosine"] = class_separation(
            pred["test_feature_sums"], pred["test_feature_sqnorms"], counts)
    acc = corruption_accuracy(pred)
    if acc:
        out["corrupt_top1"] = float(np.mean(list(acc.values())))
        out.update({f"corrupt_{name}_top1": float(a.mean()) for name, a in acc.items()})
    if "ood_msp" in pred and test is not None:
        out["ood_auroc"] = auroc(test.msp, pred["ood_msp"])
        out["ood_fpr95"] = fpr_at_tpr(test.msp, pred["ood_msp"])
        out["ood_auroc_energy"] = auroc(test.logsumexp, pred["ood_logsumexp"])  # minus the energy: higher = in
        out["ood_fpr95_energy"] = fpr_at_tpr(test.logsumexp, pred["ood_logsumexp"])
    return out


def mce(errors: dict[str, float], baseline: dict[str, float]) -> float:
    """Mean corruption error (Hendrycks & Dietterich 2019): the mean over corruptions of the error summed over
    severities relative to the baseline's (here CE's), in percent; corruptions missing on either side are left out."""
    ratios = [errors[c] / baseline[c] for c in errors if c in baseline and baseline[c] > 0]
    return float(100 * np.mean(ratios)) if ratios else float("nan")
