"""Zipf's LS: every formula against numpy/scipy, every option, gradients, and the worked example."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import np_log_softmax
from scipy import stats

from methods import MethodParamError, StepContext, build_method
from methods.functional import (
    ce_and_zipf_kl,
    dense_votes,
    densify,
    nontarget_pdf,
    rank_free_weights,
    rank_weights,
    ranks_from_logits,
    vote_counts,
    zipf_kl,
    zipf_pdf,
    zipf_pdf_from_votes,
    zipf_ranks_from_counts,
)

# --- independent numpy references (np_log_softmax: tests/helpers.py) ---------------------------

def np_counts(votes, c):
    return np.stack([np.bincount(v, minlength=c) for v in votes])


def np_pdf(scores, y, weight=lambda r: 1.0 / r):
    """scipy ranks of each row (ties: lowest rank), weights, target dropped, normalised: (B, C-1)."""
    ranks = stats.rankdata(-scores, method="min", axis=1)
    w = weight(ranks.astype(float))
    out = []
    for i in range(len(y)):
        row = np.delete(w[i], y[i])
        out.append(row / row.sum())
    return np.array(out)


def np_kl(z, pdf, y, mask=False):
    kls, correct = [], []
    for i in range(len(y)):
        logq = np_log_softmax(np.delete(z[i], y[i]))
        p = pdf[i]
        kls.append(np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - logq), 0.0)))
        correct.append(z[i].argmax() == y[i])
    kls, correct = np.array(kls), np.array(correct)
    if mask:
        return (kls * correct).sum() / correct.sum() if correct.any() else 0.0
    return kls.mean()


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def one_hot_map(votes, c, side):
    """A (B, C, side, side) map whose argmax under the identity classifier is `votes` (row-major)."""
    b = len(votes)
    m = torch.zeros(b, c, side * side)
    m[torch.arange(b)[:, None], torch.as_tensor(votes), torch.arange(side * side)[None, :]] = 1.0
    return m.view(b, c, side, side)


def identity_classifier(c):
    lin = torch.nn.Linear(c, c)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(c))
        lin.bias.zero_()
    return lin


# --- the worked example (docs/METHODS.md) ---------------------------------------------------------

WORKED_VOTES = [50] * 50 + [3] * 8 + [11] * 4 + [20] * 2  # 64 votes, C = 100, target 50


def test_worked_example_to_four_decimals():
    sparse = zipf_pdf_from_votes(votes=torch.tensor([WORKED_VOTES]), targets=torch.tensor([50]), num_classes=100)
    pdf = sparse.dense()[0].numpy()
    assert [round(float(pdf[k]), 4) for k in (3, 11, 20)] == [0.0247, 0.0164, 0.0123]
    unvoted = np.setdiff1d(np.arange(100), [3, 11, 20, 50])
    assert np.allclose(np.round(pdf[unvoted], 4), 0.0099)
    assert round(float(pdf[unvoted].sum()), 3) == 0.947
    assert pdf[50] == 0


def test_worked_example_through_the_method_and_dense_votes():
    # identity classifier on a one-hot 8x8 map: the 64 locations vote exactly WORKED_VOTES
    c = 100
    final_map = one_hot_map([WORKED_VOTES], c, 8)
    classifier = identity_classifier(c)
    votes = dense_votes(final_map=final_map, weight=classifier.weight, bias=classifier.bias)
    assert votes[0].tolist() == WORKED_VOTES
    m = build_method("zipf", {"lam": 1.0}, num_classes=c)
    z = torch.randn(1, c, generator=torch.Generator().manual_seed(0))
    out = m.loss(z, torch.tensor([50]), StepContext(final_map=final_map, classifier=classifier))
    ranks = np.full(c, 5.0)
    ranks[[50, 3, 11, 20]] = [1, 2, 3, 4]
    pdf = np.delete(1 / ranks, 50)
    pdf /= pdf.sum()
    expected_kl = np_kl(z.numpy(), pdf[None], [50])
    assert abs(out["zipf"].item() - expected_kl) < 1e-5
    assert abs(out["loss"].item() - (np_ce(z.numpy(), [50]) + expected_kl)) < 1e-5


# --- ranks ----------------------------------------------------------------------------------------

def test_ranks_from_counts_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 12, size=(20, 9))  # many ties by construction
    counts = np_counts(votes, 15)
    ours = zipf_ranks_from_counts(counts=torch.tensor(counts), max_count=9).numpy()
    np.testing.assert_array_equal(ours, stats.rankdata(-counts, method="min", axis=1))
    via_votes = zipf_ranks_from_counts(counts=vote_counts(votes=torch.tensor(votes), num_classes=15), max_count=9)
    np.testing.assert_array_equal(via_votes.numpy(), ours)


def test_ranks_from_logits_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    z = rng.integers(-3, 3, size=(10, 8)).astype(np.float32)
    ours = ranks_from_logits(logits=torch.tensor(z)).numpy()
    np.testing.assert_array_equal(ours, stats.rankdata(-z, method="min", axis=1))


# --- pdf ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_pdf_from_votes_matches_numpy(alpha):
    rng = np.random.default_rng(2)
    c, v = 13, 16
    votes = rng.integers(0, 6, size=(12, v))  # classes 6..12 never voted
    y = rng.integers(0, c, size=12)
    y[:4] = votes[:4, 0]  # target among the voted classes ...
    y[4:8] = 12  # ... and not
    sparse = zipf_pdf_from_votes(votes=torch.tensor(votes), targets=torch.tensor(y), num_classes=c, alpha=alpha)
    neg_entropy = sparse.neg_entropy
    expected = np_pdf(np_counts(votes, c), y, lambda r: (1 / r) ** alpha)
    full = sparse.dense().numpy()
    np.testing.assert_allclose(np.stack([np.delete(full[i], y[i]) for i in range(12)]), expected, atol=1e-6)
    assert (full[np.arange(12), y] == 0).all()
    np.testing.assert_allclose(neg_entropy.numpy(), (expected * np.log(expected)).sum(1), atol=1e-5)
    # the plain path (weights of ranks, then drop and normalise) agrees
    counts = vote_counts(votes=torch.tensor(votes), num_classes=c)
    w = rank_weights(ranks=zipf_ranks_from_counts(counts=counts, max_count=v), alpha=alpha)
    np.testing.assert_allclose(zipf_pdf(weights=w, targets=torch.tensor(y)).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("distribution,params,weight", [
    ("linear_decay", {"smallest_prob": 0.01}, lambda r: (13 - r) * 2 * (1 - 13 * 0.01) / (12 * 13) + 0.01),
    ("linear_decay", {"smallest_prob": 0.0}, lambda r: (13 - r) * 2 / (12 * 13)),
    ("exponential_decay", {"exp_lambda": 0.7}, lambda r: np.exp(-0.7 * (r - 1))),
])
def test_rank_based_distributions_match_numpy(distribution, params, weight):
    rng = np.random.default_rng(3)
    c = 13
    votes = rng.integers(0, c, size=(10, 9))
    y = rng.integers(0, c, size=10)
    pdf = zipf_pdf_from_votes(votes=torch.tensor(votes), targets=torch.tensor(y), num_classes=c,
                              distribution=distribution, **params).dense()
    expected = np_pdf(np_counts(votes, c), y, weight)
    np.testing.assert_allclose(np.stack([np.delete(pdf[i].numpy(), y[i]) for i in range(10)]), expected, atol=1e-6)


def test_linear_decay_weights_sum_to_one_over_all_ranks():
    c, s = 10, 0.02
    w = rank_weights(ranks=torch.arange(1, c + 1)[None], distribution="linear_decay", num_classes=c, smallest_prob=s)
    assert abs(w.sum().item() - 1.0) < 1e-6 and abs(w[0, -1].item() - s) < 1e-7


def test_constant_is_uniform_over_non_targets():
    m = build_method("zipf", {"distribution": "constant", "lam": 1.0}, num_classes=5)
    pdf = m.pdf(torch.zeros(2, 5), torch.tensor([1, 4]), StepContext())
    np.testing.assert_allclose(pdf.numpy(), [[0.25, 0, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25, 0]])


def test_random_distributions_follow_their_laws():
    gen = torch.Generator().manual_seed(0)
    u = rank_free_weights(shape=(20000,), distribution="random_uniform", generator=gen).numpy()
    par = rank_free_weights(shape=(20000,), distribution="random_pareto", generator=gen).numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest(par, stats.lomax(c=1).cdf).pvalue > 1e-3  # numpy's pareto(1): Lomax, shape 1


@pytest.mark.parametrize("distribution", ["random_uniform", "random_pareto"])
def test_random_distributions_use_the_step_generator(distribution):
    m = build_method("zipf", {"distribution": distribution, "lam": 1.0}, num_classes=6)
    z, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])

    def pdf(seed):
        return m.pdf(z, y, StepContext(generator=torch.Generator().manual_seed(seed)))

    a, b, c = pdf(1), pdf(1), pdf(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[torch.arange(4), y] == 0).all() and torch.allclose(a.sum(1), torch.ones(4))
    assert not m.needs.features  # no votes: the rank is not used


def test_all_zero_weights_fall_back_to_uniform():
    # linear_decay, s = 0, C = 2: the single non-target class has rank 2 and weight 0
    w = rank_weights(ranks=torch.tensor([[1, 2]]), distribution="linear_decay", num_classes=2, smallest_prob=0.0)
    assert torch.equal(nontarget_pdf(weights=w, targets=torch.tensor([0])), torch.tensor([[0.0, 1.0]]))


# --- the KL and its gradient ----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["sparse", "dense"])
@pytest.mark.parametrize("mask", [False, True])
def test_fused_ce_and_kl_match_numpy_values_and_autograd_reference(mask, form):
    rng = np.random.default_rng(4)
    c = 9
    z = rng.normal(size=(16, c)).astype(np.float32) * 2
    y = rng.integers(0, c, size=16)
    z[:5, :] = 0.0
    z[np.arange(5), y[:5]] = 3.0  # some certainly correct
    z[5] = [50.0] + [0.0] * (c - 1)
    y[5] = 0  # a very confident sample
    votes = rng.integers(0, c, size=(16, 7))
    pdf = zipf_pdf_from_votes(votes=torch.tensor(votes), targets=torch.tensor(y), num_classes=c)
    if form == "dense":
        pdf = pdf.dense()
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ce, kl = ce_and_zipf_kl(logits=zt, targets=torch.tensor(y), pdf=pdf, mask=mask)
    pdf_np = np_pdf(np_counts(votes, c), y)
    assert abs(ce.item() - np_ce(z.astype(np.float64), y)) < 1e-5
    assert abs(kl.item() - np_kl(z.astype(np.float64), pdf_np, y, mask)) < 1e-5
    (ce + 0.3 * kl).backward()
    # reference gradient: plain autograd through torch's own ops
    zr = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ref = F.cross_entropy(zr, torch.tensor(y)) + 0.3 * zipf_kl(logits=zr, pdf=torch.tensor(pdf_np), targets=torch.tensor(y), mask=mask)
    ref.backward()
    np.testing.assert_allclose(zt.grad.numpy(), zr.grad.numpy(), atol=1e-6)


def test_kl_grad_is_q_minus_pdf_and_zero_in_the_target_column():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(3, 6))
    y = np.array([0, 3, 5])
    pdf_np = np_pdf(rng.integers(0, 4, size=(3, 6)).astype(float), y)
    zt = torch.tensor(z, requires_grad=True)
    _, kl = ce_and_zipf_kl(logits=zt, targets=torch.tensor(y), pdf=torch.tensor(pdf_np).new_zeros(3, 6).scatter_(
        1, torch.tensor([[k for k in range(6) if k != t] for t in y]), torch.tensor(pdf_np)))
    kl.backward()
    for i in range(3):
        q = np.exp(np_log_softmax(np.delete(z[i], y[i])))
        np.testing.assert_allclose(np.delete(zt.grad[i].numpy(), y[i]), (q - pdf_np[i]) / 3, atol=1e-7)
        assert zt.grad[i, y[i]] == 0


def test_mask_with_no_correct_sample_gives_zero():
    z = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 2])  # both wrong
    pdf = zipf_pdf_from_votes(votes=torch.tensor([[1, 1], [0, 2]]), targets=y, num_classes=3)
    ce, kl = ce_and_zipf_kl(logits=z, targets=y, pdf=pdf, mask=True)
    assert kl.item() == 0.0
    kl.backward()
    assert torch.count_nonzero(z.grad) == 0


def test_extremely_confident_samples_stay_finite():
    z = torch.tensor([[1000.0, 0.0, -5.0, 3.0]], requires_grad=True)
    pdf = zipf_pdf_from_votes(votes=torch.tensor([[0, 0, 3]]), targets=torch.tensor([0]), num_classes=4)
    ce, kl = ce_and_zipf_kl(logits=z, targets=torch.tensor([0]), pdf=pdf)
    assert torch.isfinite(ce) and torch.isfinite(kl)
    assert abs(kl.item() - np_kl(z.detach().numpy().astype(np.float64), np_pdf(np.array([[2.0, 0, 0, 1]]), [0]), [0])) < 1e-4


# --- the method's options -------------------------------------------------------------------------

def make_ctx(votes, c, side, **kw):
    return StepContext(final_map=one_hot_map(votes, c, side), classifier=identity_classifier(c), **kw)


@pytest.mark.parametrize("mask", [False, True])
def test_method_dense_loss_matches_numpy(mask):
    rng = np.random.default_rng(6)
    c, side = 7, 3
    votes = rng.integers(0, 4, size=(8, side * side))
    y = rng.integers(0, c, size=8)
    z = rng.normal(size=(8, c)).astype(np.float32)
    z[np.arange(3), y[:3]] += 5  # a few correct ones
    m = build_method("zipf", {"lam": 0.5, "alpha": 1.5, "mask": mask}, num_classes=c)
    out = m.loss(torch.tensor(z), torch.tensor(y), make_ctx(votes, c, side))
    kl = np_kl(z.astype(np.float64), np_pdf(np_counts(votes, c), y, lambda r: r ** -1.5), y, mask)
    assert abs(out["zipf"].item() - kl) < 1e-5
    assert abs(out["loss"].item() - (np_ce(z.astype(np.float64), y) + 0.5 * kl)) < 1e-5


def test_non_dense_ranks_the_logits_with_ties():
    z = np.array([[2.0, 1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 3.0]], dtype=np.float32)
    y = np.array([1, 4])
    m = build_method("zipf", {"dense": False, "lam": 1.0}, num_classes=5)
    assert not m.needs.features
    out = m.loss(torch.tensor(z), torch.tensor(y), StepContext())  # no feature maps needed
    kl = np_kl(z.astype(np.float64), np_pdf(z, y), y)
    assert abs(out["zipf"].item() - kl) < 1e-6


def test_upsample_votes_on_a_hand_computed_map():
    # 1x2 maps, identity classifier over 3 classes. x2 bilinear with align_corners=False reads the
    # columns at a, 0.75a+0.25b, 0.25a+0.75b, b (align_corners=True: a, 2a/3+b/3, a/3+2b/3, b;
    # nearest: a, a, b, b). Channel 2 is a constant x: x = 0.8 beats 0.75 (votes 0 2 2 1), x = 0.7
    # does not (votes 0 0 1 1, where align_corners=True would give 0 2 2 1).
    fmap = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.8, 0.8]], [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]]).reshape(2, 3, 1, 2)
    lin = identity_classifier(3)
    assert dense_votes(final_map=fmap, weight=lin.weight, bias=lin.bias).tolist() == [[0, 1], [0, 1]]
    up = dense_votes(final_map=fmap, weight=lin.weight, bias=lin.bias, upsample="bilinear")
    assert up.tolist() == [[0, 2, 2, 1, 0, 2, 2, 1], [0, 0, 1, 1, 0, 0, 1, 1]]
    m = build_method("zipf", {"upsample": "bilinear", "lam": 1.0}, num_classes=3)
    pdf = densify(m.pdf(torch.zeros(2, 3), torch.tensor([0, 0]), StepContext(final_map=fmap, classifier=lin)))
    expected = np.array([1 / 2, 1 / 1]) / (1 / 2 + 1)  # class 2 has 4 votes (rank 1), class 1 has 2 (rank 2)
    np.testing.assert_allclose(pdf[0, 1:].numpy(), expected, rtol=1e-6)
    # classes 0 and 1 tie with 4 votes (rank 1), class 2 has none (rank 3): weights 1 and 1/3
    np.testing.assert_allclose(pdf[1, 1:].numpy(), [0.75, 0.25], rtol=1e-6)


def test_dense_votes_use_the_bias_and_lowest_index_on_ties():
    fmap = torch.zeros(1, 2, 1, 1)
    w = torch.zeros(3, 2)
    assert dense_votes(final_map=fmap, weight=w, bias=torch.tensor([0.0, 1.0, 1.0])).tolist() == [[1]]


def test_extra_dense_layer_adds_votes_and_beta_ce_on_the_pooled_previous_map():
    c, dp = 5, 4
    m = build_method("zipf", {"extra_dense_layer": True, "beta": 0.3, "lam": 1.0}, num_classes=c, feature_channels=(c, dp))
    extra = m.extra_modules()
    assert isinstance(extra, torch.nn.Linear) and extra.weight.shape == (c, dp)
    with torch.no_grad():
        extra.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]]))
        extra.bias.copy_(torch.tensor([0.0, 0, 0, 0, 0.5]))
    final_votes = [[1, 1, 2, 2]]  # 2x2 final map
    prev = torch.zeros(1, dp, 1, 2)
    prev[0, 3, 0, 0] = 2.0  # location 0 votes class 3; location 1 (all zero) votes class 4 by its bias
    ctx = make_ctx(final_votes, c, 2, prev_map=prev)
    y = torch.tensor([1])
    z = torch.tensor([[0.5, 2.0, 0.0, -1.0, 0.3]])
    out = m.loss(z, y, ctx)
    all_votes = np.array([[1, 1, 2, 2, 3, 4]])
    kl = np_kl(z.numpy().astype(np.float64), np_pdf(np_counts(all_votes, c), [1]), [1])
    pooled = prev.mean((2, 3)).numpy()  # (1, D')
    z_extra = pooled @ extra.weight.detach().numpy().T + extra.bias.detach().numpy()
    aux = np_ce(z_extra.astype(np.float64), [1])
    assert abs(out["zipf"].item() - kl) < 1e-5
    assert abs(out["aux_ce"].item() - aux) < 1e-5
    assert abs(out["loss"].item() - (np_ce(z.numpy().astype(np.float64), [1]) + 0.3 * aux + kl)) < 1e-5


def test_gradients_reach_logits_and_extra_classifier_never_the_votes():
    c, d, dp = 6, 6, 4
    gen = torch.Generator().manual_seed(0)
    m = build_method("zipf", {"extra_dense_layer": True, "beta": 0.0, "lam": 1.0, "upsample": "bilinear"},
                     num_classes=c, feature_channels=(d, dp))
    fmap = torch.randn(3, d, 2, 2, generator=gen, requires_grad=True)
    prev = torch.randn(3, dp, 4, 4, generator=gen, requires_grad=True)
    classifier = torch.nn.Linear(d, c)
    z = torch.randn(3, c, generator=gen, requires_grad=True)
    out = m.loss(z, torch.tensor([0, 1, 2]), StepContext(final_map=fmap, prev_map=prev, classifier=classifier))
    out["loss"].backward()
    assert z.grad is not None and torch.count_nonzero(z.grad) > 0
    assert fmap.grad is None and classifier.weight.grad is None  # votes carry no gradient
    extra = m.extra_modules()
    # beta = 0: the extra classifier's only use with gradient is its CE, so its gradient is zero
    assert extra.weight.grad is None or torch.count_nonzero(extra.weight.grad) == 0
    m2 = build_method("zipf", {"extra_dense_layer": True, "beta": 0.5}, num_classes=c, feature_channels=(d, dp))
    m2.loss(z, torch.tensor([0, 1, 2]), StepContext(final_map=fmap, prev_map=prev, classifier=classifier))["loss"].backward()
    assert torch.count_nonzero(m2.extra_modules().weight.grad) > 0 and prev.grad is not None


def test_lam_zero_is_ce_without_feature_maps():
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    out = build_method("zipf", {"lam": 0.0}, num_classes=5).loss(z, y, StepContext())
    assert torch.allclose(out["loss"], F.cross_entropy(z, y)) and out["zipf"].item() == 0.0


def test_two_classes():
    # one non-target class: pdf = [1], log_softmax of one logit = 0, so the Zipf term is 0
    z = torch.tensor([[0.3, -0.2], [1.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    out = build_method("zipf", {"lam": 1.0}, num_classes=2).loss(z, y, make_ctx([[1, 1, 0, 0], [0, 0, 0, 0]], 2, 2))
    assert abs(out["zipf"].item()) < 1e-7
    assert torch.allclose(out["loss"], F.cross_entropy(z, y))


def test_bfloat16_logits():
    z = torch.randn(4, 6).to(torch.bfloat16).requires_grad_(True)
    out = build_method("zipf", {"dense": False}, num_classes=6).loss(z, torch.tensor([0, 1, 2, 3]), StepContext())
    out["loss"].backward()
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(out["loss"])


# --- needs and hyper-parameters -------------------------------------------------------------------

def test_needs_follow_the_options():
    assert build_method("zipf", num_classes=3).needs.features
    assert not build_method("zipf", {"dense": False}, num_classes=3).needs.features
    assert build_method("zipf", {"dense": False, "extra_dense_layer": True}, num_classes=3,
                        feature_channels=(4, 2)).needs.features


@pytest.mark.parametrize("params,param", [
    ({"lam": -0.1}, "lam"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"beta": -1.0}, "beta"),
    ({"distribution": "gaussian"}, "distribution"),
    ({"distribution": "linear_decay"}, "smallest_prob"),
    ({"distribution": "linear_decay", "smallest_prob": 0.5}, "smallest_prob"),
    ({"distribution": "exponential_decay"}, "exp_lambda"),
    ({"distribution": "exponential_decay", "exp_lambda": -1.0}, "exp_lambda"),
    ({"smallest_prob": 0.01}, "smallest_prob"),
    ({"upsample": "bicubic"}, "upsample"),
    ({"extra_dense_layer": True}, "extra_dense_layer"),
    ({"lam": "big"}, "lam"),
])
def test_bad_hyper_parameters_name_method_and_parameter(params, param):
    with pytest.raises(MethodParamError, match=rf"method 'zipf'.*parameter '{param}'"):
        build_method("zipf", params, num_classes=10)


def test_missing_feature_maps_is_a_clear_error():
    with pytest.raises(ValueError, match="final_map"):
        build_method("zipf", num_classes=4).loss(torch.zeros(2, 4), torch.tensor([0, 1]), StepContext())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_on_cuda():
    dev = torch.device("cuda")
    c, d = 1000, 64
    m = build_method("zipf", {"extra_dense_layer": True, "upsample": "bilinear", "mask": True}, num_classes=c,
                     feature_channels=(d, d)).to(dev)
    ctx = StepContext(final_map=torch.randn(32, d, 4, 4, device=dev), prev_map=torch.randn(32, d, 8, 8, device=dev),
                      classifier=torch.nn.Linear(d, c).to(dev))
    z = torch.randn(32, c, device=dev, requires_grad=True)
    y = torch.randint(0, c, (32,), device=dev)
    m.loss(z, y, ctx)["loss"].backward()  # warm-up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = m.loss(z, y, ctx)
        out["loss"].backward()
        for dist, extra in (("random_pareto", {}), ("linear_decay", {"smallest_prob": 1e-4})):
            m2 = build_method("zipf", {"distribution": dist, **extra}, num_classes=c).to(dev)
            m2.loss(z, y, StepContext(final_map=ctx.final_map, classifier=ctx.classifier,
                                      generator=torch.Generator(dev).manual_seed(0)))["loss"].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = build_method("zipf", {"extra_dense_layer": True, "upsample": "bilinear", "mask": True}, num_classes=c,
                       feature_channels=(d, d))
    cpu.extra.load_state_dict({k: v.cpu() for k, v in m.extra.state_dict().items()})
    ref = cpu.loss(z.detach().cpu(), y.cpu(), StepContext(final_map=ctx.final_map.cpu(), prev_map=ctx.prev_map.cpu(),
                                                          classifier=ctx.classifier.cpu()))
    assert abs(ref["loss"].item() - out["loss"].item()) < 1e-3


def test_second_backward_is_refused_not_silently_wrong():
    z = torch.randn(3, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    ce, kl = ce_and_zipf_kl(logits=z, targets=y, pdf=zipf_pdf_from_votes(votes=torch.tensor([[1], [2], [3]]), targets=y,
                                                                         num_classes=5))
    (ce + kl).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        (ce + kl).backward()


@pytest.mark.parametrize("classes, channels", [(5, 16), (16, 5)])
def test_bilinear_votes_equal_upsampling_the_features_first(classes, channels):
    # With fewer classes than channels dense_votes scores first and upsamples the score maps; bilinear
    # weights sum to one, so both orders give the same votes. Reference: the literal official order.
    g = torch.Generator().manual_seed(3)
    fmap = torch.randn(4, channels, 3, 5, generator=g)
    weight, bias = torch.randn(classes, channels, generator=g), torch.randn(classes, generator=g)
    up = torch.nn.functional.interpolate(fmap, scale_factor=2.0, mode="bilinear", align_corners=False)
    expected = (torch.einsum("bdhw,cd->bhwc", up, weight) + bias).argmax(-1).flatten(1)  # (B, 4HW)
    got = dense_votes(final_map=fmap, weight=weight, bias=bias, upsample="bilinear")
    assert torch.equal(got, expected)
