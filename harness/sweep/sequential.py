"""Run a sweep's seeds until decided (`seeds: {sequential: ...}`): the start seeds of every configuration,
then, look by look, seeds only for the comparisons the design (harness/results/sequential.py) leaves open.
A searched sweep's confirm trials (harness/sweep/search.py) go through the same rounds (`run_confirm`): the
configurations are then the ones each method's search selected.

Why the decisions are replayed from the trial folders each round rather than kept: a resumed sweep (after
Ctrl-C, on another machine) reaches the same looks from the same finished records, and the summary's marks
come from the same replay.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness.config.spec import TrialSpec
from harness.config.sweep_file import SweepSpec
from harness.folders import ResultsFolder
from harness.results import records


def wanted(sweep: SweepSpec, folder: ResultsFolder, plan, *, alpha: float, rope: float | None,
           metric: str) -> list[TrialSpec]:
    """The trials the design needs finished now: every configuration's first `start` seeds, and for each open
    comparison (and its baseline) the first seeds of its next look."""
    from harness.results.aggregate import BASELINE, METRICS, config_columns, family_columns
    from harness.results.sequential import decisions

    rows = [records.trial_row(folder.path, t.key(), t.to_dict(), warn=lambda line: None) for t in sweep.trials]
    trials = pd.DataFrame(rows)
    spec = METRICS[metric]
    found = decisions(trials, plan, metric=metric, baseline=BASELINE, alpha=alpha,
                      rope=(spec.effect / 2 if rope is None else rope) / spec.scale,
                      higher_is_better=spec.higher_is_better)
    cfg, fam = config_columns(trials), family_columns(trials)
    need: dict[tuple, int] = {}  # configuration (the baseline: its family) -> how many first seeds must be finished
    for comp, d in found:
        n = max(plan.start, d.needs)
        for who in (("config", *(str(comp["config"][c]) for c in cfg)),
                    ("base", *(str(comp["config"][c]) for c in fam))):
            need[who] = max(need.get(who, 0), n)
    by_config: dict[tuple, list[tuple[int, TrialSpec]]] = {}
    for t, (_, row) in zip(sweep.trials, trials.iterrows(), strict=True):
        who = ("base", *(str(row[c]) for c in fam)) if row["method"] == BASELINE else \
            ("config", *(str(row[c]) for c in cfg))
        by_config.setdefault(who, []).append((int(row["seed"]), t))
    out = []
    for who, members in by_config.items():
        out.extend(t for _, t in sorted(members, key=lambda m: m[0])[:need.get(who, plan.start)])
    return out


def run_sequential(sweep: SweepSpec, folder: ResultsFolder, plan,
                   run: Callable[[SweepSpec], bool]) -> tuple[list[TrialSpec], bool]:
    """Rounds of `run` (the grid runner, on a copy of the sweep holding the trials wanted now) until the
    design wants nothing more; returns (the trials run, interrupted)."""
    from dataclasses import replace

    from harness.config.schema import DEFAULT_PRIMARY
    from harness.results.stats import DEFAULT_ALPHA
    from harness.sweep.session import pause_for_tests

    alpha = float(sweep.raw.get("alpha", DEFAULT_ALPHA))
    rope = sweep.raw.get("rope")
    metric = str(sweep.raw.get("primary_metric", DEFAULT_PRIMARY))
    keys: dict[str, TrialSpec] = {}
    while True:
        now = wanted(sweep, folder, plan, alpha=alpha, rope=rope, metric=metric)
        keys.update({t.key(): t for t in now})
        pending = [t for t in now if folder.trial(t.key()).status() != "finished"]
        if not pending:  # the decisions already rest on every trial they want: a fixed point
            break
        if run(replace(sweep, trials=pending)):
            return [t for t in sweep.trials if t.key() in keys], True
        pause_for_tests("TFBENCH_TEST_PAUSE_AFTER_ROUND")  # tests: a kill between the design's rounds
        if any(folder.trial(t.key()).status() != "finished" for t in pending):
            break  # a trial failed: no further look can be reached; the summary says which are open
    return [t for t in sweep.trials if t.key() in keys], False


def run_confirm(sweep: SweepSpec, folder: ResultsFolder, confirm: list[TrialSpec],
                run: Callable[[list[TrialSpec]], bool]) -> tuple[list[TrialSpec], bool]:
    """A search's confirm trials (each method's selected configuration, and CE's, with every seed of the
    sweep): with fixed seeds, all of them in one call of `run` (the pending trials -> interrupted); under
    `seeds: {sequential: ...}`, the design's rounds over them, exactly as an unsearched sequential sweep.
    Returns (the trials of the comparison, interrupted)."""
    from dataclasses import replace

    from harness.results.sequential import plan_of

    plan = plan_of(sweep.raw.get("seeds"))
    if plan is None:
        pending = [t for t in confirm if folder.trial(t.key()).status() != "finished"]
        return confirm, bool(pending) and run(pending)
    return run_sequential(replace(sweep, trials=confirm), folder, plan, lambda s: run(s.trials))
