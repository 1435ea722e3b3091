"""digits and synthetic (harness/data/embedded.py): splits, determinism, super-class structure, parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_files import check_items, one_line_error

from harness.data import build_dataset
from harness.errors import UserError

# --- digits -----------------------------------------------------------------------------------

def test_digits_split_fixed_seeded_and_stratified():
    from sklearn.datasets import load_digits

    b = build_dataset("digits", {})
    assert (b.num_classes, b.in_chans, b.input_size) == (10, 1, 8)
    m = b.memory
    assert (len(m.train_y), len(m.val_y)) == (1437, 360)
    assert m.crop_padding == 0 and m.flip is False
    check_items(b.train, n=1437, shape=(1, 8, 8), num_classes=10)
    check_items(b.val, n=360, shape=(1, 8, 8), num_classes=10)
    assert torch.equal(b.train_labels, m.train_y)

    # the two splits are exactly the scikit-learn images, scaled 0..16 -> 0..255, each used once
    d = load_digits()
    ref = np.rint(d.images * 255 / 16).astype(np.uint8)
    ref_keys = sorted(img.tobytes() + bytes([t]) for img, t in zip(ref, d.target, strict=True))
    got = torch.cat([m.train_x, m.val_x])[:, 0].numpy()
    got_y = torch.cat([m.train_y, m.val_y]).numpy()
    assert sorted(img.tobytes() + bytes([int(t)]) for img, t in zip(got, got_y, strict=True)) == ref_keys
    # stratified: each class has ~20% of its images in val
    full = np.bincount(d.target, minlength=10)
    val_counts = np.bincount(m.val_y.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * full) <= 1)

    again = build_dataset("digits", {"split_seed": 0})
    assert torch.equal(again.memory.val_x, m.val_x) and torch.equal(again.memory.val_y, m.val_y)
    other = build_dataset("digits", {"split_seed": 1})
    assert not torch.equal(other.memory.val_x, m.val_x)
    smaller = build_dataset("digits", {"val_fraction": 0.5})
    assert abs(len(smaller.val) - 1797 / 2) <= 1

    # no augmentation by default: the train view is the eval view; normalisation by the train statistics
    x_tr, _, _ = b.train[7]
    x_ev, _, _ = b.train_eval[7]
    assert torch.equal(x_tr, x_ev)
    pix = m.train_x.double() / 255
    assert b.mean[0] == pytest.approx(pix.mean().item(), abs=1e-5)
    assert b.std[0] == pytest.approx(pix.std().item(), abs=1e-5)
    torch.testing.assert_close(x_ev.double(), (m.train_x[7].double() / 255 - b.mean[0]) / b.std[0],
                               rtol=0, atol=1e-5)


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_deterministic_with_superclass_structure():
    p = {"num_classes": 12, "num_superclasses": 3, "image_size": 12, "train_per_class": 30, "val_per_class": 15}
    a, b = build_dataset("synthetic", p), build_dataset("synthetic", p)
    assert torch.equal(a.memory.train_x, b.memory.train_x) and torch.equal(a.memory.val_x, b.memory.val_x)
    c = build_dataset("synthetic", {**p, "seed": 1})
    assert not torch.equal(a.memory.train_x, c.memory.train_x)
    assert (a.num_classes, a.in_chans, a.input_size) == (12, 3, 12)
    assert a.superclasses == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert len(a.superclass_names) == 3 and len(a.classes) == 12
    check_items(a.train, n=360, shape=(3, 12, 12), num_classes=12)
    check_items(a.val, n=180, shape=(3, 12, 12), num_classes=12)
    assert a.memory.train_x.dtype == torch.uint8 and a.memory.train_y.dtype == torch.int64

    # independent check in numpy: nearest class centroids separate the classes, and the nearest other
    # class is almost always from the same super-class (chance: 3 of 11)
    tx = a.memory.train_x.flatten(1).numpy() / 255.0
    vx = a.memory.val_x.flatten(1).numpy() / 255.0
    ty, vy = a.memory.train_y.numpy(), a.memory.val_y.numpy()
    cent = np.stack([tx[ty == k].mean(0) for k in range(12)])
    dist = ((vx[:, None, :] - cent[None]) ** 2).sum(-1)  # (M, C)
    assert (dist.argmin(1) == vy).mean() > 0.8
    dist[np.arange(len(vy)), vy] = np.inf
    sup = np.array(a.superclasses)
    assert (sup[dist.argmin(1)] == sup[vy]).mean() > 0.8
    # class prototypes: within a super-class closer than across
    cd = ((cent[:, None] - cent[None]) ** 2).sum(-1)
    same = sup[:, None] == sup[None]
    off = ~np.eye(12, dtype=bool)
    assert cd[same & off].max() < cd[~same].min()


def test_synthetic_bad_params():
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"num_superclasses": 30})
    one_line_error(e, "num_superclasses")
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"num_clases": 3})
    one_line_error(e, "num_clases", "did you mean 'num_classes'")
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"noise": "high"})
    one_line_error(e, "noise", "allowed: a number")



def test_digits_order_is_sorted_positions_of_sklearns_split():
    """The quickstart's tensors, rebuilt independently: scikit-learn's stratified split with seed 0, each
    side in the order of the images in load_digits, pixels 0..16 scaled to 0..255 and rounded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    tr, va = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0, stratify=d.target)
    pixels = np.rint(d.images * 255 / 16).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    m = build_dataset("digits", {}).memory
    np.testing.assert_array_equal(m.train_x.numpy(), pixels[np.sort(tr)])
    np.testing.assert_array_equal(m.val_x.numpy(), pixels[np.sort(va)])
    np.testing.assert_array_equal(m.train_y.numpy(), d.target[np.sort(tr)])
    np.testing.assert_array_equal(m.val_y.numpy(), d.target[np.sort(va)])
    assert m.train_x.dtype == torch.uint8 and m.train_y.dtype == torch.int64
