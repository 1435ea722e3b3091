"""OLS: both initialisations, the per-step accumulation and the epoch-end update."""
import numpy as np
import pytest
import torch
from helpers import np_softmax

from methods import MethodParamError, StepContext, build_method

C = 4
Z = np.array([[3.0, 0.0, 0.0, 1.0],    # label 0, correct
              [2.0, 1.0, 0.0, 0.0],    # label 0, correct
              [0.0, 0.0, 2.0, 1.0],    # label 1, wrong (argmax 2)
              [0.0, 1.0, 0.0, 4.0],    # label 3, correct
              [1.0, 1.0, 1.0, 0.0]], dtype=np.float32)  # label 2, tie -> argmax 0, wrong
Y = np.array([0, 0, 1, 3, 2])


def test_zeros_init_epoch_zero_is_half_ce():
    m = build_method("ols", num_classes=C)
    out = m.loss(torch.tensor(Z), torch.tensor(Y), StepContext())
    ce = -np.log(np_softmax(Z))[np.arange(5), Y].mean()
    assert abs(out["loss"].item() - 0.5 * ce) < 1e-6


def test_uniform_init():
    m = build_method("ols", {"init": "uniform"}, num_classes=C)
    out = m.loss(torch.tensor(Z), torch.tensor(Y), StepContext())
    logp = np.log(np_softmax(Z))
    ce = -logp[np.arange(5), Y].mean()
    soft = -(logp / C).sum(1).mean()
    assert abs(out["loss"].item() - (0.5 * ce + 0.5 * soft)) < 1e-6


def test_epoch_end_update_uses_correct_samples_only_and_uniform_rows_otherwise():
    m = build_method("ols", num_classes=C)
    m.on_epoch_start(0, 2)
    m.loss(torch.tensor(Z[:3]), torch.tensor(Y[:3]), StepContext())  # two steps in one epoch
    m.loss(torch.tensor(Z[3:]), torch.tensor(Y[3:]), StepContext())
    m.on_epoch_end(0)
    p = np_softmax(Z)
    expected = np.full((C, C), 1 / C)  # classes 1 and 2 have no correct sample
    expected[0] = (p[0] + p[1]) / 2
    expected[3] = p[3]
    S = m.state_dict()["S"].numpy()
    np.testing.assert_allclose(S, expected, atol=1e-6)
    assert m.state_dict()["counts"].sum() == 0 and m.state_dict()["sums"].abs().sum() == 0  # reset
    # the next epoch trains against S[y]
    z2 = np.array([[0.0, 1.0, 2.0, 0.5], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    y2 = np.array([3, 1])
    out = m.loss(torch.tensor(z2), torch.tensor(y2), StepContext())
    logp = np.log(np_softmax(z2))
    ce = -logp[np.arange(2), y2].mean()
    soft = -(expected[y2] * logp).sum(1).mean()
    assert abs(out["loss"].item() - (0.5 * ce + 0.5 * soft)) < 1e-6


def test_state_round_trip():
    m = build_method("ols", num_classes=C)
    m.loss(torch.tensor(Z), torch.tensor(Y), StepContext())
    m.on_epoch_end(0)
    m.loss(torch.tensor(Z), torch.tensor(Y), StepContext())  # mid-epoch accumulators too
    resumed = build_method("ols", num_classes=C)
    resumed.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
    m.on_epoch_end(1)
    resumed.on_epoch_end(1)
    assert torch.equal(m.state_dict()["S"], resumed.state_dict()["S"])
    assert m.state_nbytes() == C * C * 4


def test_two_classes_and_bad_init():
    m = build_method("ols", num_classes=2)
    m.loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), StepContext())
    m.on_epoch_end(0)
    S = m.state_dict()["S"].numpy()
    np.testing.assert_allclose(S, [np_softmax(np.array([[2.0, 0.0]]))[0], [0.5, 0.5]], atol=1e-6)
    with pytest.raises(MethodParamError, match=r"method 'ols'.*'init'"):
        build_method("ols", {"init": "ones"}, num_classes=2)


def test_epoch_sums_let_workers_add_up_to_one_process():
    # two data-parallel workers, each seeing half the batch; summing their epoch_sums in place
    # before on_epoch_end gives the single-process matrix
    single, a, b = (build_method("ols", num_classes=C) for _ in range(3))
    single.loss(torch.tensor(Z), torch.tensor(Y), StepContext())
    a.loss(torch.tensor(Z[:2]), torch.tensor(Y[:2]), StepContext())
    b.loss(torch.tensor(Z[2:]), torch.tensor(Y[2:]), StepContext())
    for ta, tb in zip(a.epoch_sums(), b.epoch_sums(), strict=True):
        total = ta + tb
        ta.copy_(total)
        tb.copy_(total)
    for m in (single, a, b):
        m.on_epoch_end(0)
    assert torch.allclose(a.state_dict()["S"], single.state_dict()["S"])
    assert torch.allclose(b.state_dict()["S"], single.state_dict()["S"])
    assert not torch.allclose(build_method("ols", num_classes=C).state_dict()["S"], single.state_dict()["S"])
