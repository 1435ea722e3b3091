"""The per-trial records of a results folder and the `trials.csv` built from them (reads and rebuilds).

Why the trial folders are the source of truth and `trials.csv` a cache: each trial writes its own
`config.json`, `result.json` or `error.json` atomically, so they survive what can damage one shared file
(a full disk, a copy cut short, an editor). A damaged `trials.csv` is therefore rebuilt from them with
one warning instead of stopping every reader. The runner writes `trials.csv` through here too, so there
is one definition of its columns. Nothing here imports the runner.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserError, printable
from harness.folders import KEY_RULE, STATUSES, ResultsFolder, read_bounded, read_lines, result_problem
from harness.io import atomic_write_text, csv_text
from harness.metrics import columns as result_columns

if TYPE_CHECKING:  # pandas only for the readers: the runner imports this module for trials.csv
    import pandas as pd

Warn = Callable[[str], None]

LEAD_COLUMNS = ["key", "status", "stale", "error", "method", "dataset", "model", "seed", "epochs", "protocol",
                "select"]
# Records written before train.select existed selected the first epoch of the highest validation top-1.
LEGACY_SELECT = "top1_first"
REQUIRED_COLUMNS = ("key", "status", "method", "dataset", "model", "seed")


def warn_stderr(message: str) -> None:
    print(f"tfbench: warning: {printable(message)}", file=sys.stderr, flush=True)


# --- trials.csv ----------------------------------------------------------------------------------

def dataset_label(spec: dict[str, Any]) -> Any:
    """The name tables give a trial's data set: its `label` parameter where it has one (`folder`), else its name."""
    return (spec.get("dataset_params") or {}).get("label") or spec.get("dataset")


def trial_row(folder: Path, key: str, spec: dict[str, Any], *, stale: bool = False,
              warn: Warn = warn_stderr) -> dict[str, Any]:
    """The trials.csv row of one trial: its resolved spec (as TrialSpec.to_dict) plus its record. A finished
    record that cannot be counted (another trial's, or an implausible number) is one warning and the trial
    is not counted as finished."""
    trial = ResultsFolder(folder).trial(key)
    status = trial.status()
    problem = trial.problem()
    if problem:
        warn(f"{trial / trial.RESULT}: not counted: {problem}")
    damage = spec_problem(spec)
    if damage:  # the trial's own config.json is the source of truth; without a sound one it is not counted
        own = trial.spec()
        if own is not None and spec_problem(own) is None:
            warn(f"{folder / 'sweep.yaml'}: the record of trial {key} is damaged ({damage}); read from its config.json")
            spec = own
        else:
            warn(f"{folder / 'sweep.yaml'}: the record of trial {key} is damaged ({damage}); not counted")
            spec, status = {k: v for k, v in spec.items() if k in ("method", "dataset", "model", "seed")}, "pending"
    train = spec.get("train") or {}
    row: dict[str, Any] = {"key": key, "status": status, "stale": bool(stale), "method": spec.get("method"),
                           "dataset": dataset_label(spec), "model": spec.get("model"), "seed": spec.get("seed"),
                           "epochs": train.get("epochs"), "protocol": train.get("protocol", ""),
                           "select": train.get("select", LEGACY_SELECT)}
    row.update({f"p.{k}": v for k, v in (spec.get("method_params") or {}).items()})
    if status == "finished":
        result = trial.result() or {}
        columns = set(result_columns())
        row.update({k: v for k, v in result.items() if k in columns})
        row["protocol"] = result.get("protocol", row["protocol"])
    elif status == "failed":
        row["error"] = trial.error()
    return row


def spec_problem(spec: dict[str, Any]) -> str | None:
    """Why a recorded spec cannot be a trial's (a part that must be a mapping is not), or None."""
    for part in ("method_params", "train", "dataset_params", "model_params"):
        if spec.get(part) is not None and not isinstance(spec[part], dict):
            return f"its {part} is a {type(spec[part]).__name__}; allowed: a mapping"
    return None


def trials_csv_text(rows: Sequence[dict[str, Any]]) -> str:
    param_names = sorted({k for r in rows for k in r if k.startswith("p.")})
    header = [*LEAD_COLUMNS, *param_names, *result_columns()]  # the result's: harness/metrics.py
    return csv_text(header, ([r.get(c, "") for c in header] for r in rows))  # a column a row lacks: empty


def write_trials_csv(folder: Path, specs: Iterable[tuple[str, dict[str, Any]]], *,
                     stale: Collection[str] = (), warn: Warn = warn_stderr) -> Path:
    """One flat row per (key, resolved spec dict), in the given order: the source of every table.
    `stale`: keys of finished trials whose stored spec no longer matches the sweep."""
    rows = [trial_row(folder, key, spec, stale=key in stale, warn=warn) for key, spec in specs]
    path = folder / "trials.csv"
    atomic_write_text(path, trials_csv_text(rows))
    return path


def recorded_specs(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(key, spec) of the sweep: from sweep.yaml's trial list (pending trials included), else from
    every trials/<key>/config.json that can be read (a folder with neither is not a trial of ours)."""
    results = ResultsFolder(folder)
    listed = results.recorded_trials()
    if listed:
        return listed
    out = []
    for trial in results.trial_folders():
        config = trial.config()
        if config and isinstance(config.get("spec"), dict):
            out.append((str(config.get("key") or trial.key), config["spec"]))
    return out


MAX_TRIALS_CSV = 256 * 1024**2  # 10,000 trials are a few MB


def damage_of(path: Path) -> str | None:
    """Why `path` is not a usable trials.csv (not a regular file, too large, empty, not text, header cut, a
    row cut), or None."""
    data = read_bounded(path, MAX_TRIALS_CSV)
    if data is None:
        return "it is not a regular file of at most 256 MiB"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    if not text.strip():
        return "it is empty"
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        return f"it is not CSV ({e})"
    header = rows[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return f"its header lacks {', '.join(missing)} (cut short, or not a tfbench trials.csv)"
    for i, row in enumerate(rows[1:], start=2):
        if row and len(row) != len(header):
            return f"line {i} has {len(row)} fields where the header has {len(header)} (cut short or edited)"
        if row and row[header.index("status")] not in STATUSES:
            return f"line {i} has status {row[header.index('status')]!r}; allowed: {', '.join(STATUSES)}"
    return None


def out_of_date(folder: Path, path: Path) -> str | None:
    """Why a sound trials.csv no longer says what the trial folders say (they are the source of truth): a
    trial it lists as finished whose folder holds its config.json but no finished result.json (removed or
    damaged since). A row without a trial folder stands: trials.csv is then all that is left of it."""
    rows = list(csv.DictReader(io.StringIO((read_bounded(path, MAX_TRIALS_CSV) or b"").decode("utf-8", "replace"))))
    results = ResultsFolder(folder)
    gone = [r["key"] for r in rows if r.get("status") == "finished" and KEY_RULE.fullmatch(r.get("key") or "")
            and ".." not in r["key"] and (results / results.TRIALS / r["key"] / "config.json").is_file()
            and results.trial(r["key"]).status() != "finished"]
    if not gone:
        return None
    return (f"it lists {len(gone)} trial(s) as finished whose folders hold no finished result.json (e.g. "
            f"trials/{gone[0]}/)")


def load_trials(results_dir: str | Path, *, warn: Warn = warn_stderr, write: bool = True) -> pd.DataFrame:
    """trials.csv as a DataFrame, rebuilt from the trial records when it is missing or damaged (and written
    back unless `write` is False or a run holds the folder), without the stale rows (their count in
    `.attrs["stale_left_out"]`, and one warning)."""
    import pandas as pd

    folder = Path(results_dir)
    path = folder / "trials.csv"
    damage = damage_of(path) if path.exists() else "it is missing"
    damage = damage or out_of_date(folder, path)
    if damage is not None:
        specs = recorded_specs(folder)
        if not specs:
            if not path.is_file():
                raise UserError(f"no trials.csv in {folder}: give a results folder written by `tfbench run` "
                                f"(results/<sweep>/)")
            raise UserError(f"{path} is damaged ({damage}) and {folder} has no sweep.yaml or trials/*/config.json "
                            f"to rebuild it from; rerun the sweep with `tfbench run` to rewrite it")
        rows = [trial_row(folder, key, spec) for key, spec in specs]
        text = trials_csv_text(rows)
        if ResultsFolder(folder).is_locked():
            where = "used as rebuilt, not written: a `tfbench run` holds this folder and rewrites it when done"
        elif not write:
            where = "used as rebuilt, not written (--out)"
        else:
            if path.is_file():  # kept for inspection; everything in it is derivable from the records
                os.replace(path, folder / "trials.csv.damaged")
            atomic_write_text(path, text)
            where = "rewritten" + ("; the damaged file is kept as trials.csv.damaged" if damage != "it is missing"
                                   else "")
        warn(f"{path}: {damage}; rebuilt from {len(rows)} trial records ({where})")
        trials = pd.read_csv(io.StringIO(text))
    else:
        trials = pd.read_csv(io.BytesIO(read_bounded(path, MAX_TRIALS_CSV) or b""))
    trials = without_implausible(trials, warn=warn)
    # against the sweep as last run: a folder whose spec another key now answers is stale even if the csv
    # (written before, or rebuilt from every record) does not say so
    stale = ResultsFolder(folder).stale_keys()
    if stale and "key" in trials.columns:
        marked = trials["stale"].astype(str).str.strip().str.lower().isin(("true", "1", "yes")) \
            if "stale" in trials.columns else False
        trials["stale"] = marked | trials["key"].isin(stale)
    return without_stale(trials, warn=warn)


def without_implausible(trials: pd.DataFrame, *, warn: Warn = warn_stderr) -> pd.DataFrame:
    """A finished row whose numbers a tfbench trial cannot have written (a string, NaN, a top-1 of 7.5, a row
    naming another trial's key twice) is one warning and is not counted: its status becomes pending."""
    if "status" not in trials.columns:
        return trials
    trials = trials.copy()
    finished = trials["status"].astype(str) == "finished"
    bad, columns = [], set(result_columns())
    for i in trials.index[finished]:
        row = {k: _plain(v) for k, v in trials.loc[i].items() if k in columns}
        problem = result_problem(row, None)
        if problem:
            bad.append(f"{trials.at[i, 'key']} ({problem})")
            trials.at[i, "status"] = "pending"
    if "key" in trials.columns:  # a key is one folder name; one listed twice is one trial counted twice
        keys = trials["key"].astype(str)
        invalid = ~keys.map(lambda k: bool(KEY_RULE.fullmatch(k)) and ".." not in k)
        duplicated = keys.duplicated(keep="first")
        bad += [f"{k[:60]!r} (not a trial key)" for k in keys[invalid]]
        bad += [f"{k} (listed twice)" for k in keys[duplicated & ~invalid]]
        trials = trials[~(invalid | duplicated)]
    if bad:
        warn(f"trials.csv: {len(bad)} row(s) not counted: " + "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else ""))
    return trials.reset_index(drop=True)


def _plain(value: Any) -> Any:
    """A cell as result.json would hold it: numpy scalars as Python numbers, an empty (NaN) cell as absent."""
    value = value.item() if hasattr(value, "item") and not isinstance(value, str) else value
    return None if isinstance(value, float) and math.isnan(value) else value


def without_stale(trials: pd.DataFrame, *, warn: Warn = warn_stderr) -> pd.DataFrame:
    if "stale" not in trials.columns:
        trials.attrs["stale_left_out"] = 0
        return trials
    stale = trials["stale"].astype(str).str.strip().str.lower().isin(("true", "1", "yes"))
    kept = trials[~stale].reset_index(drop=True)
    kept.attrs["stale_left_out"] = int(stale.sum())
    if stale.any():
        warn(f"left out {int(stale.sum())} stale trial(s): finished under a spec the sweep no longer means "
             f"(`tfbench run --rerun-stale` retrains them)")
    return kept


# --- per-epoch records and temporaries -----------------------------------------------------------

def read_jsonl_records(path: Path, *, warn: Warn = warn_stderr) -> list[dict[str, Any]]:
    """The JSON-object lines of a file, read in bounded time and memory (a named pipe or a huge file is one
    warning); damaged lines are skipped with one warning naming file and lines."""
    lines, problem = read_lines(path)
    if problem:
        warn(f"{path}: {problem}")
    records, bad = [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warn(f"{path}: line{'s' if len(bad) > 1 else ''} {shown} not a JSON record; skipped")
    return records


def sweep_alpha(folder: Path, default: float) -> float:
    """The significance level of the sweep: `alpha:` of the sweep file recorded in sweep.yaml, else default."""
    alpha = ResultsFolder(folder).sweep_value("alpha")
    if alpha is None:
        return default
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise UserError(f"{folder / 'sweep.yaml'}: alpha is {alpha!r}; allowed: a number in (0, 1), e.g. 0.05")
    return float(alpha)


def sweep_primary(folder: Path, default: str, allowed: Sequence[str]) -> str:
    """The metric the sweep's verdicts are made on: `primary_metric:` recorded in sweep.yaml, else default."""
    primary = ResultsFolder(folder).sweep_value("primary_metric")
    if primary is None:
        return default
    if primary not in allowed:
        raise UserError(f"{folder / 'sweep.yaml'}: primary_metric is {primary!r}; allowed: {', '.join(allowed)}")
    return str(primary)


def sweep_rope(folder: Path) -> float | None:
    """The region of practical equivalence of the sweep (`rope:`, display units), else None (the default)."""
    rope = ResultsFolder(folder).sweep_value("rope")
    if rope is None:
        return None
    if isinstance(rope, bool) or not isinstance(rope, (int, float)) or not rope >= 0:
        raise UserError(f"{folder / 'sweep.yaml'}: rope is {rope!r}; allowed: a number >= 0, e.g. 0.5 (points)")
    return float(rope)


def sweep_all_pairs(folder: Path) -> bool:
    """Whether the sweep asks for the all-pairs table across data sets (`all_pairs:`, default false)."""
    value = ResultsFolder(folder).sweep_value("all_pairs")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UserError(f"{folder / 'sweep.yaml'}: all_pairs is {value!r}; allowed: true or false")
    return value


def split_per_seed(folder: Path) -> bool:
    """Whether the sweep drew its validation split per seed (`train.split_per_seed:`)."""
    train = ResultsFolder(folder).sweep_value("train")
    return bool(isinstance(train, dict) and train.get("split_per_seed"))
