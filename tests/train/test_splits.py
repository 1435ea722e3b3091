"""The clean protocol's held-out split: stratified per class, fixed by its own seed, checked by hand."""
from __future__ import annotations

import pytest
import torch

from harness.config.resolve import resolve_trial
from harness.errors import UserError
from harness.train.splits import holdout_split, make_splits, per_class_holdout


def labels_of(counts: list[int]) -> torch.Tensor:
    # classes interleaved, so that positions and classes are not aligned
    out = [c for i in range(max(counts)) for c, n in enumerate(counts) if i < n]
    return torch.tensor(out)


@pytest.mark.parametrize("counts, holdout, expected", [
    ([10, 20, 30], 0.1, [1, 2, 3]),       # fraction of each class
    ([10, 20, 30], 12, [2, 4, 6]),        # 12 images, shared 10:20:30
    ([10, 20, 30], 5, [1, 2, 2]),         # 5 * (1/6, 2/6, 3/6) = 0.83, 1.67, 2.5 -> 1, 2, 2 (half to even)
    ([2, 8], 0.9, [1, 7]),                # 1.8 -> 2 would leave class 0 no training image: 1
    ([4, 4, 1], 0.1, [1, 1, 0]),          # 0.4 -> 0 would hold out nothing: 1; a class of one image keeps it
    ([5000] * 10, 5000, [500] * 10),      # CIFAR-10's preset
    ([500] * 100, 5000, [50] * 100),      # CIFAR-100's preset
])
def test_per_class_counts_by_hand(counts, holdout, expected):
    assert per_class_holdout(torch.tensor(counts), holdout).tolist() == expected
    labels = labels_of(counts)
    fit, held = holdout_split(labels, holdout=holdout, seed=0)
    assert torch.bincount(labels[held], minlength=len(counts)).tolist() == expected
    # a partition of the training split, both sides ascending
    assert sorted(fit.tolist() + held.tolist()) == list(range(len(labels)))
    assert fit.tolist() == sorted(fit.tolist()) and held.tolist() == sorted(held.tolist())


def test_the_split_depends_on_its_seed_only():
    labels = labels_of([30, 30, 30])
    a = holdout_split(labels, holdout=0.2, seed=0)[1]
    assert torch.equal(a, holdout_split(labels, holdout=0.2, seed=0)[1])
    assert not torch.equal(a, holdout_split(labels, holdout=0.2, seed=1)[1])
    torch.manual_seed(123)  # the global generator (the trial seed's) plays no part
    assert torch.equal(a, holdout_split(labels, holdout=0.2, seed=0)[1])


def test_paper_fits_on_everything_and_holds_nothing_out():
    s = make_splits(labels_of([3, 4]), protocol="paper", holdout=0.5, holdout_seed=0)
    assert s.fit.tolist() == list(range(7)) and s.select is None


def test_a_holdout_of_no_image_is_one_clear_error():
    with pytest.raises(UserError, match="train.holdout is 0.1: that holds out no image"):
        make_splits(labels_of([1, 1]), protocol="clean", holdout=0.1, holdout_seed=0)


def test_config_fields_presets_and_checks():
    spec = resolve_trial(method="ce", dataset="digits", seed=0)
    assert (spec.train.protocol, spec.train.holdout, spec.train.holdout_seed) == ("clean", 0.1, 0)
    assert resolve_trial(method="ce", dataset="cifar100", seed=0).train.holdout == 5000
    assert resolve_trial(method="ce", dataset="cifar10", seed=0, train={"holdout": 0.2}).train.holdout == 0.2
    paper = resolve_trial(method="ce", dataset="digits", seed=0, train={"protocol": "paper"})
    assert paper.key() != spec.key()  # part of the trial key
    for train, message in [({"protocol": "test"}, "train.protocol: found 'test'; allowed: clean, paper"),
                           ({"holdout": 1.5}, "train.holdout: found 1.5; allowed: a fraction in (0, 1)"),
                           ({"holdout": 0}, "train.holdout: found 0; allowed")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            resolve_trial(method="ce", dataset="digits", seed=0, train=train)
