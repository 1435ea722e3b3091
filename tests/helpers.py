"""Helpers the tests share (imported as `helpers`: tests/ is on sys.path through its conftest.py).

The numpy oracles here stay independent of the code under test: numpy only, no torch, no tfbench."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np


def event_scalars(tb: Path) -> list[tuple[str, int, float]]:
    """Every scalar record of every TensorBoard event file in `tb`, duplicates kept (no reader-side
    merging), read with tensorboard's own event file loader."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = []
    files = sorted(Path(tb).glob("events.out.tfevents.*"))
    assert files, f"no event file in {tb}"
    for path in files:
        for event in LegacyEventFileLoader(str(path)).Load():
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value if v.HasField("simple_value")]
    return out


def key_of(method: str, dataset: str, seed: int, params: dict, *extra: object) -> str:
    """A trial key for hand-made trials tables: unique per configuration and seed, and a valid folder name
    (what tfbench's keys always are), like `ce-cifar100-s0-lam0.1-3`."""
    import re

    parts = [method, dataset, f"s{seed}", *(f"{k}{v}" for k, v in sorted(params.items())), *map(str, extra)]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))

# --- numpy oracles ----------------------------------------------------------------------------------

def np_log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis (the classes of a batch of logits, or one row), max-shifted."""
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_softmax(x: np.ndarray) -> np.ndarray:
    """softmax over the last axis (the classes of a batch of logits), max-shifted."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --- user methods and sweep files -------------------------------------------------------------------

def scaled_ce_source(name: str) -> str:
    """The source of a user-method file that registers `name`: cross-entropy times its one parameter
    `scale` (default 1.0), reporting the loss and `ce`. The tests that import it unregister `name`."""
    return f'''
from dataclasses import dataclass
import torch.nn.functional as F
from methods import Method, register


@register("{name}")
class ScaledCE(Method):
    @dataclass(frozen=True)
    class Params:
        scale: float = 1.0

    def loss(self, logits, targets, ctx):
        ce = F.cross_entropy(logits, targets)
        return {{"loss": self.params.scale * ce, "ce": ce}}
'''


def write_sweep_file(folder: Path, text: str | bytes, name: str = "s.yaml",
                     beside: dict[str, str] | None = None) -> Path:
    """Write a sweep file `folder/name` holding `text` (bytes as they are), and first each of `beside`
    (file name -> text, e.g. a user-method file the sweep imports) next to it; `folder` is made if it is
    missing. Returns the sweep file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for other, content in (beside or {}).items():
        (folder / other).write_text(content)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def set_dataset_default(monkeypatch, dataset: str, field: str, value) -> None:
    """Give registered dataset `dataset` (through `monkeypatch`) a Params class whose `field` defaults to
    `value`, every other field as it was: what a changed default in a newer tfbench looks like."""
    from harness.data import DATASETS

    cls = DATASETS.get(dataset)
    monkeypatch.setattr(cls, "Params", dataclasses.make_dataclass(
        "Params", [(f.name, f.type, dataclasses.field(default=value if f.name == field else f.default))
                   for f in dataclasses.fields(cls.Params)], frozen=True))


# --- trials and what they write ---------------------------------------------------------------------

def quick_trial(method: str, *, seed: int = 0, epochs: int = 1, steps: int = 3, dataset: str = "synthetic",
                **train):
    """A resolved trial small enough to train in-process in seconds: tiny_cnn, batch 32, `steps` steps an
    epoch, on the synthetic dataset unless told; `train` adds training settings."""
    from harness.config.resolve import resolve_trial

    return resolve_trial(method=method, dataset=dataset, model="tiny_cnn", seed=seed,
                         train=dict(epochs=epochs, batch_size=32, max_steps_per_epoch=steps, **train))


def read_metrics(folder: Path, *, untimed: bool = False) -> list[dict]:
    """The records of a trial folder's metrics.jsonl, one an epoch. untimed=True leaves out the wall-clock
    fields (the keys ending in `_time_s`), which differ between runs that are otherwise the same."""
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    if untimed:
        rows = [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]
    return rows


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line (trials.csv, sharpness.csv), as strings."""
    with open(path) as f:
        return list(csv.DictReader(f))
