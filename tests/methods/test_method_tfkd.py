"""TF-KD (Tf-KD_reg) with the official code's quirks, against numpy and torch's own KLDivLoss."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import np_softmax

from methods import MethodParamError, StepContext, build_method


def np_tfkd(z, y, alpha, T, mult, a):
    b, c = z.shape
    u = np.full((b, c), (1 - a) / (c - 1))
    u[np.arange(b), y] = a
    q = np_softmax(u / T)  # softmax of a probability vector: the quirk
    logp = np.log(np_softmax(z))  # student at T = 1
    ce = -logp[np.arange(b), y].mean()
    kd = (q * (np.log(q) - logp)).sum() / (b * c)  # element-wise mean, no T^2
    return (1 - alpha) * ce + alpha * mult * kd, ce, kd


Z = np.array([[3.0, 1.0, 1.0, 0.0], [0.0, 0.0, 2.0, 2.0], [-1.0, 5.0, 0.0, 1.0]])
Y = np.array([0, 2, 3])


@pytest.mark.parametrize("alpha,T,mult,a", [(0.1, 20.0, 100.0, 0.99), (0.95, 40.0, 1.0, 0.9), (0.5, 1.0, 10.0, 0.5)])
def test_tfkd_matches_numpy(alpha, T, mult, a):
    m = build_method("tfkd", {"alpha": alpha, "temperature": T, "multiplier": mult, "correct_prob": a}, num_classes=4)
    out = m.loss(torch.tensor(Z, dtype=torch.float32), torch.tensor(Y), StepContext())
    total, ce, kd = np_tfkd(Z, Y, alpha, T, mult, a)
    assert abs(out["loss"].item() - total) < 1e-5
    assert abs(out["ce"].item() - ce) < 1e-5
    assert abs(out["kd"].item() - kd) < 1e-7


def test_kd_is_kldivloss_default_mean():
    # the official call: nn.KLDivLoss()(log_softmax(z), softmax(u / T)), default reduction 'mean'
    z, y = torch.tensor(Z, dtype=torch.float32), torch.tensor(Y)
    out = build_method("tfkd", num_classes=4).loss(z, y, StepContext())
    u = torch.full((3, 4), 0.01 / 3)
    u[torch.arange(3), y] = 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = torch.nn.KLDivLoss()(F.log_softmax(z, 1), F.softmax(u / 20.0, 1))
    assert abs(out["kd"].item() - official.item()) < 1e-7


def test_tfkd_two_classes():
    z, y = np.array([[0.5, -0.5]]), np.array([1])
    out = build_method("tfkd", num_classes=2).loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y), StepContext())
    assert abs(out["loss"].item() - np_tfkd(z, y, 0.1, 20.0, 100.0, 0.99)[0]) < 1e-5


@pytest.mark.parametrize("param,value", [("alpha", -0.1), ("alpha", 1.5), ("temperature", 0.0),
                                         ("multiplier", -1.0), ("correct_prob", 1.2)])
def test_bad_params(param, value):
    with pytest.raises(MethodParamError, match=rf"method 'tfkd'.*'{param}'"):
        build_method("tfkd", {param: value}, num_classes=4)
