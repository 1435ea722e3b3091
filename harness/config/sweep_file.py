"""Sweep files: load (yaml.safe_load), validate every problem in one pass, expand into resolved trials.

A sweep file (schema_version 1) names methods, data sets, models, seeds, training settings, per-data-set
overrides (`dataset_defaults`), resources and retries; sweeps/quickstart.yaml is the smallest complete one,
and docs/sweep-files.md the full reference (generated from the models in schema.py). A method or data set
is a name or {name, params}; a list value in params is an axis of a grid.

Precedence for a method parameter: the method entry's params > dataset_defaults > the method's preset for
the data set (`Method.preset`, which sees the data set's traits) > the method's defaults. `--set` overrides
are applied on top of the file.

Validation: the structure is one strict pydantic model (`schema.SweepFile`); names, method and dataset
parameters (each against its class's Params), models, seeds and the grid size are checked next by one phase
each (`load_sweep`), every problem collected in one pass and formatted once (`problems.Problems`). Only a
sound file is expanded. Over 400 lines on purpose: the phases share the `Draft` and the file paths their
problems point at; split across modules, one pass would become several.
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
    SEED_TAGS,
    Costs,
    DatasetDefaults,
    Entry,
    Figures,
    Resources,
    Scheduler,
    SearchSettings,
    SeedRange,
    Seeds,
    Sequential,
    SequentialSeeds,
    SweepFile,
)
from harness.config.search import SearchSpec, check_given, check_search
from harness.config.spec import TrialSpec, short_repr
from harness.errors import UserError
from methods import METHODS, MethodParamError, UserImportError, load_user_module
from methods.params import check_params
from methods.registry import RegistryError, did_you_mean

__all__ = ["MAX_TRIALS", "Resources", "SweepError", "SweepSpec", "load_sweep"]

TOP_KEYS = list(SweepFile.model_fields)
RESOURCE_KEYS = list(Resources.model_fields)
KEY_NAMES = {(): TOP_KEYS, ("train",): TRAIN_FIELDS, ("resources",): RESOURCE_KEYS, ("costs",): list(Costs.model_fields),
             ("seeds",): [*SeedRange.model_fields, *Sequential.model_fields],
             ("seeds", "sequential"): list(SequentialSeeds.model_fields),
             ("methods", "*"): ["name", "params"], ("datasets", "*"): ["name", "params"],
             ("dataset_defaults", "*"): list(DatasetDefaults.model_fields),
             ("dataset_defaults", "*", "train"): TRAIN_FIELDS,
             ("search",): list(SearchSettings.model_fields), ("search", "scheduler"): list(Scheduler.model_fields),
             ("figures",): list(Figures.model_fields)}
_SEEDS = TypeAdapter(Seeds)


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
        from harness.config.catalog import user_labels  # a user's methods' labels: the tables read no .py

        return {"source": str(Path(self.source).resolve()), "sets": list(sets), "file": self.raw,
                "labels": user_labels([t.method for t in self.trials]),
                "trials": [{"key": t.key(), "spec": t.to_dict()} for t in self.trials]}


def load_sweep(path: str | Path, sets: list[str] | None = None) -> SweepSpec:
    """Read, validate and expand a sweep file. Raises SweepError listing every problem found, each once.

    One pass of phases over one list of problems (`Draft.P`): each phase checks its part of the file whatever
    the others found, so that one run reports every problem; the trials are expanded only from what passed
    its own checks, and only when everything did."""
    path = Path(path)
    raw, lines = read_yaml(path)
    if not isinstance(raw, dict):
        raise SweepError(str(path), [f"top level: found {type(raw).__name__}; allowed: a mapping with keys "
                                     f"{', '.join(TOP_KEYS)}"])
    try:
        overrides = parse_sets(sets or [])
    except UserError as e:
        raise SweepError(str(path), [str(e)]) from None
    d = Draft(path=path, raw=raw, lines=lines, overrides=overrides, P=Problems(str(path), lines))
    # imports first: they may register methods that the rest of the file names
    for phase in (_structure, _imports, _method_and_dataset_entries, _models, _seeds_and_train, _dataset_defaults,
                  _resources_and_search, _train_sets, _method_sets, _size):
        phase(d)
    trials = (_expand_transfer(d) if d.value("transfer_from") else _expand(d)) if d.expand else []
    d.P.raise_if_any()
    keys = [t.key() for t in trials]
    if len(set(keys)) != len(keys):
        d.P.add((), "the axes produce the same trial more than once; remove the duplicated entries")
    if d.search is not None:  # what only the resolved trials say: their epochs and protocol, per data set
        _check_search_trials(d.P, d.search, trials, d.resources)
    d.P.raise_if_any()
    if d.resources.workers_per_trial > 1:
        trials = [_with_workers(t, d.resources.workers_per_trial) for t in trials]
    return SweepSpec(name=raw["name"], source=path, raw=raw, trials=trials, resources=d.resources,
                     retries=raw.get("retries", 1), lines=lines, search=d.search)


@dataclass
class Draft:
    """A sweep file on its way through `load_sweep`'s phases: what each found, and whether it was sound."""

    path: Path
    raw: dict[str, Any]
    lines: dict[tuple, int]
    overrides: dict[str, dict[str, Any]]      # --set, by kind: method, dataset, model, train
    P: Problems
    bad: set[Any] = field(default_factory=set)  # what the schema refused: top-level keys, (key, index) entries
    imports: list[str] = field(default_factory=list)
    methods: list[tuple[int, tuple[str, dict]]] = field(default_factory=list)  # (index, (name, grid))
    sound_methods: list[tuple[int, tuple[str, dict]]] = field(default_factory=list)
    sound_datasets: list[tuple[int, tuple[str, dict]]] = field(default_factory=list)
    models: list[str] | None = None
    seeds: list[int] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    search: SearchSpec | None = None
    typed_sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # --set method.x, as each method types it
    sound: dict[str, bool] = field(default_factory=dict)
    expand: bool = False

    def ok(self, key: str, index: int | None = None) -> bool:
        """The schema accepted the top-level `key` (its entry `index`); a refused one is reported once, by it."""
        return key not in self.bad and (key, index) not in self.bad

    def value(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default) if self.ok(key) else default


def _structure(d: Draft) -> None:
    """The whole file against `SweepFile`, once: every structural problem reported here, and what it refused
    remembered (a key, or one entry of methods/datasets) so that the phases check the rest and skip that."""
    try:
        SweepFile.model_validate(d.raw)
    except ValidationError as e:
        errors = [{**err, "loc": _untagged(tuple(err["loc"]))} for err in e.errors()]
        for err in errors:
            if err["loc"] == ("seeds",):  # none of the three shapes: say all three, not the list's type alone
                d.P.add(("seeds",), f"found {short_repr(d.raw['seeds'])}; allowed: a list of distinct whole numbers "
                                    f">= 0, {{count: N, start: S}} or {{sequential: {{start, max, step, spending}}}}")
        d.P.add_pydantic((), [err for err in errors if err["loc"] != ("seeds",)], KEY_NAMES)
        d.bad = {loc[:2] if loc[0] in ("methods", "datasets") and len(loc) > 1 and isinstance(loc[1], int)
                 else loc[0] for loc in (err["loc"] for err in errors) if loc}


def _untagged(loc: tuple) -> tuple:
    """('seeds', 'range', 'count') -> ('seeds', 'count'): pydantic names the member of a tagged union in the
    path; the file has no such key."""
    return loc[:1] + loc[2:] if len(loc) > 1 and loc[0] == "seeds" and loc[1] in SEED_TAGS else loc


def _imports(d: Draft) -> None:
    for i, ref in enumerate(d.value("imports") or []):
        try:
            load_user_module(ref, base_dir=d.path.parent)
            d.imports.append(str((d.path.parent / ref).resolve()) if ref.endswith(".py") else ref)
        except UserImportError as e:
            d.P.add(("imports", i), str(e).replace("imports: ", "", 1))


def _method_and_dataset_entries(d: Draft) -> None:
    from harness.data import DATASETS

    methods = _entries(d, "methods", METHODS, "method")
    datasets = _entries(d, "datasets", DATASETS, "dataset")
    typed = [(mi, (m, _check_grid(d.P, ("methods", mi, "params"), m, params))) for mi, (m, params) in methods]
    d.methods = [(mi, (m, grid if grid is not None else params)) for (mi, (m, grid)), (_, (_, params))
                 in zip(typed, methods, strict=True)]
    d.sound_methods = [(mi, (m, grid)) for mi, (m, grid) in typed if grid is not None]
    sets = d.overrides["dataset"]
    d.sound_datasets = [(di, (name, params)) for di, (name, params) in datasets
                        if _check_dataset_params(d.P, ("datasets", di, "params"), name, {**params, **sets}, set(sets))]


def _models(d: Draft) -> None:
    count = len(d.P.found)
    d.models = models = d.value("models")
    if models:
        if len(set(models)) != len(models):
            d.P.add(("models",), f"found duplicated names {models!r:.80}; allowed: each name once")
        for model in dict.fromkeys(models):
            for _sub, what in check_model(model, {}):
                d.P.add(("models", models.index(model)), what)
    for key in d.overrides["model"]:
        if key in HARNESS_MODEL_KEYS:
            d.P.add((), f"--set model.{key}: set by the harness ({HARNESS_MODEL_KEYS[key]}); allowed: other keyword "
                        f"arguments of the model, e.g. drop_rate")
    d.sound["models"] = len(d.P.found) == count


def _seeds_and_train(d: Draft) -> None:
    d.seeds = _seeds(d.P, _SEEDS.validate_python(d.raw.get("seeds", [0]), strict=True)) if d.ok("seeds") else []
    d.train = d.value("train") or {}
    d.sound["train"] = d.ok("train") and d.ok("dataset_defaults")


def _dataset_defaults(d: Draft) -> None:
    from harness.data import DATASETS

    # copies: the typed method values replace the file's own below, and sweep.yaml records the file as given
    d.per_dataset = {name: dict(block or {}) for name, block in (d.value("dataset_defaults") or {}).items()}
    for name, block in d.per_dataset.items():
        if name not in DATASETS:
            d.P.add(("dataset_defaults", name), f"unknown dataset {name!r}{did_you_mean(name, DATASETS.names())}; "
                                                f"allowed: {', '.join(DATASETS.names())}")
        for m, params in (block.get("methods") or {}).items():
            if m not in METHODS:
                d.P.add(("dataset_defaults", name, "methods", m), f"unknown method {m!r}"
                        f"{did_you_mean(m, METHODS.names())}; allowed: {', '.join(METHODS.names())}")
            else:
                grid = _check_grid(d.P, ("dataset_defaults", name, "methods", m), m, params)
                d.sound["dataset_defaults"] = d.sound.get("dataset_defaults", True) and grid is not None
                block["methods"] = {**block["methods"], m: grid if grid is not None else params}
        if block.get("model"):
            for _sub, what in check_model(block["model"], {}):
                d.P.add(("dataset_defaults", name, "model"), what)
                d.sound["dataset_defaults"] = False


def _resources_and_search(d: Draft) -> None:
    d.resources = _resources(d.P, d.value("resources") or {})
    if d.raw.get("search") is not None and d.ok("search"):
        grids = {m: [k for k, v in params.items() if isinstance(v, list)] for _, (m, params) in d.methods}
        train = d.overrides["train"]
        d.search = check_search(d.P, SearchSettings.model_validate(d.raw["search"]), [m for _, (m, _) in d.methods],
                                train.get("epochs", d.train.get("epochs")), grids,
                                train.get("protocol", d.train.get("protocol")))
        check_given(d.P, d.search, d.methods, d.per_dataset, d.overrides["method"])


def _train_sets(d: Draft) -> None:
    for key, value in d.overrides["train"].items():
        try:
            check_train({key: value}, "--set train")
        except UserError as e:
            d.P.add((), str(e))
            d.sound["--set train"] = False


def _method_sets(d: Draft) -> None:
    fields = {m: {f.name for f in dataclasses.fields(METHODS.get(m).Params)} for _, (m, _) in d.methods}
    d.typed_sets = {m: {} for m in fields}
    for key, value in d.overrides["method"].items():
        owners = [m for m, names in fields.items() if key in names]
        if not owners:
            d.P.add((), f"--set method.{key}: no method of this sweep has a parameter {key!r}")
        for m in owners:
            checked, problems = check_params(METHODS.get(m).Params, {key: value})
            for _loc, what in problems:
                d.P.add((), f"--set method.{key}: {what} (method {m!r})")
                d.sound["--set method"] = False
            if checked is not None:
                d.typed_sets[m][key] = checked[key]


def _size(d: Draft) -> None:
    """How many trials before expanding: a 100 x 100 x 100 grid with 1,000 seeds is refused in microseconds."""
    d.expand = all(d.sound.values()) and bool(d.sound_methods) and bool(d.sound_datasets)
    d.seeds = d.seeds or [0]  # a broken seeds list is reported already; one seed still expands the grid for its checks
    if not d.expand:
        return
    total, parts, models = 0, [], len(d.models or [None])
    for mi, (m, m_params) in d.sound_methods:
        for _, (name, _) in d.sound_datasets:
            grid = {**((d.per_dataset.get(name) or {}).get("methods") or {}).get(m, {}), **m_params}
            axes = [len(v) for v in grid.values() if isinstance(v, list)]
            n = math.prod(axes) * models * len(d.seeds)
            total += n
            parts.append(f"methods[{mi}] ({m}) on {name}: {' x '.join(map(str, axes + [models]))}"
                         f" x {len(d.seeds)} seeds = {n:,}")
    if total > MAX_TRIALS:
        d.P.add((), f"the sweep expands to {total:,} trials ({'; '.join(parts[:4])}{'; ...' if len(parts) > 4 else ''}); "
                    f"allowed: at most {MAX_TRIALS:,} trials per sweep file (split it, or shrink the grid)")
        d.expand = False


def _entries(d: Draft, what: str, registry: Any, kind: str) -> list[tuple[int, tuple[str, dict]]]:
    """`[a, {name: b, params: {...}}]` -> [(0, (a, {})), (1, (b, {...}))]: the entries the schema accepted,
    whose names are registered."""
    out = []
    for i, item in enumerate(d.value(what, [])):
        if not d.ok(what, i):
            continue
        entry = Entry.model_validate(Entry.coerce(item))
        if entry.name not in registry:
            d.P.add((what, i, "name"), f"unknown {kind} {entry.name!r}{did_you_mean(entry.name, registry.names())}; "
                                       f"allowed: {', '.join(registry.names())}")
            continue
        out.append((i, (entry.name, dict(entry.params))))
    names = [n for _, (n, p) in out]
    for n in sorted({n for n in names if names.count(n) > 1 and not any(p for _, (m, p) in out if m == n)}):
        d.P.add((what,), f"{n!r} is listed more than once; allowed: each once (use params lists for grids)")
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


def _seeds(P: Problems, value: list[int] | SeedRange | Sequential) -> list[int]:
    """The seeds to run, from `seeds:` as the schema typed it; what one field cannot say is checked here."""
    if isinstance(value, Sequential):  # seeds 0 .. max-1, run as the design decides
        q = value.sequential
        if q.max < q.start:
            P.add(("seeds", "sequential", "max"), f"found {q.max}; allowed: max >= start ({q.start})")
            return []
        return list(range(q.max))
    if isinstance(value, SeedRange):
        if value.start + value.count - 1 > MAX_SEED:
            P.add(("seeds", "start"), f"found {value.start}; allowed: start + count - 1 <= {MAX_SEED}")
            return []
        return list(range(value.start, value.start + value.count))
    if len(set(value)) != len(value):
        P.add(("seeds",), f"found duplicated seeds {value!r:.80}; allowed: distinct whole numbers >= 0")
        return []
    return value


def _resources(P: Problems, value: dict[str, Any]) -> Resources:
    r = Resources.model_validate(value)
    if r.gpus_per_trial > 1 and r.gpus_per_trial != int(r.gpus_per_trial):
        P.add(("resources", "gpus_per_trial"), f"found {r.gpus_per_trial!r}; allowed: a fraction below 1 or a "
                                               f"whole number")
    if r.cpus_per_trial == 0 and r.workers_per_trial == 1:
        P.add(("resources", "cpus_per_trial"), "found 0; allowed: > 0")
    return r


def _expand_transfer(d: Draft) -> list[TrialSpec]:
    """`transfer_from:`: one trial per (finished source trial, data set), paired with its source by method and
    seed (harness/config/transfer_sweep.py)."""
    from harness.config.transfer_sweep import transfer_requests

    for key in ("seeds", "models", "search"):
        if key in d.raw:
            d.P.add((key,), f"found with transfer_from; allowed: none (the source trials' {key} are used)")
    for mi, (_, params) in d.sound_methods:
        if params:
            d.P.add(("methods", mi, "params"), "found with transfer_from; allowed: names only (the parameters "
                                               "are the source trials')")
    try:
        requests = transfer_requests(d.raw["transfer_from"], {m for _, (m, _) in d.sound_methods})
    except UserError as e:
        d.P.add(("transfer_from",), str(e).removeprefix("transfer_from: "))
        return []
    trials = []
    for (di, (name, d_params)), req in itertools.product(d.sound_datasets, requests):
        block = d.per_dataset.get(name) or {}
        train = {**d.train, **(block.get("train") or {}), **d.overrides["train"], "init_from": req["init_from"]}
        try:
            trials.append(resolve_trial(method=req["method"], dataset=name, model=req["model"], seed=req["seed"],
                                        method_params=req["method_params"], model_params=req["model_params"],
                                        dataset_params={**d_params, **d.overrides["dataset"]}, train=train,
                                        imports=tuple(d.imports)))
        except (UserError, MethodParamError, RegistryError) as e:
            d.P.add(("datasets", di), f"{req['init_from']}: {e}")
    return trials


def _expand(d: Draft) -> list[TrialSpec]:
    """One resolve per (method entry, dataset, grid point, model); seeds are copies that differ in the seed.
    Every method value was type-checked where it stands (`_check_grid`); the method's range checks run here,
    once per grid point, and a problem is reported at the axis value it names."""
    trials: list[TrialSpec] = []
    sets = d.overrides
    for (mi, (m, m_params)), (_, (name, d_params)) in itertools.product(d.sound_methods, d.sound_datasets):
        block = d.per_dataset.get(name) or {}
        d_train = {**d.train, **(block.get("train") or {}), **sets["train"]}
        grid = {**(block.get("methods") or {}).get(m, {}), **m_params}
        keys = list(grid)
        axes = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*axes):
            for model in d.models or [block.get("model")]:
                try:
                    spec = resolve_trial(method=m, dataset=name, model=model, seed=d.seeds[0],
                                         method_params={**dict(zip(keys, combo, strict=True)), **d.typed_sets[m]},
                                         dataset_params={**d_params, **sets["dataset"]},
                                         model_params=dict(sets["model"]), train=d_train,
                                         imports=tuple(d.imports), typed=True)
                except (UserError, MethodParamError, RegistryError) as e:
                    d.P.add(_where(mi, keys, axes, combo, str(e), m_params), str(e))
                    continue
                trials.extend(with_seed(spec, s) for s in d.seeds)
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
