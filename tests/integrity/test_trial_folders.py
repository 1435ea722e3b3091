"""Two trials never share a folder's records: `tfbench train` of another trial into the same --out is refused
(its records untouched), or with --force moves them aside first; a resumed trial resumes only its own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.config.resolve import resolve_trial
from harness.errors import UserError
from harness.train.loop import train_trial

ARGS = ["--dataset", "digits", "--model", "tiny_cnn", "--epochs", "2", "--set", "train.max_steps_per_epoch=2",
        "--set", "train.threads=1"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.suffix != ".log"}


def test_two_trials_into_one_out_never_mix_their_records(tmp_path, capsys):
    out = tmp_path / "reuse"
    assert main(["train", "--method", "ce", *ARGS, "--out", str(out)]) == 0
    ce_key = json.loads((out / "config.json").read_text())["key"]
    before = files(out)
    capsys.readouterr()
    # another trial into the same folder: refused in one line, nothing of the first changed
    assert main(["train", "--method", "ls", "--set", "method.epsilon=0.3", *ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"holds the records of trial {ce_key}" in err[0] and "--force" in err[0]
    assert files(out) == before
    # with --force the first trial's folder moves aside whole, and the second starts from nothing
    assert main(["train", "--method", "ls", "--set", "method.epsilon=0.3", *ARGS, "--out", str(out), "--force"]) == 0
    aside = tmp_path / f"reuse.moved-{ce_key}"
    assert files(aside) == before
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert config["spec"]["method"] == "ls" and result["key"] == config["key"] != ce_key
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and "train_smooth" in epochs[0]  # LS's own record, not CE's
    assert "resuming" not in capsys.readouterr().out


def test_a_checkpoint_of_another_trial_is_never_resumed(tmp_path):
    """Even with config.json rewritten by hand, the checkpoint's own key decides."""
    out = tmp_path / "t"
    ce = resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=0,
                       train={"epochs": 2, "max_steps_per_epoch": 2, "threads": 1})
    ls = resolve_trial(method="ls", dataset="digits", model="tiny_cnn", seed=0,
                       train={"epochs": 3, "max_steps_per_epoch": 2, "threads": 1})
    train_trial(ce, out, log=lambda line: None)
    (out / "result.json").unlink()
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "key": ls.key()}))
    with pytest.raises(UserError, match=f"a checkpoint of trial {ce.key()}, not of {ls.key()}"):
        train_trial(ls, out, log=lambda line: None)


def test_a_trial_that_recorded_no_epoch_leaves_its_folder_to_the_next(tmp_path, capsys):
    """A trial that failed before its first epoch (bad data, say) recorded nothing to mix up: the next trial
    into the folder replaces its config and says so."""
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"key": "ce-digits-s0-0000000000", "spec": {}}))
    assert main(["train", "--method", "ce", *ARGS, "--out", str(out)]) == 0
    assert "replacing the config of trial ce-digits-s0-0000000000, which recorded no epoch" in capsys.readouterr().out
