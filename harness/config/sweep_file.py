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
presets (harness/presets.py) > the method's defaults. `--set` overrides are applied on top of the file.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config.resolve import TRAIN_FIELDS, parse_sets, resolve_trial
from harness.config.spec import TrialSpec
from harness.errors import UserError
from methods import METHODS, MethodParamError, UserImportError, load_user_module
from methods.registry import RegistryError

SCHEMA_VERSION = 1
TOP_KEYS = ["schema_version", "name", "description", "imports", "methods", "datasets", "models", "seeds", "train",
            "dataset_defaults", "resources", "retries"]
RESOURCE_KEYS = ["cpus_per_trial", "gpus_per_trial", "workers_per_trial", "max_concurrent"]
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_SEED_COUNT = 10_000  # more is a typo, and expanding it would only exhaust memory


class SweepError(UserError):
    """Every problem found in a sweep file, one per line."""

    def __init__(self, source: str, problems: list[str]):
        # one line per problem, whatever the text quoted (a user module's multi-line exception, YAML's excerpt)
        self.problems = [" ".join(str(p).split()) for p in problems]
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    max_concurrent: int = 0  # 0 = as many as the resources allow


@dataclass
class SweepSpec:
    name: str
    source: Path
    raw: dict[str, Any]
    trials: list[TrialSpec]
    resources: Resources = field(default_factory=Resources)
    retries: int = 1


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _named_entries(value: Any, path: str, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """`[a, {name: b, params: {...}}]` -> [(a, {}), (b, {...})]; problems are collected, not raised."""
    if not isinstance(value, list) or not value:
        problems.append(f"{path}: found {value!r}; allowed: a non-empty list of names or {{name, params}} entries")
        return []
    out = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(item, str) and item:
            out.append((item, {}))
        elif isinstance(item, dict):
            extra = set(item) - {"name", "params"}
            for k in sorted(extra, key=str):
                problems.append(f"{where}.{k}: unknown key{_did_you_mean(k, ['name', 'params'])}; allowed: name, params")
            name, params = item.get("name"), item.get("params", {})
            if not isinstance(name, str) or not name:
                problems.append(f"{where}.name: found {name!r}; allowed: a non-empty string")
                continue
            if not isinstance(params, dict):
                problems.append(f"{where}.params: found {params!r}; allowed: a mapping of parameter: value or [values]")
                continue
            out.append((name, params))
        else:
            problems.append(f"{where}: found {item!r}; allowed: a name or {{name, params}}")
    return out


def _grid(params: dict[str, Any], path: str, problems: list[str]) -> list[dict[str, Any]]:
    """Expand list values into the cartesian product; an empty list is a problem, not zero trials."""
    keys, axes = [], []
    for k, v in params.items():
        if isinstance(v, list):
            if not v:
                problems.append(f"{path}.{k}: found an empty list; allowed: a value or a non-empty list of values")
                return []
            if len(set(map(repr, v))) != len(v):
                problems.append(f"{path}.{k}: found duplicated values {v!r}; allowed: distinct values")
            keys.append(k)
            axes.append(v)
        else:
            keys.append(k)
            axes.append([v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def _check_number(value: Any, path: str, problems: list[str], *, integer: bool = False, minimum: float = 0,
                  maximum: int | None = None) -> bool:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int))
    if not bad and (math.isnan(value) or math.isinf(value) or value < minimum
                    or (maximum is not None and value > maximum)):
        bad = True
    if bad:
        kind = "a whole number" if integer else "a number"
        limit = f"in [{minimum:g}, {maximum}]" if maximum is not None else f">= {minimum:g}"
        problems.append(f"{path}: found {_short(value)}; allowed: {kind} {limit}")
    return not bad


def _or_empty(value: Any, empty: Any) -> Any:
    """An absent or null entry means "none"; a wrongly typed one (even an empty {} for a list) is kept to be reported."""
    return empty if value is None else value


def _short(value: Any) -> str:
    """repr, cut: a 400-digit number or a long list must not flood the one-line message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _duplicate_keys(text: str) -> list[str]:
    """Keys given twice in one mapping: YAML keeps the last one silently, which would drop half an axis.
    Composing builds nodes only (no Python objects), so this is as safe as safe_load."""
    problems = []
    stack = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        problems.append(f"line {key.start_mark.line + 1}: key {key.value!r} appears twice in one "
                                        f"mapping (first on line {seen[key.value]}); give each key once")
                    seen.setdefault(key.value, key.start_mark.line + 1)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return problems


def load_sweep(path: str | Path, sets: list[str] | None = None) -> SweepSpec:
    """Read, validate and expand a sweep file. Raises SweepError listing every problem found."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SweepError(src, ["no such file; give the path of a sweep .yaml file (see sweeps/)"])
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)  # plain data only: a !!python/... tag is an error, never code
        duplicated = _duplicate_keys(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SweepError(src, [f"{where}not valid YAML ({getattr(e, 'problem', None) or e})"]) from None
    except (UnicodeDecodeError, ValueError):  # ValueError: NUL bytes and the like
        raise SweepError(src, ["not a text file"]) from None
    except RecursionError:  # deeply nested flow collections
        raise SweepError(src, ["nested too deeply to be a sweep file"]) from None
    if duplicated:
        raise SweepError(src, duplicated)
    if not isinstance(raw, dict):
        raise SweepError(src, [f"top level: found {type(raw).__name__}; allowed: a mapping with keys "
                               f"{', '.join(TOP_KEYS)}"])
    problems: list[str] = []
    try:
        overrides = parse_sets(sets or [])
    except UserError as e:
        raise SweepError(src, [str(e)]) from None

    for k in raw:
        if k not in TOP_KEYS:
            problems.append(f"{k}: unknown key{_did_you_mean(k, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):  # true == 1 in Python, not in a file
        problems.append(f"schema_version: found {_short(version)}; allowed: {SCHEMA_VERSION}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name) or name[0] == ".":
        problems.append(f"name: found {name!r}; allowed: letters, digits, '-', '_', '.' (it names results/<name>/)")

    # imports first: they may register methods that the rest of the file names
    imports = _or_empty(raw.get("imports"), [])
    resolved_imports: list[str] = []
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        problems.append(f"imports: found {imports!r}; allowed: a list of .py paths or module names")
    else:
        for i, ref in enumerate(imports):
            try:
                load_user_module(ref, base_dir=path.parent)
                resolved_imports.append(str((path.parent / ref).resolve()) if ref.endswith(".py") else ref)
            except UserImportError as e:
                problems.append(f"imports[{i}]: {e}".replace("imports: ", "", 1))
            except SystemExit as e:  # exit() in a method file must not end tfbench without a word
                problems.append(f"imports[{i}]: {ref!r} called exit({_short(e.code)}) while being imported")

    methods = _named_entries(raw.get("methods"), "methods", problems)
    datasets = _named_entries(raw.get("datasets"), "datasets", problems)
    from harness.data import DATASETS, make_dataset_params

    for i, (m, _) in enumerate(methods):
        if m not in METHODS:
            problems.append(f"methods[{i}].name: unknown method {m!r}{_did_you_mean(m, METHODS.names())}; "
                            f"registered: {', '.join(METHODS.names())}")
    for i, (d, d_params) in enumerate(datasets):
        if d not in DATASETS:
            problems.append(f"datasets[{i}].name: unknown dataset {d!r}{_did_you_mean(d, DATASETS.names())}; "
                            f"registered: {', '.join(DATASETS.names())}")
            continue
        try:  # types and names only: no data is read here
            make_dataset_params(DATASETS.get(d), {**d_params, **overrides["dataset"]})
        except UserError as e:
            problems.append(f"datasets[{i}].params: {e}")
    for what, entries in (("methods", methods), ("datasets", datasets)):
        names = [n for n, p in entries]
        dups = sorted({n for n in names if names.count(n) > 1 and not any(p for m, p in entries if m == n)})
        for d in dups:
            problems.append(f"{what}: {d!r} is listed more than once; list each once (use params lists for grids)")

    models = raw.get("models")
    if models is not None and (not isinstance(models, list) or not models
                               or not all(isinstance(m, str) and m for m in models)):
        problems.append(f"models: found {models!r}; allowed: a non-empty list of model names")
        models = None
    elif models is not None and len(set(models)) != len(models):
        problems.append(f"models: found duplicated names {models!r}; list each once")

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, dict):
        extra = set(seeds) - {"count", "start"}
        if extra:
            problems.append(f"seeds: unknown keys {sorted(map(str, extra))}; allowed: count, start")
        count, start = seeds.get("count"), seeds.get("start", 0)
        if _check_number(count, "seeds.count", problems, integer=True, minimum=1, maximum=MAX_SEED_COUNT) and \
                _check_number(start, "seeds.start", problems, integer=True, maximum=MAX_SEED - count):
            seeds = list(range(start, start + count))
        else:
            seeds = []
    elif isinstance(seeds, list) and seeds:
        ok = all(_check_number(s, f"seeds[{i}]", problems, integer=True, maximum=MAX_SEED) for i, s in enumerate(seeds))
        if ok and len(set(seeds)) != len(seeds):
            problems.append(f"seeds: found duplicated seeds {_short(seeds)}; allowed: distinct whole numbers >= 0")
        seeds = seeds if ok else []
    else:
        problems.append(f"seeds: found {_short(seeds)}; allowed: a non-empty list of whole numbers >= 0, or {{count: N}}")
        seeds = []

    train = _or_empty(raw.get("train"), {})
    if not isinstance(train, dict):
        problems.append(f"train: found {train!r}; allowed: a mapping of training settings ({', '.join(TRAIN_FIELDS)})")
        train = {}
    for k in train:
        if k not in TRAIN_FIELDS:
            problems.append(f"train.{k}: unknown setting{_did_you_mean(k, TRAIN_FIELDS)}; allowed: {', '.join(TRAIN_FIELDS)}")
    train = {k: v for k, v in train.items() if k in TRAIN_FIELDS}

    per_dataset = _or_empty(raw.get("dataset_defaults"), {})
    if not isinstance(per_dataset, dict):
        problems.append(f"dataset_defaults: found {per_dataset!r}; allowed: a mapping dataset -> {{train, methods}}")
        per_dataset = {}
    for d, block in per_dataset.items():
        if not isinstance(block, dict) or set(block) - {"train", "methods", "model"}:
            problems.append(f"dataset_defaults.{d}: found {block!r}; allowed: a mapping with keys train, methods")
            per_dataset[d] = {}

    res_raw = _or_empty(raw.get("resources"), {})
    resources = Resources()
    if not isinstance(res_raw, dict):
        problems.append(f"resources: found {res_raw!r}; allowed: a mapping with {', '.join(RESOURCE_KEYS)}")
    else:
        for k in res_raw:
            if k not in RESOURCE_KEYS:
                problems.append(f"resources.{k}: unknown key{_did_you_mean(k, RESOURCE_KEYS)}; allowed: {', '.join(RESOURCE_KEYS)}")
        vals = {}
        for k, integer, minimum in (("cpus_per_trial", False, 0), ("gpus_per_trial", False, 0),
                                    ("workers_per_trial", True, 1), ("max_concurrent", True, 0)):
            if k in res_raw and _check_number(res_raw[k], f"resources.{k}", problems, integer=integer, minimum=minimum):
                vals[k] = res_raw[k]
        gpus = vals.get("gpus_per_trial", 0)
        if gpus > 1 and gpus != int(gpus):
            problems.append(f"resources.gpus_per_trial: found {gpus!r}; allowed: a fraction below 1 or a whole number")
        if "cpus_per_trial" in vals and vals["cpus_per_trial"] == 0 and vals.get("workers_per_trial", 1) == 1:
            problems.append("resources.cpus_per_trial: found 0; allowed: > 0")
        resources = Resources(**vals)
    retries = raw.get("retries", 1)
    if not _check_number(retries, "retries", problems, integer=True):
        retries = 1

    # expand: only once the axes themselves are sound, so that one mistake is not reported many times
    trials: list[TrialSpec] = []
    if not problems:
        for (mi, (m, m_params)), (d, d_params) in itertools.product(enumerate(methods), datasets):
            block = per_dataset.get(d, {})
            d_train = {**train, **(block.get("train") or {}), **overrides["train"]}
            d_methods = (block.get("methods") or {}).get(m, {})
            grid = _grid({**d_methods, **m_params}, f"methods[{mi}].params", problems)
            for params, model, seed in itertools.product(grid, models or [block.get("model")], seeds):
                fields = {f.name for f in dataclasses.fields(METHODS.get(m).Params)}
                try:
                    trials.append(resolve_trial(
                        method=m, dataset=d, model=model, seed=seed,
                        method_params={**params, **{k: v for k, v in overrides["method"].items() if k in fields}},
                        dataset_params={**d_params, **overrides["dataset"]}, model_params=dict(overrides["model"]),
                        train=d_train, imports=tuple(resolved_imports)))
                except (UserError, MethodParamError, RegistryError) as e:
                    msg = f"methods[{mi}] ({m}) on {d}: {e}"
                    if msg not in problems:
                        problems.append(msg)
        for k in overrides["method"]:  # --set method.X applies to the methods that have X; one must
            if not any(k in {f.name for f in dataclasses.fields(METHODS.get(m).Params)} for m, _ in methods):
                problems.append(f"--set method.{k}: no method of this sweep has a parameter {k!r}")
        keys = [t.key() for t in trials]
        if len(set(keys)) != len(keys):
            problems.append("the axes produce the same trial more than once; remove the duplicated entries")
    if problems:
        raise SweepError(src, problems)
    if resources.workers_per_trial > 1:
        trials = [_with_workers(t, resources.workers_per_trial) for t in trials]
    return SweepSpec(name=name, source=path, raw=raw, trials=trials, resources=resources, retries=retries)


def _with_workers(spec: TrialSpec, workers: int) -> TrialSpec:
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, workers=workers))
