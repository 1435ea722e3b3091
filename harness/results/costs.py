"""The controlled cost measurement of a sweep as the results read it: results/<sweep>/costs/<dataset>_<model>.json.

Why a measurement of its own: a trial's `step_time_s` is timed inside the sweep, on whatever machine ran it and
beside the other trials (the quickstart runs two at a time on two cores), so the ratio of two methods' step times
moves by 10-50% from run to run. The summary's `time x` / `memory x` come instead from `tfbench bench step
--sweep` (harness/bench/costs.py): every step configuration of one data set / model, built as its trials build it,
timed round-robin on one machine against CE. `tfbench run` measures it after the trials (unless the sweep file
says `costs: {measure: false}`) and writes one file per (data set, model) here; the summary, the tables and the
plots only read it. The sweep's own timings stay, as what they are (`time_x_observed`).

A step configuration is what a training step's cost depends on (`step_config`): the method and its parameters,
the data set and its parameters, the model and its parameters, and the train settings the step runs with
(batch size, optimiser, amp, compile, ...), not the seed, the epochs or the selection. Its hash (`cost_key`)
ties a trial to its measurement, so a file measured for other configurations is stale, never silently used.

Pure functions and file reads only (no torch): the results import it, and the benchmark writes what it reads.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config.spec import NOT_IN_KEY_DATASET, TrialSpec
from harness.folders import ResultsFolder, read_json
from harness.io import content_hash, file_stem
from harness.outputs import OutputFolder, source_of

COSTS = "costs"                 # results/<sweep>/costs/
FORMAT = 1                      # the files' layout
KINDS = (r".+\.json",)          # what the measurement writes in its own place
REFERENCE = "ce"                # every ratio is over CE's step in the same settings
COMMAND = "tfbench bench step --sweep"
# the train settings a step's cost depends on (the rest: schedule, epochs, selection, checkpoints, data loading)
STEP_TRAIN = ("batch_size", "optimizer", "momentum", "nesterov", "weight_decay", "compile", "amp", "deterministic",
              "device", "threads", "workers", "mixup", "cutmix", "mixup_prob", "switch_prob", "ema", "freeze")
# the columns a trials table gets (`with_costs`) and a configuration keeps (harness/results/aggregate.py)
COLUMNS = ("cost_time_x", "cost_time_x_rounds_sd", "cost_time_rounds_sd_rel", "cost_mem_x", "cost_step_s",
           "cost_ref_step_s", "cost_status", "cost_how")
MEASURED = "measured"


def dataset_label(spec: Mapping[str, Any]) -> str:
    """The data set's name in the tables (its `label` parameter where it has one), as trials.csv gives it."""
    return str((spec.get("dataset_params") or {}).get("label") or spec.get("dataset"))


def cell_of(spec: Mapping[str, Any]) -> tuple[str, str]:
    return dataset_label(spec), str(spec.get("model"))


def cell_file(dataset: str, model: str) -> str:
    """`<dataset>_<model>.json`, with anything but letters, digits, '_', '.', '-' replaced (as the figures' names)."""
    return file_stem(f"{dataset}_{model}") + ".json"


def step_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What one training step of a trial costs depends on, from its spec (TrialSpec.to_dict or config.json)."""
    train = spec.get("train") or {}
    return {"method": spec.get("method"), "method_params": dict(spec.get("method_params") or {}),
            "method_source": spec.get("method_source", ""), "dataset": spec.get("dataset"),
            "dataset_params": {k: v for k, v in (spec.get("dataset_params") or {}).items()
                               if k not in NOT_IN_KEY_DATASET},
            "model": spec.get("model"), "model_params": dict(spec.get("model_params") or {}),
            "train": {k: train.get(k) for k in STEP_TRAIN}}


def reference_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """CE's step in the same data set, model and train settings: what the configuration's ratios are over."""
    return {**step_config(spec), "method": REFERENCE, "method_params": {}, "method_source": ""}


def _hash(value: Any) -> str:
    return content_hash(value, 12)


def cost_key(spec: Mapping[str, Any]) -> str:
    """The configuration's key: equal for two trials exactly when their steps are the same work."""
    return _hash(step_config(spec))


def reference_key(spec: Mapping[str, Any]) -> str:
    return _hash(reference_config(spec))


def cell_key(config_keys: Iterable[str], *, device: str, threads: int) -> str:
    """What a cell's file was measured for: its configurations, the device type and the torch threads. The same
    key asked again reuses the file; any change (a configuration added, a batch size, another device) remeasures."""
    return _hash({"configs": sorted(set(config_keys)), "device": str(device), "threads": int(threads)})


# --- the ratios, from a file's raw times ------------------------------------------------------------------

def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


def config_ratios(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """config key -> its ratios over its CE reference, from the raw per-round step seconds of a measured file.

    - `time_x`: the configuration's median seconds per step over CE's median (the rounds are round-robin, so
      a load on the machine hits both alike);
    - `time_x_rounds_sd`: the sample std (ddof=1) over rounds of the per-round ratio (its round / CE's same
      round): how much the ratio moved while it was measured;
    - `time_rounds_sd_rel`: the configuration's own sample std over rounds, over its median;
    - `mem_x`: its peak memory over CE's (NaN where not measured);
    - `step_s`, `ref_step_s`: the two medians in seconds.
    A configuration whose reference is missing from the file gets NaN ratios."""
    configs = {str(c["key"]): c for c in record.get("configs") or [] if isinstance(c, dict) and "key" in c}
    out: dict[str, dict[str, float]] = {}
    for key, c in configs.items():
        own = np.asarray(c.get("round_s") or [], dtype=float)          # (R,)
        ref_c = configs.get(str(c.get("reference")))
        ref = np.asarray(ref_c.get("round_s") or [], dtype=float) if ref_c else np.empty(0)  # (R,)
        step, ref_step = _median(own), _median(ref)
        ratio = step / ref_step if ref_step > 0 else math.nan
        per_round = own / ref if own.size == ref.size and own.size >= 2 and (ref > 0).all() else np.empty(0)
        peak, ref_peak = c.get("peak_bytes"), ref_c.get("peak_bytes") if ref_c else None
        out[key] = {"time_x": ratio,
                    "time_x_rounds_sd": float(per_round.std(ddof=1)) if per_round.size >= 2 else math.nan,
                    "time_rounds_sd_rel": float(own.std(ddof=1)) / step if own.size >= 2 and step > 0 else math.nan,
                    "mem_x": (float(peak) / float(ref_peak)
                              if isinstance(peak, (int, float)) and isinstance(ref_peak, (int, float)) and ref_peak > 0
                              else math.nan),
                    "step_s": step, "ref_step_s": ref_step}
    return out


def how_line(record: Mapping[str, Any]) -> str:
    """How a file was measured, in one phrase: device, threads, rounds, versions."""
    rounds = (f"median of {record.get('repeats')} round-robin rounds of {record.get('window')} step"
              f"{'s' if record.get('window') != 1 else ''} after {record.get('warmup')} warm-up round"
              f"{'s' if record.get('warmup') != 1 else ''}")
    threads = record.get("threads")
    where = str(record.get("device_name") or record.get("device"))
    if str(record.get("device", "")).startswith("cpu"):
        where += f", {threads} torch thread{'s' if threads != 1 else ''}"
    git = str(record.get("git") or "")[:10]
    return (f"{where}; {rounds}; peak memory: {record.get('memory_kind', 'not measured')}; torch "
            f"{record.get('torch')}{f', git {git}' if git else ''}")


# --- reading a results folder's files -------------------------------------------------------------------

def costs_target(results_dir: str | Path) -> OutputFolder:
    """results/<sweep>/costs/, the measurement's own place (harness/outputs.py), checked before any work."""
    results_dir = Path(results_dir)
    return OutputFolder(results_dir / COSTS, source=source_of(results_dir), own=True, kinds=KINDS,
                        flag="--results", within=results_dir).open()


def read_cell(results_dir: str | Path, dataset: str, model: str) -> dict[str, Any] | None:
    """The cell's file, or None when there is none (or it is not one of ours)."""
    record = read_json(Path(results_dir) / COSTS / cell_file(dataset, model))
    return record if record and record.get("format") == FORMAT else None


def switched_off(results_dir: str | Path) -> bool:
    """The sweep file as run says `costs: {measure: false}`."""
    costs = ResultsFolder(Path(results_dir)).sweep_value("costs")
    return isinstance(costs, dict) and costs.get("measure") is False


def _normal(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A stored spec as this version reads it (TrialSpec.from_dict(stored=True): settings an older tfbench did
    not record take the values that reproduce it), so that its key is the one the measurement computed."""
    try:
        return TrialSpec.from_dict(spec, stored=True).to_dict()
    except (TypeError, ValueError, KeyError):
        return None


def trial_specs(results_dir: Path, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """key -> the trial's resolved spec: its config.json, else sweep.yaml's trial list (a trial not run yet)."""
    folder = ResultsFolder(results_dir)
    recorded: dict[str, dict[str, Any]] | None = None
    out = {}
    for key in keys:
        spec = folder.trial(key).spec()
        if spec is None:
            if recorded is None:
                recorded = {k: s for k, s in folder.recorded_trials()}
            spec = recorded.get(key)
        normal = _normal(spec) if isinstance(spec, dict) else None
        if normal is not None:
            out[key] = normal
    return out


def with_costs(trials: pd.DataFrame, results_dir: str | Path) -> pd.DataFrame:
    """The trials table with the controlled measurement of each trial's configuration (`COLUMNS`): the ratios,
    the seconds, `cost_status` (measured / why not) and `cost_how` (how it was measured). Reads only."""
    trials = trials.copy()
    for c in COLUMNS:
        trials[c] = "" if c in ("cost_status", "cost_how") else math.nan
    if trials.empty or "key" not in trials.columns:
        return trials
    results_dir = Path(results_dir)
    specs = trial_specs(results_dir, trials["key"].astype(str))
    off = switched_off(results_dir)
    files: dict[tuple[str, str], tuple[dict | None, dict]] = {}
    for i, key in zip(trials.index, trials["key"].astype(str), strict=True):
        spec = specs.get(key)
        if spec is None:
            trials.at[i, "cost_status"] = "not measured: the trial's spec is not recorded"
            continue
        cell = cell_of(spec)
        if cell not in files:
            record = read_cell(results_dir, *cell)
            files[cell] = (record, config_ratios(record) if record and record.get("status") == MEASURED else {})
        record, ratios = files[cell]
        status, how = _status(record, ratios, cost_key(spec), off=off)
        trials.at[i, "cost_status"], trials.at[i, "cost_how"] = status, how
        if status == MEASURED:
            r = ratios[cost_key(spec)]
            for name in ("time_x", "time_x_rounds_sd", "time_rounds_sd_rel", "mem_x"):
                trials.at[i, f"cost_{name}"] = r[name]
            trials.at[i, "cost_step_s"], trials.at[i, "cost_ref_step_s"] = r["step_s"], r["ref_step_s"]
    return trials


def _status(record: dict | None, ratios: dict, key: str, *, off: bool) -> tuple[str, str]:
    if record is None:
        return ("not measured (the sweep file says costs: {measure: false})" if off else "not measured"), ""
    if record.get("status") != MEASURED:
        return f"measurement failed: {str(record.get('error') or 'no reason recorded')[:300]}", ""
    if key not in ratios:
        return "not measured: the file was measured for other configurations (stale)", ""
    return MEASURED, how_line(record)


def controlled_costs(g: pd.DataFrame) -> dict[str, Any]:
    """A configuration's controlled costs, from its trials' `cost_*` columns (`with_costs`): `time_x`,
    `time_x_rounds_sd`, `time_rounds_sd_rel`, `mem_x`, `cost_step_s`, `cost_ref_step_s` (NaN unless every
    trial of it has the one measurement), `cost_status` and `cost_how` (the trials' own words, joined)."""
    out: dict[str, Any] = {}
    for col in COLUMNS:
        name = col if col in ("cost_step_s", "cost_ref_step_s", "cost_status", "cost_how") else col.removeprefix("cost_")
        values = list(dict.fromkeys(g[col])) if col in g.columns else []
        if col in ("cost_status", "cost_how"):
            out[name] = "; ".join(str(v) for v in values if isinstance(v, str) and v)
        else:
            finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            out[name] = finite[0] if len(finite) == 1 and len(finite) == len(values) else math.nan
    return out


def cost_lines(groups: pd.DataFrame) -> list[str]:
    """The summary's statement of where time x and memory x come from, one line per data set / model (the
    same words for cells measured alike are said once)."""
    if groups.empty or "cost_status" not in groups.columns:
        return []
    said: dict[str, list[str]] = {}
    for (dataset, model), g in groups.groupby(["dataset", "model"], sort=False):
        statuses = [s for s in dict.fromkeys(g["cost_status"].astype(str)) if s]
        hows = [h for h in dict.fromkeys(g["cost_how"].astype(str)) if h]
        if statuses == [MEASURED] and len(hows) == 1:
            text = f"controlled measurement ({COMMAND}, results/<sweep>/{COSTS}/) on {hows[0]}"
        elif MEASURED in statuses:
            text = ("controlled measurement where measured; " + "; ".join(s for s in statuses if s != MEASURED)
                    + " for the rest (n/a)")
        else:
            text = ("; ".join(statuses or ["not measured"])
                    + " (n/a in the tables; `tfbench table --measure-costs` measures them)")
        said.setdefault(text, []).append(f"{dataset} / {model}")
    lines = [f"Costs (time x, memory x) of {', '.join(cells)}: {text}." for text, cells in said.items()]
    lines.append("The sweep's own step times and peak memory are observed in this sweep, on a shared machine "
                 "beside other trials (`time_x_observed`, `mem_x_observed` in summary.csv; `step (ms)` in the "
                 "details table): not a comparison of methods.")
    return lines


__all__ = ["COLUMNS", "COMMAND", "COSTS", "FORMAT", "KINDS", "MEASURED", "REFERENCE", "STEP_TRAIN", "cell_file",
           "cell_key", "cell_of", "config_ratios", "controlled_costs", "cost_key", "cost_lines", "costs_target", "how_line", "read_cell",
           "reference_config", "reference_key", "step_config", "switched_off", "trial_specs", "with_costs"]
