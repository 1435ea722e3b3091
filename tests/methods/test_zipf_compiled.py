"""The static-shape Zipf loss (`methods.compiled`): equal to the eager reference and to numpy, and compilable
as one graph. The inductor test compiles C++ on the CPU (about a minute on 2 cores), hence `slow`."""
import numpy as np
import pytest
import torch
from scipy import stats

from methods.compiled import ce_and_zipf_kl_dense, compiled_zipf_loss, zipf_loss_dense, zipf_pdf_dense
from methods.functional import ce_and_zipf_kl, dense_votes, densify, zipf_pdf_from_votes

CASES = [  # (B, C, D, H, upsample, distribution, params, mask)
    (8, 10, 6, 3, "none", "zipf", {"alpha": 1.0}, False),
    (12, 7, 5, 2, "bilinear", "zipf", {"alpha": 0.5}, True),
    (6, 30, 4, 4, "none", "linear_decay", {"smallest_prob": 0.01}, False),
    (5, 12, 9, 3, "none", "exponential_decay", {"exp_lambda": 0.3}, True),
]


def inputs(b, c, d, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    fm = torch.randn(b, d, h, h, generator=g)
    w, bias = torch.randn(c, d, generator=g), torch.randn(c, generator=g)
    z = (3 * torch.randn(b, c, generator=g)).requires_grad_()
    y = torch.randint(0, c, (b,), generator=g)
    return fm, w, bias, z, y


def eager(fm, w, bias, z, y, upsample, distribution, params, mask):
    votes = dense_votes(final_map=fm, weight=w, bias=bias, upsample=upsample)
    pdf = zipf_pdf_from_votes(votes=votes, targets=y, num_classes=z.shape[1], distribution=distribution, **params)
    return ce_and_zipf_kl(logits=z, targets=y, pdf=pdf, mask=mask)


def loss_and_grad(fn, z, lam=0.3):
    ce, kl = fn()
    (g,) = torch.autograd.grad(ce + lam * kl, z)
    return ce.detach(), kl.detach(), g


def assert_rel(a, b, tol=1e-6):
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, (a, b)


@pytest.mark.parametrize("case", CASES)
def test_dense_form_equals_eager_loss_and_gradients(case):
    b, c, d, h, up, dist, params, mask = case
    fm, w, bias, z, y = inputs(b, c, d, h)
    ref = loss_and_grad(lambda: eager(fm, w, bias, z, y, up, dist, params, mask), z)
    got = loss_and_grad(lambda: zipf_loss_dense(logits=z, targets=y, final_map=fm, weight=w, bias=bias, upsample=up,
                                                distribution=dist, mask=mask, **params), z)
    for a, r in zip(got, ref, strict=True):
        assert_rel(a, r)


def test_dense_pdf_equals_sparse_pdf_and_scipy_ranks():
    fm, w, bias, z, y = inputs(10, 9, 4, 3, seed=3)
    votes = dense_votes(final_map=fm, weight=w, bias=bias)
    dense = zipf_pdf_dense(votes=votes, targets=y, num_classes=9, alpha=1.0)
    sparse = densify(zipf_pdf_from_votes(votes=votes, targets=y, num_classes=9, alpha=1.0))
    torch.testing.assert_close(dense, sparse, rtol=1e-6, atol=1e-7)
    # independently: scipy's competition ranks of the vote counts, 1/r, target dropped, normalised
    counts = np.stack([np.bincount(v, minlength=9) for v in votes.numpy()])
    ranks = stats.rankdata(-counts, method="min", axis=1).astype(float)
    wts = 1.0 / ranks
    wts[np.arange(10), y.numpy()] = 0.0
    np.testing.assert_allclose(dense.numpy(), wts / wts.sum(1, keepdims=True), rtol=1e-6)


def test_kl_against_numpy_with_mask():
    torch.manual_seed(1)
    z = torch.randn(7, 5, dtype=torch.float64) * 4
    y = torch.randint(0, 5, (7,))
    pdf = torch.rand(7, 5, dtype=torch.float64).scatter(1, y[:, None], 0.0)
    pdf = pdf / pdf.sum(1, keepdim=True)
    ce, kl = ce_and_zipf_kl_dense(logits=z, targets=y, pdf=pdf, mask=True)
    zn, pn, yn = z.numpy(), pdf.numpy(), y.numpy()
    kls, correct = [], []
    for i in range(7):
        others = np.delete(zn[i], yn[i])
        logq = others - others.max() - np.log(np.exp(others - others.max()).sum())
        p = np.delete(pn[i], yn[i])
        kls.append(np.sum(p * (np.log(p) - logq)))
        correct.append(zn[i].argmax() == yn[i])
    kls, correct = np.array(kls), np.array(correct)
    expected = (kls * correct).sum() / max(correct.sum(), 1)
    assert abs(kl.item() - expected) <= 1e-6 * max(abs(expected), 1e-12) + 1e-12
    lse = np.log(np.exp(zn - zn.max(1, keepdims=True)).sum(1)) + zn.max(1)
    assert abs(ce.item() - np.mean(lse - zn[np.arange(7), yn])) < 1e-6


def test_one_graph_no_breaks():
    """fullgraph=True raises on any graph break; aot_eager traces without compiling C++ (fast)."""
    b, c, d, h, up, dist, params, mask = CASES[1]
    fm, w, bias, z, y = inputs(b, c, d, h)
    ref = loss_and_grad(lambda: eager(fm, w, bias, z, y, up, dist, params, mask), z)
    fn = compiled_zipf_loss(backend="aot_eager")
    got = loss_and_grad(lambda: fn(logits=z, targets=y, final_map=fm, weight=w, bias=bias, upsample=up,
                                   distribution=dist, mask=mask, **params), z)
    for a, r in zip(got, ref, strict=True):
        assert_rel(a, r)


@pytest.mark.slow
def test_inductor_compiled_equals_eager():
    b, c, d, h, up, dist, params, mask = CASES[0]
    fm, w, bias, z, y = inputs(b, c, d, h, seed=7)
    ref = loss_and_grad(lambda: eager(fm, w, bias, z, y, up, dist, params, mask), z)
    fn = compiled_zipf_loss()
    got = loss_and_grad(lambda: fn(logits=z, targets=y, final_map=fm, weight=w, bias=bias, upsample=up,
                                   distribution=dist, mask=mask, **params), z)
    for a, r in zip(got, ref, strict=True):
        assert_rel(a, r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_on_cuda_equals_eager_and_never_syncs_with_the_host():
    b, c, d, h, up, dist, params, mask = CASES[1]
    fm, w, bias, z, y = (t.cuda() for t in inputs(b, c, d, h, seed=11))
    z = z.detach().requires_grad_()
    ref = loss_and_grad(lambda: eager(fm, w, bias, z, y, up, dist, params, mask), z)
    fn = compiled_zipf_loss()

    def call():
        return fn(logits=z, targets=y, final_map=fm, weight=w, bias=bias, upsample=up, distribution=dist, mask=mask,
                  **params)

    loss_and_grad(call, z)  # compile outside the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = loss_and_grad(call, z)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, r in zip(got, ref, strict=True):
        assert_rel(a, r)
