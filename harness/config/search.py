"""The `search:` section of a sweep file: per-method ranges, the budget, the scheduler and the searcher.

    search:
      budget: 8                       # trials per method (per method x dataset x model), the same for all
      algorithm: random               # random (seeded) | tpe (Optuna's TPE: pip install -e '.[tune]' in the checkout)
      seed: 0                         # the searcher's seed: a rerun proposes the same configurations
      scheduler: {name: asha, grace_period: 1, reduction_factor: 3}   # or {name: fifo}: no early stopping
      space:                          # method -> parameter -> one of
        ls:   {epsilon: {uniform: [0.0, 0.3]}}           #   uniform: [low, high]
        zipf: {alpha: {loguniform: [0.1, 2.0]},          #   loguniform: [low, high] (low > 0)
               lam: {choice: [0.1, 1.0]}}                #   choice: [v1, v2, ...]

Why the structure here and the meaning in `check_search`: which keys of `space` exist depends on the
methods named in the file, like a method entry's params, so the names and values are checked against
each method's `Params` in the same pass as the rest of the file (one formatter, `problems.Problems`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from harness.config.problems import Problems
from harness.config.schema import KINDS, Dimension, SearchSettings
from methods import METHODS, MethodParamError
from methods.params import check_params
from methods.registry import did_you_mean


@dataclass(frozen=True)
class SearchSpec:
    """The validated search section, as plain values the runner turns into Ray Tune objects."""

    budget: int
    algorithm: str
    seed: int
    scheduler: str
    grace_period: int
    reduction_factor: float
    space: dict[str, dict[str, tuple[str, tuple[Any, ...]]]] = field(default_factory=dict)  # method -> p -> (kind, v)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = {m: {p: {k: list(v)} for p, (k, v) in ps.items()} for m, ps in self.space.items()}
        return d


def check_search(P: Problems, s: SearchSettings, methods: list[str], epochs: int | None,
                 grid_methods: dict[str, list[str]], protocol: str | None = None) -> SearchSpec:
    """The search section (as the schema typed it) against the sweep's methods; every problem into `P`.
    `epochs`: the trials' epochs (ASHA's grace period must fit in them); `grid_methods`: method -> parameters
    given as a grid axis; `protocol`: train.protocol (the search selects on the held-out split, which `paper`
    does not have)."""
    if protocol == "paper":
        P.add(("train", "protocol"), "found 'paper' in a sweep with search:; allowed: clean (the search selects on "
                                     "the held-out validation split; paper would select on the test split)")
    if s.algorithm == "tpe":
        try:
            import optuna  # noqa: F401
        except ImportError:
            P.add(("search", "algorithm"), "found 'tpe' but optuna is not installed; allowed: random, or tpe after "
                                           "pip install -e '.[tune]' in the tfbench checkout (.venv/bin/pip "
                                           "with make's .venv)")
    if s.scheduler.name == "asha" and epochs is not None and s.scheduler.grace_period > epochs:
        P.add(("search", "scheduler", "grace_period"), f"found {s.scheduler.grace_period}; allowed: at most "
                                                       f"train.epochs ({epochs})")
    for m, axes in grid_methods.items():
        for p in axes:
            P.add((), f"methods: {m!r} gives {p!r} as a grid (a list); allowed with search: fixed values "
                      f"(put ranges under search.space.{m})")
    space: dict[str, dict[str, tuple[str, tuple[Any, ...]]]] = {}
    for m, params in s.space.items():
        where = ("search", "space", m)
        if m not in methods:
            P.add(where, f"method {m!r} is not in this sweep's methods{did_you_mean(m, methods)}; allowed: "
                         f"{', '.join(methods)}")
            continue
        cls = METHODS.get(m)
        names = [f.name for f in dataclasses.fields(cls.Params)]
        space[m] = {}
        for p, dim_raw in params.items():
            if p not in names:
                P.add(where + (p,), f"unknown parameter {p!r}{did_you_mean(p, names)} of method {m!r}; "
                                    f"allowed: {', '.join(names) or 'none'}")
                continue
            try:
                dim = Dimension.model_validate(dim_raw)
            except ValidationError as e:
                P.add_pydantic(where + (p,), e.errors(), {where + (p,): list(KINDS)})
                continue
            if _check_dimension(P, where + (p, dim.kind), cls, p, dim):
                values = [float(v) for v in dim.values] if dim.kind != "choice" else dim.values
                space[m][p] = (dim.kind, tuple(values))
    return SearchSpec(budget=s.budget, algorithm=s.algorithm, seed=s.seed, scheduler=s.scheduler.name,
                      grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor,
                      space=space)


def check_given(P: Problems, search: SearchSpec, methods: list[tuple[int, tuple[str, dict[str, Any]]]],
                per_dataset: dict[str, dict[str, Any]], set_methods: dict[str, Any]) -> None:
    """What the rest of the file gives a searched sweep's methods, against search.space: a grid (a list) from
    dataset_defaults is refused like one in a method entry (`check_search`), and a fixed value for a parameter
    that search.space also gives a range is refused wherever it stands (a method entry, dataset_defaults,
    --set method.<p>): the search would silently replace it, so the file must say one of the two."""
    def meet(where: tuple, m: str, p: str, value: Any) -> None:
        if p in search.space.get(m, {}):
            P.add(where, f"found a fixed value {value!r:.40} for {m!r}'s {p!r}, which search.space.{m}.{p} also "
                         f"gives a range; allowed: one of them (the range to search it, or the value to fix it)")

    for mi, (m, params) in methods:
        for p, value in params.items():
            if not isinstance(value, list):
                meet(("methods", mi, "params", p), m, p, value)
    for d, block in per_dataset.items():
        for m, params in ((block or {}).get("methods") or {}).items():
            for p, value in (params if isinstance(params, dict) else {}).items():
                where = ("dataset_defaults", d, "methods", m, p)
                if isinstance(value, list):
                    P.add(where, f"found a grid (a list) for {m!r}'s {p!r}; allowed with search: a fixed value "
                                 f"(put ranges under search.space.{m})")
                else:
                    meet(where, m, p, value)
    for p, value in set_methods.items():
        for m in search.space:
            if p in search.space[m]:
                P.add((), f"--set method.{p}={value!r:.40}: search.space.{m}.{p} also gives a range; allowed: one "
                          f"of them (the range to search it, or --set to fix it)")


def _check_dimension(P: Problems, where: tuple, cls: type, p: str, dim: Dimension) -> bool:
    """Every end of a range (every choice) must be a value the method accepts on its own."""
    ok = True
    if dim.kind in ("uniform", "loguniform"):
        low, high = dim.values
        if not low < high:
            P.add(where, f"found [{low!r}, {high!r}]; allowed: [low, high] with low < high")
            ok = False
        if dim.kind == "loguniform" and low <= 0:
            P.add(where, f"found low {low!r}; allowed: low > 0 (a log scale)")
            ok = False
    elif len(set(map(repr, dim.values))) != len(dim.values):
        P.add(where, f"found duplicated values {dim.values!r:.80}; allowed: distinct values")
        ok = False
    for i, v in enumerate(dim.values):
        value = float(v) if dim.kind != "choice" and isinstance(v, int) else v
        typed, problems = check_params(cls.Params, {p: value})
        for _loc, what in problems:
            P.add(where + (i,), f"{p!r} of {cls.__name__}: {what}")
            ok = False
        if typed is not None and not problems:
            try:
                cls.check(cls.Params(**typed), num_classes=None)  # the data set is not known here
            except MethodParamError as e:
                P.add(where + (i,), str(e))
                ok = False
    return ok
