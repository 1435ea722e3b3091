"""Aggregation of a results folder: trials -> one row per configuration with mean, sample std and n.

Everything here is a pure function on pandas DataFrames except the two loaders at the top
(`load_trials`, `load_curves`), which only read. Accuracies stay FRACTIONS here; the tables and plots
scale them for display (`METRICS[name].scale`).

A configuration is a trial minus its seed: method, dataset, model, every `p.<param>` column and epochs.
Failed (and pending) trials are counted per configuration (`n_failed`, `n_pending`), never dropped.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import UserError
from harness.io import read_jsonl


@dataclass(frozen=True)
class MetricSpec:
    label: str            # axis / caption text
    short: str            # column header text
    scale: float          # display factor (fractions -> percent)
    decimals: int
    higher_is_better: bool


# Columns of trials.csv that are aggregated per configuration (all of them get mean / std / n).
METRICS: dict[str, MetricSpec] = {
    "best_top1": MetricSpec("best val top-1 (%)", "best top-1 (%)", 100.0, 2, True),
    "last_top1": MetricSpec("last val top-1 (%)", "last top-1 (%)", 100.0, 2, True),
    "best_top5": MetricSpec("best val top-5 (%)", "best top-5 (%)", 100.0, 2, True),
    "last_top5": MetricSpec("last val top-5 (%)", "last top-5 (%)", 100.0, 2, True),
    "last_nll": MetricSpec("last val NLL", "NLL", 1.0, 3, False),
    "last_ece": MetricSpec("last val ECE (%)", "ECE (%)", 100.0, 2, False),
    "train_val_gap": MetricSpec("train - val top-1 (%)", "train-val gap (%)", 100.0, 2, False),
    "step_time_s": MetricSpec("train step time (ms)", "step (ms)", 1000.0, 1, False),
    "peak_mem_bytes": MetricSpec("peak memory (bytes)", "peak mem", 1.0, 0, False),
    "state_bytes": MetricSpec("method state (bytes)", "state", 1.0, 0, False),
}
# The metrics a table can be ranked by (`tfbench table --metric`).
TABLE_METRICS = ("best_top1", "last_top1", "best_top5", "last_top5", "last_nll", "last_ece")
SHARPNESS = MetricSpec("sharpness", "sharpness", 1.0, 3, False)

# Built-in methods in the paper's order (baseline first, the seed's method last) and their display names.
METHOD_ORDER = ("ce", "ls", "tfkd", "cskd", "pskd", "ols", "zipf")
METHOD_LABELS = {"ce": "CE", "ls": "LS", "tfkd": "TF-KD", "cskd": "CS-KD", "pskd": "PS-KD", "ols": "OLS",
                 "zipf": "Zipf's LS"}
BASELINE = "ce"
CURVE_COLUMNS = ("val_top1", "train_loss")


# --- loading (reads only) -----------------------------------------------------------------------------

def load_trials(results_dir: str | Path) -> pd.DataFrame:
    path = Path(results_dir) / "trials.csv"
    if not path.is_file():
        raise UserError(f"no trials.csv in {results_dir}: give a results folder written by `tfbench run` "
                        f"(results/<sweep>/)")
    trials = pd.read_csv(path)
    missing = [c for c in ("key", "status", "method", "dataset", "model", "seed") if c not in trials.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; it is not a tfbench trials.csv")
    return with_metric_columns(trials)


def load_curves(results_dir: str | Path, trials: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch records of every finished trial, one row per (trial, epoch), with its config columns."""
    cfg = config_columns(trials)
    # Labels from the whole trials table, so that they match the tables' rows even where a
    # configuration has no curve (all its trials failed).
    labels = config_labels(trials)
    frames = []
    for i, t in trials[trials["status"] == "finished"].iterrows():
        records = read_jsonl(Path(results_dir) / "trials" / str(t["key"]) / "metrics.jsonl")
        if not records:
            continue
        df = pd.DataFrame.from_records(records)
        for c in ("epoch", *CURVE_COLUMNS):
            if c not in df.columns:
                df[c] = np.nan
        df = df[["epoch", *CURVE_COLUMNS]].copy()
        for c in (*cfg, "seed", "key"):
            df[c] = t[c]
        df["label"] = labels.loc[i]
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*cfg, "label", "seed", "key", "epoch", *CURVE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def load_sharpness(results_dir: str | Path) -> pd.DataFrame | None:
    path = Path(results_dir) / "landscape" / "sharpness.csv"
    return pd.read_csv(path) if path.is_file() else None


# --- configuration columns and labels -----------------------------------------------------------------

def param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p.")]


def config_columns(df: pd.DataFrame) -> list[str]:
    """The configuration a trial belongs to: everything that defines it except the seed."""
    return ["method", "dataset", "model", *param_columns(df), *(["epochs"] if "epochs" in df.columns else [])]


def with_metric_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """A trials table with every metric column present (absent ones as NaN) and numeric."""
    trials = trials.copy()
    for m in METRICS:
        trials[m] = pd.to_numeric(trials[m], errors="coerce") if m in trials.columns else np.nan
    return trials


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def fmt_value(v: Any) -> str:
    """A parameter value as a reader wants it: 0.1, 1.0, True, bilinear; missing -> 'none'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "none"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def value_sort_key(v: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, then strings; missing last. Works on mixed columns."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0.0, "")
    if isinstance(v, (bool, np.bool_)):
        return (1, 0.0, str(bool(v)))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _nunique(s: pd.Series) -> int:
    return s.nunique(dropna=False)


def varying_columns(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per method: the p.* columns (and epochs) that take more than one value within some dataset/model.

    These are what tell two rows of the same method apart. A parameter that differs only between
    datasets (a per-dataset preset such as lam) does not split the method's row.
    """
    candidates = [*param_columns(df), *(["epochs"] if "epochs" in df.columns else [])]
    out: dict[str, list[str]] = {}
    for method, g in df.groupby("method", sort=False):
        cells = [cell for _, cell in g.groupby(["dataset", "model"], sort=False)]
        out[str(method)] = [c for c in candidates if any(_nunique(cell[c]) > 1 for cell in cells)]
    return out


def config_labels(df: pd.DataFrame) -> pd.Series:
    """Row label of each row (trial or group): the method's display name plus its varying parameters."""
    varying = varying_columns(df)

    def label(row: pd.Series) -> str:
        cols = varying.get(str(row["method"]), [])
        base = method_label(str(row["method"]))
        if not cols:
            return base
        parts = [f"{c[2:] if c.startswith('p.') else c}={fmt_value(row[c])}" for c in cols]
        return f"{base} ({', '.join(parts)})"

    if df.empty:
        return pd.Series([], dtype=object, index=df.index)
    return df.apply(label, axis=1)


def cells(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, model) pairs in order of first appearance: the comparison table's columns."""
    return list(dict.fromkeys(zip(df["dataset"].astype(str), df["model"].astype(str), strict=True)))


# --- statistics ---------------------------------------------------------------------------------------

def mean_std_n(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1) and n of the finite values; std is NaN ("unavailable") when n < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n >= 2 else math.nan
    return mean, std, n


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value (unequal variances); NaN when either side has fewer than 2 values."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return math.nan  # both sides constant: t is undefined (scipy would warn and divide by zero)
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _ratio(num: float, den: float) -> float:
    return num / den if np.isfinite(num) and np.isfinite(den) and den > 0 else math.nan


def aggregate(trials: pd.DataFrame, *, metric: str = "best_top1", baseline: str = BASELINE) -> pd.DataFrame:
    """One row per configuration (trials minus seed).

    Columns: `label`, the config columns, `n` (finished trials), `n_failed` (status failed), `n_pending`
    (any other status: not run yet, or interrupted), and for every
    metric m in METRICS `m_mean`, `m_std`, `m_n`; then against the baseline trials (method `baseline`,
    same dataset, model and epochs): `gain` (metric mean minus the baseline's, raw units), `p_value`
    (Welch, NaN when either side has n < 2 or for the baseline itself), `time_x`, `time_x_std` (the
    method's own step-time spread over the baseline's mean step time), `mem_x` (peak memory),
    `extra_state_bytes` (the method's mean state size; the baseline keeps none).
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    trials = with_metric_columns(trials)
    cfg = config_columns(trials)
    if trials.empty:
        return pd.DataFrame(columns=["label", *cfg, "n", "n_failed", "n_pending"])
    finished = trials["status"].astype(str) == "finished"
    match = ["dataset", "model", *(["epochs"] if "epochs" in trials.columns else [])]

    rows = []
    for key, g in trials.groupby(cfg, dropna=False, sort=False):
        ok = g[finished.loc[g.index]]
        row: dict[str, Any] = dict(zip(cfg, key if isinstance(key, tuple) else (key,), strict=True))
        status = g["status"].astype(str)
        row["n"] = len(ok)
        row["n_failed"] = int((status == "failed").sum())
        row["n_pending"] = len(g) - len(ok) - row["n_failed"]  # not run yet, or the sweep was interrupted
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mean_std_n(ok[m])

        base_mask = finished & (trials["method"] == baseline)
        for c in match:
            base_mask &= trials[c] == row[c]
        base = trials[base_mask]
        is_base = row["method"] == baseline
        base_mean = mean_std_n(base[metric])[0]
        row["gain"] = row[f"{metric}_mean"] - base_mean
        row["p_value"] = math.nan if is_base else welch_p(ok[metric], base[metric])
        base_step = mean_std_n(base["step_time_s"])[0]
        row["time_x"] = _ratio(row["step_time_s_mean"], base_step)
        row["time_x_std"] = _ratio(row["step_time_s_std"], base_step)
        row["mem_x"] = _ratio(row["peak_mem_bytes_mean"], mean_std_n(base["peak_mem_bytes"])[0])
        row["extra_state_bytes"] = row["state_bytes_mean"]
        rows.append(row)

    groups = pd.DataFrame(rows)
    groups.insert(0, "label", config_labels(groups))
    return sort_groups(groups).reset_index(drop=True)


def sort_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Methods in the paper's order, then parameter values in numeric order (stable otherwise)."""
    if groups.empty:
        return groups
    pcols = [*param_columns(groups), *(["epochs"] if "epochs" in groups.columns else [])]
    order = sorted(range(len(groups)), key=lambda i: (
        method_sort_key(str(groups["method"].iloc[i])),
        tuple(value_sort_key(groups[c].iloc[i]) for c in pcols)))
    return groups.iloc[order]


def unfinished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and pending trials: listed in the summary, never dropped from it."""
    return trials[trials["status"].astype(str) != "finished"]


def best_per_method(groups: pd.DataFrame, *, dataset: str, model: str, metric: str = "best_top1") -> pd.DataFrame:
    """In one dataset/model, each method's configuration with the most finished seeds, best by the
    metric's mean among those (figures with one line or point per method use these; an ablation sweep
    would otherwise crowd them)."""
    spec = METRICS[metric]
    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)]
    keep = []
    for _, m in g.groupby("method", sort=False):
        # Most seeds first, so that a lucky single-seed configuration does not stand for the method.
        sign = -1.0 if spec.higher_is_better else 1.0
        order = sorted(m.index, key=lambda i: (-int(m.at[i, f"{metric}_n"]),
                                               np.nan_to_num(sign * float(m.at[i, f"{metric}_mean"]),
                                                             nan=np.inf)))
        keep.append(order[0])
    return sort_groups(g.loc[keep])


# --- ablations: which parameter was swept, and the Table-3 rows of it ----------------------------------

@dataclass(frozen=True)
class AblationRow:
    dataset: str
    model: str
    context: tuple[tuple[str, Any], ...]   # the other swept parameters, fixed in this row
    groups: pd.DataFrame                    # one row per value of the parameter, in value order


def swept_parameters(groups: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, p.<param>) for every parameter that takes more than one value within a dataset/model."""
    out = []
    for method in sorted(groups["method"].astype(str).unique(), key=method_sort_key):
        g = groups[groups["method"] == method]
        for c in param_columns(groups):
            vals = [cell[c].dropna() for _, cell in g.groupby(["dataset", "model"], sort=False)]
            if any(v.nunique() > 1 for v in vals):
                out.append((method, c))
    return out


def ablation_rows(groups: pd.DataFrame, *, method: str, param: str) -> list[AblationRow]:
    """The rows of the ablation table of `param`: per dataset/model, each slice in which only `param` moves.

    A one-at-a-time sweep (the seed's Table 3: alpha at the default lambda, lambda at the default alpha)
    gives one row per dataset; a full grid gives one row per combination of the other swept parameters.
    """
    g = groups[groups["method"] == method]
    rows = []
    for (dataset, model), cell in g.groupby(["dataset", "model"], sort=False):
        others = [c for c in [*param_columns(g), *(["epochs"] if "epochs" in g.columns else [])]
                  if c != param and _nunique(cell[c]) > 1]
        parts = [((), cell)] if not others else [
            (k if isinstance(k, tuple) else (k,), part)
            for k, part in cell.groupby(others, dropna=False, sort=False)]
        for k, part in parts:
            part = part[part[param].notna()]
            if part[param].nunique() < 2:
                continue
            order = sorted(range(len(part)), key=lambda i: value_sort_key(part[param].iloc[i]))
            context = tuple((c[2:] if c.startswith("p.") else c, v) for c, v in zip(others, k, strict=True))
            rows.append(AblationRow(str(dataset), str(model), context, part.iloc[order]))
    return rows


def ordered_values(values: Iterable[Any]) -> list[Any]:
    """Distinct values: numeric order when all are numbers, else the order they come in."""
    distinct = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and math.isnan(v))))
    if all(value_sort_key(v)[0] == 0 for v in distinct):
        return sorted(distinct, key=float)
    return distinct


# --- learning curves ----------------------------------------------------------------------------------

def curve_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and epoch: mean, sample std and n over seeds of val_top1 and train_loss."""
    cfg = config_columns(curves)
    out_cols = [*cfg, "label", "epoch"] + [f"{c}_{s}" for c in CURVE_COLUMNS for s in ("mean", "std", "n")]
    if curves.empty:
        return pd.DataFrame(columns=out_cols)
    if "label" not in curves.columns:
        curves = curves.assign(label=config_labels(curves))
    rows = []
    # label is constant within a configuration: grouping by it as well only carries it along.
    for key, g in curves.groupby([*cfg, "label", "epoch"], dropna=False, sort=False):
        row = dict(zip([*cfg, "label", "epoch"], key, strict=True))
        for c in CURVE_COLUMNS:
            row[f"{c}_mean"], row[f"{c}_std"], row[f"{c}_n"] = mean_std_n(pd.to_numeric(g[c], errors="coerce"))
        rows.append(row)
    out = pd.DataFrame(rows)
    return sort_groups(out.sort_values("epoch", kind="stable"))[out_cols].reset_index(drop=True)


# --- sharpness (optional, written by `tfbench landscape`) ----------------------------------------------

def aggregate_sharpness(sharpness: pd.DataFrame, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean, sample std and n of sharpness per configuration.

    The trials table, when given, supplies the p.* columns and epochs of each key, so that two
    configurations of one method stay apart; keys it lacks keep method/dataset/model only.
    """
    sharp = sharpness.copy()
    if trials is not None and "key" in sharp.columns:
        extra = [c for c in config_columns(trials) if c not in ("method", "dataset", "model")]
        sharp = sharp.merge(trials[["key", *extra]].drop_duplicates("key"), on="key", how="left")
    cfg = config_columns(sharp)
    rows = []
    for key, g in sharp.groupby(cfg, dropna=False, sort=False):
        row = dict(zip(cfg, key if isinstance(key, tuple) else (key,), strict=True))
        row["sharpness_mean"], row["sharpness_std"], row["sharpness_n"] = mean_std_n(
            pd.to_numeric(g["sharpness"], errors="coerce"))
        row["n"] = row["sharpness_n"]
        row["n_failed"] = row["n_pending"] = 0
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out.insert(0, "label", config_labels(out))
    return sort_groups(out).reset_index(drop=True)
