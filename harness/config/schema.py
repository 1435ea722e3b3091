"""The typed sweep file: strict pydantic models, unknown keys forbidden at every level.

These models are the schema; `docs/sweep-files.md` is generated from them (`reference.py`) and a test
keeps the two equal. Method and dataset parameters are validated against each class's own `Params`
dataclass (`methods.params`), because which keys exist depends on the name given.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.config.spec import RECIPES

SCHEMA_VERSION = 1
MAX_INT = 2**31 - 1          # ints reach C code (32-bit) through torch
MAX_SEED = 2**32 - 1         # numpy's seed range; torch's is wider
MAX_TRIALS = 10_000          # a larger grid is a typo; the product of the axes is checked before expanding
MAX_NAME = 100               # `name` becomes a folder name: portable file-name length, with room for suffixes
NAME_RULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
DEVICE_RULE = r"^(auto|cpu|cuda(:\d+)?)$"
# The metrics a sweep's verdicts can be made on: reported-split numbers, at the selected or the last epoch.
PRIMARY_METRICS = ("selected_top1", "last_top1", "selected_top5", "last_top5", "selected_nll", "last_nll",
                   "selected_ece", "last_ece")
DEFAULT_PRIMARY = "selected_top1"


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


Whole = Annotated[int, Field(ge=0, le=MAX_INT)]
Positive = Annotated[int, Field(ge=1, le=MAX_INT)]
NonNegative = Annotated[float, Field(ge=0)]


class TrainSettings(Strict):
    """Training settings for every trial. A value left out (or null) is the recipe's or TrainConfig's default."""

    epochs: Positive | None = Field(None, description="training epochs (default: the data set's preset)")
    recipe: Literal[tuple(RECIPES)] | None = Field(  # type: ignore[valid-type]
        None, description="the official recipe whose optimiser/schedule defaults apply "
                          "(default: imagenet for imagenet/inat21, else zipf)")
    batch_size: Positive | None = Field(None, description="images per step (all workers together)")
    lr: NonNegative | None = Field(None, description="SGD learning rate")
    momentum: NonNegative | None = Field(None, description="SGD momentum")
    weight_decay: NonNegative | None = Field(None, description="L2 weight decay")
    nesterov: bool | None = Field(None, description="Nesterov momentum")
    milestones: list[float] | None = Field(
        None, description="learning-rate steps: fractions of the run in (0, 1), or epochs >= 1")
    gamma: NonNegative | None = Field(None, description="learning-rate factor at each milestone")
    warmup_epochs: Whole | None = Field(None, description="linear warm-up epochs")
    fast_path: bool | None = Field(None, description="whole data set as one tensor on the device (in-memory sets)")
    deterministic: bool | None = Field(None, description="torch.use_deterministic_algorithms")
    device: Annotated[str, Field(pattern=DEVICE_RULE)] | None = Field(None, description="auto, cpu, cuda or cuda:N")
    threads: Whole | None = Field(None, description="torch.set_num_threads; 0 = torch's default (in the key)")
    num_workers: Whole | None = Field(None, description="DataLoader workers (file-based sets; in the key)")
    compile: bool | None = Field(None, description="torch.compile the step: the forward with the maps a method declared, and its loss")
    amp: bool | None = Field(None, description="bf16 autocast on CUDA (never on CPU)")
    checkpoint: bool | None = Field(None, description="write checkpoint.pt every epoch")
    max_steps_per_epoch: Whole | None = Field(None, description="0 = whole epochs; > 0 caps each epoch")
    workers: Positive | None = Field(None, description="data-parallel workers (set from resources.workers_per_trial)")
    sync_debug: bool | None = Field(None, description="CUDA: raise on a host synchronisation inside a step")
    protocol: Literal["clean", "paper"] | None = Field(
        None, description="clean: select the epoch on a held-out validation split, test once; "
                          "paper: select on the evaluation split (default clean)")
    holdout: float | None = Field(
        None, description="clean protocol's validation split: a fraction in (0, 1) or a whole number of "
                          "images >= 1, stratified (default 0.1; cifar10/cifar100 5000)")
    holdout_seed: Whole | None = Field(None, description="the seed of the holdout split (default 0)")
    select: Literal["top1", "nll", "last"] | None = Field(
        None, description="the epoch a trial is judged at, read on the selection split: top1 (highest top-1, "
                          "ties to the lower NLL, then the later epoch; default), nll (lowest NLL), last")
    split_per_seed: bool | None = Field(
        None, description="draw the holdout split (and a data set's own split, e.g. digits' split_seed) from "
                          "the trial seed, so that paired tests cover data-split variance (default false)")

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v: Any) -> Any:
        ok = isinstance(v, list) and bool(v) and all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m <= MAX_INT for m in v)  # nan fails
        if ok and not (all(isinstance(m, float) and m < 1 for m in v) or all(float(m).is_integer() for m in v)):
            ok = False
        if v is not None and not ok:
            raise ValueError(f"found {_short(v)}; allowed: a list of fractions of the run in (0, 1) "
                             f"or of whole epochs >= 1")
        return v

    @field_validator("holdout", mode="before")
    @classmethod
    def _holdout(cls, v: Any) -> Any:
        if v is None:
            return v
        fraction = isinstance(v, float) and math.isfinite(v) and 0 < v < 1
        count = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INT
        if not (fraction or count):
            raise ValueError(f"found {_short(v)}; allowed: a fraction in (0, 1) or a whole number of images >= 1")
        return float(v) if count else v


class Resources(Strict):
    """What Ray reserves for each trial (checked against the local machine when no --address is given)."""

    cpus_per_trial: NonNegative = Field(1.0, description="CPUs per trial (per worker when workers_per_trial > 1)")
    gpus_per_trial: NonNegative = Field(0.0, description="GPUs per trial (per worker): a fraction below 1 or a "
                                                         "whole number")
    workers_per_trial: Positive = Field(1, description="data-parallel workers per trial (Ray Train)")
    max_concurrent: Whole = Field(0, description="trials at once; 0 = as many as the resources allow")


class Entry(Strict):
    """A method or data set: a name, or {name, params}. A list value in params is a grid axis."""

    name: Annotated[str, Field(min_length=1)]
    params: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def coerce(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class DatasetDefaults(Strict):
    """Per-dataset overrides under dataset_defaults.<dataset>: beat the presets, lose to the entry's params."""

    train: TrainSettings | None = Field(None, description="training settings for this data set")
    methods: dict[str, dict[str, Any]] | None = Field(None, description="method -> {param: value or [values]}")
    model: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="the model for this data set when `models` is not given")


class SweepFile(Strict):
    """The top level of a sweep file."""

    schema_version: int = Field(description="must be 1 (a whole number)")
    name: str = Field(description=f"names results/<name>/: letters, digits, '.', '_', '-', not starting with "
                                  f"'.' or '-', at most {MAX_NAME} characters")
    description: str | None = Field(None, description="free text")
    imports: list[str] | None = Field(None, description="user method files (.py, relative to the sweep "
                                                                 "file) or module names")
    methods: Annotated[list[Any], Field(min_length=1)] = Field(description="names or {name, params} entries")
    datasets: Annotated[list[Any], Field(min_length=1)] = Field(description="names or {name, params} entries")
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="timm model names (ours included); default: each data set's usual model")
    seeds: Any = Field(default_factory=lambda: [0], description="a list of distinct whole numbers >= 0, or "
                                                                "{count: N, start: S}")
    train: TrainSettings | None = Field(None, description="training settings for every trial")
    dataset_defaults: dict[str, DatasetDefaults] | None = Field(None, description="dataset -> overrides")
    resources: Resources | None = Field(None, description="per-trial resources")
    retries: Annotated[int, Field(ge=0, le=100)] = Field(1, description="extra attempts for a trial that raises")
    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.05, description="significance level of the tables' paired tests (Holm-adjusted); a mark needs p below it")
    primary_metric: Literal[PRIMARY_METRICS] = Field(  # type: ignore[valid-type]
        DEFAULT_PRIMARY, description="the metric the verdicts are made on; tables on any other metric are "
                                     "secondary (exploratory)")
    search: dict[str, Any] | None = Field(None, description="tune each method on the validation split, then "
                                                            "confirm the best with every seed (`search`, below)")

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"found {_short(v)}; allowed: {SCHEMA_VERSION}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > MAX_NAME:
            raise ValueError(f"found a name of {len(v)} characters; allowed: at most {MAX_NAME} characters "
                             f"(it names the folder results/<name>/)")
        if not NAME_RULE.fullmatch(v):
            raise ValueError(f"found {_short(v)}; allowed: letters, digits, '-', '_', '.', not starting with "
                             f"'.' or '-' (it names results/<name>/)")
        return v


class SeedRange(Strict):
    count: Annotated[int, Field(ge=1, le=MAX_TRIALS)]
    start: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0


SeedList = Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], Field(min_length=1)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
