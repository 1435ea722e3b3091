"""The metric vocabulary: every number a trial's result.json gives trials.csv, defined once, here.

A `Metric` says what a number is (label, header, display scale, which way is better, its bounds), where it
is read (split and epoch: the per-epoch record's `val_<quantity>`), and what the harness does with it:
whether it is aggregated (mean, std, n per configuration, and its place among summary.csv's columns),
whether a table can compare on it and whether a sweep's verdicts may be made on it (`primary_metric`).
Everything else reads it: the loop's result (`harness/train/loop.py`), the record checks
(`folders.result_problem`), trials.csv's columns (`results/records.py`), the aggregation and tables
(`results/aggregate.py`), the schema's allowed primary metrics (`config/schema.py`) and the plots. A new
metric is one definition below plus its computation (for a `quantity`: a `val_<quantity>` that
`harness.train.metrics.evaluate` returns); tests/house/test_vocabulary.py adds a toy one and sees it reach
trials.csv and the summary.

A cost (seconds, bytes, images per second: `cost(...)`) is one definition too: never a table metric, never
primary, checked >= 0. This module imports nothing of the harness: it sits below every package that reads it
(computing the numbers is harness/train/metrics.py's job).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# bounds: what a finished record's value must be (result_problem); None: not checked
FRACTION, NON_NEGATIVE, EPOCH = "a fraction in [0, 1]", ">= 0", "a whole number >= 1"
# split: the reported split (clean: test; paper: the evaluation split), the selection split, the training data
REPORTED, SELECTION, TRAIN = "reported", "selection", "train"
# epoch: the one train.select chose, the last one, the best per-epoch value of the selection split
SELECTED, LAST, BEST = "selected", "last", "best"
# the per-epoch quantities every trial's evaluation records (val_<quantity>), in the order the loop keeps them
QUANTITIES = ("top1", "top5", "nll", "ece")


@dataclass(frozen=True)
class Metric:
    """One column of trials.csv taken from result.json; the display fields only matter when aggregated."""

    name: str
    label: str = ""               # axis and caption text
    short: str = ""               # column header text
    scale: float = 1.0            # display factor (fractions -> percent, seconds -> ms)
    decimals: int = 3
    higher_is_better: bool = False
    effect: float = math.nan      # the difference worth detecting, in display units (`tfbench seeds --effect`)
    bounds: str | None = None     # FRACTION, NON_NEGATIVE, EPOCH or None
    split: str = ""               # REPORTED, SELECTION, TRAIN ('' for costs and record fields)
    epoch: str = ""               # SELECTED, LAST, BEST
    quantity: str = ""            # the per-epoch record it is read from (val_<quantity>); '' when computed otherwise
    table: bool = False           # a table can compare on it (`tfbench table --metric`)
    primary: bool = False         # a sweep's verdicts may be made on it (`primary_metric`)
    summary: int | None = None    # its place among summary.csv's mean/std/n columns; None: not aggregated
    cost: bool = False            # a time, memory or throughput: never a table metric, never primary
    details: int | None = None    # its place in the summary's details table; None: not shown there
    legacy: str | None = None     # the column that stood for it in records from before protocols existed


def _percent(name: str, label: str, short: str, higher: bool, **kw) -> Metric:
    return Metric(name, label, short, 100.0, 2, higher, 1.0, FRACTION, **kw)


def _nll(name: str, label: str, short: str, **kw) -> Metric:
    return Metric(name, label, short, 1.0, 3, False, 0.01, NON_NEGATIVE, quantity="nll", **kw)


def reported(quantity: str, epoch: str, summary: int, **kw) -> Metric:
    """A reported-split number at the selected or the last epoch: a table metric that may be primary."""
    return Metric(f"{epoch}_{quantity}", **kw, split=REPORTED, epoch=epoch, quantity=quantity, table=True,
                  primary=True, summary=summary)


def cost(name: str, label: str = "", short: str = "", scale: float = 1.0, decimals: int = 0,
         summary: int | None = None, details: int | None = None) -> Metric:
    """A time, memory or throughput: aggregated when `summary` is given, never compared, >= 0."""
    return Metric(name, label, short, scale, decimals, False, bounds=NON_NEGATIVE, summary=summary, cost=True,
                  details=details)


def _at(epoch: str, summary: tuple[int, int, int, int], details: dict[str, int],
        legacy: dict[str, str] | None = None) -> list[Metric]:
    """top-1, top-5, NLL and ECE of the reported split at `epoch` (the default effects: one point of accuracy
    or calibration error, 0.01 nats of NLL)."""
    word = {SELECTED: "the selected", LAST: "the last"}[epoch]
    prefix = "selected " if epoch == SELECTED else ""
    shown: dict[str, dict[str, Any]] = {
        "top1": dict(label=f"top-1 at {word} epoch (%)", short=f"{epoch} top-1 (%)", scale=100.0, decimals=2,
                     higher_is_better=True, effect=1.0, bounds=FRACTION),
        "top5": dict(label=f"top-5 at {word} epoch (%)", short=f"{epoch} top-5 (%)", scale=100.0, decimals=2,
                     higher_is_better=True, effect=1.0, bounds=FRACTION),
        "nll": dict(label=f"NLL at {word} epoch", short=f"{prefix}NLL", scale=1.0, decimals=3, effect=0.01,
                    bounds=NON_NEGATIVE),
        "ece": dict(label=f"ECE at {word} epoch (%)", short=f"{prefix}ECE (%)", scale=100.0, decimals=2,
                    effect=1.0, bounds=FRACTION)}
    return [reported(q, epoch, place, details=details.get(q), legacy=(legacy or {}).get(q), **shown[q])
            for q, place in zip(QUANTITIES, summary, strict=True)]


# The corruptions whose accuracy is a metric (corrupt_<name>_top1); harness/data/corruptions.py computes them.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur", "contrast",
               "brightness", "saturate", "jpeg_compression", "pixelate")


def _beyond() -> list[Metric]:
    """Beyond top-1 (docs/results.md, one section each): computed from the trial's predictions.npz by
    harness/results/beyond.py (`record_metrics`), at the selected epoch on the reported split."""
    at = dict(split=REPORTED, epoch=SELECTED)
    compared = dict(table=True, primary=True, **at)
    return [
        Metric("selected_aece", "adaptive ECE at the selected epoch (%)", "aECE (%)", 100.0, 2, False, 1.0,
               FRACTION, summary=20, **compared),
        Metric("selected_cwece", "classwise ECE at the selected epoch (%)", "cwECE (%)", 100.0, 3, False, 0.1,
               FRACTION, summary=21, **compared),
        Metric("selected_brier", "Brier score at the selected epoch", "Brier", 1.0, 4, False, 0.01, NON_NEGATIVE,
               summary=22, **compared),
        Metric("temperature", "temperature fitted on the selection split", "T", 1.0, 3, False,
               bounds=NON_NEGATIVE, summary=23, **at),
        Metric("selected_nll_ts", "NLL after temperature scaling", "NLL (TS)", 1.0, 3, False, 0.01, NON_NEGATIVE,
               summary=24, **compared),
        Metric("selected_ece_ts", "ECE after temperature scaling (%)", "ECE TS (%)", 100.0, 2, False, 1.0,
               FRACTION, summary=25, **compared),
        Metric("selected_aurc", "AURC of the maximum softmax probability (x1000)", "AURC (x1000)", 1000.0, 2,
               False, 1.0, FRACTION, summary=26, **compared),
        Metric("selected_eaurc", "E-AURC (x1000)", "E-AURC (x1000)", 1000.0, 2, False, 1.0, FRACTION, summary=27,
               **compared),
        Metric("corrupt_top1", "mean top-1 over corruptions and severities (%)", "corrupt top-1 (%)", 100.0, 2,
               True, 1.0, FRACTION, summary=28, **compared),
        *(Metric(f"corrupt_{c}_top1", f"top-1 under {c.replace('_', ' ')}, mean of severities 1-5 (%)",
                 f"{c} (%)", 100.0, 2, True, 1.0, FRACTION, summary=40 + i, **at)
          for i, c in enumerate(CORRUPTIONS)),
        Metric("ood_auroc", "OOD AUROC, maximum softmax probability (%)", "OOD AUROC (%)", 100.0, 2, True, 1.0,
               FRACTION, summary=29, **compared),
        Metric("ood_fpr95", "OOD FPR at 95% TPR, maximum softmax probability (%)", "FPR95 (%)", 100.0, 2, False,
               1.0, FRACTION, summary=30, **compared),
        Metric("ood_auroc_energy", "OOD AUROC, energy score (%)", "OOD AUROC E (%)", 100.0, 2, True, 1.0,
               FRACTION, summary=31, **compared),
        Metric("ood_fpr95_energy", "OOD FPR at 95% TPR, energy score (%)", "FPR95 E (%)", 100.0, 2, False, 1.0,
               FRACTION, summary=32, **compared),
        Metric("repr_within_ratio", "penultimate within-class / total variance", "within/total", 1.0, 3, False,
               0.01, FRACTION, summary=33, **compared),
        Metric("repr_class_cosine", "mean cosine between centred class means", "class cos", 1.0, 3, False, 0.01,
               summary=34, **compared),
    ]


# In the order of trials.csv's columns (after the trial's own: key, status, method, ..., the p.<param>s).
# "selected" is the reported split at the epoch the protocol selected; "best" the per-epoch maximum of the
# selection split (clean: validation); summary.csv aggregates them in the order of their `summary` place.
VOCABULARY: dict[str, Metric] = {m.name: m for m in [
    Metric("selected_epoch", "selected epoch", "sel. epoch", 1.0, 1, bounds=EPOCH, summary=16, details=4,
           legacy="best_epoch"),
    *_at(SELECTED, (1, 3, 5, 7), details={"top1": 1, "top5": 5}, legacy={"top1": "best_top1", "top5": "best_top5"}),
    *_at(LAST, (2, 4, 6, 8), details={"top1": 2, "nll": 6, "ece": 7}),
    _percent("val_selected_top1", "selection-split top-1 at the selected epoch (%)", "val top-1 (%)", True,
             split=SELECTION, epoch=SELECTED, quantity="top1", table=True, summary=9, legacy="best_top1"),
    _nll("val_selected_nll", "selection-split NLL at the selected epoch", "val NLL", split=SELECTION,
         epoch=SELECTED, summary=10),
    _percent("best_top1", "best per-epoch selection-split top-1 (%)", "best val top-1 (%)", True, split=SELECTION,
             epoch=BEST, quantity="top1", table=True, summary=11, details=3),
    _percent("best_top5", "best per-epoch selection-split top-5 (%)", "best val top-5 (%)", True, split=SELECTION,
             epoch=BEST, quantity="top5", table=True, summary=12),
    Metric("best_epoch"),
    Metric("train_top1", bounds=FRACTION, split=TRAIN, epoch=LAST),
    Metric("train_val_gap", "train - val top-1 (%)", "train-val gap (%)", 100.0, 2, False, summary=13, details=8),
    cost("step_time_s", "train step time (ms)", "step (ms)", 1000.0, 1, summary=14, details=9),
    cost("images_per_s"),
    cost("peak_mem_bytes", "peak memory (bytes)", "peak mem", summary=15),
    cost("state_bytes", "method state (bytes)", "state", summary=17),
    cost("wall_time_s"),
    # where the wall time went (harness/train/walltime.py): steps + evaluation + checkpoints (the blocking part)
    # + the rest = wall_time_s; the background writer's time overlaps them
    *(cost(name) for name in ("steps_time_s", "eval_time_s", "checkpoint_time_s", "checkpoint_write_time_s",
                              "other_time_s")),
    *_beyond(),
    # how the selection split could discriminate (harness.config.selection.Diagnosis.record)
    *(Metric(name) for name in ("test_images", "select_ties", "select_images", "select_min_per_class",
                                "select_weak", "select_why")),
]}
DEFAULT_PRIMARY = "selected_top1"

# A configuration's costs over CE's in the same settings: per configuration, never per trial (so not trials.csv
# columns). `time_x` / `mem_x` are the controlled measurement's (harness/results/costs.py: `tfbench bench step
# --sweep`, one machine, round-robin); the `_observed` ones the sweep's own trials', timed on a shared machine.
RATIOS: dict[str, Metric] = {m.name: m for m in [
    cost("time_x", "train step time (x CE's, controlled measurement)", "time x", 1.0, 2),
    cost("mem_x", "peak memory (x CE's, controlled measurement)", "memory x", 1.0, 2),
    cost("time_x_observed", "train step time observed in the sweep (x CE's mean, shared machine)",
         "time x observed", 1.0, 2),
    cost("mem_x_observed", "peak memory observed in the sweep (x CE's mean, shared machine)", "memory x observed",
         1.0, 2),
]}


def columns() -> list[str]:
    """trials.csv's columns taken from result.json, in order."""
    return list(VOCABULARY)


def aggregated() -> dict[str, Metric]:
    """The metrics aggregated per configuration (mean, std, n), in summary.csv's order."""
    ranked = sorted((m for m in VOCABULARY.values() if m.summary is not None), key=lambda m: m.summary)
    return {m.name: m for m in ranked}


class Aggregated(Mapping[str, Metric]):
    """`aggregated()` as a live mapping: a definition added to VOCABULARY later (a test's toy metric) shows up."""

    def __getitem__(self, name: str) -> Metric:
        return aggregated()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(aggregated())

    def __len__(self) -> int:
        return len(aggregated())


def details() -> list[str]:
    """The metrics of the summary's details table, in its order."""
    return [m.name for m in sorted((m for m in VOCABULARY.values() if m.details), key=lambda m: m.details or 0)]


def legacy_sources() -> dict[str, str]:
    """metric -> the column a record from before protocols existed gives it from."""
    return {m.name: m.legacy for m in VOCABULARY.values() if m.legacy}


def reported_quantities() -> tuple[str, ...]:
    """The per-epoch quantities (val_<quantity>) the loop keeps for the selected and the last epoch."""
    return tuple(dict.fromkeys(m.quantity for m in VOCABULARY.values() if m.split == REPORTED and m.quantity))


def epoch_values(*, selected: dict[str, Any], last: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """The record's split-and-epoch metrics, from the quantities at the selected epoch on the reported split
    (`selected`), at the last (`last`) and at the selection split's selected epoch (`best`)."""
    source = {(REPORTED, SELECTED): selected, (REPORTED, LAST): last, (SELECTION, SELECTED): best,
              (SELECTION, BEST): best}
    return {m.name: source[m.split, m.epoch].get(m.quantity) for m in VOCABULARY.values()
            if m.quantity and (m.split, m.epoch) in source}


def table_metrics() -> tuple[str, ...]:
    """The metrics a table can compare on, in the order they are listed."""
    return tuple(m.name for m in aggregated().values() if m.table and not m.cost)


def primary_metrics() -> tuple[str, ...]:
    """The metrics a sweep's verdicts may be made on."""
    return tuple(m.name for m in aggregated().values() if m.primary and not m.cost)


def checked() -> dict[str, Metric]:
    """The record values that must lie in their bounds for a finished trial to count."""
    return {m.name: m for m in VOCABULARY.values() if m.bounds is not None}


def problem(name: str, value: object) -> str | None:
    """Why `value` cannot be the metric `name` of a finished record (None when it can, or is absent)."""
    bounds = VOCABULARY[name].bounds
    if value is None or bounds is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if bounds == EPOCH:
        return None if number and float(value).is_integer() and value >= 1 else \
            f"{name} is {value!r:.40}; allowed: {EPOCH}"
    if not number:
        return f"{name} is {value!r:.40}; allowed: a finite number"
    if value < 0 or (bounds == FRACTION and value > 1):
        return f"{name} is {value!r}; allowed: {bounds}"
    return None
