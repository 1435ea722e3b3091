"""The per-epoch records of a results folder's trials (their metrics.jsonl) and their mean, sample std and n
over seeds per configuration and epoch: what the learning curves draw. Reads files only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.folders import ResultsFolder
from harness.results import records
from harness.results.aggregate import config_columns, config_labels, sort_groups


def load_curves(results_dir: str | Path, trials: pd.DataFrame, *,
                      warn: records.Warn = records.warn_stderr) -> pd.DataFrame:
    """Per-epoch records of every finished trial, one row per (trial, epoch), with its config columns,
    `label`, `seed`, `key`, `epoch` and every `val_*` and `train_*` column its metrics.jsonl has (a column
    a trial does not log is NaN in its rows); a damaged line is skipped with one warning."""
    cfg = config_columns(trials)
    labels = config_labels(trials)  # from the whole table, so that they match the tables' rows
    frames = []
    for i, t in trials[trials["status"] == "finished"].iterrows():
        trial = ResultsFolder(results_dir).trial(str(t["key"]))
        lines = records.read_jsonl_records(trial / trial.METRICS, warn=warn)
        if not lines:
            continue
        df = pd.DataFrame.from_records(lines)
        keep = ["epoch", *[c for c in df.columns if c.startswith(("val_", "train_"))]]
        df = df.reindex(columns=keep)
        for c in (*cfg, "seed", "key"):
            df[c] = t[c]
        df["label"] = labels.loc[i]
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*cfg, "label", "seed", "key", "epoch", "val_top1", "train_loss"])
    return pd.concat(frames, ignore_index=True)


def curve_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and epoch: `<col>_mean`, `<col>_std` (sample, ddof=1; NaN for one seed) and `<col>_n`
    over seeds of every `val_*` and `train_*` column (finite values only, as `aggregate.mean_std_n`)."""
    cfg = config_columns(curves)
    cols = [c for c in curves.columns if c.startswith(("val_", "train_"))]
    keys = [*cfg, "label", "epoch"]
    if curves.empty:
        return pd.DataFrame(columns=keys + [f"{c}_{s}" for c in cols for s in ("mean", "std", "n")])
    if "label" not in curves.columns:
        curves = curves.assign(label=config_labels(curves))
    values = curves[cols].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    grouped = pd.concat([curves[keys], values], axis=1).groupby(keys, dropna=False, sort=False)
    out = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}, axis=1)
    out.columns = [f"{c}_{s}" for s, c in out.columns]
    out = out.reset_index()
    return sort_groups(out.sort_values("epoch", kind="stable")).reset_index(drop=True)
