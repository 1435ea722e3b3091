"""Typed, fully resolved trial configuration. A TrialSpec has no defaults left to look up later;
its stable hash is the trial key (the folder name under results/<sweep>/trials/)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from harness.config.selection import DEFAULT_RULE, RULES
from harness.io import content_hash

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)  # every model of the typed edge
MAX_INT = 2**31 - 1          # ints reach C code (32-bit) through torch
MAX_THREADS = 1024           # threads and loader workers: beyond any machine's cores (torch aborts on absurd counts)
RECIPE_NAMES = ("zipf", "pskd", "tfkd", "imagenet")  # harness/config/presets.py holds their values
DEVICE_RULE = r"^(auto|cpu|cuda(:\d+)?)$"


def short_repr(value: Any) -> str:
    """A value as an error quotes it: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _milestones(v: Any) -> Any:
    """A list of fractions of the run in (0, 1), or of whole epochs >= 1; as a tuple."""
    if v is None:
        return v
    ok = isinstance(v, (list, tuple)) and bool(v) and all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m <= MAX_INT for m in v)  # nan fails
    if ok and not (all(isinstance(m, float) and m < 1 for m in v) or all(float(m).is_integer() for m in v)):
        ok = False
    if not ok:
        raise ValueError(f"found {short_repr(v)}; allowed: a list of fractions of the run in (0, 1) or of whole "
                         f"epochs >= 1")
    return tuple(v)


def _holdout(v: Any) -> Any:
    """A fraction in (0, 1), or a whole number of images >= 1 (kept as a float either way)."""
    if v is None:
        return v
    fraction = isinstance(v, float) and math.isfinite(v) and 0 < v < 1
    count = isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and 1 <= v <= MAX_INT
    if not (fraction or count):
        raise ValueError(f"found {short_repr(v)}; allowed: a fraction in (0, 1) or a whole number of images >= 1")
    return float(v)


_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_INTERVAL = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(s|min|h)$")


def interval_seconds(every: int | str) -> float | None:
    """train.checkpoint_every as seconds for an interval such as '10min' (a number, then s, min or h); None for
    a count of epochs."""
    if isinstance(every, int):
        return None
    match = _INTERVAL.match(every)
    assert match, every  # checked by _checkpoint_every
    return float(match[1]) * _UNITS[match[2]]


def _checkpoint_every(v: Any) -> Any:
    """A whole number of epochs >= 1, or a positive time interval ('30s', '10min', '1.5h')."""
    epochs = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INT
    interval = isinstance(v, str) and (m := _INTERVAL.match(v)) is not None and 0 < float(m[1]) < 1e9
    if not (epochs or interval):
        raise ValueError(f"found {short_repr(v)}; allowed: a whole number of epochs >= 1, or a time interval: a "
                         f"number then s, min or h (e.g. 30s, 10min, 1h)")
    return v


Whole = Annotated[int, Field(ge=0, le=MAX_INT)]
Positive = Annotated[int, Field(ge=1, le=MAX_INT)]
NonNegative = Annotated[float, Field(ge=0)]
Milestones = Annotated[tuple[int | float, ...], BeforeValidator(_milestones)]
Holdout = Annotated[float, BeforeValidator(_holdout)]
Every = Annotated[int | str, BeforeValidator(_checkpoint_every)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class TrainConfig(BaseModel):
    """Training settings: the one definition. A resolved trial holds every field; the sweep file's `train:`
    section (`TrainSettings`) is the same fields, each optional; the recipes (harness/config/presets.py) are
    values of those fields. Fields without a default here get theirs from the data set and the recipe when a
    trial is resolved (harness/config/resolve.py)."""

    model_config = STRICT

    epochs: Positive = Field(description="training epochs (default: the data set's preset)")
    recipe: Literal[RECIPE_NAMES] = Field(  # type: ignore[valid-type]
        description="the official recipe whose optimiser/schedule defaults apply (default: the data set's, "
                    "listed by `tfbench datasets`)")
    batch_size: Positive = Field(description="images per step (all workers together); the last partial batch "
                                             "of an epoch is dropped in training")
    lr: NonNegative = Field(description="SGD learning rate")
    momentum: NonNegative = Field(description="SGD momentum")
    weight_decay: NonNegative = Field(description="L2 weight decay")
    nesterov: bool = Field(description="Nesterov momentum")
    milestones: Milestones = Field(description="learning-rate steps: fractions of the run in (0, 1), or epochs >= 1")
    gamma: NonNegative = Field(description="learning-rate factor at each milestone")
    warmup_epochs: Whole = Field(description="linear warm-up epochs")
    fast_path: bool = Field(True, description="augment and normalise on the device: in-memory sets as one tensor "
                                              "there, file sets as uint8 batches; false: the torchvision path")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms; on CUDA also turns "
                                                   "off cudnn.benchmark and TF32 (on by default there)")
    device: Annotated[str, Field(pattern=DEVICE_RULE)] = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="torch.set_num_threads; 0 = torch's default (in the key)")
    num_workers: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="DataLoader workers (file-based sets; in the key)")
    compile: bool = Field(False, description="torch.compile the step: the forward with the maps a method "
                                             "declared, and its loss")
    amp: bool = Field(True, description="bf16 autocast on CUDA (never on CPU)")
    checkpoint: bool = Field(True, description="write checkpoint.pt (false: no checkpoints, no resume)")
    checkpoint_every: Every = Field(
        1, description="how often a checkpoint is written: every N epochs, or at the first epoch end an interval "
                       "(e.g. 30s, 10min, 1h) after the last one; the final epoch always (default 1: every "
                       "epoch; docs/training.md)")
    max_steps_per_epoch: Whole = Field(0, description="0 = whole epochs; > 0 caps each epoch")
    workers: Annotated[int, Field(ge=1, le=MAX_THREADS)] = Field(
        1, description="data-parallel workers (set from resources.workers_per_trial)")
    sync_debug: bool = Field(False, description="CUDA: raise on a host synchronisation inside a step")
    protocol: Literal["clean", "paper"] = Field(
        "clean", description="clean: select the epoch on a held-out validation split, test once; paper: select "
                             "on the evaluation split (default clean)")
    holdout: Holdout = Field(0.1, description="clean protocol's validation split: a fraction in (0, 1) or a "
                                              "whole number of images >= 1, stratified (default: the data set's, "
                                              "listed by `tfbench datasets`: 0.1, or 5000 where its papers hold "
                                              "those out)")
    holdout_seed: Whole = Field(0, description="the seed of the holdout split (default 0)")
    select: Literal[RULES] = Field(  # type: ignore[valid-type]
        DEFAULT_RULE, description="the epoch a trial is judged at, read on the selection split: top1 (highest top-1, "
                            "ties to the lower NLL, then the later epoch; default), nll (lowest NLL), last")
    # The recipes researchers use (docs/training.md, "Recipes"); each default is the harness's behaviour before
    # the setting existed, and a setting at that default stays out of the key (RECIPE_OFF), so older trials keep
    # their keys.
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd (momentum, nesterov, L2 weight decay in the gradient) or adamw (decoupled weight "
                           "decay; lr and weight_decay default to torch.optim.AdamW's 1e-3 and 0.01 unless given)")
    schedule: Literal["step", "cosine"] = Field(
        "step", description="step: x gamma at each milestone; cosine: from lr to 0 over the run after the warm-up")
    mixup: NonNegative = Field(0.0, description="mixup alpha (timm's Mixup; 0 = off)")
    cutmix: NonNegative = Field(0.0, description="CutMix alpha (timm's Mixup; 0 = off)")
    mixup_prob: Fraction = Field(1.0, description="probability that a batch is mixed (timm's prob)")
    switch_prob: Fraction = Field(0.5, description="with both mixup and cutmix: probability of CutMix (timm's)")
    augment: Literal["none", "randaugment", "trivialaugment"] = Field(
        "none", description="per-sample policy of torchvision.transforms.v2 on the uint8 image, before the crop")
    ema: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="model EMA decay per step (timm's ModelEmaV3; 0 = off); evaluation, selection and the "
                         "test use the EMA weights")
    init_from: str = Field("", description="a trial folder or a checkpoint file whose backbone initialises the "
                                           "model (the classifier is replaced when the class count differs)")
    freeze: Literal["none", "backbone"] = Field(
        "none", description="backbone: train the classifier only (linear probing; BatchNorm statistics frozen)")
    split_per_seed: bool = Field(
        False, description="draw the holdout split (and a data set's own split, e.g. a split_seed parameter) from "
                           "the trial seed, so that paired tests cover data-split variance (default false)")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`, validated like the original."""
        return TrainConfig(**{**self.model_dump(), **changes})


def partial(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """`model` with every field optional (None: not given), the same types, constraints and descriptions."""
    fields = {}
    for field_name, f in model.model_fields.items():
        kind = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[field_name] = (kind | None, Field(None, description=f.description))
    return create_model(name, __config__=STRICT, __doc__=doc, **fields)


TrainSettings = partial(TrainConfig, "TrainSettings", "Training settings for every trial. A value left out (or "
                                                      "null) is the recipe's, the data set's or the default.")


# bump when the meaning of a stored spec changes: every key changes with it. 4: training drops the last
# partial batch (same settings, other numbers), file sets flip on the device
SPEC_VERSION = 4
# Excluded from the key: where the data lives and which device runs it change no number; checkpoint,
# checkpoint_every and sync_debug change only what is written or checked (a resumed trial's numbers are an
# uninterrupted one's). threads and num_workers change numbers (reduction
# order, which worker augments which sample), so they are in the key.
NOT_IN_KEY_TRAIN = ("device", "checkpoint", "checkpoint_every", "sync_debug")
NOT_IN_KEY_DATASET = ("root", "download", "label")  # a table's name for a data set changes no number
# Recipe settings left out of the key at these values (the behaviour before they existed): a trial that uses
# none of them keeps the key it had, one that does gets another.
RECIPE_OFF: dict[str, Any] = {"optimizer": "sgd", "schedule": "step", "mixup": 0.0, "cutmix": 0.0, "mixup_prob": 1.0,
                              "switch_prob": 0.5, "augment": "none", "ema": 0.0, "init_from": "", "freeze": "none"}
# What a stored spec from before a setting existed meant by it (TrialSpec.from_dict(stored=True)).
LEGACY_TRAIN: dict[str, Any] = {"select": "top1", "split_per_seed": False}


@dataclass(frozen=True)
class TrialSpec:
    """A fully resolved trial: method params, dataset params (the dataset's Params defaults merged with
    the given ones), model params and train settings all filled. `method_source` is the content hash of
    a user method's file ('' for built-ins); `request` hashes what the sweep asked for (before defaults),
    so a finished trial whose request is still asked for but resolves differently is known to be stale.
    `imports` says how to load a user method; it is not part of the key (a path changes no number)."""

    method: str
    dataset: str
    model: str
    seed: int
    method_params: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    model_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = None  # type: ignore[assignment]  (always given: resolve_trial builds it)
    imports: tuple[str, ...] = ()
    method_source: str = ""
    request: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = json.loads(json.dumps({**d, "train": self.train.model_dump()}, default=list))  # plain, deep copies
        d["spec_version"] = SPEC_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, stored: bool = False) -> TrialSpec:
        """The spec of `to_dict`, every field required: a worker trusts exactly what was resolved.

        `stored=True` reads a spec an older tfbench stored (analyses of old trial folders): settings it lacks
        take the values that reproduce its behaviour (`LEGACY_TRAIN`, else the field's default) and settings
        this version lacks are dropped. Whether such a trial is still current is decided by its key."""
        d = dict(d)
        d.pop("spec_version", None)
        train = dict(d.pop("train", {}))
        if stored:
            known = TrainConfig.model_fields
            train = {**LEGACY_TRAIN, **{k: v for k, v in train.items() if k in known}}
            d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        train["milestones"] = tuple(train.get("milestones", ()))
        return cls(train=TrainConfig(**train), imports=tuple(d.pop("imports", ())), **d)

    def key_dict(self) -> dict[str, Any]:
        """What the key hashes: everything that changes a number, nothing that does not."""
        d = self.to_dict()
        for k in ("imports", "request"):
            d.pop(k)
        for k in NOT_IN_KEY_TRAIN:
            d["train"].pop(k, None)
        for k, off in RECIPE_OFF.items():
            if d["train"].get(k, off) == off:
                d["train"].pop(k, None)
        d["dataset_params"] = {k: v for k, v in d["dataset_params"].items() if k not in NOT_IN_KEY_DATASET}
        return d

    def key(self) -> str:
        """Stable across runs, folders and machines: sha256 of the canonical JSON of `key_dict()`."""
        return f"{self.method}-{self.dataset}-s{self.seed}-" + content_hash(self.key_dict(), 10)
