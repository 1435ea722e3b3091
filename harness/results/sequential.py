"""Seeds until decided (`seeds: {sequential: {start, max, step, spending}}`): the planned looks, their
alpha-spending boundaries, and the replay of the decisions from the finished trials.

Why a design: adding seeds until something is significant and then testing at alpha is the common habit,
and it is wrong (checked after every seed from 3 to 10, plain Holm's error rate is about 0.18 at 0.05).
Here the looks are planned (n = start, start + step, ..., max), the error is spent over them by a
Lan-DeMets spending function of the information fraction t = n / max (O'Brien-Fleming-type by default:
2 - 2 Phi(z_{1-alpha/2} / sqrt t), which keeps early looks strict; Pocock-type: alpha ln(1 + (e - 1) t)),
and at look j the comparisons still open are tested with Holm at that look's increment a_j over the
table's k comparisons, a closed one counting with p = 1. Why this is valid without a multivariate
integral: Holm at level a_j falsely marks at look j with probability at most a_j whatever happened before,
and the increments sum to alpha (a union bound over looks); it is conservative, and the simulation
(`python -m harness.results.simulate`, docs/results.md) measures how much.

A comparison stops for efficacy (marked better / worse), for equivalence (its 90% t interval inside the
ROPE: two one-sided tests at 0.05; stopping without a mark never adds a false mark), or at max as
undecided. The replay is a pure function of the finished trials, so a resumed sweep, and its summary,
reach the same decisions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.results.stats import holm, paired_difference

SPENDING = ("obf", "pocock")


@dataclass(frozen=True)
class Plan:
    start: int = 3
    max: int = 10
    step: int = 1
    spending: str = "obf"

    def looks(self) -> list[int]:
        """The seed counts at which the comparisons are tested: start, start + step, ..., and max."""
        return sorted({*range(self.start, self.max, self.step), self.max})


def spent(plan: Plan, alpha: float) -> list[float]:
    """The level of each look: the spending function's increments, summing to alpha."""
    def a(t: float) -> float:
        if plan.spending == "pocock":
            return alpha * math.log(1 + (math.e - 1) * t)
        return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    cum = [a(n / plan.max) for n in plan.looks()]
    return [c - p for c, p in zip(cum, [0.0, *cum[:-1]], strict=True)]


@dataclass(frozen=True)
class Decision:
    outcome: str   # better, worse, equivalent, undecided, or open (its next look's seeds are not all finished)
    n: int         # seeds at the look where it stopped (open: the last look passed, 0 before the first)
    look: int      # 1-based (open: the last look passed)
    needs: int     # seeds finished for its next look (its n when stopped)


def decide(diffs: Sequence[np.ndarray], plan: Plan, *, alpha: float, rope: float,
           higher_is_better: bool) -> list[Decision]:
    """Replay the looks over each comparison's per-seed differences (in seed order; (n_i,) each, only the
    seeds finished so far) and decide every comparison (one family: one dataset / model / settings)."""
    k = len(diffs)
    levels, looks = spent(plan, alpha), plan.looks()
    state: list[Decision | None] = [None] * k
    for j, (n, level) in enumerate(zip(looks, levels, strict=True), start=1):
        open_ = [i for i in range(k) if state[i] is None]
        if not open_:
            break
        if any(len(diffs[i]) < n for i in open_):  # this look waits for its seeds
            for i in open_:
                state[i] = Decision("open", looks[j - 2] if j > 1 else 0, j - 1, n)
            break
        p = np.ones(k)
        pairs = {}
        for i in open_:
            d = np.asarray(diffs[i][:n], dtype=float)
            pairs[i] = paired_difference(d, np.zeros(n))
            p[i] = pairs[i].p if math.isfinite(pairs[i].p) else 1.0
        adjusted = holm(p)
        for i in open_:
            pr = pairs[i]
            if adjusted[i] < level and pr.mean != 0:
                state[i] = Decision("better" if (pr.mean > 0) == higher_is_better else "worse", n, j, n)
            elif pr.identical or _equivalent(pr, n, rope):
                state[i] = Decision("equivalent", n, j, n)
            elif n == plan.max:
                state[i] = Decision("undecided", n, j, n)
    return [s for s in state if s is not None]


def _equivalent(pair, n: int, rope: float) -> bool:
    """Two one-sided tests at 0.05: the 90% t interval of the mean difference inside [-rope, rope]."""
    if n < 2 or not math.isfinite(pair.sd) or rope <= 0:
        return False
    half = float(stats.t.ppf(0.95, n - 1)) * pair.sd / math.sqrt(n)
    return -rope < pair.mean - half and pair.mean + half < rope


def plan_of(value: object) -> Plan | None:
    """The plan of a sweep file's `seeds:` (as recorded in sweep.yaml), None when it is not sequential."""
    if not (isinstance(value, dict) and isinstance(value.get("sequential"), dict)):
        return None
    return Plan(**{k: v for k, v in value["sequential"].items() if k in Plan.__dataclass_fields__})


def comparisons(trials: pd.DataFrame, *, metric: str, baseline: str) -> list[dict]:
    """Every comparison of a trials table with its baseline: {'config': the configuration's key columns,
    'family', 'diffs' (per seed, seed order), 'seeds' (the configuration's seeds in order), 'base_seeds'}."""
    from harness.results.aggregate import config_columns, family_columns, with_metric_columns

    trials = with_metric_columns(trials)
    cfg = config_columns(trials)
    match = family_columns(trials)
    done = trials[trials["status"].astype(str) == "finished"]
    out = []
    for key, g in trials.groupby(cfg, dropna=False, sort=False):
        config = dict(zip(cfg, key if isinstance(key, tuple) else (key,), strict=True))
        if config["method"] == baseline:
            continue
        family = tuple(str(config[c]) for c in match)
        base = done[(done["method"] == baseline)
                    & np.logical_and.reduce([done[c].astype(str) == f for c, f in zip(match, family, strict=True)])]
        mine = done.loc[done.index.intersection(g.index)]
        a = dict(zip(mine["seed"].astype(int), mine[metric].astype(float), strict=True))
        b = dict(zip(base["seed"].astype(int), base[metric].astype(float), strict=True))
        seeds = sorted(g["seed"].astype(int))
        # the seeds in order, up to the first one either side has not finished: looks use the first n seeds
        diffs = []
        for s in seeds:
            if s not in a or s not in b or not (math.isfinite(a[s]) and math.isfinite(b[s])):
                break
            diffs.append(a[s] - b[s])
        out.append({"config": config, "family": family, "diffs": np.array(diffs), "seeds": seeds})
    return out


def decisions(trials: pd.DataFrame, plan: Plan, *, metric: str, baseline: str, alpha: float, rope: float,
              higher_is_better: bool) -> list[tuple[dict, Decision]]:
    """(comparison, decision) for every comparison of the table, decided family by family."""
    comps = comparisons(trials, metric=metric, baseline=baseline)
    out = []
    for family in dict.fromkeys(c["family"] for c in comps):
        members = [c for c in comps if c["family"] == family]
        found = decide([c["diffs"] for c in members], plan, alpha=alpha, rope=rope, higher_is_better=higher_is_better)
        out.extend(zip(members, found, strict=True))
    return out


def stop_text(d: Decision, plan: Plan) -> str:
    looks = len(plan.looks())
    where = f"at {d.n} seeds (look {d.look} of {looks})"
    return {"better": f"stopped {where}", "worse": f"stopped {where}", "equivalent": f"equivalent {where}",
            "undecided": f"undecided {where}", "open": f"open: its next look needs {d.needs} seeds"}[d.outcome]


def apply_sequential(groups: pd.DataFrame, trials: pd.DataFrame, folder: Path, *, metric: str, primary: str,
                     alpha: float) -> None:
    """For a sequential sweep's summary, in place: the marks of the design's boundaries replace plain Holm's
    (which, after looks chosen by the data, would not hold its level), and `stopped` says where each
    comparison stopped. Any other sweep (or a secondary metric): only an empty `stopped` column."""
    from harness.folders import ResultsFolder
    from harness.results.aggregate import BASELINE, METRICS, config_columns

    groups["stopped"] = ""
    plan = plan_of(ResultsFolder(folder).sweep_value("seeds"))
    if plan is None or metric != primary or groups.empty:
        return
    spec = METRICS[metric]
    rope = float(groups["rope"].iloc[0])
    cfg = [c for c in config_columns(trials) if c in groups.columns]
    index = {tuple(str(groups.at[i, c]) for c in cfg): i for i in groups.index}
    for comp, d in decisions(trials, plan, metric=metric, baseline=BASELINE, alpha=alpha, rope=rope,
                             higher_is_better=spec.higher_is_better):
        i = index.get(tuple(str(comp["config"][c]) for c in cfg))
        if i is None:
            continue
        if groups.at[i, "verdict"] != "identical":
            groups.at[i, "verdict"] = d.outcome if d.outcome in ("better", "worse") else "none"
        groups.at[i, "stopped"] = stop_text(d, plan)
    groups["better"] = groups["verdict"] == "better"
    groups["worse"] = groups["verdict"] == "worse"
