"""Sweep files: load (yaml.safe_load), validate every problem in one pass, expand into resolved trials.

A sweep file (schema_version 1):

    schema_version: 1
    name: quickstart                    # results go to results/<name>/
    imports: [my_method.py]             # optional: user method files (relative to the sweep file) or modules
    methods:                            # a name, or {name, params}; a list value in params is a grid axis
      - ce
      - {name: zipf, params: {alpha: [0.5, 1.0, 1.5]}}
    datasets:                           # a name, or {name, params} (params: root, image_size, ...)
      - digits
    models: [tiny_cnn]                  # optional: default is each dataset's usual model
    seeds: [0, 1, 2]                    # a list, or {count: 3} for 0..2
    train: {epochs: 30}                 # training overrides (see TrainConfig), for every trial
    dataset_defaults:                   # optional per-dataset overrides: train settings and method params
      cifar100: {train: {epochs: 200}, methods: {zipf: {lam: 0.1}}}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, workers_per_trial: 1, max_concurrent: 2}
    retries: 1                          # extra attempts for a trial that raises

Precedence for a method parameter: the method entry's params > dataset_defaults > the paper's per-dataset
presets (harness/config/presets.py) > the method's defaults. `--set` overrides are applied on top of the file.

Validation: the structure is one strict pydantic model (`schema.SweepFile`); names, method and dataset
parameters (each against its class's Params), models, seeds and the grid size are checked next, every
problem collected in one pass and formatted once (`problems.Problems`). Only a sound file is expanded.
The full schema is docs/sweep-files.md (generated from the models).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.config.problems import Problems, SweepError, read_yaml
from harness.config.resolve import (
    HARNESS_MODEL_KEYS,
    TRAIN_FIELDS,
    check_model,
    check_train,
    parse_sets,
    resolve_trial,
    with_seed,
)
from harness.config.schema import (
    MAX_SEED,
    MAX_TRIALS,
    DatasetDefaults,
    Entry,
    Resources,
    SeedList,
    SeedRange,
    SweepFile,
)
from harness.config.search import SearchSpec, check_given, check_search
from harness.config.spec import TrialSpec
from harness.errors import UserError
from methods import METHODS, MethodParamError, UserImportError, load_user_module
from methods.params import check_params
from methods.registry import RegistryError, did_you_mean

__all__ = ["MAX_TRIALS", "Resources", "SweepError", "SweepSpec", "load_sweep"]

TOP_KEYS = list(SweepFile.model_fields)
RESOURCE_KEYS = list(Resources.model_fields)
KEY_NAMES = {(): TOP_KEYS, ("train",): TRAIN_FIELDS, ("resources",): RESOURCE_KEYS, ("seeds",): ["count", "start"],
             ("methods", "*"): ["name", "params"], ("datasets", "*"): ["name", "params"],
             ("dataset_defaults", "*"): list(DatasetDefaults.model_fields),
             ("dataset_defaults", "*", "train"): TRAIN_FIELDS}
_SEED_LIST = TypeAdapter(SeedList)


@dataclass
class SweepSpec:
    name: str
    source: Path
    raw: dict[str, Any]
    trials: list[TrialSpec]
    resources: Resources = field(default_factory=Resources)
    retries: int = 1
    lines: dict[tuple, int] = field(default_factory=dict)  # YAML path -> line, for later problems (resources)
    search: SearchSpec | None = None  # `search:`: the trials are the base configurations (docs/tuning.md)

    def record(self, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """What results/<name>/sweep.yaml holds: the file as run, the --set overrides and the resolved trials."""
        return {"source": str(Path(self.source).resolve()), "sets": list(sets), "file": self.raw,
                "trials": [{"key": t.key(), "spec": t.to_dict()} for t in self.trials]}


def load_sweep(path: str | Path, sets: list[str] | None = None) -> SweepSpec:
    """Read, validate and expand a sweep file. Raises SweepError listing every problem found, each once."""
    path = Path(path)
    src = str(path)
    raw, lines = read_yaml(path)
    if not isinstance(raw, dict):
        raise SweepError(src, [f"top level: found {type(raw).__name__}; allowed: a mapping with keys "
                               f"{', '.join(TOP_KEYS)}"])
    try:
        overrides = parse_sets(sets or [])
    except UserError as e:
        raise SweepError(src, [str(e)]) from None
    P = Problems(src, lines)
    try:
        SweepFile.model_validate(raw)
        bad: set[Any] = set()
    except ValidationError as e:
        P.add_pydantic((), e.errors(), KEY_NAMES)
        bad = {err["loc"][0] for err in e.errors() if err["loc"]}

    def ok(key: str) -> bool:
        return key not in bad

    # imports first: they may register methods that the rest of the file names
    imports = raw.get("imports") or [] if ok("imports") else []
    resolved_imports: list[str] = []
    for i, ref in enumerate(imports):
        try:
            load_user_module(ref, base_dir=path.parent)
            resolved_imports.append(str((path.parent / ref).resolve()) if ref.endswith(".py") else ref)
        except UserImportError as e:
            P.add(("imports", i), str(e).replace("imports: ", "", 1))

    from harness.data import DATASETS

    methods = _entries(P, "methods", raw.get("methods") if ok("methods") else [], METHODS, "method")
    datasets = _entries(P, "datasets", raw.get("datasets") if ok("datasets") else [], DATASETS, "dataset")
    # every check below runs whatever the others found, so that one pass reports every problem; what the
    # trials are expanded from is only what passed its own checks (`sound`)
    sound: dict[str, bool] = {}
    typed_methods = [(mi, (m, _check_grid(P, ("methods", mi, "params"), m, params))) for mi, (m, params) in methods]
    methods = [(mi, (m, grid if grid is not None else params)) for (mi, (m, grid)), (_, (_, params))
               in zip(typed_methods, methods, strict=True)]
    sound_methods = [(mi, (m, grid)) for mi, (m, grid) in typed_methods if grid is not None]
    sound_datasets = [(di, (d, params)) for di, (d, params) in datasets
                      if _check_dataset_params(P, ("datasets", di, "params"), d, {**params, **overrides["dataset"]},
                                               set(overrides["dataset"]))]
    count = len(P.found)

    models = raw.get("models") if ok("models") else None
    if models:
        if len(set(models)) != len(models):
            P.add(("models",), f"found duplicated names {models!r:.80}; allowed: each name once")
        for model in dict.fromkeys(models):
            for _sub, what in check_model(model, {}):
                P.add(("models", models.index(model)), what)
    for key in overrides["model"]:
        if key in HARNESS_MODEL_KEYS:
            P.add((), f"--set model.{key}: set by the harness ({HARNESS_MODEL_KEYS[key]}); allowed: other keyword "
                      f"arguments of the model, e.g. drop_rate")
    sound["models"] = len(P.found) == count

    seeds = _seeds(P, raw.get("seeds", [0]))
    train = (raw.get("train") or {}) if ok("train") else {}
    sound["train"] = ok("train") and ok("dataset_defaults")
    # copies: the typed method values replace the file's own below, and sweep.yaml records the file as given
    per_dataset = {d: dict(block or {}) for d, block in
                   ((raw.get("dataset_defaults") or {}) if ok("dataset_defaults") else {}).items()}
    for d, block in per_dataset.items():
        if d not in DATASETS:
            P.add(("dataset_defaults", d), f"unknown dataset {d!r}{did_you_mean(d, DATASETS.names())}; "
                                           f"allowed: {', '.join(DATASETS.names())}")
        for m, params in (block.get("methods") or {}).items():
            if m not in METHODS:
                P.add(("dataset_defaults", d, "methods", m),
                      f"unknown method {m!r}{did_you_mean(m, METHODS.names())}; allowed: {', '.join(METHODS.names())}")
            else:
                grid = _check_grid(P, ("dataset_defaults", d, "methods", m), m, params)
                sound["dataset_defaults"] = sound.get("dataset_defaults", True) and grid is not None
                block["methods"] = {**block["methods"], m: grid if grid is not None else params}
        if block.get("model"):
            for _sub, what in check_model(block["model"], {}):
                P.add(("dataset_defaults", d, "model"), what)
                sound["dataset_defaults"] = False

    resources = _resources(P, raw.get("resources") or {} if ok("resources") else {})
    search = None
    if raw.get("search") is not None and ok("search"):
        grids = {m: [k for k, v in params.items() if isinstance(v, list)] for _, (m, params) in methods}
        search = check_search(P, raw["search"], [m for _, (m, _) in methods],
                              overrides["train"].get("epochs", train.get("epochs")), grids,
                              overrides["train"].get("protocol", train.get("protocol")))
        if search is not None:
            check_given(P, search, methods, per_dataset, overrides["method"])
    for key, value in overrides["train"].items():
        try:
            check_train({key: value}, "--set train")
        except UserError as e:
            P.add((), str(e))
            sound["--set train"] = False
    method_fields = {m: {f.name for f in dataclasses.fields(METHODS.get(m).Params)} for _, (m, _) in methods}
    typed_sets: dict[str, dict[str, Any]] = {m: {} for m in method_fields}  # --set method.x, as each method types it
    for key, value in overrides["method"].items():
        owners = [m for m, names in method_fields.items() if key in names]
        if not owners:
            P.add((), f"--set method.{key}: no method of this sweep has a parameter {key!r}")
        for m in owners:
            checked, problems = check_params(METHODS.get(m).Params, {key: value})
            for _loc, what in problems:
                P.add((), f"--set method.{key}: {what} (method {m!r})")
                sound["--set method"] = False
            if checked is not None:
                typed_sets[m][key] = checked[key]

    # how many trials before expanding: a 100 x 100 x 100 grid with 1,000 seeds is refused in microseconds
    expand = all(sound.values()) and bool(sound_methods) and bool(sound_datasets)
    seeds = seeds or [0]  # a broken seeds list is reported above; one seed still expands the grid for its checks
    if expand:
        total, parts = 0, []
        for mi, (m, m_params) in sound_methods:
            for _, (d, _) in sound_datasets:
                grid = {**((per_dataset.get(d) or {}).get("methods") or {}).get(m, {}), **m_params}
                axes = [len(v) for v in grid.values() if isinstance(v, list)]
                n = math.prod(axes) * len(models or [None]) * len(seeds)
                total += n
                parts.append(f"methods[{mi}] ({m}) on {d}: {' x '.join(map(str, axes + [len(models or [None])]))}"
                             f" x {len(seeds)} seeds = {n:,}")
        if total > MAX_TRIALS:
            P.add((), f"the sweep expands to {total:,} trials ({'; '.join(parts[:4])}{'; ...' if len(parts) > 4 else ''}); "
                      f"allowed: at most {MAX_TRIALS:,} trials per sweep file (split it, or shrink the grid)")
            expand = False
    trials = _expand(P, sound_methods, sound_datasets, models, seeds, train, per_dataset, overrides, typed_sets,
                     tuple(resolved_imports)) if expand else []
    P.raise_if_any()
    keys = [t.key() for t in trials]
    if len(set(keys)) != len(keys):
        P.add((), "the axes produce the same trial more than once; remove the duplicated entries")
    if search is not None:  # what only the resolved trials say: their epochs and protocol, per data set
        _check_search_trials(P, search, trials, resources)
    P.raise_if_any()
    if resources.workers_per_trial > 1:
        trials = [_with_workers(t, resources.workers_per_trial) for t in trials]
    return SweepSpec(name=raw["name"], source=path, raw=raw, trials=trials, resources=resources,
                     retries=raw.get("retries", 1), lines=lines, search=search)


def _entries(P: Problems, what: str, value: list[Any], registry: Any, kind: str) -> list[tuple[int, tuple[str, dict]]]:
    """`[a, {name: b, params: {...}}]` -> [(0, (a, {})), (1, (b, {...}))] for the entries that are sound."""
    out = []
    for i, item in enumerate(value):
        try:
            entry = Entry.model_validate(Entry.coerce(item))
        except ValidationError as e:
            P.add_pydantic((what, i), e.errors(), KEY_NAMES)
            continue
        if entry.name not in registry:
            P.add((what, i, "name"), f"unknown {kind} {entry.name!r}{did_you_mean(entry.name, registry.names())}; "
                                     f"allowed: {', '.join(registry.names())}")
            continue
        out.append((i, (entry.name, dict(entry.params))))
    names = [n for _, (n, p) in out]
    for n in sorted({n for n in names if names.count(n) > 1 and not any(p for _, (m, p) in out if m == n)}):
        P.add((what,), f"{n!r} is listed more than once; allowed: each once (use params lists for grids)")
    return out


def _check_grid(P: Problems, where: tuple, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Each value of each axis against the method's Params (a list value is an axis of a grid), each where it
    stands in the file. Returns the grid with every value as its type makes it (1 -> 1.0 for a float), so
    that a trial is resolved from checked values only (None when some value is not); the method's range
    checks run per grid point when the trials are resolved (`resolve_trial`)."""
    cls = METHODS.get(method)
    names = [f.name for f in dataclasses.fields(cls.Params)]
    typed_grid: dict[str, Any] = {}
    count = len(P.found)
    for key, value in params.items():
        if key not in names:
            P.add(where + (key,), f"unknown parameter {key!r}{did_you_mean(key, names)} of method {method!r}; "
                                  f"allowed: {', '.join(names) or 'none'}")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list):
            if not value:
                P.add(where + (key,), "found an empty list; allowed: a value or a non-empty list of values")
            elif len(set(map(repr, value))) != len(value):
                P.add(where + (key,), f"found duplicated values {value!r:.80}; allowed: distinct values")
        typed = []
        for i, v in enumerate(values):
            at = where + ((key, i) if isinstance(value, list) else (key,))
            checked, problems = check_params(cls.Params, {key: v})
            for _loc, what in problems:
                P.add(at, f"{key!r} of {method!r}: {what}")
            typed.append(checked[key] if checked is not None else v)
        typed_grid[key] = typed if isinstance(value, list) else typed[0]
    return typed_grid if len(P.found) == count else None


def _check_dataset_params(P: Problems, where: tuple, dataset: str, params: dict[str, Any], from_set: set[str]) -> bool:
    from harness.data import DATASETS

    cls = DATASETS.get(dataset)
    resolved, problems = check_params(cls.Params, params)
    for loc, what in problems:
        key = loc[0] if loc else "?"
        P.add((f"--set dataset.{key}",) if key in from_set else where + loc, f"dataset {dataset!r}: {what}")
    if resolved is not None:  # the data set's own range checks (its Params refuse a value out of range)
        try:
            cls.Params(**resolved)
        except UserError as e:
            P.add(where, str(e))
            return False
    return not problems


def _seeds(P: Problems, value: Any) -> list[int]:
    try:
        if isinstance(value, dict):
            r = SeedRange.model_validate(value)
            if r.start + r.count - 1 > MAX_SEED:
                P.add(("seeds", "start"), f"found {r.start}; allowed: start + count - 1 <= {MAX_SEED}")
                return []
            return list(range(r.start, r.start + r.count))
        seeds = _SEED_LIST.validate_python(value, strict=True)
    except ValidationError as e:
        P.add_pydantic(("seeds",), e.errors(), KEY_NAMES)
        return []
    if len(set(seeds)) != len(seeds):
        P.add(("seeds",), f"found duplicated seeds {seeds!r:.80}; allowed: distinct whole numbers >= 0")
        return []
    return seeds


def _resources(P: Problems, value: dict[str, Any]) -> Resources:
    r = Resources.model_validate(value)
    if r.gpus_per_trial > 1 and r.gpus_per_trial != int(r.gpus_per_trial):
        P.add(("resources", "gpus_per_trial"), f"found {r.gpus_per_trial!r}; allowed: a fraction below 1 or a "
                                               f"whole number")
    if r.cpus_per_trial == 0 and r.workers_per_trial == 1:
        P.add(("resources", "cpus_per_trial"), "found 0; allowed: > 0")
    return r


def _expand(P: Problems, methods, datasets, models, seeds, train, per_dataset, overrides, typed_sets,
            imports) -> list[TrialSpec]:
    """One resolve per (method entry, dataset, grid point, model); seeds are copies that differ in the seed.
    Every method value was type-checked where it stands (`_check_grid`); the method's range checks run here,
    once per grid point, and a problem is reported at the axis value it names."""
    trials: list[TrialSpec] = []
    for (mi, (m, m_params)), (_, (d, d_params)) in itertools.product(methods, datasets):
        block = per_dataset.get(d) or {}
        d_train = {**train, **(block.get("train") or {}), **overrides["train"]}
        grid = {**(block.get("methods") or {}).get(m, {}), **m_params}
        keys = list(grid)
        axes = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*axes):
            for model in models or [block.get("model")]:
                try:
                    spec = resolve_trial(method=m, dataset=d, model=model, seed=seeds[0],
                                         method_params={**dict(zip(keys, combo, strict=True)), **typed_sets[m]},
                                         dataset_params={**d_params, **overrides["dataset"]},
                                         model_params=dict(overrides["model"]), train=d_train, imports=imports,
                                         typed=True)
                except (UserError, MethodParamError, RegistryError) as e:
                    P.add(_where(mi, keys, axes, combo, str(e), m_params), str(e))
                    continue
                trials.extend(with_seed(spec, s) for s in seeds)
    return trials


def _where(mi: int, keys: list[str], axes: list[list[Any]], combo: tuple, message: str,
           entry: dict[str, Any]) -> tuple:
    """The file path of a problem found at a grid point: the axis value of the parameter it names, when the
    entry gives that parameter, else the entry's params."""
    for key, values, value in zip(keys, axes, combo, strict=True):
        if f"parameter {key!r}" in message and key in entry:
            return ("methods", mi, "params", key, values.index(value)) if isinstance(entry[key], list) else \
                ("methods", mi, "params", key)
    return ("methods", mi, "params")


def _check_search_trials(P: Problems, search: SearchSpec, trials: list[TrialSpec], resources: Resources) -> None:
    """search: against the trials as resolved (a data set's default epochs, dataset_defaults' protocol)."""
    if resources.workers_per_trial > 1:
        P.add(("resources", "workers_per_trial"), f"found {resources.workers_per_trial} in a sweep with search:; "
                                                  f"allowed: 1 (a search trial trains in one process)")
    for t in trials:
        if search.scheduler == "asha" and search.grace_period > t.train.epochs:
            P.add(("search", "scheduler", "grace_period"),
                  f"found {search.grace_period}, but {t.method} on {t.dataset} trains {t.train.epochs} epochs; "
                  f"allowed: at most the trials' epochs")
        if t.train.protocol != "clean":
            P.add(("train", "protocol"), f"{t.method} on {t.dataset} resolves to protocol {t.train.protocol!r} "
                                         f"(dataset_defaults); allowed with search: clean (the search selects on "
                                         f"the held-out validation split)")


def _with_workers(spec: TrialSpec, workers: int) -> TrialSpec:
    return dataclasses.replace(spec, train=spec.train.replace(workers=workers))
