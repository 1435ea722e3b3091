"""The two protocols end to end on a tiny trial: what is selected on what, what is reported, best.pt."""
from __future__ import annotations

import pytest
import torch
from helpers import read_metrics

import harness.data
import harness.train.loop as loop
from harness.config.resolve import resolve_trial
from harness.errors import UserError
from harness.models import create_model
from harness.train.checkpoint import read_checkpoint, restore_best, save_best
from harness.train.loop import train_trial
from harness.train.trained import load_trained

EPOCHS = 4


def spec_of(protocol: str, **train):
    return resolve_trial(method="ce", dataset="synthetic", model="tiny_cnn", seed=0,
                         train={"epochs": EPOCHS, "batch_size": 32, "max_steps_per_epoch": 6, "lr": 0.05,
                                "protocol": protocol, **train})


def spy(monkeypatch, permute_test: bool):
    """Record every evaluation (which loader) and the trial's loaders; optionally permute the test labels."""
    calls, seen = [], {}
    real_build, real_eval, real_loaders = harness.data.build_dataset, loop.evaluate, loop.make_loaders

    def build(name, params=None):
        bundle = real_build(name, params)
        if permute_test:  # the test split's labels shuffled: any use of them to select would show
            y = bundle.memory.val_y[torch.randperm(len(bundle.memory.val_y), generator=torch.Generator().manual_seed(9))]
            bundle.memory.val_y = y
            bundle.val.y = y
        seen["bundle"] = bundle
        return bundle

    def evaluate(model, loader, device, amp):
        calls.append(loader)
        return real_eval(model, loader, device, amp)

    def make_loaders(*args, **kwargs):
        seen["loaders"] = real_loaders(*args, **kwargs)
        return seen["loaders"]

    monkeypatch.setattr(harness.data, "build_dataset", build)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop, "make_loaders", make_loaders)
    return calls, seen


def top1_by_hand(model_state: dict, bundle) -> float:
    """Top-1 on the test split by hand: a fresh model with `model_state`, every test image, argmax."""
    model = create_model("tiny_cnn", num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                         input_size=bundle.input_size)
    model.load_state_dict(model_state)
    model.eval()
    x = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])
    y = torch.tensor([bundle.val[i][1] for i in range(len(bundle.val))])
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("fast_path", [True, False])
def test_clean_selects_on_validation_and_reads_test_exactly_twice(fast_path, tmp_path, monkeypatch):
    results = {}
    for permute in (False, True):
        calls, seen = spy(monkeypatch, permute)
        out = tmp_path / f"permuted{permute}"
        result = train_trial(spec_of("clean", fast_path=fast_path), out, log=lambda s: None)
        loaders, rows = seen["loaders"], read_metrics(out, untimed=True)
        # every epoch evaluates the held-out split only; the test split comes last, exactly twice
        assert loaders.select is not loaders.test
        assert calls == [loaders.select] * EPOCHS + [loaders.test] * 2
        vals = [r["val_top1"] for r in rows]
        # train.select top1, by hand: the highest top-1, then the lowest NLL among those, then the latest
        tied = [r for r in rows if r["val_top1"] == max(vals)]
        low = min(r["val_nll"] for r in tied)
        assert result["selected_epoch"] == max(r["epoch"] for r in tied if r["val_nll"] == low)
        assert result["val_selected_top1"] == result["best_top1"] == max(vals)
        best = read_checkpoint(out / "best.pt")
        assert best["epoch"] == result["selected_epoch"]
        last = read_checkpoint(out / "checkpoint.pt")["model"]
        assert result["selected_top1"] == pytest.approx(top1_by_hand(best["model"], seen["bundle"]), abs=1e-12)
        assert result["last_top1"] == pytest.approx(top1_by_hand(last, seen["bundle"]), abs=1e-12)
        assert not (out / "best.prev.pt").exists()
        results[permute] = result, rows
    # the test labels changed the reported numbers only: the record and the selection are the same
    (plain, plain_rows), (shuffled, shuffled_rows) = results[False], results[True]
    assert plain_rows == shuffled_rows
    assert plain["selected_epoch"] == shuffled["selected_epoch"]
    assert (plain["selected_top1"], plain["last_top1"]) != (shuffled["selected_top1"], shuffled["last_top1"])


def test_held_out_images_are_never_trained_on(tmp_path, monkeypatch):
    seen_idx = []
    real = loop.train_step

    def step(**kw):
        seen_idx.append(kw["ctx"].indices.clone())
        return real(**kw)

    monkeypatch.setattr(loop, "train_step", step)
    calls, seen = spy(monkeypatch, False)
    train_trial(spec_of("clean", max_steps_per_epoch=0, holdout=0.2), tmp_path, log=lambda s: None)
    trained = set(torch.cat(seen_idx).tolist())
    held = set(seen["loaders"].select.indices.tolist())
    assert len(held) == 0.2 * 50 * 20  # synthetic: 20 classes of 50 training images
    assert not trained & held and len(trained) == 50 * 20 - len(held)  # every epoch covers the rest


def test_paper_selects_and_reports_on_the_evaluation_split(tmp_path, monkeypatch):
    calls, seen = spy(monkeypatch, False)
    result = train_trial(spec_of("paper"), tmp_path, log=lambda s: None)
    rows = read_metrics(tmp_path, untimed=True)
    assert seen["loaders"].select is seen["loaders"].test and calls == [seen["loaders"].test] * EPOCHS
    vals = [r["val_top1"] for r in rows]
    chosen = rows[vals.index(max(vals))]
    assert result["protocol"] == "paper" and result["selected_epoch"] == chosen["epoch"] == result["best_epoch"]
    assert [result[f"selected_{k}"] for k in ("top1", "top5", "nll", "ece")] == \
        [chosen[f"val_{k}"] for k in ("top1", "top5", "nll", "ece")]
    assert [result[f"last_{k}"] for k in ("top1", "top5", "nll", "ece")] == \
        [rows[-1][f"val_{k}"] for k in ("top1", "top5", "nll", "ece")]
    assert result["val_selected_top1"] == result["selected_top1"] == result["best_top1"]
    assert not (tmp_path / "best.pt").exists()
    with pytest.raises(UserError, match="no best.pt"):
        load_trained(tmp_path, weights="selected")


class Interrupt(Exception):
    pass


def test_clean_resume_keeps_best_and_equals_uninterrupted(tmp_path):
    spec = spec_of("clean")
    whole = train_trial(spec, tmp_path / "whole", log=lambda s: None)

    def die_after_epoch_3(m):
        if m["epoch"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_trial(spec, tmp_path / "cut", report=die_after_epoch_3, log=lambda s: None)
    assert (tmp_path / "cut" / "best.pt").exists()
    cut = train_trial(spec, tmp_path / "cut", log=lambda s: None)
    assert read_metrics(tmp_path / "cut", untimed=True) == read_metrics(tmp_path / "whole", untimed=True)
    keys = ("selected_epoch", "selected_top1", "selected_nll", "last_top1", "last_nll", "val_selected_top1")
    assert {k: cut[k] for k in keys} == {k: whole[k] for k in keys}
    # analyses can load the selected epoch's weights
    selected = load_trained(tmp_path / "cut", weights="selected").model.state_dict()
    best = read_checkpoint(tmp_path / "cut" / "best.pt")["model"]
    assert all(torch.equal(selected[k], best[k]) for k in best) and selected.keys() == best.keys()


def test_best_rolls_back_to_the_epoch_the_checkpoint_selected(tmp_path):
    """A kill between writing best.pt (epoch 3) and the epoch's checkpoint (which would select 3) leaves a
    checkpoint that selected epoch 1: the weights of epoch 1 come back from best.prev.pt."""
    path = tmp_path / "best.pt"
    save_best(path, model={"w": torch.tensor([1.0])}, epoch=1, val_top1=0.5)
    save_best(path, model={"w": torch.tensor([3.0])}, epoch=3, val_top1=0.7)
    lines = []
    assert restore_best(path, 1, lines.append)
    assert read_checkpoint(path)["epoch"] == 1 and read_checkpoint(path)["model"]["w"].item() == 1.0
    assert any("rolled best.pt back to epoch 1" in line for line in lines)
    assert not restore_best(path, 2, lines.append)  # neither file holds epoch 2: the trial restarts
    assert "starting this trial from scratch" in lines[-1]
