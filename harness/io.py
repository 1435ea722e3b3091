"""Side effects on disk: atomic writes, JSON lines, CSV and the environment record. Every result file goes
through here."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

# The folder above harness/: a git checkout when run from source, site-packages when installed. Nothing
# may default a results or data folder to it (an installed copy would write into site-packages).
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, before_replace: Callable[[], None] | None = None) -> Iterator[BinaryIO]:
    """A binary file at a temporary name beside `path`; on a clean exit it is fsynced, `before_replace()` runs,
    and it is renamed to `path`: readers see old or new, never half. On an error the temporary file goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see old or new, never half."""
    with atomic_open(path) as f:
        f.write(data)


def probe_folder(path: str | Path, *, keep: bool = False) -> None:
    """Create `path` (and its parents) if missing, write 64 KiB there, fsync and remove it: raises OSError
    when the folder cannot be written (read-only, no permission, a full disk). `keep=False` removes the
    folders it created, so that a probe before any work leaves nothing behind when the work then fails."""
    path = Path(os.path.abspath(path))
    created = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        created.append(folder)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:  # a full disk fails in write or fsync: leave nothing behind either way
            probe.unlink(missing_ok=True)
    finally:
        for folder in created if not keep else ():
            try:
                folder.rmdir()
            except OSError:
                break


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Rewrite the whole file atomically with one more line (files are small: one line per epoch)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record, sort_keys=True, default=_json_default) + "\n")


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_stem(text: str) -> str:
    """`text` as a portable file-name stem: anything but letters, digits, '_', '.' and '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def content_hash(value: Any, length: int) -> str:
    """The first `length` hex digits of sha256 over `value`'s canonical JSON (sorted keys, no spaces): equal on
    every run, machine and folder for equal values (trial keys, request hashes, cost keys)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def checkout_root() -> Path | None:
    """The git checkout this code runs from, or None for an installed copy (no .git beside harness/)."""
    return _PACKAGE_PARENT if (_PACKAGE_PARENT / ".git").exists() else None


def git_revision() -> str:
    """The code version a result was produced by ('+dirty' when the tree has uncommitted changes); 'unknown'
    for an installed copy, so that a repository that happens to surround site-packages is never reported."""
    root = checkout_root()
    if root is None:
        return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str | None = None) -> dict[str, Any]:
    import numpy
    import torch

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "git": git_revision(),
        "device": device,
        "cpu_count": os.cpu_count(),
    }
    for mod in ("torchvision", "timm", "ray"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # optional at this point; record that it is missing
            env[mod] = None
    if device and device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


# OWASP's list for CSV injection: a cell that starts with =, +, -, @, a tab or a carriage return is run as a
# formula. A cell starting with + or - is let through only when it is one of the number forms tables write:
# numbers, `+-`, `n/a`, one bracketed interval and a trailing `(better)` / `(worse)` (`-0.5`,
# `+1.23 [+0.40, +2.06] (better)`, `-0.52 +- 0.10`); `-2+3+cmd|' /C calc'!A0` is not one of them.
_FORMULA_START = re.compile(r"[=+\-@\t\r]")
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?"
_NUMBER_FORM = re.compile(rf"{_NUMBER}(?: \+- (?:{_NUMBER}|n/a))?(?: \[(?:{_NUMBER}, {_NUMBER}|n/a)\])?"
                          rf"(?: \((?:better|worse)\))?")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ' (OWASP's advice for CSV
    injection: `=HYPERLINK(...)` in a method's name or parameter is then shown, not evaluated)."""
    if isinstance(cell, str) and _FORMULA_START.match(cell) and not _NUMBER_FORM.fullmatch(cell):
        return f"'{cell}"
    return cell


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text: the header, then the rows; '\\n' line ends, minimal quoting, None as an empty cell, floats
    at full precision (repr), text that a spreadsheet would evaluate escaped (`spreadsheet_safe`). Why one
    function: every CSV tfbench writes (trials.csv, summary.csv, search.csv, the analyses' tables, `--format
    csv`) goes through here, so a rule for cells holds for all of them."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([spreadsheet_safe(c) for c in header])
    w.writerows([spreadsheet_safe(c) for c in row] for row in rows)
    return buf.getvalue()


def write_csv(path: str | Path, header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> None:
    """`csv_text(header, rows)` written atomically."""
    atomic_write_text(path, csv_text(header, rows))
