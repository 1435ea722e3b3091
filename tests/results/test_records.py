"""Damaged results folders never crash the readers: each case gives a clear message, the documented exit
code (0 when the records allow a summary, 2 otherwise), and loses nothing good. Folders are built by hand:
sweep.yaml, trials/<key>/{config,result,error}.json and metrics.jsonl with chosen numbers."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import UserError
from harness.folders import ResultsFolder, ResultsLock
from harness.results import records

# (method, seed) -> selected_top1; LS is CE + 2, 3, 4 points on the same seeds.
VALUES = {("ce", 0): 0.70, ("ce", 1): 0.72, ("ce", 2): 0.74, ("ls", 0): 0.72, ("ls", 1): 0.75, ("ls", 2): 0.78}


def spec(method: str, seed: int) -> dict:
    return {"method": method, "dataset": "digits", "model": "tiny_cnn", "seed": seed, "method_params": {},
            "dataset_params": {}, "model_params": {}, "train": {"epochs": 2, "protocol": "clean"}, "imports": []}


def make_folder(root: Path, *, failed: tuple[str, int] | None = None) -> Path:
    folder = root / "sweep"
    trials = []
    for (method, seed), v in VALUES.items():
        key = f"{method}-digits-s{seed}-0123456789"
        tdir = folder / "trials" / key
        tdir.mkdir(parents=True)
        trials.append({"key": key, "spec": spec(method, seed)})
        (tdir / "config.json").write_text(json.dumps({"key": key, "seed": seed, "spec": spec(method, seed)}))
        if failed == (method, seed):
            (tdir / "error.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
            continue
        (tdir / "result.json").write_text(json.dumps({
            "status": "finished", "protocol": "clean", "selected_epoch": 2, "selected_top1": v, "selected_top5": 1.0,
            "last_top1": v - 0.01, "val_selected_top1": v + 0.01, "best_top1": v + 0.01, "best_epoch": 2,
            "step_time_s": 0.01, "peak_mem_bytes": 1000, "state_bytes": 0}))
        (tdir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_top1": v * e / 2,
                                                                "train_loss": 1.0 / e}) + "\n" for e in (1, 2)))
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"source": "x.yaml", "file": {"name": "sweep"},
                                                       "trials": trials}))
    records.write_trials_csv(folder, [(t["key"], t["spec"]) for t in trials])
    return folder


def table(folder: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["table", str(folder), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_good_folder_reads_back_what_was_written(tmp_path, capsys):
    folder = make_folder(tmp_path)
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials.columns[:len(records.LEAD_COLUMNS)]) == records.LEAD_COLUMNS
    assert set(trials["protocol"]) == {"clean"} and not trials["stale"].any()
    code, out, err = table(folder, capsys)
    assert code == 0 and err == ""
    assert "Protocol: clean (epoch selected on a held-out validation split; test evaluated once)." in out
    assert "| CE | 72.00 +- 2.00 |" in re.sub(r" +", " ", out)


@pytest.mark.parametrize("damage", [b"", b"   \n", b"\x00\xff\xfe garbage \x01",
                                    b"this is not,a trials file\n1,2\n", b"key,status,er"])
def test_damaged_trials_csv_is_rebuilt_from_the_records_with_one_warning(tmp_path, capsys, damage):
    folder = make_folder(tmp_path)
    good = (folder / "trials.csv").read_text()
    code, good_md, _ = table(folder, capsys)
    (folder / "trials.csv").write_bytes(damage)
    code, out, err = table(folder, capsys)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tfbench: warning: {folder / 'trials.csv'}: ")
    assert "rebuilt from 6 trial records" in lines[0]
    assert out == good_md                                   # the same summary as before the damage
    assert (folder / "trials.csv").read_text() == good      # rewritten, identical
    assert (folder / "trials.csv.damaged").read_bytes() == damage  # kept for inspection


def test_trials_csv_cut_inside_a_row_is_rebuilt(tmp_path, capsys):
    folder = make_folder(tmp_path)
    text = (folder / "trials.csv").read_text()
    (folder / "trials.csv").write_text(text[: text.index("\n", text.index("ls-digits-s1")) - 20])
    code, out, err = table(folder, capsys)
    assert code == 0 and "fields where the header has" in err and "rebuilt from 6 trial records" in err
    assert "+3.00 [" in out  # LS - CE per seed: 72-70, 75-72, 78-74 = 2, 3, 4 points


def test_damaged_trials_csv_without_records_is_one_line_and_exit_2(tmp_path, capsys):
    folder = tmp_path / "lonely"
    folder.mkdir()
    (folder / "trials.csv").write_text("key,sta")
    code, out, err = table(folder, capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"tfbench: error: {folder / 'trials.csv'} is damaged (its header lacks "
                                        f"status, method, dataset, model, seed (cut short, or not a tfbench "
                                        f"trials.csv)) and {folder} has no sweep.yaml or trials/*/config.json to "
                                        f"rebuild it from; rerun the sweep with `tfbench run` to rewrite it"]
    assert (folder / "trials.csv").read_text() == "key,sta" and not (folder / "summary.md").exists()


def test_rebuild_without_sweep_yaml_uses_config_json(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "sweep.yaml").write_text("{not: yaml: at all")
    (folder / "trials.csv").write_text("")
    warnings: list[str] = []
    trials = records.load_trials(folder, warn=warnings.append)
    assert len(warnings) == 1 and len(trials) == 6
    assert sorted(zip(trials["method"], trials["seed"], trials["selected_top1"], strict=True)) == sorted(
        (m, s, v) for (m, s), v in VALUES.items())


def test_never_overwrites_a_good_summary_with_an_empty_one(tmp_path, capsys):
    folder = make_folder(tmp_path)
    assert table(folder, capsys)[0] == 0
    before = {f: (folder / f"summary.{f}").read_bytes() for f in ("md", "tex", "csv")}
    for result in folder.glob("trials/*/result.json"):  # e.g. a sync that lost the records
        result.unlink()
    (folder / "trials.csv").write_text("")
    code, out, err = table(folder, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"tfbench: error: {folder}: no finished trial in trials.csv "
                                                   f"(6 rows), but summary.csv holds 2 configurations; the "
                                                   f"existing summary is kept")
    assert {f: (folder / f"summary.{f}").read_bytes() for f in ("md", "tex", "csv")} == before


def test_plot_skips_a_garbage_metrics_line_with_one_warning(tmp_path, capsys):
    folder = make_folder(tmp_path)
    metrics = folder / "trials" / "ls-digits-s1-0123456789" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n{\"epoch\": 2, \"val_to\n" + lines[1] + "\n")
    code = main(["plot", str(folder)])
    out = capsys.readouterr()
    assert code == 0
    assert out.err.strip().splitlines() == [f"tfbench: warning: {metrics}: line 2 not a JSON record; skipped"]
    assert (folder / "plots" / "learning_digits_tiny_cnn.png").is_file()


def test_leftover_temporaries_are_removed_at_every_level_by_table_and_plot(tmp_path, capsys):
    folder = make_folder(tmp_path)
    tmps = [folder / ".trials.csv.abc123de.tmp", folder / ".summary.md.x1y2z3w4.tmp",
            folder / "plots" / ".learning_digits_tiny_cnn.png.qqqqqqqq.tmp",
            folder / "trials" / "ce-digits-s0-0123456789" / ".result.json.zzzzzzzz.tmp"]
    keep = [folder / "plots" / "notes.tmp", folder / ".ray" / "x" / ".state.json.aaaaaaaa.tmp"]  # not ours
    for p in [*tmps, *keep]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
    assert table(folder, capsys)[0] == 0
    assert not any(p.exists() for p in tmps) and all(p.exists() for p in keep)
    for p in tmps:
        p.write_text("half")
    assert main(["plot", str(folder)]) == 0
    assert not any(p.exists() for p in tmps)


def test_temporaries_of_a_running_sweep_are_left_alone(tmp_path):
    folder = make_folder(tmp_path)
    tmp = folder / ".trials.csv.live1234.tmp"
    tmp.write_text("being written")
    # another process holds the folder's lock, as `tfbench run` does
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert ResultsFolder(folder).is_locked()
        assert ResultsFolder(folder).remove_temporaries() == 0 and tmp.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert not ResultsFolder(folder).is_locked()
    assert ResultsFolder(folder).remove_temporaries() == 1 and not tmp.exists()


def test_lock_that_is_a_directory_is_one_clear_line(tmp_path, capsys):
    folder = make_folder(tmp_path)
    (folder / ".lock").mkdir()
    with pytest.raises(UserError) as e:
        with ResultsLock(folder):
            pass
    assert str(e.value) == (f"{folder / '.lock'} is a directory, not tfbench's lock file; if no tfbench run is "
                            f"using {folder}, remove it (rmdir {folder / '.lock'}) and rerun")
    assert table(folder, capsys)[0] == 0  # the readers do not trip over it either


def test_stale_rows_are_left_out_with_one_line(tmp_path, capsys):
    folder = make_folder(tmp_path)
    from harness.config.resolve import resolve_trial

    specs = [resolve_trial(method=m, dataset="digits", model="tiny_cnn", seed=s, train={"epochs": 2}) for m, s in VALUES]
    # keys here are TrialSpec's own: point the records at them
    for t in specs:
        src = folder / "trials" / f"{t.method}-digits-s{t.seed}-0123456789"
        os.rename(src, folder / "trials" / t.key())
    # and the sweep record at them too, as `tfbench run` writes it (the readers judge staleness against it)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"source": "x.yaml", "file": {"name": "sweep"},
                                                       "trials": [{"key": t.key(), "spec": t.to_dict()} for t in specs]}))
    ls0 = next(t.key() for t in specs if (t.method, t.seed) == ("ls", 0))
    records.write_trials_csv(folder, [(t.key(), t.to_dict()) for t in specs], stale={ls0})
    trials = pd.read_csv(folder / "trials.csv")
    assert trials.set_index("key")["stale"].to_dict()[ls0] and trials["stale"].sum() == 1
    code, out, err = table(folder, capsys)
    assert code == 0
    assert err.strip().splitlines() == ["tfbench: warning: left out 1 stale trial(s): finished under a spec the "
                                        "sweep no longer means (`tfbench run --rerun-stale` retrains them)"]
    assert "Left out: 1 stale trial(s)" in out
    # 75 and 78 only: seeds 1 and 2, not CE's 0, 1, 2, and the cell says so
    assert "| LS | 76.50 +- 2.12 (n=2, seeds 1,2) |" in re.sub(r" +", " ", out)


def test_seeds_command_prints_the_detectable_difference_and_seeds_for_an_effect(tmp_path, capsys):
    folder = make_folder(tmp_path)
    # LS - CE = 2, 3, 4 points: mean 3, sd 1 -> with --effect 1 (point): d = 1 -> 10 seeds (G*Power)
    code = main(["seeds", str(folder), "--effect", "1"])
    out = capsys.readouterr().out
    assert code == 0
    row = [line for line in out.splitlines() if line.startswith("| LS")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["3", "+3.00", "1.00"]
    assert cells[5] == "10"
    # detectable at n = 3 with sd 1 point: the effect size statsmodels solves for (80% power, two-sided)
    TTestPower = pytest.importorskip("statsmodels.stats.power").TTestPower
    d = TTestPower().solve_power(nobs=3, alpha=0.05, power=0.8, alternative="two-sided")
    assert cells[4] == f"{d * 1.0:.2f}"  # = 3.26 points: 3 seeds cannot detect less
    assert "alpha = 0.05" in out
    # the default effect is one point: the same 10 seeds
    main(["seeds", str(folder)])
    default = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| LS")][0]
    assert [c.strip() for c in default.strip("|").split("|")][5] == "10"
    assert main(["seeds", str(folder), "--effect", "-1"]) == 2
    assert "--effect -1 is not a positive number" in capsys.readouterr().err


def test_alpha_from_sweep_yaml_and_flag(tmp_path, capsys):
    folder = make_folder(tmp_path)
    record = yaml.safe_load((folder / "sweep.yaml").read_text())
    record["file"]["alpha"] = 0.01
    (folder / "sweep.yaml").write_text(yaml.safe_dump(record))
    code, out, _ = table(folder, capsys)
    assert code == 0 and "p < alpha = 0.01" in out
    code, out, _ = table(folder, capsys, "--alpha", "0.1")
    assert code == 0 and "p < alpha = 0.1 " in out
    code, _, err = table(folder, capsys, "--alpha", "1.5")
    assert code == 2 and err.strip() == "tfbench: error: alpha 1.5 is out of range; allowed: a number in (0, 1), e.g. 0.05"
