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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import catalog
from harness.errors import UserError
from harness.metrics import DEFAULT_PRIMARY, Aggregated, Metric, legacy_sources, table_metrics
from harness.results import records
from harness.results.bootstrap import Reader, bootstrap_cells
from harness.results.costs import controlled_costs, with_costs
from harness.results.estimates import add_estimates
from harness.results.stats import (
    DEFAULT_ALPHA,
    DEFAULT_POWER,
    holm,
    pair_by_seed,
    paired_difference,
)

# The metrics aggregated per configuration (all of them get mean / std / n), the ones a table can be ranked by
# (`tfbench table --metric`): read from the vocabulary (harness/metrics.py), where each is defined once.
METRICS: Mapping[str, Metric] = Aggregated()
TABLE_METRICS = table_metrics()
DEFAULT_METRIC = DEFAULT_PRIMARY  # the primary metric when a sweep names none


def companion(metric: str) -> str | None:
    """The same quantity at the other epoch (selected_x <-> last_x): whether a mark on one holds on the other
    is shown beside it (`confirmed`). None for the selection split's own metrics."""
    for a, b in (("selected_", "last_"), ("last_", "selected_")):
        if metric.startswith(a) and b + metric[len(a):] in METRICS:
            return b + metric[len(a):]
    return None


# Records written before protocols existed have the best epoch on the evaluation split (paper) as best_*.
LEGACY = "legacy"
SHARPNESS = Metric("sharpness", "sharpness", "sharpness", 1.0, 3, False)

BASELINE = "ce"


# --- loading (reads only) -----------------------------------------------------------------------------

def load_trials(results_dir: str | Path, *, warn: records.Warn = records.warn_stderr,
                write: bool = True) -> pd.DataFrame:
    """trials.csv (rebuilt from the trial records when damaged, stale rows left out) with every metric;
    `write=False` keeps a rebuilt table in memory (the folder is not written)."""
    trials = records.load_trials(results_dir, warn=warn, write=write)
    from harness.folders import ResultsFolder  # a user's methods' labels, as the sweep recorded them

    catalog.remember_labels((ResultsFolder(results_dir).sweep_record() or {}).get("labels"))
    left_out = trials.attrs.get("stale_left_out", 0)
    trials = with_costs(with_metric_columns(trials), results_dir)  # in memory only: trials.csv is not changed
    trials.attrs["stale_left_out"] = left_out
    return trials


def load_sharpness(results_dir: str | Path) -> pd.DataFrame | None:
    path = Path(results_dir) / "landscape" / "sharpness.csv"
    return pd.read_csv(path) if path.is_file() else None


# --- configuration columns and labels -----------------------------------------------------------------

def param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p.")]


def setting_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("epochs", "protocol", "select") if c in df.columns]


def family_columns(df: pd.DataFrame) -> list[str]:
    """What a configuration shares with the baseline it is compared with (one Holm family)."""
    return ["dataset", "model", *setting_columns(df)]


def config_columns(df: pd.DataFrame) -> list[str]:
    """The configuration a trial belongs to: everything that defines it except the seed."""
    return ["method", "dataset", "model", *param_columns(df), *setting_columns(df)]


def with_metric_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """A trials table with every metric column present (absent ones as NaN) and numeric, and a protocol
    on every row: records from before protocols existed are `legacy`, their selected_* taken from best_*
    (what those records reported: the best epoch on the evaluation split)."""
    trials = trials.copy()
    fallback = legacy_sources()
    for m in [*METRICS, *(old for old in dict.fromkeys(fallback.values()) if old not in METRICS)]:
        trials[m] = pd.to_numeric(trials[m], errors="coerce") if m in trials.columns else np.nan
    protocol = trials["protocol"] if "protocol" in trials.columns else pd.Series(np.nan, index=trials.index)
    protocol = protocol.astype(object).where(protocol.notna() & (protocol.astype(str).str.strip() != ""), LEGACY)
    trials["protocol"] = protocol.astype(str)
    legacy = trials["protocol"] == LEGACY
    for new, old in fallback.items():
        trials.loc[legacy, new] = trials.loc[legacy, new].fillna(trials.loc[legacy, old])
    return trials


# A method's display name and place in a table are declared on the method (harness/config/catalog.py reads them).
method_label, method_sort_key = catalog.label, catalog.order


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


def nunique(s: pd.Series) -> int:
    return s.nunique(dropna=False)


def varying_columns(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per method: the p.* columns (and epochs) that take more than one value within some dataset/model.

    These are what tell two rows of the same method apart. A parameter that differs only between
    datasets (a per-dataset preset such as lam) does not split the method's row.
    """
    candidates = [*param_columns(df), *setting_columns(df)]
    out: dict[str, list[str]] = {}
    for method, g in df.groupby("method", sort=False):
        cells = [cell for _, cell in g.groupby(["dataset", "model"], sort=False)]
        out[str(method)] = [c for c in candidates if any(nunique(cell[c]) > 1 for cell in cells)]
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


VERDICTS = ("better", "worse", "identical", "sensitive", "none")


def verdict(*, diff: float, identical: bool, p_holm: float, alpha: float, higher_is_better: bool) -> str:
    """`better` / `worse` than the baseline when the Holm-adjusted p of the primary metric is below alpha;
    `identical`: every paired difference is zero; `none` otherwise. One rule, and the one every stated
    power is for (`mdd`, `power_at_effect`, `seeds_for_effect` at Holm's level alpha / k): the other
    epoch's agreement is a sensitivity column (`confirmed`), never a second gate."""
    if identical:
        return "identical"
    if not (math.isfinite(p_holm) and p_holm < alpha and math.isfinite(diff) and diff != 0):
        return "none"
    return "better" if (diff > 0) == higher_is_better else "worse"


def confirmed(*, verdict: str, diff: float, companion_diff: float | None, companion_holm: float | None,
              alpha: float) -> str:
    """Whether a mark holds at the other epoch too (same sign, its own Holm p < alpha): `yes` / `no`; ''
    for an unmarked row or one without the companion (records from before it existed)."""
    if verdict not in ("better", "worse") or companion_holm is None:
        return ""
    agree = (companion_diff is not None and math.isfinite(companion_diff) and companion_diff * diff > 0
             and math.isfinite(companion_holm) and companion_holm < alpha)
    return "yes" if agree else "no"


def _paired_columns(groups: list[dict[str, Any]], finished: dict[int, pd.DataFrame],
                    base_of: dict[int, pd.DataFrame], metric: str, prefix: str) -> None:
    """The paired comparison on `metric` of every row with its baseline, as `<prefix>...` columns."""
    for i, row in enumerate(groups):
        is_base = row["_is_base"]
        a, b = pair_by_seed({} if is_base else _by_seed(finished[i], metric), _by_seed(base_of[i], metric))
        pair = paired_difference(a, b)
        row[f"_{prefix}diffs"] = a - b  # (n,) per seed, for the estimates; dropped before the table
        row.update({f"{prefix}n_paired": pair.n, f"{prefix}diff_mean": pair.mean, f"{prefix}diff_sd": pair.sd,
                    f"{prefix}diff_ci_low": pair.ci_low, f"{prefix}diff_ci_high": pair.ci_high,
                    f"{prefix}p_value": pair.p, f"{prefix}identical": pair.identical})


def _paired_keys(ok: pd.DataFrame, base: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    """(method's trial key, baseline's) for each seed both finished with a finite `metric`, in seed order."""
    def keys(t: pd.DataFrame) -> dict[int, str]:
        t = t[np.isfinite(t[metric].to_numpy(float))]
        return dict(zip(t["seed"].astype(int), t["key"].astype(str), strict=True))
    a, b = keys(ok), keys(base)
    return [(a[s], b[s]) for s in sorted(set(a) & set(b))]


def _holm_by_family(df: pd.DataFrame, column: str) -> pd.Series:
    """Holm over each family (one dataset / model / settings); the baseline's own row is not a member."""
    out = pd.Series(math.nan, index=df.index)
    members = df[~df["_is_base"]]
    for _, fam in members.groupby("_family", sort=False):
        out.loc[fam.index] = holm(fam[column].to_numpy(float))
    return out


def aggregate(trials: pd.DataFrame, *, metric: str = DEFAULT_METRIC, baseline: str = BASELINE,
              alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER, effect: float | None = None,
              rope: float | None = None, predictions: Reader | None = None) -> pd.DataFrame:
    """One row per configuration (trials minus seed).

    Columns: `label`, the config columns, `n` (finished trials), `n_failed` (status failed), `n_pending`
    (any other status: not run yet, or interrupted), `seeds` (the finished seeds, e.g. "0,1,2") and
    `seeds_differ` (they are not the baseline's), and for every metric m in METRICS `m_mean`, `m_std`,
    `m_n`. Against the baseline trials (method `baseline`, same dataset, model, epochs, protocol and
    selection rule): `gain` (metric mean minus the baseline's, raw units); the paired comparison over the
    seeds both have (`n_paired`, `diff_mean`, `diff_sd`, `diff_ci_low`, `diff_ci_high` (95%, t),
    `p_value` (paired t; 1 when `identical`), `p_holm` (Holm over every configuration compared with the
    same baseline)); the same for the companion metric (`c_...`, see `companion`); `verdict` (see
    `verdict`), `confirmed` (the mark holds at the other epoch: yes / no), `better`, `worse`; what the rule
    can detect, at Holm's first step alpha / k (k = `family_size`): `mdd` (the smallest difference the paired
    seeds detect with `power`, raw units), `effect` (raw units: `effect` in display units, else the
    metric's default), `power_at_effect` and `seeds_for_effect` (seeds that detect it with `power`; NaN
    when no finite number would); the estimates beside the mark (harness/results/estimates.py):
    `sim_ci_low`, `sim_ci_high` (simultaneous, 1 - alpha/k), `rope` (raw units: `rope` in display units,
    else half the metric's effect), `prob_worse`, `prob_equivalent`, `prob_better`, `seeds_won`; `paired_diffs`
    (the per-seed differences, (n_paired,): not in summary.csv); the costs: `time_x`, `mem_x` and their
    companions from the controlled measurement of the configuration (`controlled_costs`; NaN where there is
    none, `cost_status` says why), `time_x_observed`, `time_x_observed_std`, `mem_x_observed` (the sweep's own
    mean step time and peak memory over the baseline's, observed on a shared machine), `extra_state_bytes` (the
    method's mean state size; the baseline keeps none).
    The baseline's own row has NaN / False / 'none' in the comparison columns.
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    spec = METRICS[metric]
    trials = with_metric_columns(trials)
    cfg = config_columns(trials)
    if trials.empty:
        return pd.DataFrame(columns=["label", *cfg, "n", "n_failed", "n_pending"])
    finished = trials["status"].astype(str) == "finished"
    match = family_columns(trials)

    rows, ok_of, base_of = [], {}, {}
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
        row["_is_base"] = row["method"] == baseline
        row["seeds"] = ",".join(str(int(s)) for s in sorted(set(ok["seed"].astype(int))))
        base_seeds = ",".join(str(int(s)) for s in sorted(set(base["seed"].astype(int))))
        row["seeds_differ"] = not row["_is_base"] and bool(base_seeds) and row["seeds"] != base_seeds
        row["gain"] = row[f"{metric}_mean"] - mean_std_n(base[metric])[0]
        base_step = mean_std_n(base["step_time_s"])[0]
        # what the sweep's own trials timed, on a shared machine beside each other: shown as observed only
        row["time_x_observed"] = _ratio(row["step_time_s_mean"], base_step)
        row["time_x_observed_std"] = _ratio(row["step_time_s_std"], base_step)
        row["mem_x_observed"] = _ratio(row["peak_mem_bytes_mean"], mean_std_n(base["peak_mem_bytes"])[0])
        row.update(controlled_costs(g))
        row["extra_state_bytes"] = row["state_bytes_mean"]
        weak = ok["select_weak"].astype(str).str.lower().isin(("true", "1")) if "select_weak" in ok else []
        row["n_select_weak"] = int(sum(weak))
        row["select_why"] = next((str(w) for w, f in zip(ok.get("select_why", []), weak, strict=False)
                                  if f and isinstance(w, str)), "")
        images = pd.to_numeric(ok["test_images"], errors="coerce").dropna() if "test_images" in ok else []
        row["test_images"] = int(np.median(images)) if len(images) else math.nan
        row["_family"] = tuple(str(row[c]) for c in match)
        ok_of[len(rows)], base_of[len(rows)] = ok, base
        rows.append(row)

    other = companion(metric)
    _paired_columns(rows, ok_of, base_of, metric, "")
    if other is not None:
        _paired_columns(rows, ok_of, base_of, other, "c_")
    for i, row in enumerate(rows):  # test-set noise, from the per-image predictions where a reader is given
        row.update(bootstrap_cells(_paired_keys(ok_of[i], base_of[i], metric), metric, predictions)
                   if predictions is not None and not row["_is_base"] else
                   {"boot_ci_low": math.nan, "boot_ci_high": math.nan, "test_var_share": math.nan, "boot_note": ""})
    groups = pd.DataFrame(rows)
    groups["p_holm"] = _holm_by_family(groups, "p_value")
    groups["c_p_holm"] = _holm_by_family(groups, "c_p_value") if other is not None else math.nan
    groups["companion"] = other or ""
    groups["verdict"] = ["none" if r["_is_base"] else verdict(
        diff=r["diff_mean"], identical=bool(r["identical"]), p_holm=r["p_holm"], alpha=alpha,
        higher_is_better=spec.higher_is_better) for _, r in groups.iterrows()]
    groups["confirmed"] = [confirmed(
        verdict=v, diff=r["diff_mean"],
        companion_diff=r["c_diff_mean"] if other is not None and r["c_n_paired"] else None,
        companion_holm=r["c_p_holm"] if other is not None and r["c_n_paired"] else None, alpha=alpha)
        for v, (_, r) in zip(groups["verdict"], groups.iterrows(), strict=True)]
    groups["better"] = groups["verdict"] == "better"
    groups["worse"] = groups["verdict"] == "worse"
    groups["significant"] = groups["p_holm"].lt(alpha)
    raw_effect = (spec.effect if effect is None else effect) / spec.scale
    groups["effect"] = raw_effect
    groups["rope"] = (spec.effect / 2 if rope is None else rope) / spec.scale
    add_estimates(groups, alpha=alpha, power=power, higher_is_better=spec.higher_is_better)
    # one block (later inserts stay cheap); helper columns go, the per-seed differences stay (across data sets)
    groups = groups.rename(columns={"_diffs": "paired_diffs"}).filter(regex=r"^[^_]").copy()
    groups.insert(0, "label", config_labels(groups))
    return sort_groups(groups).reset_index(drop=True)


def sort_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Methods in the paper's order, then parameter values in numeric order (stable otherwise)."""
    if groups.empty:
        return groups
    pcols = [*param_columns(groups), *setting_columns(groups)]
    order = sorted(range(len(groups)), key=lambda i: (
        method_sort_key(str(groups["method"].iloc[i])),
        tuple(value_sort_key(groups[c].iloc[i]) for c in pcols)))
    return groups.iloc[order]


def unfinished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and pending trials: listed in the summary, never dropped from it."""
    return trials[trials["status"].astype(str) != "finished"]


def best_per_method(groups: pd.DataFrame, *, dataset: str, model: str) -> pd.DataFrame:
    """In one dataset/model, each method's configuration chosen on the selection split: among those with
    the most finished seeds, the best mean validation top-1 at the selected epoch, ties to the lower
    validation NLL (`train.select`'s order; by NLL first under `nll`). Never by a test-split number.
    Figures with one line or point per method use these; an ablation sweep would otherwise crowd them."""
    from harness.config.selection import DEFAULT_RULE, config_order

    g = groups[(groups["dataset"].astype(str) == dataset) & (groups["model"].astype(str) == model)]
    keep = []
    for _, m in g.groupby("method", sort=False):
        def order(i: Any, m: pd.DataFrame = m) -> tuple:
            rule = str(m.at[i, "select"]) if "select" in m.columns else DEFAULT_RULE
            # Most seeds first, so that a lucky single-seed configuration does not stand for the method.
            return (-int(m.at[i, "val_selected_top1_n"]),
                    *config_order(rule, top1=m.at[i, "val_selected_top1_mean"], nll=m.at[i, "val_selected_nll_mean"]))
        keep.append(min(m.index, key=order))
    return sort_groups(g.loc[keep])


def across_scores(groups: pd.DataFrame, *, metric: str) -> pd.DataFrame:
    """Blocks x methods for ranking across data sets (harness/results/ranks.py): per dataset / model, each
    method's configuration chosen on the selection split (`best_per_method`), its mean `metric`. Index:
    'dataset / model'; columns: method display names, in the paper's order."""
    rows = {}
    for dataset, model in cells(groups):
        best = best_per_method(groups, dataset=dataset, model=model)
        rows[f"{dataset} / {model}"] = {method_label(str(r["method"])): float(r[f"{metric}_mean"])
                                        for _, r in best.iterrows()}
    methods = sorted({str(m) for m in groups["method"]}, key=method_sort_key) if len(groups) else []
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[method_label(m) for m in methods])


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
