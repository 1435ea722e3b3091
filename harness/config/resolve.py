"""Turning user configuration (a sweep entry, CLI flags, `--set key=value`) into a resolved TrialSpec.

This is the one edge where configuration becomes typed arguments: after it, nothing looks up a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

import yaml

from harness.config.presets import default_holdout, default_model, default_recipe, method_preset
from harness.config.spec import RECIPES, TrainConfig, TrialSpec, resolve_train
from harness.errors import UserError
from methods import METHODS, make_params

TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
SET_SECTIONS = ("method", "dataset", "model", "train")
MAX_INT = 2**31 - 1
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


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


def check_train_keys(values: dict[str, Any], where: str) -> None:
    for key in values:
        if key not in TRAIN_FIELDS:
            close = difflib.get_close_matches(key, TRAIN_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}.{key}: unknown training setting{hint}; allowed: {', '.join(TRAIN_FIELDS)}")


def resolve_trial(*, method: str, dataset: str, seed: int, model: str | None = None,
                  method_params: dict[str, Any] | None = None, dataset_params: dict[str, Any] | None = None,
                  model_params: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                  imports: tuple[str, ...] = ()) -> TrialSpec:
    cls = METHODS.get(method)
    model = model or default_model(dataset)
    preset = {k: v for k, v in method_preset(method, dataset, model).items()
              if k in {f.name for f in dataclasses.fields(cls.Params)}}
    typed = make_params(cls, {**preset, **(method_params or {})})
    # catch bad values now, before any data is read: the checks that depend on the class count are
    # repeated with the real count when the trial starts (2 classes gives the loosest bounds)
    cls(typed, num_classes=2, num_train=1, feature_channels=(1, 1))
    params = dataclasses.asdict(typed)
    for key, value in params.items():  # range checks written as `x >= 0` let nan (and often inf) through
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"method {method!r}: parameter {key!r} is {value!r}; allowed: a finite number")
    train = dict(train or {})
    check_train_keys(train, "train")
    epochs = train.pop("epochs", TrainConfig.epochs)
    recipe = train.pop("recipe", default_recipe(dataset))
    if recipe not in RECIPES:
        raise UserError(f"train.recipe is {recipe!r}; allowed: {', '.join(RECIPES)}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= MAX_INT:
        raise UserError(f"train.epochs is {_short(epochs)}; allowed: a whole number in [1, {MAX_INT}]")
    _check_milestones(train.get("milestones"))
    train.setdefault("holdout", default_holdout(dataset))
    try:
        config = resolve_train(epochs, recipe, **train)
    except TypeError as e:
        raise UserError(f"train: {e}") from e
    _check_train_types(config)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed is {seed!r}; allowed: a whole number >= 0")
    return TrialSpec(method=method, dataset=dataset, model=model, seed=seed, method_params=params,
                     dataset_params=dict(dataset_params or {}), model_params=dict(model_params or {}),
                     train=config, imports=tuple(imports))


def _check_train_types(config: TrainConfig) -> None:
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        expected = type(default)
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise UserError(f"train.{f.name} is {_short(value)} ({type(value).__name__}); expected {expected.__name__}")
        if expected is float and not math.isfinite(value):
            raise UserError(f"train.{f.name} is {value!r}; allowed: a finite number >= 0")
        if expected in (int, float) and value < 0:
            raise UserError(f"train.{f.name} is {value!r}; allowed: >= 0")
        if expected is int and value > MAX_INT:  # ints reach C code (32-bit) through torch
            raise UserError(f"train.{f.name} is {_short(value)}; allowed: a whole number in [0, {MAX_INT}]")
    if config.batch_size < 1:
        raise UserError(f"train.batch_size is {config.batch_size}; allowed: >= 1")
    if not DEVICE.fullmatch(config.device):
        raise UserError(f"train.device is {config.device!r}; allowed: auto, cpu, cuda, cuda:N")
    if config.protocol not in ("clean", "paper"):
        raise UserError(f"train.protocol is {_short(config.protocol)}; allowed: clean, paper")
    if not (0 < config.holdout < 1 or (config.holdout >= 1 and float(config.holdout).is_integer())):
        raise UserError(f"train.holdout is {config.holdout!r}; allowed: a fraction in (0, 1) or a whole number "
                        f"of images >= 1")


def _check_milestones(ms: Any) -> None:
    """Fractions of the run (0.5) or epochs (100): anything else would crash when the schedule is built."""
    if ms is None:
        return
    ok = isinstance(ms, (list, tuple)) and all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m <= MAX_INT  # False for nan
        for m in ms)
    if not ok:
        raise UserError(f"train.milestones is {_short(ms)}; allowed: a list of fractions of the run in (0, 1) "
                        f"or of epochs >= 1")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
