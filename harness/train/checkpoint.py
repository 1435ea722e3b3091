"""The trial folder's files that make a trial resumable: checkpoints (with a sha256 trailer), the selected
epoch's weights (`best.pt`, clean protocol) and the per-epoch record (`metrics.jsonl`).

Resume rule: the record and the weights must agree, so a trial resumes from the newest intact checkpoint
no newer than the intact record, and `best.pt` is rolled back to the epoch that checkpoint selected.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from harness.folders import TrialFolder, read_lines
from harness.io import atomic_open

CHECKPOINT, BEST = TrialFolder.CHECKPOINT, TrialFolder.BEST

# Each checkpoint file is torch.save's bytes followed by a sha256 trailer. Why: torch.load accepts a
# file with a flipped byte inside a tensor and returns wrong weights without a word (zip entries are
# not CRC-checked on read), so a damaged file would silently train on. torch's zip reader ignores
# trailing bytes, so the file stays loadable by a plain torch.load. The previous epoch's checkpoint is
# kept as checkpoint.prev.pt, so a damaged latest file costs one epoch, not the whole trial.

_DIGEST_TAG = b"\n#tfbench-sha256:"
_TRAILER_LEN = len(_DIGEST_TAG) + 64 + 1  # tag, hex digest, newline


class DamagedCheckpoint(ValueError):
    """A checkpoint file whose checksum or contents do not check out."""


def previous_checkpoint(path: Path) -> Path:
    return path.with_suffix(".prev" + path.suffix)  # checkpoint.pt -> checkpoint.prev.pt


class _Hashing:
    """A file that hashes what passes through it: torch.save streams into it (memoryviews of the tensors'
    memory), so no serialised copy of the state is ever held in memory."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha.update(data)  # releases the GIL for large buffers, as the file write does
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, **state: Any) -> None:
    """Stream torch.save's bytes and the sha256 trailer into a temporary file; once it is complete and fsynced
    the current file becomes .prev and the new one takes its name (a failure leaves both as they were)."""
    def rotate() -> None:  # a kill between these two renames leaves only .prev, which the loader then takes
        if path.exists():
            os.replace(path, previous_checkpoint(path))

    with atomic_open(path, before_replace=rotate) as f:
        hashing = _Hashing(f)
        torch.save(state, hashing)
        f.write(_DIGEST_TAG + hashing.sha.hexdigest().encode() + b"\n")


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved by `save_checkpoint`; raises DamagedCheckpoint if the file is truncated or altered.
    Hashed in chunks and loaded from the same open file: the file's bytes are never all in memory."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= _TRAILER_LEN:
            raise DamagedCheckpoint("no checksum trailer (truncated, or not written by tfbench)")
        sha, left = hashlib.sha256(), size - _TRAILER_LEN
        while left:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                raise DamagedCheckpoint("the file shrank while it was read")
            sha.update(chunk)
            left -= len(chunk)
        tail = f.read()
        if not tail.startswith(_DIGEST_TAG) or not tail.endswith(b"\n") or len(tail) != _TRAILER_LEN:
            raise DamagedCheckpoint("no checksum trailer (truncated, or not written by tfbench)")
        if sha.hexdigest().encode() != tail[len(_DIGEST_TAG):-1]:
            raise DamagedCheckpoint("sha256 mismatch (the file was altered or damaged)")
        f.seek(0)
        try:
            state = torch.load(f, map_location=map_location, weights_only=False)  # the zip reader ignores the trailer
        except Exception as e:  # checksummed yet unreadable: written by an incompatible torch version
            raise DamagedCheckpoint(f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise DamagedCheckpoint("missing keys")
    return state


def load_checkpoint(path: Path, log: Callable[[str], None], rename: bool = True,
                    max_epoch: int | None = None) -> dict[str, Any] | None:
    """The newest intact checkpoint among `path` and its .prev, or None (start from scratch).

    A damaged file is reported and renamed to *.corrupt (kept for inspection, out of the next run's way);
    one newer than `max_epoch` (the epochs the metrics record still holds) is passed over, so that the
    record and the weights never disagree. Never raises for a bad file: the trial restarts rather than crash.
    """
    damaged = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            continue
        try:
            state = read_checkpoint(candidate)
        except (OSError, DamagedCheckpoint) as e:
            log(f"warning: checkpoint {candidate} is unreadable ({e})")
            damaged.append(candidate.name)
            if rename:
                os.replace(candidate, candidate.with_suffix(".corrupt"))
            continue
        if max_epoch is not None and state["epoch"] > max_epoch:
            log(f"warning: checkpoint {candidate} (epoch {state['epoch']}) is ahead of the intact metrics "
                f"record (epoch {max_epoch}); not using it")
            damaged.append(candidate.name)
            continue
        if damaged or candidate != path:
            log(f"warning: falling back to the last good checkpoint {candidate.name} (epoch {state['epoch']})")
        return state
    if damaged:
        log(f"warning: no usable checkpoint ({', '.join(damaged)} unreadable or ahead of the record); "
            f"starting this trial from scratch")
    return None


def read_metrics(path: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The leading run of intact per-epoch records (epochs 1, 2, ...); a damaged line ends it, with a warning."""
    lines, problem = read_lines(path)
    if problem:
        log(f"warning: {path} {problem}")
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and row.get("epoch") == len(rows) + 1
        except ValueError:
            ok = False
        if not ok:
            log(f"warning: {path} line {n} is damaged or out of order; keeping epochs 1-{len(rows)} of the record")
            break
        rows.append(row)
    return rows


def save_best(path: Path, *, model: dict[str, Any], epoch: int, val_top1: float) -> None:
    """The selected epoch's weights, checksummed like a checkpoint; the one it replaces stays as best.prev.pt
    until the epoch's checkpoint is on disk, so a kill between the two writes can roll back (`restore_best`)."""
    save_checkpoint(path, model=model, epoch=epoch, val_top1=val_top1)


def restore_best(path: Path, epoch: int, log: Callable[[str], None], rename: bool = True) -> bool:
    """Make `path` hold the weights of `epoch` (the resumed checkpoint's selected epoch); False if neither it
    nor its .prev does (the caller then restarts the trial: the selected weights cannot be recovered).

    Why: best.pt is written before the epoch's checkpoint; after a kill between the two, best.pt may hold an
    epoch the resumed run will train again, while the selected epoch's weights sit in best.prev.pt."""
    for candidate in (path, previous_checkpoint(path)):
        try:
            if candidate.exists() and read_checkpoint(candidate)["epoch"] == epoch:
                if candidate != path and rename:  # only rank 0 touches the files
                    os.replace(candidate, path)
                    log(f"rolled {path.name} back to epoch {epoch} (the epoch the resumed checkpoint selected)")
                return True
        except (OSError, DamagedCheckpoint) as e:
            log(f"warning: {candidate} is unreadable ({e})")
    log(f"warning: no intact {path.name} holds the selected epoch {epoch}; starting this trial from scratch")
    return False
