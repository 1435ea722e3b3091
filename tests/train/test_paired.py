"""Paired runs: with the same seed every method starts from the same weights and sees the same batches, so
per-seed differences between methods compare like with like (docs/training.md, "Paired seeds")."""
from __future__ import annotations

import pytest
import torch

from harness.config.resolve import resolve_trial
from harness.data.fast import TensorLoader
from harness.train.loop import build_rig


def rig(method: str, seed: int = 0, **train):
    spec = resolve_trial(method=method, dataset="synthetic", model="tiny_cnn", seed=seed,
                         dataset_params={"crop_padding": 2, "flip": True},  # augmentation draws random numbers
                         train={"epochs": 2, "batch_size": 16, **train})
    return build_rig(spec)


def first_batch(r) -> tuple[torch.Tensor, torch.Tensor]:
    x, _, idx = next(iter(r.loaders.batches()))
    return idx, x


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("other", ["ls", "zipf"])
def test_same_seed_same_initial_weights_and_first_batch(other, fast_path):
    """ls: nothing extra; zipf: needs feature maps and draws its extra layer's weights when built."""
    # each batch right after its rig: the DataLoader path augments with the process-wide generator
    ce = rig("ce", fast_path=fast_path)
    ce_idx, ce_x = first_batch(ce)
    o = rig(other, fast_path=fast_path)
    o_idx, o_x = first_batch(o)
    assert same_state(ce.model.state_dict(), o.model.state_dict())
    assert torch.equal(ce_idx, o_idx) and torch.equal(ce_x, o_x)


def test_another_seed_changes_weights_order_and_augmentation():
    """The checks above could pass on an unshuffled, unaugmented loader: these could not."""
    a = rig("ce")
    a_idx, a_x = first_batch(a)
    b = rig("ce", seed=1)
    b_idx, _ = first_batch(b)
    assert not same_state(a.model.state_dict(), b.model.state_dict())
    assert not torch.equal(a_idx, b_idx)
    mem = a.bundle.memory  # seed 0's first indices, augmented with other draws
    loader = TensorLoader(mem.train_x, mem.train_y, batch_size=16, shuffle=False, drop_last=False,
                          generator=torch.Generator().manual_seed(12345), device="cpu", mean=a.bundle.mean,
                          std=a.bundle.std, crop_padding=mem.crop_padding, flip=mem.flip)
    assert not torch.equal(a_x, loader.batch(a_idx)[0])


def test_cskd_shares_weights_and_anchors_but_draws_partners():
    """CS-KD draws each anchor's partner from the data-order generator after the epoch's permutation, so
    its first anchors are CE's first batch, while the augmentation draws (and later epochs' orders) differ."""
    ce = rig("ce")
    ce_idx, ce_x = first_batch(ce)
    cs = rig("cskd")
    cs_idx, cs_x = first_batch(cs)
    assert same_state(ce.model.state_dict(), cs.model.state_dict())
    half = len(cs_idx) // 2  # the batch is cat(anchors, partners)
    assert torch.equal(ce_idx, cs_idx[:half])
    labels = cs.bundle.train_labels
    assert torch.equal(labels[cs_idx[:half]], labels[cs_idx[half:]])  # partners share the anchor's class
    assert not torch.equal(ce_x, cs_x[:half])
