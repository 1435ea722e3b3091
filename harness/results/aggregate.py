"""Aggregation of a results folder: trials -> one row per configuration with mean, sample std and n,
and each configuration's paired comparison with the baseline (harness/results/stats.py).

Everything here is a pure function on pandas DataFrames except the loaders, which only read (the
trials table itself comes from harness/results/records.py). Accuracies stay FRACTIONS here; the tables
and plots scale them for display (`METRICS[name].scale`).

A configuration is a trial minus its seed: method, dataset, model, every `p.<param>` column, epochs and
protocol. Failed (and pending) trials are counted per configuration (`n_failed`, `n_pending`), never dropped.

Over 400 lines on purpose: the grouping vocabulary (config columns, labels, order) is shared by the
groups, the ablation rows, the learning curves and sharpness; one module keeps it one definition.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.results import records
from harness.results.stats import (
    DEFAULT_ALPHA,
    DEFAULT_POWER,
    holm,
    pair_by_seed,
    paired_difference,
    seeds_needed,
)


@dataclass(frozen=True)
class MetricSpec:
    label: str            # axis / caption text
    short: str            # column header text
    scale: float          # display factor (fractions -> percent)
    decimals: int
    higher_is_better: bool


# Columns of trials.csv that are aggregated per configuration (all of them get mean / std / n).
# "selected" is the reported split (clean: test; paper: the evaluation split) at the epoch the protocol
# selected; "best" is the per-epoch maximum of the selection split (clean: validation).
METRICS: dict[str, MetricSpec] = {
    "selected_top1": MetricSpec("top-1 at the selected epoch (%)", "selected top-1 (%)", 100.0, 2, True),
    "last_top1": MetricSpec("top-1 at the last epoch (%)", "last top-1 (%)", 100.0, 2, True),
    "selected_top5": MetricSpec("top-5 at the selected epoch (%)", "selected top-5 (%)", 100.0, 2, True),
    "last_top5": MetricSpec("top-5 at the last epoch (%)", "last top-5 (%)", 100.0, 2, True),
    "selected_nll": MetricSpec("NLL at the selected epoch", "selected NLL", 1.0, 3, False),
    "last_nll": MetricSpec("NLL at the last epoch", "NLL", 1.0, 3, False),
    "selected_ece": MetricSpec("ECE at the selected epoch (%)", "selected ECE (%)", 100.0, 2, False),
    "last_ece": MetricSpec("ECE at the last epoch (%)", "ECE (%)", 100.0, 2, False),
    "val_selected_top1": MetricSpec("selection-split top-1 at the selected epoch (%)", "val top-1 (%)", 100.0, 2,
                                    True),
    "best_top1": MetricSpec("best per-epoch selection-split top-1 (%)", "best val top-1 (%)", 100.0, 2, True),
    "best_top5": MetricSpec("best per-epoch selection-split top-5 (%)", "best val top-5 (%)", 100.0, 2, True),
    "train_val_gap": MetricSpec("train - val top-1 (%)", "train-val gap (%)", 100.0, 2, False),
    "step_time_s": MetricSpec("train step time (ms)", "step (ms)", 1000.0, 1, False),
    "peak_mem_bytes": MetricSpec("peak memory (bytes)", "peak mem", 1.0, 0, False),
    "state_bytes": MetricSpec("method state (bytes)", "state", 1.0, 0, False),
}
# The metrics a table can be ranked by (`tfbench table --metric`).
TABLE_METRICS = ("selected_top1", "last_top1", "selected_top5", "last_top5", "selected_nll", "last_nll",
                 "selected_ece", "last_ece", "val_selected_top1", "best_top1", "best_top5")
DEFAULT_METRIC = "selected_top1"
# Records written before protocols existed have the best epoch on the evaluation split (paper) as best_*.
LEGACY = "legacy"
_LEGACY_FALLBACK = {"selected_top1": "best_top1", "selected_top5": "best_top5", "val_selected_top1": "best_top1",
                    "selected_epoch": "best_epoch"}
SHARPNESS = MetricSpec("sharpness", "sharpness", 1.0, 3, False)

# Built-in methods in the paper's order (baseline first, the seed's method last) and their display names.
METHOD_ORDER = ("ce", "ls", "tfkd", "cskd", "pskd", "ols", "zipf")
METHOD_LABELS = {"ce": "CE", "ls": "LS", "tfkd": "TF-KD", "cskd": "CS-KD", "pskd": "PS-KD", "ols": "OLS",
                 "zipf": "Zipf's LS"}
BASELINE = "ce"
CURVE_COLUMNS = ("val_top1", "train_loss")


# --- loading (reads only) -----------------------------------------------------------------------------

def load_trials(results_dir: str | Path, *, warn: records.Warn = records.warn_stderr) -> pd.DataFrame:
    """trials.csv (rebuilt from the trial records when damaged, stale rows left out) with every metric."""
    trials = records.load_trials(results_dir, warn=warn)
    left_out = trials.attrs.get("stale_left_out", 0)
    trials = with_metric_columns(trials)
    trials.attrs["stale_left_out"] = left_out
    return trials


def load_curves(results_dir: str | Path, trials: pd.DataFrame, *,
                warn: records.Warn = records.warn_stderr) -> pd.DataFrame:
    """Per-epoch records of every finished trial, one row per (trial, epoch), with its config columns;
    a damaged line of a metrics.jsonl is skipped with one warning."""
    cfg = config_columns(trials)
    # Labels from the whole trials table, so that they match the tables' rows even where a
    # configuration has no curve (all its trials failed).
    labels = config_labels(trials)
    frames = []
    for i, t in trials[trials["status"] == "finished"].iterrows():
        lines = records.read_jsonl_records(Path(results_dir) / "trials" / str(t["key"]) / "metrics.jsonl",
                                           warn=warn)
        if not lines:
            continue
        df = pd.DataFrame.from_records(lines)
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


def _setting_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("epochs", "protocol") if c in df.columns]


def config_columns(df: pd.DataFrame) -> list[str]:
    """The configuration a trial belongs to: everything that defines it except the seed."""
    return ["method", "dataset", "model", *param_columns(df), *_setting_columns(df)]


def with_metric_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """A trials table with every metric column present (absent ones as NaN) and numeric, and a protocol
    on every row: records from before protocols existed are `legacy`, their selected_* taken from best_*
    (what those records reported: the best epoch on the evaluation split)."""
    trials = trials.copy()
    for m in [*METRICS, "selected_epoch", "best_epoch"]:
        trials[m] = pd.to_numeric(trials[m], errors="coerce") if m in trials.columns else np.nan
    protocol = trials["protocol"] if "protocol" in trials.columns else pd.Series(np.nan, index=trials.index)
    protocol = protocol.astype(object).where(protocol.notna() & (protocol.astype(str).str.strip() != ""), LEGACY)
    trials["protocol"] = protocol.astype(str)
    legacy = trials["protocol"] == LEGACY
    for new, old in _LEGACY_FALLBACK.items():
        trials.loc[legacy, new] = trials.loc[legacy, new].fillna(trials.loc[legacy, old])
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
    candidates = [*param_columns(df), *_setting_columns(df)]
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


def _ratio(num: float, den: float) -> float:
    return num / den if np.isfinite(num) and np.isfinite(den) and den > 0 else math.nan


def _by_seed(trials: pd.DataFrame, metric: str) -> dict[int, float]:
    """seed -> value (the mean, should a configuration hold one seed twice)."""
    if trials.empty:
        return {}
    return {int(k): float(v) for k, v in trials.groupby("seed")[metric].mean().items()}


def aggregate(trials: pd.DataFrame, *, metric: str = DEFAULT_METRIC, baseline: str = BASELINE,
              alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> pd.DataFrame:
    """One row per configuration (trials minus seed).

    Columns: `label`, the config columns, `n` (finished trials), `n_failed` (status failed), `n_pending`
    (any other status: not run yet, or interrupted), and for every metric m in METRICS `m_mean`, `m_std`,
    `m_n`. Against the baseline trials (method `baseline`, same dataset, model, epochs and protocol):
    `gain` (metric mean minus the baseline's, raw units); the paired comparison over the seeds both have
    (`n_paired`, `diff_mean`, `diff_sd`, `diff_ci_low`, `diff_ci_high` (95%, t), `p_value` (paired t),
    `p_holm` (Holm over the configurations compared with the same baseline), `significant` (p_holm <
    alpha), `better` (significant and in the metric's better direction), `n_needed` (seeds for `power` at
    the observed difference, NaN when none would do), `underpowered` (n_paired < n_needed, or no n would
    do)); `time_x`, `time_x_std` (the method's own step-time spread over the baseline's mean step time),
    `mem_x` (peak memory), `extra_state_bytes` (the method's mean state size; the baseline keeps none).
    The baseline's own row has NaN / False in the comparison columns.
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    trials = with_metric_columns(trials)
    cfg = config_columns(trials)
    if trials.empty:
        return pd.DataFrame(columns=["label", *cfg, "n", "n_failed", "n_pending"])
    finished = trials["status"].astype(str) == "finished"
    match = ["dataset", "model", *_setting_columns(trials)]

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
        row["gain"] = row[f"{metric}_mean"] - mean_std_n(base[metric])[0]
        # the baseline against itself is no comparison: empty pairs give NaN in every column
        pair = paired_difference(*pair_by_seed({} if is_base else _by_seed(ok, metric), _by_seed(base, metric)))
        row.update(n_paired=pair.n, diff_mean=pair.mean, diff_sd=pair.sd, diff_ci_low=pair.ci_low,
                   diff_ci_high=pair.ci_high, p_value=pair.p)
        base_step = mean_std_n(base["step_time_s"])[0]
        row["time_x"] = _ratio(row["step_time_s_mean"], base_step)
        row["time_x_std"] = _ratio(row["step_time_s_std"], base_step)
        row["mem_x"] = _ratio(row["peak_mem_bytes_mean"], mean_std_n(base["peak_mem_bytes"])[0])
        row["extra_state_bytes"] = row["state_bytes_mean"]
        row["_family"] = tuple(str(row[c]) for c in match)
        rows.append(row)

    groups = pd.DataFrame(rows)
    groups["p_holm"] = math.nan
    for _, fam in groups.groupby("_family", sort=False):
        groups.loc[fam.index, "p_holm"] = holm(fam["p_value"].to_numpy(float))
    groups = groups.drop(columns="_family")
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    groups["significant"] = groups["p_holm"].lt(alpha)
    groups["better"] = groups["significant"] & (sign * groups["diff_mean"] > 0)
    needed = [seeds_needed(effect=m, sd=sd, alpha=alpha, power=power) if n >= 2 else None
              for m, sd, n in zip(groups["diff_mean"], groups["diff_sd"], groups["n_paired"], strict=True)]
    groups["n_needed"] = [math.nan if k is None else float(k) for k in needed]
    groups["underpowered"] = [n >= 2 and (k is None or n < k)
                              for n, k in zip(groups["n_paired"], needed, strict=True)]
    groups.insert(0, "label", config_labels(groups))
    return sort_groups(groups).reset_index(drop=True)


def sort_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Methods in the paper's order, then parameter values in numeric order (stable otherwise)."""
    if groups.empty:
        return groups
    pcols = [*param_columns(groups), *_setting_columns(groups)]
    order = sorted(range(len(groups)), key=lambda i: (
        method_sort_key(str(groups["method"].iloc[i])),
        tuple(value_sort_key(groups[c].iloc[i]) for c in pcols)))
    return groups.iloc[order]


def unfinished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and pending trials: listed in the summary, never dropped from it."""
    return trials[trials["status"].astype(str) != "finished"]


def best_per_method(groups: pd.DataFrame, *, dataset: str, model: str, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
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
        others = [c for c in [*param_columns(g), *_setting_columns(g)]
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
