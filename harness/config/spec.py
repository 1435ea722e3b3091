"""Typed, fully resolved trial configuration. A TrialSpec has no defaults left to look up later;
its stable hash is the trial key (the folder name under results/<sweep>/trials/)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Training recipes of the official repositories (METHODS.md, "Training recipes").
# Milestones are fractions of the run so that short runs keep the schedule's shape.
RECIPES: dict[str, dict[str, Any]] = {
    # Zipf's LS and CS-KD: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at 50% and 75%.
    "zipf": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=128,
                 milestones=(0.5, 0.75), gamma=0.1, warmup_epochs=0),
    # PS-KD and OLS: nesterov, wd 5e-4, x0.1 at epochs 150 and 225 of 300.
    "pskd": dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, batch_size=128,
                 milestones=(0.5, 0.75), gamma=0.1, warmup_epochs=0),
    # TF-KD: wd 5e-4, x0.2 at epochs 60, 120, 160 of 200, one warm-up epoch.
    "tfkd": dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, batch_size=128,
                 milestones=(0.3, 0.6, 0.8), gamma=0.2, warmup_epochs=1),
    # ImageNet / INAT21: batch 256, 0.1 * 0.1^(epoch // 30) over 100 epochs.
    "imagenet": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=256,
                     milestones=(0.3, 0.6, 0.9), gamma=0.1, warmup_epochs=0),
}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    recipe: str = "zipf"
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[int, ...] = (100, 150)  # absolute epochs (resolved from the recipe's fractions)
    gamma: float = 0.1
    warmup_epochs: int = 0
    fast_path: bool = True          # whole dataset as one tensor on the device, augmentation batched there
    deterministic: bool = False     # torch.use_deterministic_algorithms
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    threads: int = 0                # torch.set_num_threads; 0 leaves torch's default
    num_workers: int = 0            # DataLoader workers (DataLoader path only)
    compile: bool = False           # torch.compile the model (CUDA)
    amp: bool = True                # bf16 autocast on CUDA (never on CPU)
    checkpoint: bool = True         # write checkpoint.pt every epoch
    max_steps_per_epoch: int = 0    # 0 = the whole epoch; >0 caps it (smoke tests, benchmarks)
    workers: int = 1                # data-parallel workers (Ray Train); 1 = plain single process
    sync_debug: bool = False        # CUDA: raise on any host synchronisation inside a training step
    protocol: str = "clean"         # clean: select the epoch on a held-out split | paper: on the test split
    holdout: float = 0.1            # clean: held-out share of the training split (fraction, or a number of images)
    holdout_seed: int = 0           # clean: the split's seed, independent of the trial seed
    select: str = "top1"            # the epoch's selection rule on the selection split (harness/train/selection.py)
    split_per_seed: bool = False    # the holdout split and the data set's own split drawn per trial seed


SPEC_VERSION = 3  # bump when the meaning of a stored spec changes: every key changes with it
# Excluded from the key: where the data lives and which device runs it change no number; checkpoint and
# sync_debug change only what is written or checked. threads and num_workers change numbers (reduction
# order, which worker augments which sample), so they are in the key.
NOT_IN_KEY_TRAIN = ("device", "checkpoint", "sync_debug")
NOT_IN_KEY_DATASET = ("root", "download")


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
    train: TrainConfig = field(default_factory=TrainConfig)
    imports: tuple[str, ...] = ()
    method_source: str = ""
    request: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["imports"] = list(self.imports)
        d["train"]["milestones"] = list(self.train.milestones)
        d["spec_version"] = SPEC_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        d = dict(d)
        d.pop("spec_version", None)
        train = dict(d.pop("train", {}))
        train["milestones"] = tuple(train.get("milestones", ()))
        # a spec stored by another version may name settings this one lacks (or the reverse): loading it
        # for analysis keeps what exists; whether it is still current is decided by its key, not here
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        train = {k: v for k, v in train.items() if k in known}
        return cls(train=TrainConfig(**train), imports=tuple(d.pop("imports", ())), **d)

    def key_dict(self) -> dict[str, Any]:
        """What the key hashes: everything that changes a number, nothing that does not."""
        d = self.to_dict()
        for k in ("imports", "request"):
            d.pop(k)
        for k in NOT_IN_KEY_TRAIN:
            d["train"].pop(k, None)
        d["dataset_params"] = {k: v for k, v in d["dataset_params"].items() if k not in NOT_IN_KEY_DATASET}
        return d

    def key(self) -> str:
        """Stable across runs, folders and machines: sha256 of the canonical JSON of `key_dict()`."""
        blob = json.dumps(self.key_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return f"{self.method}-{self.dataset}-s{self.seed}-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def resolve_train(epochs: int, recipe: str = "zipf", **overrides: Any) -> TrainConfig:
    """Recipe defaults, then explicit overrides; milestones given as fractions become epochs."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; allowed: {', '.join(RECIPES)}")
    values: dict[str, Any] = dict(RECIPES[recipe])
    values.update({k: v for k, v in overrides.items() if v is not None})
    ms = values.get("milestones", ())
    if all(isinstance(m, float) and 0 < m < 1 for m in ms):
        ms = tuple(max(1, round(m * epochs)) for m in ms)
    values["milestones"] = tuple(int(m) for m in ms)
    return TrainConfig(epochs=int(epochs), recipe=recipe, **values)
