"""CE against a numpy log-softmax."""
import numpy as np
import torch
from helpers import np_log_softmax

from methods import StepContext, build_method


def test_ce_matches_numpy_and_has_one_part():
    z = np.array([[2.0, 1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 0.5, 0.5]])
    y = np.array([0, 2, 3])
    out = build_method("ce", num_classes=4).loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y), StepContext())
    expected = -np_log_softmax(z)[np.arange(3), y].mean()
    assert abs(out["loss"].item() - expected) < 1e-6
    assert set(out) == {"loss", "ce"}


def test_ce_two_classes():
    z = torch.tensor([[0.0, np.log(3.0)]])  # p = (1/4, 3/4)
    out = build_method("ce", num_classes=2).loss(z, torch.tensor([1]), StepContext())
    assert abs(out["loss"].item() - (-np.log(0.75))) < 1e-6
