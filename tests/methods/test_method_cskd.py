"""CS-KD: the pair sampler's properties and the KD term against numpy."""
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import np_log_softmax
from scipy import stats

from methods import MethodParamError, StepContext, build_method

LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 0, 2, 2])  # class 3 has a single sample


def epoch_pairs(method, seed, batch_size=4, labels=LABELS):
    return list(method.pair_batches(labels, batch_size, torch.Generator().manual_seed(seed)))


def test_every_index_is_an_anchor_once_and_partners_share_the_class():
    m = build_method("cskd", num_classes=4)
    for seed in range(3):
        batches = epoch_pairs(m, seed)
        assert [len(a) for a, _ in batches] == [4, 4, 3]  # the short last batch is kept
        anchors = torch.cat([a for a, _ in batches])
        partners = torch.cat([p for _, p in batches])
        assert sorted(anchors.tolist()) == list(range(len(LABELS)))
        assert torch.equal(LABELS[anchors], LABELS[partners])
        assert partners[anchors == 6].tolist() == [6]  # a singleton class pairs with itself


def test_sampler_is_seeded_and_reshuffles():
    m = build_method("cskd", num_classes=4)
    a = [torch.cat(x) for x in zip(*epoch_pairs(m, 7), strict=True)]
    b = [torch.cat(x) for x in zip(*epoch_pairs(m, 7), strict=True)]
    c = [torch.cat(x) for x in zip(*epoch_pairs(m, 8), strict=True)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_partner_is_uniform_over_the_class_including_itself():
    m = build_method("cskd", num_classes=4)
    gen = torch.Generator().manual_seed(0)
    draws = Counter()
    for _ in range(400):
        for anchors, partners in m.pair_batches(LABELS, 4, gen):
            draws.update(partners[anchors == 0].tolist())  # anchor 0 is in class 0: {0, 2, 5, 8}
    assert set(draws) == {0, 2, 5, 8}
    assert stats.chisquare(list(draws.values())).pvalue > 1e-3


@pytest.mark.parametrize("T,lam", [(4.0, 1.0), (1.0, 3.0)])
def test_loss_matches_numpy_and_partner_gets_no_gradient(T, lam):
    za = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 1.0]], dtype=np.float32)
    zp = np.array([[1.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.0, 4.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 1])
    m = build_method("cskd", {"temperature": T, "lam": lam}, num_classes=3)
    partner = torch.tensor(zp, requires_grad=True)
    anchor = torch.tensor(za, requires_grad=True)
    out = m.loss(anchor, torch.tensor(y), StepContext(partner_logits=partner))
    ce = -np_log_softmax(za)[np.arange(3), y].mean()
    logq, logp = np_log_softmax(zp / T), np_log_softmax(za / T)
    kd = (np.exp(logq) * (logq - logp)).sum() * T * T / 3
    assert abs(out["ce"].item() - ce) < 1e-5
    assert abs(out["kd"].item() - kd) < 1e-5
    assert abs(out["loss"].item() - (ce + lam * kd)) < 1e-5
    out["loss"].backward()
    assert partner.grad is None and anchor.grad is not None


def test_needs_pairs_and_bad_params():
    m = build_method("cskd", num_classes=3)
    assert m.needs.pairs
    with pytest.raises(ValueError, match="partner_logits"):
        m.loss(torch.zeros(2, 3), torch.tensor([0, 1]), StepContext())
    with pytest.raises(MethodParamError, match=r"method 'cskd'.*'temperature'"):
        build_method("cskd", {"temperature": 0}, num_classes=3)
    with pytest.raises(MethodParamError, match=r"method 'cskd'.*'lam'"):
        build_method("cskd", {"lam": -1}, num_classes=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampler_runs_on_the_generator_device():
    m = build_method("cskd", num_classes=4)
    gen = torch.Generator("cuda").manual_seed(0)
    batches = list(m.pair_batches(LABELS.cuda(), 4, gen))
    anchors = torch.cat([a for a, _ in batches])
    partners = torch.cat([p for _, p in batches])
    assert anchors.is_cuda and sorted(anchors.tolist()) == list(range(len(LABELS)))
    assert torch.equal(LABELS.cuda()[anchors], LABELS.cuda()[partners])
