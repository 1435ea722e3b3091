"""One trial end to end (no Ray): every method trains, runs are deterministic, resume is exact, bad input is one line."""
from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import quick_trial, read_metrics

from harness.cli import main
from harness.train.loop import TrialDiverged, train_trial
from harness.train.metrics import ece_counts, ece_from_counts, lr_at
from harness.train.trained import load_trained
from methods import METHODS


@pytest.mark.parametrize("method", ["ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf",
                                    "maxsup", "uskd", "dlb", "byot", "bake"])
def test_every_method_trains_on_synthetic(method, tmp_path):
    result = train_trial(quick_trial(method, epochs=2), tmp_path, log=lambda s: None)
    assert result["status"] == "finished" and result["epochs"] == 2
    rows = read_metrics(tmp_path, untimed=True)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["val_top1"] <= r["val_top5"] <= 1 and math.isfinite(r["train_loss"]) and r["val_nll"] > 0
    saved = json.loads((tmp_path / "result.json").read_text())
    # clean protocol (the default): val_* is the held-out split, selected_*/last_* the test split
    assert saved["protocol"] == "clean"
    assert saved["best_top1"] == saved["val_selected_top1"] == max(r["val_top1"] for r in rows)
    assert rows[saved["selected_epoch"] - 1]["val_top1"] == saved["best_top1"]
    assert 0 <= saved["selected_top1"] <= saved["selected_top5"] <= 1 and 0 <= saved["last_top1"] <= 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["spec"]["method"] == method and config["env"]["torch"] == torch.__version__
    assert "git" in config["env"] and config["seed"] == 0
    assert config["env"]["backends"] == {"deterministic": False}  # on CPU only determinism is set
    if method == "pskd":  # the table is N x C float32 and is reported as method state
        n = 50 * 20  # synthetic defaults: 50 train images per class, 20 classes
        assert saved["state_bytes"] == n * 20 * 4


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 0), (b, 0), (c, 1)):
        train_trial(quick_trial("zipf", seed=seed, epochs=2), folder, log=lambda s: None)
    assert read_metrics(a, untimed=True) == read_metrics(b, untimed=True)
    assert read_metrics(a, untimed=True) != read_metrics(c, untimed=True)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["pskd", "ols", "zipf", "dlb", "bake"])
def test_resume_after_interruption_equals_uninterrupted(method, tmp_path):
    spec = quick_trial(method, epochs=3, steps=4)
    train_trial(spec, tmp_path / "whole", log=lambda s: None)

    def die_after_epoch_2(m):
        if m["epoch"] == 2:
            raise Interrupt  # as if the process were killed after the epoch's checkpoint was written

    with pytest.raises(Interrupt):
        train_trial(spec, tmp_path / "cut", report=die_after_epoch_2, log=lambda s: None)
    assert not (tmp_path / "cut" / "result.json").exists()
    lines = []
    train_trial(spec, tmp_path / "cut", log=lines.append)
    assert any("resuming" in line and "epoch 2" in line for line in lines)
    assert read_metrics(tmp_path / "cut", untimed=True) == read_metrics(tmp_path / "whole", untimed=True)


def test_corrupt_checkpoint_restarts_from_scratch_with_warning(tmp_path):
    spec = quick_trial("ce", epochs=2)
    with pytest.raises(Interrupt):
        train_trial(spec, tmp_path, report=lambda m: (_ for _ in ()).throw(Interrupt()), log=lambda s: None)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    lines = []
    train_trial(spec, tmp_path, log=lines.append)
    assert any("unreadable" in line and "from scratch" in line for line in lines)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    train_trial(spec, tmp_path / "clean", log=lambda s: None)
    assert read_metrics(tmp_path, untimed=True) == read_metrics(tmp_path / "clean", untimed=True)


def test_nan_loss_stops_the_trial_with_a_clear_error(tmp_path):
    spec = quick_trial("ce", lr=1e30)
    with pytest.raises(TrialDiverged, match="loss became nan|loss became inf"):
        train_trial(spec, tmp_path, log=lambda s: None)


def test_lr_schedule_matches_the_recipes():
    # Zipf recipe over 200 epochs: 0.1, x0.1 at 100 and 150
    kw = dict(steps_per_epoch=10, lr=0.1, milestones=(100, 150), gamma=0.1, warmup_epochs=0)
    assert lr_at(0, **kw) == 0.1 and lr_at(999, **kw) == 0.1
    assert lr_at(1000, **kw) == pytest.approx(0.01) and lr_at(1500, **kw) == pytest.approx(0.001)
    # TF-KD: one warm-up epoch, linear per step
    warm = dict(steps_per_epoch=4, lr=0.1, milestones=(60,), gamma=0.2, warmup_epochs=1)
    assert [lr_at(s, **warm) for s in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def test_ece_against_a_hand_computation():
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    y = torch.tensor([0, 1, 1, 0])
    # bins of width 1/15: 0.95 -> bin 14 (correct), 0.6 -> bin 8 (wrong), 0.7 -> bin 10 (correct), 0.55 -> bin 8 (correct)
    expected = (abs(1 - 0.95) + abs(1 - (0.6 + 0.55)) + abs(1 - 0.7)) / 4
    assert ece_from_counts(ece_counts(probs, y)) == pytest.approx(expected)


def test_load_trained_restores_the_final_model(tmp_path):
    spec = quick_trial("zipf", epochs=1)
    train_trial(spec, tmp_path, log=lambda s: None)
    trained = load_trained(tmp_path)
    assert trained.spec == spec and not trained.model.training
    x, _, _ = trained.bundle.val[0]
    out = trained.model(x[None])
    assert out.shape == (1, trained.bundle.num_classes)


@pytest.mark.parametrize("argv, expected", [
    (["--method", "ce", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--method", "nosuch", "--dataset", "digits"], "unknown method 'nosuch'"),
    (["--method", "ce", "--dataset", "digits", "--model", "no_such_model"], "no_such_model"),
    (["--method", "ce", "--dataset", "cifar100", "--set", "dataset.root=/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--method", "ce", "--dataset", "digits", "--set", "train.epoch=3"], "did you mean 'epochs'"),
    (["--method", "ce", "--dataset", "digits", "--set", "method.lam=1"], "unknown parameter 'lam'"),
    (["--method", "zipf", "--dataset", "digits", "--set", "method.lam=-1"], "'lam'"),
    (["--method", "ce", "--dataset", "digits", "--set", "nokey"], "expected key=value"),
])
def test_bad_input_is_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    code = main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("tfbench: error:") and expected in err
    assert not (tmp_path / "out" / "result.json").exists()


def test_registry_lists_all_builtins():
    assert {"ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf"} <= set(METHODS.names())


@pytest.mark.parametrize("epochs, milestones, lrs", [
    (15, (8, 11), [0.05] * 8 + [0.005] * 3 + [0.0005] * 4),   # the quickstart's: 0.5 and 0.75 of 15 epochs
    (3, (2, 3), [0.05, 0.05, 0.005]),                        # 1.5 and 2.25 round to 2 and 2: the second moves on
    (2, (1, 2), [0.05, 0.005]),
    (1, (1, 2), [0.05]),
])
def test_the_schedule_steps_once_per_milestone_at_any_length(epochs, milestones, lrs):
    from harness.config.resolve import resolve_train
    from harness.train.metrics import lr_at

    t = resolve_train(epochs, "zipf", lr=0.05)
    assert t.milestones == milestones
    got = [lr_at(e, steps_per_epoch=1, lr=t.lr, milestones=t.milestones, gamma=t.gamma, warmup_epochs=0)
           for e in range(epochs)]
    assert got == pytest.approx(lrs)
