"""Turning user configuration (a sweep entry, CLI flags, `--set key=value`) into a resolved TrialSpec.

This is the one edge where configuration becomes typed arguments: after it, nothing looks up a default.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.config.presets import OPTIMIZER_DEFAULTS, RECIPES
from harness.config.problems import render
from harness.config.schema import MAX_SEED
from harness.config.spec import NOT_IN_KEY_DATASET, TrainConfig, TrainSettings, TrialSpec
from harness.errors import UserError
from harness.io import content_hash
from methods import METHODS, make_params
from methods.params import check_params, explain
from methods.registry import did_you_mean
from methods.traits import DataSet
from methods.user import source_hash

TRAIN_FIELDS = list(TrainSettings.model_fields)
SET_SECTIONS = ("method", "dataset", "model", "train")
HARNESS_MODEL_KEYS = {"num_classes": "from the data set", "in_chans": "from the data set",
                      "input_size": "from the data set", "pretrained": "every trial trains from scratch",
                      "checkpoint_path": "every trial trains from scratch"}


def parse_value(text: str) -> Any:
    """`--set` values use YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list, abc -> str."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """['method.lam=0.5', 'train.epochs=3'] -> {'method': {'lam': 0.5}, 'train': {'epochs': 3}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SET_SECTIONS}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. method.lam=0.5 or train.epochs=3")
        key, value = item.split("=", 1)
        section, _, name = key.strip().partition(".")
        if section not in SET_SECTIONS or not name:
            raise UserError(f"--set {item!r}: the key must be one of {', '.join(s + '.<name>' for s in SET_SECTIONS)}")
        out[section][name] = parse_value(value)
    return out


def check_train(values: dict[str, Any], where: str = "train") -> dict[str, Any]:
    """Validate training settings (TrainSettings: strict, unknown keys refused); the given ones, typed.
    Raises UserError naming every problem, one per line."""
    try:
        return TrainSettings.model_validate(dict(values)).model_dump(exclude_none=True)
    except ValidationError as e:
        raise UserError("\n".join(f"{where}.{render(tuple(err['loc']))}: {explain(err, TRAIN_FIELDS)}"
                                   for err in e.errors())) from None


def check_model(model: str, model_params: dict[str, Any]) -> list[tuple[tuple, str]]:
    """[(path, problem)] for a model name timm does not know, and for keyword arguments the harness sets
    itself (the class count, input channels) or refuses (pretrained weights)."""
    import timm

    import harness.models  # noqa: F401  (registers our models into timm)

    problems: list[tuple[tuple, str]] = []
    if not timm.is_model(model):
        ours = list(harness.models.OUR_MODELS)
        problems.append(((), f"unknown model {model!r}{did_you_mean(model, ours + timm.list_models())}; allowed: "
                             f"{', '.join(ours)} or any timm model name (timm.list_models())"))
    for key in model_params:
        if key in HARNESS_MODEL_KEYS:
            problems.append(((key,), f"set by the harness ({HARNESS_MODEL_KEYS[key]}); allowed: other keyword "
                                     f"arguments of the model, e.g. drop_rate"))
    return problems


def resolve_dataset_params(dataset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The dataset's Params dataclass defaults merged with the given ones (validated), as a plain dict."""
    from harness.data import DATASETS

    cls = DATASETS.get(dataset)
    resolved, problems = check_params(cls.Params, given)
    if problems:
        raise UserError(" | ".join(f"dataset {dataset!r}: parameter {render(loc)}: {what}" for loc, what in problems))
    return cls.fill_params(resolved)


def resolve_train(epochs: int, recipe: str = "zipf", **overrides: Any) -> TrainConfig:
    """The recipe's values, then explicit overrides; milestones given as fractions become epochs."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; allowed: {', '.join(RECIPES)}")
    values: dict[str, Any] = RECIPES[recipe].model_dump(exclude_none=True)
    values.update({k: v for k, v in overrides.items() if v is not None})
    ms = values.get("milestones", ())
    if all(isinstance(m, float) and 0 < m < 1 for m in ms):
        ms = tuple(max(1, round(m * epochs)) for m in ms)
        # one step per milestone at any length: in a short run two fractions round to one epoch (3 epochs:
        # 0.5 and 0.75 -> 2 and 2, a 100x drop at once); the later one moves to the next epoch instead
        for i in range(1, len(ms)):
            ms = (*ms[:i], max(ms[i], ms[i - 1] + 1), *ms[i + 1:])
    values["milestones"] = tuple(int(m) for m in ms)
    return TrainConfig(epochs=int(epochs), recipe=recipe, **values)


def request_hash(**given: Any) -> str:
    """What was asked for, before any default is filled (the seed apart): a finished trial with the same
    request and seed as a current one but another key is stale. Roots and downloads are left out like in the key."""
    given = dict(given)
    given["dataset_params"] = {k: v for k, v in (given.get("dataset_params") or {}).items()
                               if k not in NOT_IN_KEY_DATASET}
    return content_hash(given, 16)


def resolve_trial(*, method: str, dataset: str, seed: int, model: str | None = None,
                  method_params: dict[str, Any] | None = None, dataset_params: dict[str, Any] | None = None,
                  model_params: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                  imports: tuple[str, ...] = (), typed: bool = False) -> TrialSpec:
    """Every default filled and every value checked, once: the trial's key hashes the result (see TrialSpec)
    and the workers that train it check nothing again. `typed`: `method_params` were type-checked already
    (a sweep file's values, each where it stands); then only the method's own range checks run here."""
    from harness.data import DATASETS

    cls = METHODS.get(method)
    data_cls = DATASETS.get(dataset)  # the data set's facts: its default model, epochs, holdout, recipe, traits
    given_model = model
    resolved_data = resolve_dataset_params(dataset, dict(dataset_params or {}))
    facts = data_cls.defaults(data_cls.Params(**resolved_data))  # a folder's, from its images
    model = model or facts["model"]
    model_problems = check_model(model, model_params or {})
    if model_problems:
        raise UserError(" | ".join(f"model {model}{'.' + render(p) if p else ''}: {w}" for p, w in model_problems))
    preset = {k: v for k, v in cls.preset(DataSet(dataset, resolution=facts["resolution"]), model).items()
              if k in {f.name for f in dataclasses.fields(cls.Params)}}
    values = {**preset, **(method_params or {})}
    params_obj = cls.Params(**values) if typed else make_params(cls, values)  # nan and inf refused as types
    # before any data is read; a class count known only from the files is checked when the trial starts
    cls.check(params_obj, num_classes=data_cls.class_count(data_cls.Params(**resolved_data)))
    params = dataclasses.asdict(params_obj)
    given_train = check_train(train or {})
    values = dict(given_train)
    epochs = values.pop("epochs", facts["epochs"])
    recipe = values.pop("recipe", data_cls.recipe)
    values.setdefault("holdout", data_cls.holdout)
    for k, v in OPTIMIZER_DEFAULTS.get(values.get("optimizer", ""), {}).items():
        values.setdefault(k, v)
    config = resolve_train(epochs, recipe, **values)
    if config.init_from:
        source_checkpoint(config.init_from)  # a missing source: one line now, not in a worker later
    train_images = data_cls.train_images(data_cls.Params(**resolved_data))
    if config.protocol == "clean" and config.holdout >= 1 and train_images is not None and \
            config.holdout >= train_images:
        raise UserError(f"train.holdout is {config.holdout:g} images, but {dataset} trains on {train_images:,}; "
                        f"allowed: fewer images than that, or a fraction in (0, 1)")
    if train_images is not None:  # the clean protocol's fitted split is smaller still: checked again when built
        check_batch_fits(config.batch_size, train_images)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed: found {seed!r}; allowed: a whole number in [0, {MAX_SEED}]")
    request = request_hash(method=method, dataset=dataset, model=given_model,
                           method_params=dict(method_params or {}), dataset_params=dict(dataset_params or {}),
                           model_params=dict(model_params or {}), train=given_train)
    base = TrialSpec(method=method, dataset=dataset, model=model, seed=0, method_params=params,
                     dataset_params=resolved_data, model_params=dict(model_params or {}),
                     train=config, imports=tuple(imports), method_source=source_hash(cls), request=request)
    return with_seed(base, seed)


def source_checkpoint(path: str) -> tuple[Path, dict[str, Any] | None]:
    """`train.init_from`'s weights file and, for a trial folder, its config.json: the folder's best.pt (the
    selected weights) or else its checkpoint.pt (the last); a file is taken as it is."""
    from harness.folders import TrialFolder

    p = Path(path).expanduser()
    if p.is_file():
        return p, None
    if not p.is_dir():
        raise UserError(f"train.init_from: {p} does not exist; allowed: a trial folder (with best.pt or "
                        f"checkpoint.pt) or a checkpoint file")
    trial = TrialFolder(p)
    for name in (trial.BEST, trial.CHECKPOINT):
        if (p / name).is_file():
            return p / name, trial.config()
    raise UserError(f"train.init_from: {p} holds neither {trial.BEST} nor {trial.CHECKPOINT} (a finished trial "
                    f"folder has one; was it trained with train.checkpoint=false?)")


def check_batch_fits(batch_size: int, train_size: int) -> None:
    """Refuse a training split smaller than one batch: training drops the last partial batch of an epoch (one
    static shape for a compiled step), so no step would run."""
    if train_size < batch_size:
        raise UserError(f"train.batch_size {batch_size} is larger than the training split ({train_size:,} images): "
                        f"training drops the last partial batch, so no step would run; lower train.batch_size")


SEED_SPACE = 2**31  # split seeds stay whole numbers that torch, numpy and scikit-learn all take


def with_seed(spec: TrialSpec, seed: int) -> TrialSpec:
    """The same trial at another seed. With `train.split_per_seed` the holdout split's seed and the data
    set's own split seed (its `split_seed_param`) move with the trial seed, as (given + seed) mod 2**31:
    every method at seed s sees the same splits, and another seed draws other ones."""
    if not spec.train.split_per_seed:
        return dataclasses.replace(spec, seed=seed)
    from harness.data import DATASETS

    shift = seed - spec.seed
    train = spec.train.replace(holdout_seed=(spec.train.holdout_seed + shift) % SEED_SPACE)
    data = dict(spec.dataset_params)
    name = DATASETS.get(spec.dataset).split_seed_param
    if name is not None:
        data[name] = (int(data[name]) + shift) % SEED_SPACE
    return dataclasses.replace(spec, seed=seed, train=train, dataset_params=data)
