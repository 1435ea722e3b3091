"""The estimates beside the marks (simultaneous CI, ROPE posterior, seeds won), the two-level bootstrap over
per-image predictions, and across data sets: the permutation Friedman p, comparisons with CE and the CD
figure of a pooled `tfbench table --out`."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.results.bootstrap import NO_PREDICTIONS, bootstrap_cells, read_predictions, two_level
from harness.results.estimates import posterior, seeds_won, simultaneous_ci
from harness.results.ranks import bonferroni_dunn_cd, control_tests, friedman


def test_the_simultaneous_interval_excludes_zero_exactly_where_bonferroni_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(0.5, 1.0, size=5)
        k = 4
        low, high = simultaneous_ci(mean=d.mean(), sd=d.std(ddof=1), n=5, alpha=0.05, k=k)
        p = stats.ttest_1samp(d, 0.0).pvalue
        assert (low > 0 or high < 0) == (min(1.0, k * p) < 0.05)


def test_the_posterior_splits_at_the_rope_like_a_sampled_student_t():
    d = np.array([0.3, 0.9, 0.5, 0.7])
    post = posterior(mean=d.mean(), sd=d.std(ddof=1), n=4, rope=0.5, higher_is_better=True)
    draws = d.mean() + d.std(ddof=1) / 2 * np.random.default_rng(1).standard_t(3, size=400_000)
    assert post.better == pytest.approx((draws > 0.5).mean(), abs=0.003)
    assert post.worse == pytest.approx((draws < -0.5).mean(), abs=0.003)
    assert post.worse + post.equivalent + post.better == pytest.approx(1.0)
    lower = posterior(mean=d.mean(), sd=d.std(ddof=1), n=4, rope=0.5, higher_is_better=False)
    assert (lower.worse, lower.better) == (post.better, post.worse)  # for NLL, a positive difference is worse
    assert math.isnan(posterior(mean=1.0, sd=math.nan, n=1, rope=0.5, higher_is_better=True).worse)
    assert seeds_won(np.array([0.1, -0.2, 0.0, 0.3]), higher_is_better=True) == 2


def _write(folder, targets, logits, **extra):
    folder.mkdir(parents=True)
    np.savez(folder / "predictions.npz", test_targets=targets.astype(np.int64),
             test_logits=logits.astype(np.float16), **extra)


def _logits(rng, targets, right, c=5):
    """Logits whose argmax is the target where `right`, another class elsewhere: (N, C)."""
    z = rng.normal(size=(len(targets), c))
    guess = np.where(right, targets, (targets + 1) % c)
    z[np.arange(len(targets)), guess] += 10.0
    return z


def test_two_level_bootstrap_reads_predictions_and_sees_the_test_sets_noise(tmp_path):
    rng = np.random.default_rng(2)
    n_img = 400
    targets = rng.integers(0, 5, size=n_img)
    # Every seed's method beats the baseline on the same 40 images and loses on the same 20: no seed-to-seed
    # spread, so the interval is all test-set noise: var = var(per-image difference) / N
    wins, losses = np.zeros(n_img, bool), np.zeros(n_img, bool)
    wins[:40], losses[40:60] = True, True
    keys = []
    for s in range(3):
        _write(tmp_path / f"a{s}", targets, _logits(rng, targets, ~losses))
        _write(tmp_path / f"b{s}", targets, _logits(rng, targets, ~wins))
        keys.append((f"a{s}", f"b{s}"))
    cells = bootstrap_cells(keys, "selected_top1", lambda k: read_predictions(tmp_path / k))
    per_image = wins.astype(float) - losses.astype(float)
    se = math.sqrt(per_image.var() / n_img)  # the bootstrap's variance of a mean of N draws
    half = stats.t.ppf(0.975, 2) * se
    assert cells["boot_note"] == ""
    assert cells["boot_ci_low"] == pytest.approx(per_image.mean() - half, abs=0.15 * half)
    assert cells["boot_ci_high"] == pytest.approx(per_image.mean() + half, abs=0.15 * half)
    assert cells["test_var_share"] == pytest.approx(1.0)
    missing = bootstrap_cells(keys, "selected_top1", lambda k: None)
    assert missing["boot_note"] == NO_PREDICTIONS and math.isnan(missing["boot_ci_low"])


def test_two_level_bootstrap_with_no_test_noise_is_the_seed_interval():
    d = np.repeat(np.array([[0.01], [0.03], [0.02], [0.05]]), 50, axis=1)  # each seed: one value on every image
    res = two_level(d)
    seeds = d[:, 0]
    half = stats.t.ppf(0.975, 3) * seeds.std(ddof=1) / 2
    assert res.test_share == pytest.approx(0.0, abs=1e-12)
    assert seeds.mean() - res.low == pytest.approx(half, rel=0.1)  # the bootstrap of 2000: a few % off


def test_top_k_form_of_predictions_gives_the_same_correctness(tmp_path):
    from harness.results.bootstrap import correct

    rng = np.random.default_rng(4)
    targets = rng.integers(0, 30, size=50)
    z = rng.normal(size=(50, 30)).astype(np.float16)
    top = np.argsort(-z.astype(np.float32), axis=1)[:, :20]
    shuffled = rng.permuted(top, axis=1)  # the file's order is not promised: the reader sorts
    pred = {"test_targets": targets, "test_top_logits": np.take_along_axis(z, shuffled, axis=1),
            "test_top_indices": shuffled.astype(np.int32)}
    assert np.array_equal(correct(pred, "test_", 1), (z.astype(np.float32).argmax(1) == targets).astype(float))


def _friedman_exact_by_hand(values: np.ndarray) -> float:
    """Every arrangement of every block's ranks, the chi2 of each from its definition."""
    n, k = values.shape
    r = stats.rankdata(values, axis=1)
    def chi2(rows):
        sums = np.sum(rows, axis=0)
        return 12 / (n * k * (k + 1)) * np.sum(sums ** 2) - 3 * n * (k + 1)
    observed = chi2(r)
    count = total = 0
    for arrangement in itertools.product(itertools.permutations(r[1]), itertools.permutations(r[2])):
        total += 1
        count += chi2(np.array([r[0], *arrangement])) >= observed - 1e-9
    return count / total


def test_friedman_below_ten_blocks_decides_on_the_exact_permutation_p():
    values = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0], [1.0, 3.0, 2.0, 4.0]])
    fr = friedman(pd.DataFrame(values))
    assert fr.perm_exact and fr.perm_p == pytest.approx(_friedman_exact_by_hand(values))
    assert fr.decision_p == fr.perm_p
    # its size under the null, exactly: every arrangement of block 1 (block 0 fixed) is equally likely, and
    # the share of them the test rejects at 0.05 is at most 0.05
    base = np.arange(1.0, 6.0)
    rejected = [friedman(pd.DataFrame([base, np.array(p, dtype=float)])).decision_p < 0.05
                for p in itertools.permutations(range(1, 6))]
    assert 0 < np.mean(rejected) <= 0.05


def test_comparisons_with_ce_use_the_rank_z_and_holm():
    scores = pd.DataFrame({"CE": [0.9, 0.8, 0.7, 0.6], "A": [0.95, 0.85, 0.75, 0.65], "B": [0.5, 0.4, 0.3, 0.2]})
    res = control_tests(scores, control="CE", higher_is_better=True).set_index("method")
    se = math.sqrt(3 * 4 / (6 * 4))  # mean ranks: A 1, CE 2, B 3
    assert res.loc["A", "z"] == pytest.approx(-1 / se) and res.loc["B", "z"] == pytest.approx(1 / se)
    p = 2 * stats.norm.sf(1 / se)
    assert res.loc["A", "p_holm"] == pytest.approx(min(1, 2 * p))
    # Demšar's table: k = 7, N = 3 at alpha 0.05: q = 2.638, CD = 2.638 sqrt(7 * 8 / 18) = 4.65
    assert bonferroni_dunn_cd(k=7, n_blocks=3) == pytest.approx(4.65, abs=0.01)


def test_the_differences_figure_draws_each_seed_interval_and_the_rope():
    from harness.results.aggregate import aggregate
    from harness.results.plots_differences import differences_figure

    rows = []
    for s, (ce, ls) in enumerate([(0.70, 0.72), (0.71, 0.74), (0.72, 0.73)]):
        for m, v in (("ce", ce), ("ls", ls)):
            rows.append({"key": f"{m}{s}", "status": "finished", "method": m, "dataset": "d", "model": "x",
                         "seed": s, "epochs": 1, "protocol": "clean", "select": "top1", "selected_top1": v})
    g = aggregate(pd.DataFrame(rows), rope=0.5)
    fig = differences_figure(g, dataset="d", model="x", metric="selected_top1", colors={})
    [line] = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "seed:LS"]
    d = np.array([0.02, 0.03, 0.01]) * 100
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert list(line.get_xdata()) == pytest.approx([d.mean() - half, d.mean() + half])
    band = fig.axes[0].patches[0]  # the ROPE: +-0.5 points
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((-0.5, 0.5))
