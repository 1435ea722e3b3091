"""Label smoothing, both forms, against targets built by hand in numpy."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import np_log_softmax

from methods import MethodParamError, StepContext, build_method
from methods.functional import ls_target

Z = np.array([[2.0, 1.0, 1.0, -1.0, 0.0], [0.3, 0.3, 0.3, 0.3, 0.3], [-1.0, 4.0, 0.0, 2.0, 2.0]])
Y = np.array([0, 4, 3])


def np_target(form, eps, c, y):
    if form == "uniform":
        t = np.full((len(y), c), eps / c)
        t[np.arange(len(y)), y] = 1 - eps + eps / c
    else:
        t = np.full((len(y), c), eps / (c - 1))
        t[np.arange(len(y)), y] = 1 - eps
    return t


@pytest.mark.parametrize("form", ["uniform", "others"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_ls_loss_matches_numpy(form, eps):
    m = build_method("ls", {"epsilon": eps, "form": form}, num_classes=5)
    out = m.loss(torch.tensor(Z, dtype=torch.float32), torch.tensor(Y), StepContext())
    expected = -(np_target(form, eps, 5, Y) * np_log_softmax(Z)).sum(1).mean()
    assert abs(out["loss"].item() - expected) < 1e-5
    # the logged parts recompose the loss
    assert abs((1 - eps) * out["ce"].item() + eps * out["smooth"].item() - out["loss"].item()) < 1e-5


def test_uniform_form_is_torch_label_smoothing():
    z, y = torch.tensor(Z, dtype=torch.float32), torch.tensor(Y)
    out = build_method("ls", {"epsilon": 0.2}, num_classes=5).loss(z, y, StepContext())
    assert torch.allclose(out["loss"], F.cross_entropy(z, y, label_smoothing=0.2), atol=1e-6)


@pytest.mark.parametrize("form", ["uniform", "others"])
def test_ls_target_rows(form):
    t = ls_target(targets=torch.tensor(Y), num_classes=5, epsilon=0.1, form=form)
    np.testing.assert_allclose(t.numpy(), np_target(form, 0.1, 5, Y), atol=1e-7)
    np.testing.assert_allclose(t.sum(1).numpy(), 1.0, atol=1e-6)


def test_two_classes_others_form():
    # C = 2: the other class gets all of eps
    z = torch.tensor([[1.0, -1.0]])
    out = build_method("ls", {"epsilon": 0.3, "form": "others"}, num_classes=2).loss(z, torch.tensor([0]), StepContext())
    lp = np_log_softmax(np.array([[1.0, -1.0]]))[0]
    assert abs(out["loss"].item() - -(0.7 * lp[0] + 0.3 * lp[1])) < 1e-6


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_bad_epsilon(eps):
    with pytest.raises(MethodParamError, match=r"method 'ls'.*'epsilon'"):
        build_method("ls", {"epsilon": eps}, num_classes=5)


def test_bad_form():
    with pytest.raises(MethodParamError, match=r"method 'ls'.*'form'.*uniform, others"):
        build_method("ls", {"form": "both"}, num_classes=5)
