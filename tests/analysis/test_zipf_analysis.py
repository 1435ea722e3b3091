"""The supplement's analyses (harness.analysis.zipf / zipf_plots / cmd_zipf): Algorithm 1, Table 1's fits and
metrics, rank SNR, and the Fig. 4 examples. Expected values come from numpy / scipy / sklearn computed
directly, or from constructions with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from scipy import stats
from scipy.special import softmax

from harness.analysis import zipf as za
from harness.analysis import zipf_models as zm
from harness.analysis import zipf_plots as zp

# ------------------------------------------------------------------ Algorithm 1


def test_toy_is_algorithm_1_and_deterministic():
    a = za.toy_mean_sorted_probs(samples=200, classes=300, seed=3)
    b = za.toy_mean_sorted_probs(samples=200, classes=300, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, za.toy_mean_sorted_probs(samples=200, classes=300, seed=4))
    # Algorithm 1 as the supplement writes it (sort ascending, softmax, average, reverse), same Generator
    logits = np.random.default_rng(3).standard_normal((200, 300))
    s = np.sort(logits, axis=1)
    preds = np.exp(s) / np.sum(np.exp(s), axis=1)[:, None]
    np.testing.assert_allclose(a, preds.mean(axis=0)[::-1], rtol=1e-12)
    assert np.all(np.diff(a) <= 0) and a.sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def toy_table():
    return za.table1(za.toy_mean_sorted_probs(samples=1000, classes=1000, seed=0), k=50, n_samples=100_000, seed=0)


def test_toy_zipf_fits_and_beats_exponential_on_every_metric(toy_table):
    m = toy_table.metrics
    z, e = m["zipf"], m["exponential"]
    assert z["r2"] > 0.99
    assert z["r2"] > e["r2"]
    for key in ("kl", "js", "chi2", "ks_d"):  # lower is better
        assert z[key] < e[key], key
    assert z["ks_p"] > e["ks_p"]
    assert z["chi2_p"] >= e["chi2_p"]


def test_lognormal_is_at_least_as_good_as_its_power_law_limit(toy_table):
    # As sigma -> infinity the log-normal over ranks tends to a power law, so its maximum-likelihood fit can
    # never be worse than Zipf's (up to the optimiser): a check that both fits reach their optimum. (On the
    # toy the two are nearly tied; the supplement's clear Zipf win is on INAT-21 predictions.)
    m = toy_table.metrics
    assert m["lognormal"]["kl"] <= m["zipf"]["kl"] + 1e-9
    # KL(p || q) = cross-entropy - entropy, so the ordering must match an independent cross-entropy
    p = toy_table.p
    ce = {law: -(p * np.log(f.pmf)).sum() for law, f in toy_table.fits.items()}
    assert ce["lognormal"] <= ce["zipf"] + 1e-9 < ce["exponential"]


# ------------------------------------------------------------------ fits


def test_zipf_exponent_recovered_from_samples_of_a_known_law():
    rng = np.random.default_rng(12)
    r = np.arange(1, 51)
    samples = rng.choice(r, size=100_000, p=stats.zipfian.pmf(r, 1.3, 50))
    p = np.bincount(samples, minlength=51)[1:] / len(samples)
    fit = za.fit_law(p, "zipf")
    assert fit.params["s"] == pytest.approx(1.3, abs=0.02)


@pytest.mark.parametrize("law,params", [("zipf", {"s": 0.8}), ("exponential", {"lam": 0.15}),
                                        ("lognormal", {"mu": 1.2, "sigma": 0.9})])
def test_fit_recovers_the_parameters_of_an_exact_pmf(law, params):
    r = np.arange(1, 41)
    if law == "zipf":
        w = r ** -params["s"]
    elif law == "exponential":
        w = np.exp(-params["lam"] * r)
    else:  # the log-normal density written out
        w = np.exp(-(np.log(r) - params["mu"]) ** 2 / (2 * params["sigma"] ** 2)) / (r * params["sigma"])
    p = w / w.sum()
    fit = za.fit_law(p, law)
    for name, value in params.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-4), name
    np.testing.assert_allclose(fit.pmf, p, atol=1e-9)
    np.testing.assert_allclose(za.law_pmf(law, params, k=40), p, rtol=1e-10)


def test_top_k_distribution_rejects_unsorted_and_bad_k():
    with pytest.raises(ValueError):
        za.top_k_distribution(np.array([0.1, 0.5, 0.4]), k=3)
    with pytest.raises(ValueError):
        za.top_k_distribution(np.array([0.5, 0.3, 0.2]), k=4)
    np.testing.assert_allclose(za.top_k_distribution(np.array([0.5, 0.3, 0.2]), k=2), [0.625, 0.375])


# ------------------------------------------------------------------ metrics against direct computations

P = np.array([0.5, 0.3, 0.15, 0.05])
Q = np.array([0.4, 0.35, 0.15, 0.10])


def test_r_squared_matches_sklearn():
    from sklearn.metrics import r2_score

    assert za.r_squared(observed=P, fitted=Q) == pytest.approx(r2_score(P, Q), rel=1e-12)


def test_kl_and_js_divergences_by_hand():
    kl = np.sum(P * np.log(P / Q))
    assert za.kl_divergence(p=P, q=Q) == pytest.approx(kl, rel=1e-12)
    assert za.kl_divergence(p=P, q=Q) == pytest.approx(stats.entropy(P, Q), rel=1e-12)
    m = (P + Q) / 2
    js = 0.5 * np.sum(P * np.log(P / m)) + 0.5 * np.sum(Q * np.log(Q / m))
    assert za.js_divergence(p=P, q=Q) == pytest.approx(js, rel=1e-10)  # the divergence, not its square root


def test_chi_square_by_hand():
    samples = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 4])
    observed = np.array([4, 3, 2, 1])
    expected = 10 * Q
    stat = np.sum((observed - expected) ** 2 / expected)
    got, p = za.chi_square(samples=samples, q=Q, ddof=1)
    assert got == pytest.approx(stat, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(stat, 4 - 1 - 1), rel=1e-10)


def test_ks_statistic_is_the_largest_gap_between_the_rank_cdfs():
    rng = np.random.default_rng(0)
    a = za.sample_ranks(P, n=5000, rng=rng)
    b = za.sample_ranks(Q, n=4000, rng=rng)
    cdf_a = np.cumsum(np.bincount(a, minlength=5)[1:]) / len(a)
    cdf_b = np.cumsum(np.bincount(b, minlength=5)[1:]) / len(b)
    d, p = za.ks_test(samples=a, fitted_samples=b)
    assert d == pytest.approx(np.max(np.abs(cdf_a - cdf_b)), abs=1e-12)
    assert p == pytest.approx(stats.ks_2samp(a, b).pvalue)


def test_sample_ranks_follow_the_distribution():
    counts = np.bincount(za.sample_ranks(P, n=200_000, rng=np.random.default_rng(1)), minlength=5)[1:]
    np.testing.assert_allclose(counts / counts.sum(), P, atol=0.005)
    assert counts.sum() == 200_000


def test_table1_rows_list_every_metric_for_every_law(toy_table):
    header, rows = za.table1_rows(toy_table)
    assert header == ["Metric", "Zipf's law", "Exponential", "Log-normal"]
    assert [r[0] for r in rows[:5]] == [t for _, t in za.METRIC_ROWS]
    assert rows[4][1].startswith("D=") and " p=" in rows[4][1]


# ------------------------------------------------------------------ SNR


def test_rank_snr_of_predictions_with_known_mean_and_std():
    mean = np.array([0.5, 0.2, 0.15, 0.1, 0.03])
    std = np.array([0.05, 0.02, 0.01, 0.02, 0.04])
    n = 1000
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None]       # exactly mean +- std per rank
    rows = mean + sign * std                                           # (N, 5), descending in every row
    rows = np.random.default_rng(0).permuted(rows, axis=1)             # classes in arbitrary order
    snr = za.snr_of_probs(rows)
    np.testing.assert_allclose(snr, mean / std, rtol=1e-9)
    assert za.snr_summary(snr) == {"last_rank_above": 4, "leading_ranks_above": 4, "num_ranks": 5}


def test_snr_summary_when_the_tail_rises_again():
    assert za.snr_summary(np.array([3.0, 0.5, 2.0, 0.2])) == {"last_rank_above": 3, "leading_ranks_above": 1,
                                                              "num_ranks": 4}
    assert za.snr_summary(np.array([0.5, 0.2]))["last_rank_above"] == 0


def test_rank_moments_merge_equals_the_whole():
    x = np.random.default_rng(2).random((97, 6))
    parts = za.RankMoments(n=0, mean=np.zeros(0), m2=np.zeros(0))
    for chunk in np.array_split(x, [10, 11, 60]):
        parts = parts.merge(za.RankMoments.of(chunk))
    assert parts.n == 97
    np.testing.assert_allclose(parts.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(parts.std, x.std(0, ddof=0), rtol=1e-10)


def test_sorted_prob_moments_over_a_loader():
    logits = torch.randn(20, 7, generator=torch.Generator().manual_seed(0))
    loader = [(logits[i:i + 6], torch.zeros(len(logits[i:i + 6]), dtype=torch.long)) for i in range(0, 20, 6)]
    m = zm.sorted_prob_moments(torch.nn.Identity(), loader, limit=15)
    expected = -np.sort(-softmax(logits[:15].double().numpy(), axis=1), axis=1)
    assert m.n == 15
    np.testing.assert_allclose(m.mean, expected.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m.std, expected.std(0), rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------ Fig. 4 data


def test_class_categories_and_top_classes():
    supers = [0, 0, 1, 1, 2]
    assert zm.class_category(1, label=1, superclasses=supers) == "gt"
    assert zm.class_category(0, label=1, superclasses=supers) == "similar"
    assert zm.class_category(3, label=1, superclasses=supers) == "unrelated"
    assert zm.class_category(0, label=1, superclasses=None) == "unrelated"
    values = np.array([0.1, 0.0, 0.3, 0.1, 0.1])
    top, cats = zm.top_classes(values, k=3, label=1, superclasses=supers, exclude_label=True,
                               tiebreak=np.array([0.0, 9.0, 0.0, 5.0, 1.0]))
    assert [c for c, _ in top] == [2, 3, 4]      # ties at 0.1 ordered by the larger tiebreak
    assert cats == ["unrelated", "unrelated", "unrelated"]


def _reference_zipf_pdf(model, x, y, alpha):
    """Dense votes by hand: the classifier at every location, argmax, counts, scipy ranks, (1/r)^alpha."""
    from harness.models import classifier, forward_with_maps

    with torch.no_grad():
        _, fmap, _ = forward_with_maps(model, x)
        fc = classifier(model)
        scores = torch.einsum("bdhw,cd->bhwc", fmap, fc.weight) + fc.bias       # (B, H, W, C)
    votes = scores.argmax(-1).flatten(1).numpy()
    c = fc.weight.shape[0]
    out = []
    for v, label in zip(votes, y.tolist(), strict=True):
        counts = np.bincount(v, minlength=c)
        w = (1.0 / stats.rankdata(-counts, method="min")) ** alpha
        w[label] = 0.0
        out.append(w / w.sum())
    return np.array(out)


@pytest.fixture(scope="module")
def tiny_models():
    from harness.models import create_model

    torch.manual_seed(0)
    models = [create_model("tiny_cnn", num_classes=6, in_chans=3, input_size=8).eval() for _ in range(2)]
    return models


def test_zipf_soft_labels_match_a_direct_vote_count(tiny_models):
    model = tiny_models[0]
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 5])
    pdf, _ = zm.zipf_soft_labels(model, x, y, alpha=1.5)
    np.testing.assert_allclose(pdf.numpy(), _reference_zipf_pdf(model, x, y, 1.5), rtol=1e-5, atol=1e-7)


def test_build_examples(tiny_models):
    zipf_model, ce_model = tiny_models
    g = torch.Generator().manual_seed(2)
    dataset = [(torch.randn(3, 8, 8, generator=g), i % 6, i) for i in range(10)]
    supers = [0, 0, 0, 1, 1, 1]
    indices = zm.pick_indices(len(dataset), n=4, seed=0)
    assert indices == zm.pick_indices(len(dataset), n=4, seed=0) and len(set(indices)) == 4
    ex = zm.build_examples(zipf_model=zipf_model, ce_model=ce_model, dataset=dataset, indices=indices,
                           superclasses=supers, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    x = torch.stack([dataset[i][0] for i in indices])
    ce_probs = torch.softmax(ce_model(x), 1).detach().numpy()
    for e, probs in zip(ex, ce_probs, strict=True):
        assert e.label == dataset[e.index][1]
        assert [c for c, _ in e.ce_top] == list(np.argsort(-probs)[:5])
        assert e.label not in [c for c, _ in e.zipf_top] and len(e.zipf_top) == 5
        for (c, _), cat in zip(e.ce_top, e.ce_categories, strict=True):
            want = "gt" if c == e.label else "similar" if supers[c] == supers[e.label] else "unrelated"
            assert cat == want
        assert e.image.shape == (8, 8, 3) and e.image.min() >= 0 and e.image.max() <= 1
    raw = dataset[ex[0].index][0].numpy()
    np.testing.assert_allclose(ex[0].image, np.clip(np.transpose(raw, (1, 2, 0)) * 0.2 + 0.5, 0, 1), rtol=1e-6)


# ------------------------------------------------------------------ figures


def test_examples_figure_panels_and_colours():
    classes = ["cat", "dog", "car", "bus"]
    ex = [zm.Example(index=0, image=np.zeros((4, 4, 3)), label=0,
                     zipf_top=[(1, 0.6), (2, 0.4)], ce_top=[(0, 0.7), (1, 0.2), (3, 0.1)],
                     zipf_categories=["similar", "unrelated"], ce_categories=["gt", "similar", "unrelated"]),
          zm.Example(index=5, image=np.zeros((4, 4)), label=2,
                     zipf_top=[(3, 1.0)], ce_top=[(0, 0.9)],
                     zipf_categories=["similar"], ce_categories=["unrelated"])]
    fig = zp.examples_figure(ex, classes)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert axes[0].get_title() == "GT: cat" and axes[3].get_title() == "GT: car"
    assert len(axes[0].get_images()) == 1
    dark, light, red = to_rgba("darkgreen"), to_rgba("lightgreen"), to_rgba("red")
    assert [p.get_facecolor() for p in axes[1].patches] == [light, red]
    assert [p.get_facecolor() for p in axes[2].patches] == [dark, light, red]
    assert [p.get_facecolor() for p in axes[5].patches] == [red]
    assert [p.get_width() for p in axes[2].patches] == [0.7, 0.2, 0.1]
    ticks = sorted(zip(axes[2].get_yticks(), [t.get_text() for t in axes[2].get_yticklabels()], strict=True), reverse=True)
    assert [name for _, name in ticks] == ["cat", "dog", "bus"]  # the first entry at the top


def test_examples_figure_legend_and_values_with_super_classes():
    classes = ["cat", "dog", "car", "bus"]
    ex = [zm.Example(index=0, image=np.zeros((4, 4, 3)), label=0, zipf_top=[(1, 0.6), (2, 0.4)],
                     ce_top=[(0, 0.9996), (1, 0.0004)], zipf_categories=["similar", "unrelated"],
                     ce_categories=["gt", "similar"])]
    fig = zp.examples_figure(ex, classes, title="cifar100 / resnet18: 1 val image")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "ground truth", "same super-class as the ground truth", "another super-class"]
    assert legend.get_title().get_text() == ""
    assert fig.get_suptitle() == "cifar100 / resnet18: 1 val image"
    zipf_ax, ce_ax = fig.get_axes()[1:]
    assert [t.get_text() for t in zipf_ax.texts] == ["0.600", "0.400"]
    assert [t.get_text() for t in ce_ax.texts] == ["1.000", "<0.001"]  # a bar too short to see still reads
    assert zipf_ax.get_xlabel().startswith("soft-label weight") and ce_ax.get_xlabel() == "CE softmax probability"


def test_examples_figure_without_super_classes_colours_nothing_unrelated():
    """digits has no super-classes: its Example categories say 'unrelated' for every non-target class (there
    is nothing to relate them by), and the figure must not paint them as such."""
    classes = [str(d) for d in range(10)]
    supers = None
    ce_top, ce_cats = zm.top_classes(np.array([0.05, 0.0, 0.0, 0.9, 0.0, 0.05, 0, 0, 0, 0]), k=3, label=3,
                                     superclasses=supers)
    z_top, z_cats = zm.top_classes(np.array([0.5, 0.0, 0.3, 0.0, 0.2, 0, 0, 0, 0, 0]), k=3, label=3,
                                   superclasses=supers, exclude_label=True)
    assert set(z_cats) == {"unrelated"}  # what the data layer says, and what the figure must not show
    ex = [zm.Example(index=0, image=np.zeros((8, 8)), label=3, zipf_top=z_top, ce_top=ce_top,
                     zipf_categories=z_cats, ce_categories=ce_cats)]
    fig = zp.examples_figure(ex, classes, has_superclasses=False, dataset="digits")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ground truth", "another class"]
    assert "digits has no super-classes" in legend.get_title().get_text().replace("\n", " ")
    _, zipf_ax, ce_ax = fig.get_axes()
    grey, dark, red = to_rgba(zp.OTHER_COLOR), to_rgba("darkgreen"), to_rgba("red")
    assert [p.get_facecolor() for p in zipf_ax.patches] == [grey, grey, grey]
    assert [p.get_facecolor() for p in ce_ax.patches] == [dark, grey, grey]
    assert red not in [p.get_facecolor() for ax in (zipf_ax, ce_ax) for p in ax.patches]


def _trained_pair(folder):
    """A Zipf's LS and a CE trial on digits (no super-classes), one short epoch each, trained without Ray."""
    from harness.config.resolve import resolve_trial
    from harness.train.loop import train_trial

    dirs = {}
    for method in ("zipf", "ce"):
        spec = resolve_trial(method=method, dataset="digits", model="tiny_cnn", seed=0,
                             train={"epochs": 1, "batch_size": 64, "max_steps_per_epoch": 3, "threads": 1})
        dirs[method] = folder / "trials" / spec.key()
        train_trial(spec, dirs[method], log=lambda line: None)
    return dirs


def test_cli_examples_on_a_data_set_without_super_classes(tmp_path, monkeypatch, capsys):
    import json

    from harness.cli import main
    from harness.results import plots

    dirs = _trained_pair(tmp_path / "sweep")
    figures = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem: figures.append(fig) or real(fig, stem))
    assert main(["zipf", "examples", str(dirs["zipf"]), "--n", "3", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no super-classes" in out and "(unrelated)" not in out
    (fig,) = figures
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ground truth", "another class"]
    assert "digits has no super-classes" in legend.get_title().get_text().replace("\n", " ")
    assert fig.get_suptitle().startswith("digits / tiny_cnn: 3 val images")
    record = json.loads((tmp_path / "o" / "examples.json").read_text())
    assert record["superclasses"] is False
    cats = {c for e in record["examples"] for key in ("zipf_top5", "ce_top5") for *_, c in e[key]}
    assert cats <= {"gt", "other"} and "other" in cats
    assert (tmp_path / "o" / "fig4_examples.png").exists() and (tmp_path / "o" / "fig4_examples.pdf").exists()


def test_snr_and_rank_figures(tmp_path):
    fig = zp.snr_figure(np.linspace(5, 0.1, 100), top=40)
    a, b = fig.get_axes()
    assert len(a.lines[0].get_xdata()) == 100 and len(b.lines[0].get_xdata()) == 40
    assert any(np.all(np.asarray(line.get_ydata()) == 1.0) for line in b.lines)
    mean = za.toy_mean_sorted_probs(samples=50, classes=100, seed=0)
    fit = za.fit_law(za.top_k_distribution(mean, k=32), "zipf")
    fig = zp.rank_probability_figure(mean, fit, top=32)
    ax = fig.get_axes()[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), mean[:32])
    paths = zp.save_figure(fig, tmp_path / "f")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


# ------------------------------------------------------------------ CLI


def test_cli_toy_and_fit(tmp_path, capsys):
    from harness.cli import main

    assert main(["zipf", "toy", "--samples", "100", "--classes", "200", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "fig1_rank_probability.png").exists() and (tmp_path / "toy_mean_sorted_probs.csv").exists()
    assert main(["zipf", "fit", "--toy", "--samples", "100", "--classes", "200", "--n-samples", "2000",
                 "--out", str(tmp_path), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "Metric,Zipf's law,Exponential,Log-normal" in out
    for ext in ("md", "tex", "csv", "json"):
        assert (tmp_path / f"table1.{ext}").exists()
    assert "\\toprule" in (tmp_path / "table1.tex").read_text()
    assert main(["zipf", "fit"]) == 2  # neither --toy nor a trial folder: a one-line user error
    assert "give a trial folder" in capsys.readouterr().err


def test_out_dir_for_trial_folders(tmp_path):
    from harness.cli.zipf import out_dir_for

    trial = tmp_path / "results" / "sweep" / "trials" / "zipf-abc"
    trial.mkdir(parents=True)
    assert out_dir_for(trial, None) == tmp_path / "results" / "sweep" / "zipf" / "zipf-abc"
    assert out_dir_for(tmp_path / "x", None) == tmp_path / "x" / "zipf"
    assert out_dir_for(trial, tmp_path / "o") == tmp_path / "o"


def test_flat_distribution_fits_stay_finite():
    # a flat top-K: Zipf s = 0, exponential lam = 0, and the best log-normal is its power-law limit
    fits = za.fit_all(np.full(10, 0.1))
    assert fits["zipf"].params["s"] == pytest.approx(0.0, abs=1e-6)
    assert fits["exponential"].params["lam"] == pytest.approx(0.0, abs=1e-6)
    assert "power law" in fits["lognormal"].note
    for f in fits.values():
        np.testing.assert_allclose(f.pmf, 0.1, atol=1e-6)
