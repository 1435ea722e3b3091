"""The typed sweep file: strict pydantic models, unknown keys forbidden at every level.

These models are the schema; `docs/sweep-files.md` is generated from them (`reference.py`) and a test
keeps the two equal. Method and dataset parameters are validated against each class's own `Params`
dataclass (`methods.params`), because which keys exist depends on the name given.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from harness.config.spec import STRICT, NonNegative, Positive, TrainSettings, Whole, short_repr
from harness.metrics import CORRUPTIONS, DEFAULT_PRIMARY, primary_metrics

SCHEMA_VERSION = 1
MAX_SEED = 2**32 - 1         # numpy's seed range; torch's is wider
MAX_TRIALS = 10_000          # a larger grid is a typo; the product of the axes is checked before expanding
MAX_NAME = 100               # `name` becomes a folder name: portable file-name length, with room for suffixes
NAME_RULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# The metrics a sweep's verdicts can be made on: reported-split numbers, at the selected or the last epoch.
PRIMARY_METRICS = primary_metrics()


class Strict(BaseModel):
    model_config = STRICT


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


# A list item of `methods:` / `datasets:`: a bare name is the entry {name}. Why a coercion, not `str | Entry`:
# a union reports a bad entry once per member.
NamedEntry = Annotated[Entry, BeforeValidator(Entry.coerce)]


class DatasetDefaults(Strict):
    """Per-dataset overrides under dataset_defaults.<dataset>: beat the presets, lose to the entry's params."""

    train: TrainSettings | None = Field(None, description="training settings for this data set")
    methods: dict[str, dict[str, Any]] | None = Field(None, description="method -> {param: value or [values]}")
    model: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="the model for this data set when `models` is not given")


class Evaluate(Strict):
    """Beyond the test split (`tfbench evaluate`): corruptions and an OOD set; calibration and the rest always."""

    corruptions: Literal["all"] | list[Literal[CORRUPTIONS]] | None = Field(  # type: ignore[valid-type]
        None, description="'all' or a list of the common corruptions (severities 1-5, computed from the test split)")
    corruption_images: Whole = Field(0, description="corrupt the first N test images only; 0 = all")
    ood: Any = Field(None, description="a data set entry (a name or {name, params}) whose evaluation split is "
                                       "the out-of-distribution set")

    @field_validator("ood")
    @classmethod
    def _ood(cls, v: Any) -> Any:
        return None if v is None else Entry.model_validate(Entry.coerce(v)).model_dump()

    def corruption_names(self) -> tuple[str, ...]:
        return CORRUPTIONS if self.corruptions == "all" else tuple(self.corruptions or ())


class SeedRange(Strict):
    count: Annotated[int, Field(ge=1, le=MAX_TRIALS)]
    start: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0


class SequentialSeeds(Strict):
    start: Annotated[int, Field(ge=2, le=MAX_TRIALS)] = 3
    max: Annotated[int, Field(ge=2, le=MAX_TRIALS)] = 10
    step: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 1
    spending: Literal["obf", "pocock"] = "obf"


class Sequential(Strict):
    sequential: SequentialSeeds


SeedList = Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], Field(min_length=1)]


def _seeds_kind(v: Any) -> str:
    return ("sequential" if "sequential" in v else "range") if isinstance(v, dict) else "list"


# `seeds:` is one of three shapes, told apart by their keys (a tagged union: pydantic reports the problems of
# the shape that was meant, not of all three); pydantic puts the tag in an error's path (`SEED_TAGS`).
SEED_TAGS = ("list", "range", "sequential")
Seeds = Annotated[Annotated[SeedList, Tag("list")] | Annotated[SeedRange, Tag("range")]
                  | Annotated[Sequential, Tag("sequential")], Discriminator(_seeds_kind)]


MAX_BUDGET = 1000
KINDS = ("uniform", "loguniform", "choice")


class Scheduler(Strict):
    """search.scheduler: how trials are stopped early. ASHA compares trials of one method at rungs of
    grace_period x reduction_factor^k epochs on `val_top1` (the held-out split), keeping the top 1/rf."""

    name: Literal["asha", "fifo"] = Field("asha", description="asha: early-stop the weak trials; fifo: train "
                                                               "every trial to the end")
    grace_period: Annotated[int, Field(ge=1)] = Field(1, description="epochs every trial trains before it "
                                                                     "can be stopped (<= train.epochs)")
    reduction_factor: Annotated[float, Field(gt=1)] = Field(3.0, description="a rung keeps the top "
                                                                            "1/reduction_factor of trials")


class Dimension(Strict):
    """One parameter's range: exactly one of uniform, loguniform, choice."""

    uniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    loguniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    choice: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Dimension:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"found {', '.join(given) or 'no range'}; allowed: exactly one of "
                             f"{', '.join(KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        return list(getattr(self, self.kind))


class SearchSettings(Strict):
    """search: tune each method's parameters on the validation split, then confirm the best with the sweep's seeds."""

    # Why its meaning is checked elsewhere (harness/config/search.py): which keys of `space` exist depends on
    # the methods the file names.

    budget: Annotated[int, Field(ge=1, le=MAX_BUDGET)] = Field(
        description="search trials per method (per method x dataset x model); the same for every method")
    algorithm: Literal["random", "tpe"] = Field("random", description="random: seeded random search; tpe: "
                                                                       "Optuna's TPE (needs the `tune` extra)")
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(0, description="the searcher's seed")
    scheduler: Scheduler = Field(default_factory=Scheduler, description="early stopping (see below)")
    space: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="method -> parameter -> {uniform|loguniform: [low, high]} or "
                                          "{choice: [values]}; a method left out has nothing to tune (1 trial)")


class Costs(Strict):
    """How the summary's time x and memory x are measured (docs/results.md, "Costs")."""

    measure: bool = Field(True, description="after the trials, time each method configuration's step against CE's "
                                            "on the trials' model, input and device (`tfbench bench step --sweep`), "
                                            "once per data set / model, cached in results/<name>/costs/; false: "
                                            "time x and memory x are n/a")


class Figures(Strict):
    """figures: how the figures are drawn (docs/results.md, "Figures")."""

    width: str | float = Field("column", description="column (3.3 in, one column of a two-column paper), page "
                                                     "(6.9 in, both columns) or a width in inches from 2 to 20; "
                                                     "`tfbench plot --width` overrides it")

    @field_validator("width", mode="before")
    @classmethod
    def _width(cls, v: Any) -> str | float:
        if v in ("column", "page"):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 2.0 <= v <= 20.0:
            return float(v)
        raise ValueError(f"found {short_repr(v)}; allowed: column, page or a width in inches from 2 to 20")


class SweepFile(Strict):
    """The top level of a sweep file."""

    schema_version: int = Field(description="must be 1 (a whole number)")
    name: str = Field(description=f"names results/<name>/: letters, digits, '.', '_', '-', not starting with "
                                  f"'.' or '-', at most {MAX_NAME} characters")
    description: str | None = Field(None, description="free text")
    imports: list[str] | None = Field(None, description="user method files (.py, relative to the sweep "
                                                                 "file) or module names")
    methods: Annotated[list[NamedEntry], Field(min_length=1)] = Field(description="names or {name, params} entries")
    datasets: Annotated[list[NamedEntry], Field(min_length=1)] = Field(description="names or {name, params} entries")
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="timm model names (ours included); default: each data set's usual model")
    seeds: Seeds = Field(default_factory=lambda: [0], description="a list of distinct whole numbers >= 0, "
                                                                "{count: N, start: S}, or {sequential: {start: 3, "
                                                                "max: 10, step: 1, spending: obf}} (seeds until "
                                                                "decided, also for a search's confirm trials: "
                                                                "docs/results.md)")
    train: TrainSettings | None = Field(None, description="training settings for every trial")
    dataset_defaults: dict[str, DatasetDefaults] | None = Field(None, description="dataset -> overrides")
    resources: Resources | None = Field(None, description="per-trial resources")
    retries: Annotated[int, Field(ge=0, le=100)] = Field(1, description="extra attempts for a trial that raises")
    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.05, description="significance level of the tables' paired tests (Holm-adjusted); a mark needs p below it")
    rope: Annotated[float, Field(ge=0)] | None = Field(
        None, description="region of practical equivalence of the primary metric, in its display units (points "
                          "for accuracies): the posterior's P(equivalent) and the sequential design's equivalence "
                          "stop; default half the metric's effect (0.5 points of top-1)")
    all_pairs: bool = Field(False, description="across data sets, the summary also tests every pair of methods "
                                               "(Nemenyi / Wilcoxon-Holm) beside each method against CE")
    primary_metric: Literal[PRIMARY_METRICS] = Field(  # type: ignore[valid-type]
        DEFAULT_PRIMARY, description="the metric the verdicts are made on; tables on any other metric are "
                                     "secondary (exploratory)")
    evaluate: Evaluate | None = Field(None, description="corruptions and an OOD set to evaluate each trial on "
                                                        "(`evaluate`, below; docs/results.md)")
    transfer_from: str | None = Field(None, description="a finished sweep's results folder: fine-tune each of its "
                                                        "finished trials (of the listed methods) on these data sets, "
                                                        "keeping its method, parameters, model and seed "
                                                        "(docs/training.md, \"Transfer\")")
    search: SearchSettings | None = Field(None, description="tune each method on the validation split, then "
                                                            "confirm the best with the sweep's seeds (`search`, below)")
    costs: Costs | None = Field(None, description="the controlled cost measurement (`costs`, below)")
    figures: Figures | None = Field(None, description="how `tfbench run` and `tfbench plot` draw the figures "
                                                      "(`figures`, below)")

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"found {short_repr(v)}; allowed: {SCHEMA_VERSION}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > MAX_NAME:
            raise ValueError(f"found a name of {len(v)} characters; allowed: at most {MAX_NAME} characters "
                             f"(it names the folder results/<name>/)")
        if not NAME_RULE.fullmatch(v):
            raise ValueError(f"found {short_repr(v)}; allowed: letters, digits, '-', '_', '.', not starting with "
                             f"'.' or '-' (it names results/<name>/)")
        return v
