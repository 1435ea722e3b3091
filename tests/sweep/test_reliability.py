"""Reliability: what survives a kill, Ctrl-C, damaged files, failing trials, bad data, a full or
shared results folder, and hostile input. The fast tests run trials in-process; the ones marked slow start
`tfbench run` (Ray) for real, as a subprocess where the test kills or interrupts it.

Timing never decides correctness here: the tests wait for files (with generous limits) and hold trials at
known points with a test method (`gated_test`) that waits while a file exists.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch
from helpers import quick_trial, read_csv, read_metrics, write_sweep_file

from harness.cli import main
from harness.config.sweep_file import load_sweep
from harness.errors import UserError
from harness.folders import ResultsLock, TrialFolder
from harness.io import atomic_write_json, atomic_write_text
from harness.results.records import write_trials_csv
from harness.train.loop import train_trial
from harness.train.trained import load_trained

REPO = Path(__file__).resolve().parents[2]

# Test methods, imported by the sweeps through `imports:` (the one way user code gets in).
METHODS_FILE = '''
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from methods import Method, register


@register("gated_test")
class Gated(Method):
    """Cross-entropy that, with $TFBENCH_TEST_GATE set, waits at the start of epoch E (0-based) while the
    file <gate>/hold-at-epoch-E exists, after touching <gate>/held-<tag>-<E>: a test's handle on a trial."""

    @dataclass(frozen=True)
    class Params:
        tag: int = 0

    def loss(self, logits, targets, ctx):
        ce = F.cross_entropy(logits, targets)
        return {"loss": ce, "ce": ce.detach()}

    def on_epoch_start(self, epoch, num_epochs):
        gate = os.environ.get("TFBENCH_TEST_GATE")
        hold = Path(gate or ".") / f"hold-at-epoch-{epoch}"
        if not gate or not hold.exists():
            return
        (Path(gate) / f"held-{self.params.tag}-{epoch}").touch()
        deadline = time.time() + 600
        while hold.exists() and time.time() < deadline:
            time.sleep(0.05)


@register("faulty_test")
class Faulty(Method):
    """Cross-entropy, or one of the failures a trial can meet."""

    @dataclass(frozen=True)
    class Params:
        fault: Literal["none", "nan", "oom", "memory"] = "none"

    def loss(self, logits, targets, ctx):
        ce = F.cross_entropy(logits, targets)
        if self.params.fault == "nan":
            return {"loss": ce * float("nan")}
        if self.params.fault == "oom":  # what the CUDA allocator raises; the message is ours
            raise torch.OutOfMemoryError("simulated: tried to allocate 80.00 GiB")
        if self.params.fault == "memory":
            raise MemoryError("simulated host allocation failure")
        return {"loss": ce}
'''


@pytest.fixture(autouse=True)
def forget_test_methods():
    """Each test imports its own copy of the methods file; the registry must not keep the last test's."""
    from methods import METHODS

    yield
    for name in ("gated_test", "faulty_test"):
        METHODS.unregister(name)


class Stop(Exception):
    pass


def interrupted_after(spec, folder: Path, epoch: int) -> None:
    """Train `spec` into `folder` and stop right after epoch `epoch` is on disk (as a kill would)."""
    def report(m):
        if m["epoch"] == epoch:
            raise Stop
    with pytest.raises(Stop):
        train_trial(spec, folder, report=report, log=lambda s: None)


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def sweep_file(folder: Path, body: str) -> Path:
    return write_sweep_file(folder, "schema_version: 1\nimports: [rel_methods.py]\n" + textwrap.dedent(body),
                            name="rel.yaml", beside={"rel_methods.py": METHODS_FILE})


# --- damaged checkpoints and records (no Ray) ------------------------------------------------------------

def test_a_checkpoint_with_one_flipped_byte_is_detected_and_the_previous_one_is_used(tmp_path):
    spec = quick_trial("ce", epochs=3)
    train_trial(spec, tmp_path / "whole", log=lambda s: None)
    cut = tmp_path / "cut"
    interrupted_after(spec, cut, 2)
    assert (cut / "checkpoint.prev.pt").exists()
    flip_byte(cut / "checkpoint.pt")
    # the damage is invisible to torch.load (zip entries are not CRC-checked): the checksum is what finds it
    assert torch.load(cut / "checkpoint.pt", weights_only=False)["epoch"] == 2
    lines: list[str] = []
    train_trial(spec, cut, log=lines.append)
    log = "\n".join(lines)
    assert "checkpoint.pt is unreadable (sha256 mismatch" in log
    assert "falling back to the last good checkpoint checkpoint.prev.pt (epoch 1)" in log
    assert f"resuming {spec.key()} from epoch 1" in log
    assert (cut / "checkpoint.corrupt").exists()
    # epochs 2 and 3 were trained again from the epoch-1 state: the same numbers as an uninterrupted run
    assert read_metrics(cut, untimed=True) == read_metrics(tmp_path / "whole", untimed=True)
    assert not (cut / "checkpoint.prev.pt").exists()  # a finished trial keeps only its final checkpoint


def test_when_both_checkpoints_are_damaged_the_trial_restarts_from_scratch(tmp_path):
    spec = quick_trial("ce", epochs=3)
    interrupted_after(spec, tmp_path, 2)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2])  # truncated
    flip_byte(tmp_path / "checkpoint.prev.pt", 0.3)
    lines: list[str] = []
    train_trial(spec, tmp_path, log=lines.append)
    log = "\n".join(lines)
    assert "no checksum trailer" in log and "sha256 mismatch" in log
    assert "starting this trial from scratch" in log and "resuming" not in log
    train_trial(spec, tmp_path / "clean", log=lambda s: None)
    assert read_metrics(tmp_path, untimed=True) == read_metrics(tmp_path / "clean", untimed=True)


def test_a_damaged_metrics_line_resumes_from_a_checkpoint_the_record_still_covers(tmp_path):
    spec = quick_trial("ce", epochs=3)
    train_trial(spec, tmp_path / "whole", log=lambda s: None)
    cut = tmp_path / "cut"
    interrupted_after(spec, cut, 2)
    first, second = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(first + "\n" + second[: len(second) // 2] + "\n")  # line 2 truncated
    lines: list[str] = []
    train_trial(spec, cut, log=lines.append)
    log = "\n".join(lines)
    assert "line 2 is damaged" in log
    assert "(epoch 2) is ahead of the intact metrics record (epoch 1)" in log
    assert f"resuming {spec.key()} from epoch 1" in log
    assert read_metrics(cut, untimed=True) == read_metrics(tmp_path / "whole", untimed=True)


def test_a_truncated_result_json_counts_as_not_finished_and_is_rebuilt_from_the_final_checkpoint(tmp_path):
    spec = quick_trial("ce", epochs=2)
    tdir = tmp_path / "trials" / spec.key()
    first = train_trial(spec, tdir, log=lambda s: None)
    before = (tdir / "metrics.jsonl").read_text()
    text = (tdir / "result.json").read_text()
    (tdir / "result.json").write_text(text[: len(text) // 2])
    assert TrialFolder(tdir).status() == "pending"
    rows = read_csv(write_trials_csv(tmp_path, [(spec.key(), spec.to_dict())]))  # aggregation does not trip over it
    assert [r["status"] for r in rows] == ["pending"]
    lines: list[str] = []
    again = train_trial(spec, tdir, log=lines.append)
    assert f"resuming {spec.key()} from epoch 2" in "\n".join(lines)  # nothing retrained
    assert (tdir / "metrics.jsonl").read_text() == before
    assert TrialFolder(tdir).status() == "finished"
    for k in ("best_top1", "best_epoch", "last_top1", "last_nll", "train_top1"):
        assert again[k] == first[k]


def test_a_damaged_error_record_still_reads_as_a_failure(tmp_path):
    spec = quick_trial("ce", epochs=1)
    tdir = tmp_path / "trials" / spec.key()
    tdir.mkdir(parents=True)
    (tdir / "error.json").write_text('{"status": "failed", "err')
    rows = read_csv(write_trials_csv(tmp_path, [(spec.key(), spec.to_dict())]))
    assert rows[0]["status"] == "failed" and "unreadable" in rows[0]["error"]


def test_analyses_refuse_a_damaged_final_checkpoint(tmp_path):
    spec = quick_trial("ce", epochs=1)
    train_trial(spec, tmp_path, log=lambda s: None)
    flip_byte(tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="damaged.*sha256 mismatch"):
        load_trained(tmp_path)


# --- the results folder ------------------------------------------------------------------------------------

def test_a_full_disk_is_a_clear_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    import harness.sweep.session

    path = sweep_file(tmp_path, """\
        name: full
        methods: [ce]
        datasets: [digits]
        train: {epochs: 1}
        """)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def must_not_run(*a, **k):
        raise AssertionError("training started on a full disk")

    monkeypatch.setattr(os, "fsync", no_space)
    monkeypatch.setattr(harness.sweep.session.TuneSession, "fit", must_not_run)
    code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("tfbench: error: cannot write results to") and "No space left on device" in err
    assert list((tmp_path / "results" / "full").iterdir()) == []  # not even the probe file is left


def test_a_failed_rename_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"status": "finished", "best_top1": 0.5})
    old = target.read_bytes()

    def fail(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_json(target, {"status": "finished", "best_top1": 0.9, "pad": "x" * 100_000})
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "trials.csv"
    atomic_write_text(target, "old,complete\n")
    ready = tmp_path / "ready"
    # the child writes 20 MB and is killed while the bytes sit in the temporary file, before the rename
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        import harness.io as hio
        def stall(fd):
            Path({str(ready)!r}).touch()
            time.sleep(600)
        os.fsync = stall
        hio.atomic_write_text({str(target)!r}, "new," * 5_000_000)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True)
    try:
        wait_for(lambda: ready.exists(), 60, "the writer to reach fsync", child)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert target.read_text() == "old,complete\n"
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".trials.csv.")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the half-written bytes never became the file


def test_a_rerun_over_finished_trials_cleans_up_and_aggregates_without_training(tmp_path, monkeypatch, capsys):
    """Finished trials are never recomputed; leftovers of a killed writer are removed; a damaged learning
    curve line is skipped with one warning naming file and line, never costing the table or the exit code."""
    import harness.sweep.session

    path = sweep_file(tmp_path, """\
        name: done
        methods: [ce]
        datasets: [digits]
        models: [tiny_cnn]
        seeds: [0, 1]
        train: {epochs: 1, batch_size: 64, max_steps_per_epoch: 2}
        """)
    sweep = load_sweep(path)
    folder = tmp_path / "results" / "done"
    for spec in sweep.trials:
        train_trial(spec, folder / "trials" / spec.key(), log=lambda s: None)
    first = folder / "trials" / sweep.trials[0].key()
    # a rerun trains nothing: the checkpoints stay as they are, and so does every number the training recorded
    # (the run may add what is computed from the kept predictions: tfbench evaluate's metrics)
    stamps = {t.key(): (folder / "trials" / t.key() / "checkpoint.pt").stat().st_mtime_ns for t in sweep.trials}
    trained = {t.key(): json.loads((folder / "trials" / t.key() / "result.json").read_text()) for t in sweep.trials}
    (first / ".checkpoint.pt.abc123de.tmp").write_bytes(b"half a checkpoint")
    (first / "metrics.jsonl").write_text('{"epoch": 1, "val_top1": 0.5\n')  # damaged after the trial finished

    def must_not_run(*a, **k):
        raise AssertionError("finished trials were trained again")

    monkeypatch.setattr(harness.sweep.session.TuneSession, "fit", must_not_run)
    code = main(["run", str(path), "--results", str(tmp_path / "results"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 already finished, 0 to run" in out
    assert not (first / ".checkpoint.pt.abc123de.tmp").exists()
    assert {t.key(): (folder / "trials" / t.key() / "checkpoint.pt").stat().st_mtime_ns for t in sweep.trials} == stamps
    for key, before in trained.items():
        after = json.loads((folder / "trials" / key / "result.json").read_text())
        assert {k: after[k] for k in before} == before
    assert [r["status"] for r in read_csv(folder / "trials.csv")] == ["finished", "finished"]
    assert "2 finished" in (folder / "summary.md").read_text()
    assert err.strip().splitlines() == [f"tfbench: warning: {first / 'metrics.jsonl'}: line 1 not a JSON record; "
                                        f"skipped"]
    assert (folder / "plots").is_dir() and not (folder / "summary-error.log").exists()


# --- bad data ---------------------------------------------------------------------------------------------

def make_image_folder(root: Path, *, classes: int = 2, train: int = 4, val: int = 2, size: int = 20) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(d / f"img{i}.JPEG", format="JPEG")


@pytest.mark.parametrize("layout, expected", [
    ("missing", "does not exist"),
    ("empty", "lacks train/"),
    ("wrong", "lacks val/"),
])
def test_a_sweep_over_missing_or_misplaced_data_is_refused_before_anything_is_written(
        layout, expected, tmp_path, capsys):
    root = tmp_path / "imagenet"
    if layout != "missing":
        root.mkdir()
    if layout == "wrong":  # images straight under train/, no val/
        (root / "train").mkdir()
        (root / "train" / "a.JPEG").write_bytes(b"")
    path = sweep_file(tmp_path, f"""\
        name: data
        methods: [ce]
        datasets: [{{name: imagenet, params: {{root: {root}, image_size: 16}}}}]
        models: [tiny_cnn]
        train: {{epochs: 1}}
        """)
    code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("tfbench: error: dataset 'imagenet': root") and str(root) in err and expected in err
    assert "expected layout" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def train_cli(tmp_path: Path, root: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    code = main(["train", "--method", "ce", "--dataset", "imagenet", "--model", "tiny_cnn", "--epochs", "1",
                 "--set", f"dataset.root={root}", "--set", "dataset.image_size=16", "--set", "train.batch_size=4",
                 "--set", "train.device=cpu", *extra, "--out", str(out)])
    return code, out


def test_a_dataset_root_without_class_folders_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "imagenet"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    code, out = train_cli(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no class folders in train/" in err
    assert not out.exists()


def test_an_undecodable_image_fails_with_its_name_or_is_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "imagenet"
    make_image_folder(root)
    bad = root / "train" / "class1" / "img2.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG after all" * 10)
    # paper: no holdout, so the 8 training images are 2 whole batches of 4 and every one is read in epoch 1
    # (training drops a partial batch, which could leave the bad image unread)
    every_image = ("--set", "train.protocol=paper")

    code, out = train_cli(tmp_path, root, *every_image)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot decode image {bad}" in err and "on_bad_image=skip" in err
    assert not (out / "result.json").exists()

    code, out = train_cli(tmp_path, root, *every_image, "--set", "dataset.on_bad_image=skip")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((out / "result.json").read_text())["skipped_images"] == 1
    assert f"skipped 1 undecodable image(s) (on_bad_image=skip): {bad}" in captured.out


# --- security ---------------------------------------------------------------------------------------------

def test_python_tags_in_a_sweep_file_are_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for text in (f"!!python/object/apply:os.system ['touch {marker}']\n",
                 f"schema_version: 1\nname: x\nmethods: [ce]\ndatasets: [digits]\n"
                 f"description: !!python/object/apply:os.system ['touch {marker}']\n"):
        path = tmp_path / "evil.yaml"
        path.write_text(text)
        assert main(["run", str(path), "--results", str(tmp_path / "results")]) == 2
        err = capsys.readouterr().err
        assert "not valid YAML" in err and "python/object/apply" in err and len(err.strip().splitlines()) == 1
    # --set values are YAML scalars read the same safe way
    path = sweep_file(tmp_path, "name: x\nmethods: [ce]\ndatasets: [digits]\n")
    code = main(["run", str(path), "--dry-run", "--set", f"train.lr=!!python/object/apply:os.system ['touch {marker}']"])
    assert code == 2 and "train.lr" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "results").exists()


SOURCES = sorted((REPO / "harness").rglob("*.py")) + sorted((REPO / "methods").rglob("*.py"))


def test_yaml_is_only_ever_read_safely_and_code_is_only_loaded_through_imports():
    """A static check over the package: no unsafe YAML loader anywhere; importing a module by a name
    that comes from input happens in one place (methods/user.py, behind `imports:` / `--import`)."""
    unsafe_yaml = re.compile(r"yaml\.(load|load_all|full_load|unsafe_load|unsafe_load_all)\(|(Unsafe|Full)?Loader=yaml\.(Loader|UnsafeLoader|FullLoader)")
    dynamic = re.compile(r"(?<![\w.])(exec|eval)\(|__import__\(|import_module\(|spec_from_file_location\(")
    allowed_dynamic = {
        "methods/user.py",   # imports: and --import, the one door for user code
        "harness/cli/__init__.py",  # the subcommand modules, from the fixed COMMANDS table
        "harness/io.py",     # versions of torchvision/timm/ray for the environment record
    }
    assert SOURCES
    offenders = []
    for path in SOURCES:
        rel = str(path.relative_to(REPO))
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if unsafe_yaml.search(code) or (dynamic.search(code) and rel not in allowed_dynamic):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_training_makes_no_network_access(tmp_path, monkeypatch):
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted in a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    code = main(["train", "--method", "zipf", "--dataset", "digits", "--model", "tiny_cnn", "--epochs", "1",
                 "--set", "train.max_steps_per_epoch=2", "--out", str(tmp_path / "out")])
    assert code == 0 and attempts == []
    assert (tmp_path / "out" / "result.json").exists()


# --- failing trials in a sweep (Ray) ------------------------------------------------------------------------

@pytest.mark.slow
def test_failing_trials_are_recorded_the_others_finish_and_damaged_records_recover(tmp_path, capsys):
    path = sweep_file(tmp_path, """\
        name: faults
        methods: [{name: faulty_test, params: {fault: [none, nan, oom, memory]}}]
        datasets: [digits]
        models: [tiny_cnn]
        seeds: [0]
        train: {epochs: 3, batch_size: 64, max_steps_per_epoch: 3}
        resources: {cpus_per_trial: 1, max_concurrent: 2}
        retries: 0
        """)
    sweep = load_sweep(path)
    folder = tmp_path / "results" / "faults"
    good = next(t for t in sweep.trials if t.method_params["fault"] == "none")
    gdir = folder / "trials" / good.key()
    # a trial killed after epoch 2, then damaged: its latest checkpoint and its result record
    interrupted_after(good, gdir, 2)
    flip_byte(gdir / "checkpoint.pt")
    (gdir / "result.json").write_text('{"status": "fini')

    code = main(["run", str(path), "--results", str(tmp_path / "results"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # some trials failed; the sweep itself did not
    rows = {r["p.fault"]: r for r in read_csv(folder / "trials.csv")}
    assert sorted(rows) == ["memory", "nan", "none", "oom"]
    assert rows["none"]["status"] == "finished" and float(rows["none"]["best_top1"]) > 0
    assert rows["nan"]["status"] == "failed" and "TrialDiverged" in rows["nan"]["error"]
    assert "loss became nan" in rows["nan"]["error"]
    assert rows["oom"]["error"].startswith("out of memory: OutOfMemoryError: simulated")
    assert rows["memory"]["error"].startswith("out of memory: MemoryError: simulated")
    assert all(rows[f]["status"] == "failed" for f in ("nan", "oom", "memory"))
    assert "Trials: 4 (1 finished, 3 failed)" in (folder / "summary.md").read_text()
    assert out.count("  failed: ") == 3
    log = (gdir / "train.log").read_text()
    assert "sha256 mismatch" in log and "falling back to the last good checkpoint" in log
    assert f"resuming {good.key()} from epoch 1" in log
    assert [r["epoch"] for r in read_metrics(gdir)] == [1, 2, 3]


# --- driver death, Ctrl-C and a second sweep on the same folder (Ray, subprocesses) ----------------------

def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, logs: Path | None = None):
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) while waiting for {what}"
                                 + (f"\n{tail(logs)}" if logs else ""))
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{tail(logs)}" if logs else ""))
        time.sleep(0.05)


def tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + p.read_text()[-3000:] for p in sorted(logs.glob("*.log")))


def descendants(run_id: str) -> list[int]:
    """Processes started for this test run: they carry its id in their environment (Ray passes it on)."""
    found = []
    needle = f"TFBENCH_TEST_RUN={run_id}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except OSError:  # gone, or not ours to read
            pass
    return found


def kill_leftovers(run_id: str) -> list[int]:
    """SIGKILL whatever a killed driver left behind (only processes carrying this run's id) and wait."""
    left = descendants(run_id)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not live(run_id), 60, "leftover processes to exit")
    return left


def live(run_id: str) -> list[int]:
    return [p for p in descendants(run_id) if not _zombie(p)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class Driver:
    """`tfbench run` as a subprocess in its own session, as a user starts it in a terminal."""

    def __init__(self, path: Path, results: Path, logs: Path, name: str, run_id: str, **env: str):
        self.logs, self.name = logs, name
        full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        full_env.update(PYTHONUNBUFFERED="1", TFBENCH_TEST_RUN=run_id, **env)
        self.out = open(logs / f"{name}.out.log", "w")
        self.err = open(logs / f"{name}.err.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(results), "--no-progress"],
            cwd=REPO, env=full_env, stdout=self.out, stderr=self.err, start_new_session=True)

    def wait_file(self, path: Path, timeout: float = 240) -> None:
        wait_for(path.exists, timeout, f"{path.name} ({self.name})", self.proc, self.logs)

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float = 240) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            self.out.close()
            self.err.close()
        return code

    def stderr(self) -> str:
        return (self.logs / f"{self.name}.err.log").read_text()

    def stdout(self) -> str:
        return (self.logs / f"{self.name}.out.log").read_text()


def trained_record(trial: Path) -> str:
    """What training wrote into a trial's result.json: the record without the metrics that evaluation computes
    from the kept predictions (a later run may add those; it must never change what was trained)."""
    from harness.results.beyond import record_metrics
    from harness.results.predictions import read_predictions

    record = json.loads((trial / "result.json").read_text())
    pred = read_predictions(trial)
    computed = set(record_metrics(pred)) if pred is not None else set()
    return json.dumps({k: v for k, v in record.items() if k not in computed}, sort_keys=True)


@pytest.mark.slow
def test_kills_at_three_points_and_ctrl_c_lose_nothing_and_recompute_nothing(tmp_path):
    """One sweep of three trials (max 1 at a time) is SIGKILLed during its first trial, between trials
    and during aggregation, and Ctrl-C'd once in the middle; a second `tfbench run` on the same folder is
    refused while the first runs. The last rerun completes it: every trial once, nothing trained twice."""
    gate, logs = tmp_path / "gate", tmp_path / "logs"
    gate.mkdir()
    logs.mkdir()
    path = sweep_file(tmp_path, """\
        name: kills
        methods: [{name: gated_test, params: {tag: [1, 2, 3]}}]
        datasets: [digits]
        models: [tiny_cnn]
        seeds: [0]
        train: {epochs: 3, batch_size: 64, max_steps_per_epoch: 4}
        resources: {cpus_per_trial: 1, max_concurrent: 1}
        retries: 0
        """)
    results = tmp_path / "results"
    folder = results / "kills"
    sweep = load_sweep(path)
    dirs = {t.method_params["tag"]: folder / "trials" / t.key() for t in sweep.trials}
    keys = {tag: d.name for tag, d in dirs.items()}
    run_id = uuid.uuid4().hex
    hold = {e: gate / f"hold-at-epoch-{e}" for e in (0, 1)}

    def run(name: str, **env: str) -> Driver:
        return Driver(path, results, logs, name, run_id, TFBENCH_TEST_GATE=str(gate), **env)

    def held(tag: int, epoch: int) -> Path:
        return gate / f"held-{tag}-{epoch}"

    try:
        # 1. SIGKILL during the first trial: held after its first epoch is on disk
        hold[1].touch()
        a = run("a-kill-in-trial")
        a.wait_file(held(1, 1))
        a.wait_file(dirs[1] / "checkpoint.pt")  # written in the background: it may land just after the epoch
        assert len(read_metrics(dirs[1])) == 1
        # meanwhile a second sweep on the same results folder is refused, and the first is unharmed
        b = run("b-second-sweep")
        assert b.finish(120) == 2
        assert re.search(r"another tfbench run \(pid \d+\) is using this results folder", b.stderr())
        assert a.proc.poll() is None
        a.signal_group(signal.SIGKILL)
        a.finish()
        kill_leftovers(run_id)
        hold[1].unlink()
        assert not (folder / "trials.csv").exists() and not (dirs[1] / "result.json").exists()

        # 2. SIGKILL between trials: trial 1 resumes and finishes; trial 2 is held before its first epoch
        hold[0].touch()
        c = run("c-kill-between")
        c.wait_file(held(2, 0))
        assert (dirs[1] / "result.json").exists() and not (dirs[2] / "metrics.jsonl").exists()
        c.signal_group(signal.SIGKILL)
        c.finish()
        kill_leftovers(run_id)
        hold[0].unlink()
        assert f"resuming {keys[1]} from epoch 1" in (dirs[1] / "train.log").read_text()
        done1 = trained_record(dirs[1])

        # 3. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while trial 2 is held after epoch 1
        hold[1].touch()
        d = run("d-ctrl-c")
        d.wait_file(held(2, 1))
        d.signal_group(signal.SIGINT)
        code = d.finish(180)
        hold[1].unlink()
        assert code == 130, tail(logs)
        assert "interrupted" in d.stderr() and "rerun the same command to continue" in d.stderr()
        assert "Traceback" not in d.stderr()
        rows = {r["key"]: r["status"] for r in read_csv(folder / "trials.csv")}
        assert rows == {keys[1]: "finished", keys[2]: "pending", keys[3]: "pending"}
        with ResultsLock(folder):  # the lock was released
            pass
        wait_for(lambda: not live(run_id), 60, "Ray's processes to end after the interrupted sweep")

        # 4. SIGKILL during aggregation: trials 2 (resumed) and 3 finish, trials.csv is written, then the kill
        pause = gate / "summary-paused"
        e = run("e-kill-in-aggregation", TFBENCH_TEST_PAUSE_BEFORE_SUMMARY=str(pause))
        e.wait_file(pause)
        assert [r["status"] for r in read_csv(folder / "trials.csv")] == ["finished"] * 3
        assert not (folder / "summary.md").exists()
        e.signal_group(signal.SIGKILL)
        e.finish()
        kill_leftovers(run_id)
        assert f"resuming {keys[2]} from epoch 1" in (dirs[2] / "train.log").read_text()
        stamps = {tag: trained_record(d) for tag, d in dirs.items()}

        # 5. the same command once more: nothing left to train; the aggregation completes
        f = run("f-finish")
        assert f.finish(180) == 0, tail(logs)
        assert "3 already finished, 0 to run" in f.stdout()
    finally:
        for p in gate.glob("hold-*"):
            p.unlink()
        kill_leftovers(run_id)

    rows = read_csv(folder / "trials.csv")
    assert sorted(r["key"] for r in rows) == sorted(keys.values())  # every trial exactly once
    assert all(r["status"] == "finished" for r in rows)
    assert "Trials: 3 (3 finished, 0 failed)" in (folder / "summary.md").read_text()
    # nothing was trained twice: each epoch trained (logged) once, every start of a trial logged as a fresh
    # start or a resume, each epoch recorded once, finished records untouched since they were written
    for d in dirs.values():
        log = (d / "train.log").read_text()
        trained = re.findall(r" epoch +(\d+)/3 ", log)
        assert sorted(trained) == ["1", "2", "3"], log
        starts = len(re.findall(r"starting \S+ from scratch", log)) + len(re.findall(r"resuming \S+ from epoch", log))
        assert starts >= 1 and "from scratch: the record held" not in log, log
    for d in dirs.values():
        assert [r["epoch"] for r in read_metrics(d)] == [1, 2, 3]
    assert {tag: trained_record(d) for tag, d in dirs.items()} == stamps
    assert stamps[1] == done1
    assert "resuming" not in (dirs[3] / "train.log").read_text()  # trial 3 was never interrupted
