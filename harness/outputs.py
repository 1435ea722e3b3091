"""Output targets: the one rule for every folder a command writes its outputs into (docs/reliability.md,
"Output targets, symlinks and ownership").

`tfbench table`, `plot`, `landscape` and `zipf` write into a folder the user names (`--out`) or into their
own place in a results or trial folder (results/<sweep>/ for the summary, its plots/, landscape/, zipf/);
`run` and `train` write results and trial folders, whose objects (harness/folders.py) keep the same rules.

- Before any work: the target is a folder or can be made one, and 64 KiB can be written and synced there
  (a read-only folder, a full disk: one line, exit 2).
- Only its own files. A name is the command's own when the folder's ownership record (`.tfbench-outputs.json`:
  name -> the results folder it was made from) gives it to the same source, or, in the command's own place,
  when it is one of the command's kinds of name (written before records were kept). Any other file of that
  name (a user's `thesis.pdf`, another results folder's figure, a symbolic link) is never replaced: one line
  naming it, exit 2, nothing written. A file the command does not name is never touched.
- Outputs of an earlier run that this one did not make again (a configuration left out of the sweep) are
  removed only when they are the command's own, and only when the run made something: with nothing to
  write, the previous outputs stay.
- No symbolic link is followed out of a results folder: its own places must lie inside it.

This module imports only io, errors and folders: every command may use it.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.errors import UserError
from harness.folders import ResultsFolder, read_json
from harness.io import atomic_write_text, probe_folder

RECORD = ".tfbench-outputs.json"


def source_of(folders: Path | str | Sequence[Path | str]) -> str:
    """What an output is made from, as the ownership record names it: the results folders' absolute paths."""
    folders = [folders] if isinstance(folders, (str, Path)) else folders
    return " + ".join(os.path.abspath(f) for f in folders)


def check_links(results: ResultsFolder) -> None:
    """Refuse (one line) a results folder whose trials/, stale/ or plots/, or a trial folder in trials/, is a
    symbolic link leading out of it: tfbench would write through it into a folder it does not own."""
    root = os.path.realpath(results.path)
    places = [results / name for name in (results.TRIALS, results.STALE, "plots")]
    if (results / results.TRIALS).is_dir() and not (results / results.TRIALS).is_symlink():
        places += [Path(e.path) for e in os.scandir(results / results.TRIALS) if e.is_symlink()]
    for place in places:
        target = os.path.realpath(place)
        if place.is_symlink() and not target.startswith(root + os.sep):
            raise UserError(f"{place} is a symbolic link to {target}, outside {results.path}; tfbench writes only "
                            f"inside its results folder: remove the link (or move what it points to into place) "
                            f"and rerun")


class OutputFolder:
    """A folder a command writes its outputs into. `source`: what they are made from (`source_of`); `own`:
    True in the command's own place (results/<sweep>/plots/, ...), where names of its `kinds` (regular
    expressions) are its own without a record; `flag`: the option that names the folder, for messages;
    `within`: the folder it must not leave through a symbolic link (a results folder, for its own places)."""

    def __init__(self, path: str | Path, *, source: str, own: bool = False, kinds: Iterable[str] = (),
                 flag: str = "--out", within: str | Path | None = None):
        self.path = Path(path)
        self.source, self.own, self.flag = source, own, flag
        self.kinds = [re.compile(k) for k in kinds]
        self.within = Path(within) if within is not None else None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def open(self) -> OutputFolder:
        """Check the target before any work: a folder (or nothing yet), inside `within`, writable."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.flag} {self.path}: exists and is not a folder")
        inside = os.path.realpath(self.within) if self.within is not None else None
        if inside is not None and not os.path.realpath(self.path).startswith(inside + os.sep):
            raise UserError(f"{self.path} leads out of {self.within} (a symbolic link to "
                            f"{os.path.realpath(self.path)}); tfbench writes only inside the folder: remove the link")
        try:
            probe_folder(self.path, keep=False)
        except OSError as e:
            hint = f"give {self.flag} DIR to write elsewhere" if self.flag != "--out" else "choose another --out"
            raise UserError(f"cannot write to {self.path}: {e.strerror or e}; {hint}") from None
        return self

    def recorded(self) -> dict[str, str]:
        files = (read_json(self.path / RECORD) or {}).get("files")
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}

    def is_own(self, name: str, recorded: dict[str, str] | None = None) -> bool:
        """Whether the command may replace or remove `name` (a missing file is free to write)."""
        path = self.path / name
        if path.is_symlink():
            return False
        if not path.exists():
            return True
        owner = (self.recorded() if recorded is None else recorded).get(name)
        if owner is not None:
            return owner == self.source
        return self.own and any(k.fullmatch(name) for k in self.kinds)

    def claim(self, names: Iterable[str]) -> OutputFolder:
        """Check that every name is the command's own (else one line naming the others, nothing written),
        then record them as written from `source`. Called before the files are written: a name recorded
        but never written is a missing file, free to write next time."""
        names = list(dict.fromkeys(names))
        recorded = self.recorded()
        foreign = [n for n in names if not self.is_own(n, recorded)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"{self.path}: {shown} {'is' if len(foreign) == 1 else 'are'} not tfbench's output of "
                            f"{self.source} (another results folder's, or a file of your own); tfbench never "
                            f"replaces a file it did not write: move {'it' if len(foreign) == 1 else 'them'} away "
                            f"or choose another {self.flag}")
        self._record({**recorded, **{n: self.source for n in names}})
        return self

    def remove_earlier(self, kept: Iterable[str]) -> list[str]:
        """Remove the command's own files of its kinds that this run did not write again (`kept`): an
        earlier run's outputs for a configuration no longer in the sweep. Returns the names removed."""
        kept, recorded = set(kept), self.recorded()
        removed = []
        if self.path.is_dir():
            for entry in os.scandir(self.path):
                name = entry.name
                if name in kept or not entry.is_file(follow_symlinks=False):
                    continue
                if any(k.fullmatch(name) for k in self.kinds) and self.is_own(name, recorded):
                    os.unlink(entry.path)
                    removed.append(name)
        if removed:
            self._record({k: v for k, v in recorded.items() if k not in removed})
        return removed

    def _record(self, files: dict[str, str]) -> None:
        if files != self.recorded():
            atomic_write_text(self.path / RECORD, json.dumps({"written_by": "tfbench", "files": files}, indent=1,
                                                             sort_keys=True) + "\n")
