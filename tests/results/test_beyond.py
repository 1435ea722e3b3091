"""The metrics beyond top-1 against independent oracles: explicit loops by hand, scikit-learn's ROC functions,
scipy's scalar minimiser for the temperature, numpy's own variance."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score, roc_curve

from harness.results import calibration as cal
from harness.results.beyond import (
    aurc,
    auroc,
    class_separation,
    fpr_at_tpr,
    mce,
    optimal_aurc,
    record_metrics,
    risk_coverage,
)
from harness.results.predictions import split


def _data(n=500, c=7, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    targets = rng.integers(0, c, size=n)
    logits[np.arange(n), targets] += rng.normal(1.0, 1.0, size=n)  # better than chance, not perfect
    return logits, targets


def _probs(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ece_equals_a_per_bin_loop():
    logits, y = _data()
    p = _probs(logits)
    conf, correct = p.max(1), p.argmax(1) == y
    total = 0.0
    for k in range(15):
        inside = (conf > k / 15) & (conf <= (k + 1) / 15)
        if inside.any():
            total += abs(correct[inside].mean() - conf[inside].mean()) * inside.sum() / len(y)
    assert cal.ece(conf, correct) == pytest.approx(total, abs=1e-12)


def test_adaptive_ece_by_hand():
    conf = np.array([0.9, 0.2, 0.6, 0.8])
    correct = np.array([True, False, False, True])
    # two equal-mass bins: {0.2, 0.6} (acc 0, conf 0.4) and {0.8, 0.9} (acc 1, conf 0.85)
    assert cal.adaptive_ece(conf, correct, bins=2) == pytest.approx((2 * 0.4 + 2 * 0.15) / 4)


def test_classwise_ece_equals_a_loop_over_classes_and_bins():
    logits, y = _data(c=4)
    p = _probs(logits)
    expected = 0.0
    for k in range(4):
        for b in range(15):
            inside = (p[:, k] > b / 15) & (p[:, k] <= (b + 1) / 15)
            if inside.any():
                expected += abs((y[inside] == k).mean() - p[inside, k].mean()) * inside.sum() / len(y)
    assert cal.classwise_ece(p, y) == pytest.approx(expected / 4, abs=1e-12)


def test_brier_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 0])
    expected = ((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.9 ** 2 + 0.1 ** 2 + 0.8 ** 2)) / 2
    assert cal.brier(p, y) == pytest.approx(expected)


def test_temperature_equals_scipys_minimiser():
    logits, y = _data(seed=3)
    logits *= 2.5  # over-confident: T > 1

    def nll(t):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())

    oracle = minimize_scalar(nll, bounds=(0.05, 50), method="bounded", options={"xatol": 1e-10}).x
    t = cal.fit_temperature(logits, y)
    assert t == pytest.approx(oracle, rel=1e-5) and t > 1
    assert cal.nll(logits / t, y) <= nll(1.0)


def test_risk_coverage_and_aurc_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, False])
    coverage, risk = risk_coverage(conf, correct)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0, 1 / 2, 1 / 3, 2 / 4])
    assert aurc(conf, correct) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    # a perfect ranking puts both errors last: risks 0, 0, 1/3, 2/4
    assert optimal_aurc(correct) == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    assert aurc(np.array([0.9, 0.7, 0.8, 0.6]), correct) == pytest.approx(optimal_aurc(correct))


def test_auroc_and_fpr95_equal_sklearns():
    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(1, 1, 300), 1)  # rounded: ties across the two sets
    neg = np.round(rng.normal(0, 1, 200), 1)
    labels = np.r_[np.ones(300), np.zeros(200)]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, np.r_[pos, neg], drop_intermediate=False)
    assert fpr_at_tpr(pos, neg) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_class_separation_equals_numpys_variances():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, size=400)
    f = rng.normal(size=(400, 8)) + y[:, None] * 0.7
    sums = np.stack([f[y == k].sum(0) for k in range(5)])
    sq = np.array([(f[y == k] ** 2).sum() for k in range(5)])
    ratio, cos = class_separation(sums, sq, np.bincount(y, minlength=5))
    within = sum(((f[y == k] - f[y == k].mean(0)) ** 2).sum() for k in range(5))
    assert ratio == pytest.approx(within / ((f - f.mean(0)) ** 2).sum())
    means = np.stack([f[y == k].mean(0) for k in range(5)]) - f.mean(0)
    expected = [means[i] @ means[j] / np.linalg.norm(means[i]) / np.linalg.norm(means[j])
                for i in range(5) for j in range(5) if i != j]
    assert cos == pytest.approx(np.mean(expected))


def test_mce_relative_to_the_baseline():
    assert mce({"a": 0.2, "b": 0.5}, {"a": 0.4, "b": 0.5}) == pytest.approx(100 * (0.5 + 1.0) / 2)


def test_record_metrics_from_a_file_of_full_logits_and_one_of_top_logits():
    logits, y = _data(n=300, c=6)
    p = _probs(logits.astype(np.float32))
    lse = np.log(np.exp(logits).sum(1)).astype(np.float32)
    pred = {"test_targets": y, "test_logits": logits.astype(np.float16), "test_msp": p.max(1).astype(np.float32),
            "test_pred": p.argmax(1).astype(np.int32), "test_logsumexp": lse,
            "val_targets": y, "val_logits": logits.astype(np.float16), "val_msp": p.max(1).astype(np.float32),
            "val_pred": p.argmax(1).astype(np.int32), "val_logsumexp": lse,
            "ood_msp": np.full(50, 0.3, np.float32), "ood_logsumexp": np.zeros(50, np.float32),
            "corruption_names": np.array(["contrast"]), "corruption_correct": np.ones((1, 5, 10), bool)}
    m = record_metrics(pred)
    correct = p.argmax(1) == y
    assert m["selected_aurc"] == pytest.approx(aurc(p.max(1), correct))
    assert m["ood_auroc"] == pytest.approx(roc_auc_score(np.r_[np.ones(300), np.zeros(50)],
                                                         np.r_[p.max(1), np.full(50, 0.3)]))
    assert m["corrupt_top1"] == 1.0 and m["corrupt_contrast_top1"] == 1.0
    assert m["temperature"] > 0 and "selected_brier" in m
    # the top form (C > 1000): no full logits, so no temperature, Brier or classwise ECE; the rest the same
    top = {k: v for k, v in pred.items() if not k.endswith("_logits")}
    top["test_target_logits"] = top["val_target_logits"] = logits[np.arange(300), y].astype(np.float32)
    m2 = record_metrics(top)
    assert "temperature" not in m2 and "selected_brier" not in m2
    assert m2["selected_aurc"] == m["selected_aurc"]
    assert split(top, "test").nll == pytest.approx(lse - logits[np.arange(300), y], abs=1e-5)
