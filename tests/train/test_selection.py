"""train.select: which epoch a trial is judged at, ties included, checked on hand-made records and on real
trials whose validation split saturates; the diagnosis of a split that cannot discriminate; per-seed splits."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import read_metrics

from harness.config.resolve import resolve_trial, with_seed
from harness.config.selection import config_order, diagnose, is_better, select_epoch
from harness.data import build_dataset
from harness.train.checkpoint import read_checkpoint
from harness.train.loop import train_trial
from harness.train.splits import make_splits


def rows(*pairs):
    return [{"epoch": i + 1, "val_top1": t, "val_nll": n} for i, (t, n) in enumerate(pairs)]


# (val top-1, val NLL) per epoch, and the epoch each rule must select, worked out by hand
HISTORY = rows((0.90, 0.50), (1.00, 0.20), (1.00, 0.10), (0.95, 0.05), (1.00, 0.10), (1.00, 0.30))


@pytest.mark.parametrize("rule, expected", [
    ("top1", 5),   # 1.00 at epochs 2, 3, 5, 6; lowest NLL 0.10 at 3 and 5; the later: 5
    ("nll", 4),    # the lowest NLL, whatever its top-1
    ("last", 6),
])
def test_the_rules_on_a_record_by_hand(rule, expected):
    assert select_epoch(rule, HISTORY) == expected


def test_the_first_epoch_of_a_tie_is_no_longer_selected():
    # the old rule (strict >, first epoch of the maximum) would select epoch 2 here
    h = rows((0.5, 1.0), (1.0, 0.4), (1.0, 0.3), (1.0, 0.2))
    assert select_epoch("top1", h) == 4
    assert not is_better("top1", top1=0.99, nll=0.0, best_top1=1.0, best_nll=9.0)  # top-1 first
    assert not is_better("top1", top1=1.0, nll=math.nan, best_top1=1.0, best_nll=0.3)  # NaN NLL never wins
    assert is_better("top1", top1=1.0, nll=0.3, best_top1=1.0, best_nll=0.3)  # equal: the later epoch


def test_configurations_are_ordered_by_the_same_rule():
    a, b, c = dict(top1=0.9, nll=0.4), dict(top1=0.9, nll=0.3), dict(top1=0.8, nll=0.1)
    assert sorted([a, b, c], key=lambda r: config_order("top1", **r)) == [b, a, c]
    assert sorted([a, b, c], key=lambda r: config_order("nll", **r)) == [c, b, a]
    assert config_order("top1", top1=None, nll=None) > config_order("top1", top1=0.0, nll=99.0)  # missing: last


def test_diagnose_flags_ties_and_small_classes():
    d = diagnose("top1", val_top1=[0.9, 1.0, 1.0, 1.0], class_counts=[30, 25, 40])
    assert d.weak and d.ties_at_max == 3 and d.min_per_class == 25 and d.images == 95
    assert "3 of 4 epochs tie" in d.why and "fewer than" not in d.why
    d = diagnose("top1", val_top1=[0.9, 1.0], class_counts=[30, 12])
    assert d.weak and "12 image(s) of its smallest class" in d.why
    assert not diagnose("top1", val_top1=[0.9, 0.95, 1.0], class_counts=[30, 30]).weak
    assert not diagnose("nll", val_top1=[1.0] * 5, class_counts=[30, 30]).weak  # ties do not matter to nll
    assert not diagnose("last", val_top1=[1.0] * 5, class_counts=[3, 3]).weak   # last reads nothing


def spec(select: str, **train):
    return resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=0,
                         train={"epochs": 6, "batch_size": 64, "lr": 0.05, "threads": 1, "select": select, **train})


def test_a_saturated_trial_is_judged_at_the_rules_epoch_and_says_so(tmp_path):
    """digits' 142 held-out images saturate within a few epochs: the epoch is chosen among the tied ones by
    the tie-break, the diagnosis is recorded, and best.pt holds that epoch's weights."""
    out = tmp_path / "t"
    lines = []
    result = train_trial(spec("top1"), out, log=lines.append)
    record = read_metrics(out)
    top = max(r["val_top1"] for r in record)
    tied = [r for r in record if r["val_top1"] == top]
    low = min(r["val_nll"] for r in tied)
    assert result["selected_epoch"] == max(r["epoch"] for r in tied if r["val_nll"] == low)
    assert read_checkpoint(out / "best.pt")["epoch"] == result["selected_epoch"]
    assert result["val_selected_nll"] == low and result["select_ties"] == len(tied)
    # the held-out split: 10% of each digit class of the 1,437 training images (14 to 15 per class)
    assert result["select_images"] == 142 and result["select_min_per_class"] == 14 and result["select_weak"]
    assert result["test_images"] == 360
    assert any(line.startswith("warning: the selection split cannot discriminate") for line in lines)


def test_last_selects_the_final_weights_without_best_pt(tmp_path):
    out = tmp_path / "t"
    result = train_trial(spec("last"), out, log=lambda line: None)
    assert result["selected_epoch"] == 6 and not (out / "best.pt").exists()
    assert result["selected_top1"] == result["last_top1"] and not result["select_weak"]


def held_out_images(s) -> torch.Tensor:
    """The pixels of the held-out split a spec trains with, built independently of the loop."""
    bundle = build_dataset(s.dataset, dict(s.dataset_params))
    splits = make_splits(bundle.train_labels, protocol="clean", holdout=s.train.holdout,
                         holdout_seed=s.train.holdout_seed)
    return bundle.memory.train_x[splits.select], bundle.memory.val_x


def test_split_per_seed_draws_other_splits_for_other_seeds_and_the_same_for_one_seed():
    a = resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=3, train={"split_per_seed": True})
    b = resolve_trial(method="ls", dataset="digits", model="tiny_cnn", seed=3, train={"split_per_seed": True})
    c = with_seed(a, 4)
    fixed = resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=3)
    assert (a.train.holdout_seed, a.dataset_params["split_seed"]) == (3, 3) == (b.train.holdout_seed,
                                                                                b.dataset_params["split_seed"])
    assert (c.train.holdout_seed, c.dataset_params["split_seed"]) == (4, 4)
    assert (fixed.train.holdout_seed, fixed.dataset_params["split_seed"]) == (0, 0)
    held_a, test_a = held_out_images(a)
    held_b, test_b = held_out_images(b)
    held_c, test_c = held_out_images(c)
    # same seed, another method: the same held-out and test images
    assert torch.equal(held_a, held_b) and torch.equal(test_a, test_b)
    # another seed: other held-out images and another test split, of the same sizes
    assert held_a.shape == held_c.shape and not torch.equal(held_a, held_c)
    assert test_a.shape == test_c.shape and not torch.equal(test_a, test_c)
    # without the option every seed sees the split of seed 0
    assert torch.equal(held_out_images(fixed)[0], held_out_images(with_seed(fixed, 9))[0])
    assert a.key() != c.key() != fixed.key()
