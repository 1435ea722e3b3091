"""The folders tfbench writes: a results folder (`results/<sweep>/`) and its trial folders (`trials/<key>/`).

One object per kind of folder owns its file names, its status, its lock, its temporaries and which of its
trials are stale, so that the trainer, the runner and the readers never spell a file name themselves.

Why the trial folders are the source of truth: each trial writes its own `config.json`, `result.json` or
`error.json` atomically, so they survive what can damage one shared file (a full disk, a copy cut short).
`trials.csv`, `summary.*` and `plots/` are derived from them (harness/results/records.py).

Staleness: a trial's key hashes its fully resolved spec, so a changed default (a dataset's Params, a
preset, a recipe) gives the same request a new key and the old folder is never reused for it. The old
folders (same request and seed as a current trial, another key) are stale: `tfbench run` reports them,
`--rerun-stale` moves them to `stale/`, the readers leave them out. Folders written before keys were
resolved (no `request` in their config.json) are matched on method, dataset, model, seed and method params.

This module imports nothing of the harness but io, errors and the metric vocabulary (which result.json
numbers it checks): every package may use it. Why about 470 lines in one module: every kind of folder's
names, status, lock, temporaries and checks in one place, so that nothing else spells a file name; split,
each half would reach into the other's. The rule for output targets is harness/outputs.py.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import stat
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.io import atomic_write_json, atomic_write_text, probe_folder
from harness.metrics import checked, problem

STATUSES = ("finished", "failed", "pending")


MAX_RECORD_BYTES = 4 * 1024**2     # a config.json or result.json is a few KiB; more is not one of ours
KEY_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # a trial key: one folder name, never a path


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes, else None. Why: a named pipe would block the
    reader forever, a device or a huge file would never end; neither is a record."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


MAX_LINES_BYTES, MAX_LINES = 64 * 1024**2, 100_000  # a per-epoch record: far more epochs than any trial trains


def read_lines(path: Path) -> tuple[list[str], str | None]:
    """The first MAX_LINES lines of a regular file, read in bounded time and memory: (lines, why the rest was
    left out or why nothing was read, else None). A missing file is no lines and no problem."""
    if not Path(path).exists():
        return [], None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return [], f"cannot be read ({e.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], "is not a regular file"
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_LINES_BYTES + 1)
    finally:
        os.close(fd)
    lines = data[:MAX_LINES_BYTES].decode("utf-8", "replace").splitlines()
    if len(data) > MAX_LINES_BYTES or len(lines) > MAX_LINES:
        return lines[:MAX_LINES], f"holds more than {MAX_LINES:,} lines or {MAX_LINES_BYTES // 1024**2} MiB; read the first"
    return lines, None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object record, or None when it is missing, truncated, too large, not a regular file or not a
    JSON object. Why never raise: one damaged file must not stop the aggregation of every other trial."""
    data = read_bounded(Path(path), MAX_RECORD_BYTES)
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def result_problem(record: dict[str, Any], key: str | None) -> str | None:
    """Why a finished trial's result.json cannot be counted (None when it can): another trial's key (a copied
    folder), or a number of the wrong type or out of range (a value edited or damaged)."""
    if key is not None and record.get("key") not in (None, key):
        return f"it is the record of another trial ({str(record.get('key'))[:80]!r})"
    for name in checked():  # each number a table reads must be a finite number in its range
        why = problem(name, record.get(name))
        if why:
            return why
    return None


class TrialFolder:
    """`results/<sweep>/trials/<key>/`, or a `tfbench train --out` folder: one trial's files. `key`: the trial
    the folder must hold (a results folder's trial folder is named by it); records of another are not its own."""

    CONFIG, RESULT, ERROR = "config.json", "result.json", "error.json"
    METRICS, LOG = "metrics.jsonl", "train.log"
    CHECKPOINT, BEST = "checkpoint.pt", "best.pt"
    TB, STOPPED, SEARCH_LOCK = "tb", "stopped.json", ".search-lock"

    def __init__(self, path: str | Path, key: str | None = None):
        self.path = Path(path)
        self.expected = key

    def __repr__(self) -> str:
        return f"TrialFolder({str(self.path)!r})"

    @property
    def key(self) -> str:
        return self.expected or self.path.name

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- reading ---
    def config(self) -> dict[str, Any] | None:
        return read_json(self.path / self.CONFIG)

    def result(self) -> dict[str, Any] | None:
        return read_json(self.path / self.RESULT)

    def spec(self) -> dict[str, Any] | None:
        """The resolved spec stored in config.json (as TrialSpec.to_dict wrote it), or None."""
        config = self.config()
        return config["spec"] if config and isinstance(config.get("spec"), dict) else None

    def problem(self) -> str | None:
        """Why the folder's finished record cannot be counted (see `result_problem`), or None."""
        result = self.result()
        if result is None or result.get("status") != "finished":
            return None
        return result_problem(result, self.expected)

    def status(self) -> str:
        """finished | failed | pending. A corrupt, foreign or implausible result counts as not finished, so
        it is never counted (and a rerun resumes the trial from its own checkpoint)."""
        result = self.result()
        if result is not None and result.get("status") == "finished" and result_problem(result, self.expected) is None:
            return "finished"
        return "failed" if (self.path / self.ERROR).exists() else "pending"

    def foreign_key(self, key: str) -> str | None:
        """The key of another trial whose config.json or result.json this folder holds, or None."""
        for record in (self.config(), self.result()):
            if record and record.get("key") not in (None, key):
                return str(record["key"])
        return None

    # written only after config.json: a folder holding one of them without this trial's config is not its own
    RECORDS = (METRICS, RESULT, CHECKPOINT, "checkpoint.prev.pt", BEST, "best.prev.pt")

    def strays(self, key: str) -> list[str]:
        """The trial files here that no tfbench trial wrote: a config.json that is not a trial's record, or
        checkpoints, metrics, results beside no trial's config.json (another tool's folder, or one whose config
        was removed). Empty when the folder is a trial's (this one's, or another's: `foreign_key`), holds none
        of them, or is `trials/<key>` of a results folder (its own by name, even with a damaged config)."""
        config = self.config()
        if config is not None and isinstance(config.get("key"), str) and isinstance(config.get("spec"), dict):
            return []
        parent = self.path.parent
        if self.path.name == key and parent.name == ResultsFolder.TRIALS and ResultsFolder(parent.parent).is_results_folder():
            return []
        return [name for name in (self.CONFIG, *self.RECORDS) if (self.path / name).exists()]

    def error(self) -> str:
        record = read_json(self.path / self.ERROR) or {}
        return str(record.get("error") or "failed; its error record is unreadable (see train.log)")

    # --- writing (atomic) ---
    def write_config(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / self.CONFIG, record)

    def write_result(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / self.RESULT, record)

    def write_error(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / self.ERROR, record)

    def clear_error(self) -> None:
        (self.path / self.ERROR).unlink(missing_ok=True)

    def move_aside(self, other: str) -> Path:
        """Rename the folder to `<name>.moved-<other>` (one atomic rename; never over an earlier one), so that
        the records of trial `other` are kept and out of this trial's way; returns where they went."""
        path = Path(os.path.abspath(self.path))  # `.` and `..` have no name to add a suffix to
        if not path.name or path == Path.home():
            raise UserError(f"{self.path}: refusing to move {path} aside; give --out a folder of its own")
        aside = free_path(path.with_name(f"{path.name}.moved-{other}"))
        try:
            os.rename(path, aside)
        except OSError as e:
            raise UserError(f"cannot move {path} aside to {aside}: {e.strerror or e}") from None
        return aside


class ResultsLock:
    """One sweep per results folder at a time: a second `tfbench run` gets a clear message, not a mix-up."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> ResultsLock:
        try:  # O_NOFOLLOW: a link named .lock would have the pid written into whatever file it points to
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError:
            raise UserError(f"{self.path} is a directory, not tfbench's lock file; if no tfbench run is using "
                            f"{self.path.parent}, remove it (rmdir {self.path}) and rerun") from None
        except OSError:
            if not self.path.is_symlink():
                raise
            raise UserError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}), not tfbench's lock file; "
                            f"tfbench never writes through a link: remove it (rm {self.path}) and rerun") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(f"{self.path.parent}: another tfbench run (pid {holder}) is using this results folder; "
                            f"wait for it to finish, or give this sweep another name") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


class ResultsFolder:
    """`results/<sweep>/`: the sweep record, the trial folders, trials.csv, the summary, the lock."""

    SWEEP, TRIALS_CSV, TRIALS, STALE, LOCK, MARKER = "sweep.yaml", "trials.csv", "trials", "stale", ".lock", ".tfbench"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def trial(self, key: str) -> TrialFolder:
        """The trial folder of `key`; a key that is not one folder name (`..`, a slash, 300 characters) is
        refused, so nothing is ever written outside trials/."""
        if not isinstance(key, str) or not KEY_RULE.fullmatch(key) or ".." in key:
            raise UserError(f"{self.path}: {str(key)[:80]!r} is not a trial key (one folder name: letters, digits, "
                            f"'.', '_', '-'); refusing to use it as a path")
        return TrialFolder(self.path / self.TRIALS / key, key)

    def trial_folders(self) -> Iterator[TrialFolder]:
        for path in sorted((self.path / self.TRIALS).glob("*")):
            if path.is_dir() and KEY_RULE.fullmatch(path.name):
                yield TrialFolder(path, path.name)

    def is_results_folder(self) -> bool:
        """Written by `tfbench run` (its marker, or a sweep record with a trial list, or trials.csv with
        tfbench's header): only then do the readers touch anything in it."""
        if (self.path / self.MARKER).is_file():
            return True
        if self.recorded_trials():
            return True
        head = read_bounded(self.path / self.TRIALS_CSV, MAX_RECORD_BYTES * 64)
        first = head.split(b"\n", 1)[0].decode("utf-8", "replace") if head else ""
        return all(c in first.split(",") for c in ("key", "status", "method", "dataset", "model", "seed"))

    def mark(self) -> None:
        """Leave the marker that says `tfbench run` writes here."""
        atomic_write_text(self.path / self.MARKER, "a tfbench results folder (tfbench run)\n")

    # --- the sweep record ---
    def sweep_record(self) -> dict[str, Any] | None:
        data = read_bounded(self.path / self.SWEEP, MAX_RECORD_BYTES * 16)
        try:
            record = yaml.safe_load(data) if data is not None else None
        except yaml.YAMLError:
            return None
        return record if isinstance(record, dict) else None

    def write_sweep_record(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.path / self.SWEEP, yaml.safe_dump(record, sort_keys=False))

    def sweep_value(self, key: str) -> Any:
        """A top-level key of the sweep file as recorded in sweep.yaml (None when absent or unreadable)."""
        record = self.sweep_record() or {}
        file = record.get("file")
        return (file if isinstance(file, dict) else {}).get(key, record.get(key))

    def recorded_trials(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, spec) of the sweep as last run: sweep.yaml's trial list (pending trials included)."""
        trials = (self.sweep_record() or {}).get("trials")
        if not isinstance(trials, list):
            return []
        return [(str(t["key"]), dict(t["spec"])) for t in trials
                if isinstance(t, dict) and isinstance(t.get("key"), str) and KEY_RULE.fullmatch(t["key"])
                and isinstance(t.get("spec"), dict)]

    # --- the lock, the write probe, temporaries ---
    def lock(self) -> ResultsLock:
        return ResultsLock(self.path)

    def is_locked(self) -> bool:
        """True while a `tfbench run` holds the folder's lock (then only that run writes shared files)."""
        lock = self.path / self.LOCK
        if not lock.is_file():
            return False
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def write_probe(self) -> None:
        """Fail before any training if results cannot be written (read-only folder, full disk)."""
        try:
            probe_folder(self.path, keep=True)
        except OSError as e:
            raise UserError(f"cannot write results to {self.path}: {e.strerror or e}; free space or choose another "
                            f"folder with --results") from None

    def remove_temporaries(self, *, lock_held: bool = False) -> int:
        """Remove the half-written files of a killed writer (atomic writes' `.<name>.<random>.tmp`, write
        probes) at every level of the folder (Ray's own `.ray/` aside); returns how many. Only in a tfbench
        results folder (`is_results_folder`) and only tfbench's own patterns; skipped while another process
        runs a sweep here (its temporaries are live), unless the caller is that sweep (`lock_held`)."""
        if not self.path.is_dir() or (not lock_held and self.is_locked()) or not self.is_results_folder():
            return 0
        removed = 0
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if d != ".ray"]
            for name in files:
                if TEMPORARY.fullmatch(name):
                    try:
                        Path(root, name).unlink(missing_ok=True)
                    except OSError:  # a read-only folder: the leftover stays, harmless, never read as a result
                        continue
                    removed += 1
        return removed

    # --- staleness ---
    def finished_specs(self) -> dict[str, dict[str, Any]]:
        """{key: stored spec} of every finished trial folder."""
        return {t.key: spec for t in self.trial_folders()
                if t.status() == "finished" and (spec := t.spec()) is not None}

    def find_stale(self, current: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict, dict]]:
        """{old key: (current key, old spec, current spec)} for finished folders that answer a current trial's
        request (or, for old folders, its identity) under another key. `current` is {key: spec dict}."""
        by_request: dict[tuple, str] = {}
        for key, spec in current.items():
            by_request[_identity(spec)] = key
            legacy = dict(spec)
            legacy.pop("request", None)
            by_request.setdefault(_identity(legacy), key)
        out = {}
        for key, spec in self.finished_specs().items():
            if key in current:
                continue
            match = by_request.get(_identity(spec))
            if match is not None:
                out[key] = (match, spec, current[match])
        return out

    def stale_keys(self) -> set[str]:
        """Keys of the stale trial folders, against the sweep as last run (its sweep.yaml)."""
        current = dict(self.recorded_trials())
        return set(self.find_stale(current)) if current else set()

    def move_aside(self, keys: set[str] | list[str]) -> list[Path]:
        """Rename trials/<key> to stale/<key> (one atomic rename each; a name already there gets a suffix)."""
        moved = []
        (self.path / self.STALE).mkdir(exist_ok=True)
        for key in sorted(keys):
            src = self.path / self.TRIALS / key
            if not src.is_dir():
                continue
            dst = free_path(self.path / self.STALE / key)
            os.rename(src, dst)
            moved.append(dst)
        return moved


def free_path(path: Path) -> Path:
    """`path`, or the first of `<path>.1`, `<path>.2`, ... that does not exist: a folder moved aside never
    replaces one moved there before."""
    dst, n = path, 1
    while dst.exists():
        dst, n = path.with_name(f"{path.name}.{n}"), n + 1
    return dst


# what harness.io's atomic writes (tempfile.mkstemp: 8 random characters) and write_probe leave behind
TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp|\.write-probe-\d+")
_IGNORED = {"imports", "request", "spec_version"}


def _identity(spec: dict[str, Any]) -> tuple:
    if spec.get("request"):
        return ("request", spec["request"], spec.get("seed"))
    return ("legacy", spec.get("method"), spec.get("dataset"), spec.get("model"), spec.get("seed"),
            json.dumps(spec.get("method_params"), sort_keys=True, default=str))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            if not prefix and k in _IGNORED:
                continue
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def describe_stale(stale: dict[str, tuple[str, dict, dict]]) -> list[str]:
    """One line per group (method, dataset, model, what changed): how many trials, and the differences."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for old_key, (_new_key, old, new) in stale.items():
        a, b = _flatten(old), _flatten(new)
        diffs = [f"{k} {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
                 if a.get(k) != b.get(k) and k != "seed"]
        if "spec_version" not in old:
            diffs.insert(0, "stored by an older tfbench (keys now hash the resolved spec)")
        elif old["spec_version"] != new.get("spec_version", old["spec_version"]):
            diffs.insert(0, f"stored by an older tfbench (spec version {old['spec_version']} -> "
                            f"{new['spec_version']}: the same settings give other numbers; docs/sweep-files.md)")
        groups[(old.get("method"), old.get("dataset"), old.get("model"), tuple(diffs[:4]))].append(old_key)
    lines = []
    for (method, dataset, model, diffs), keys in groups.items():
        lines.append(f"{len(keys)} finished trial(s) of {method} on {dataset} ({model}) no longer match what the "
                     f"sweep now means ({'; '.join(diffs) or 'settings changed'}): kept, not reused "
                     f"(e.g. trials/{keys[0]})")
    return lines
