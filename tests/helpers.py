"""Helpers the tests share (imported as `helpers`: tests/ is on sys.path through its conftest.py)."""
from __future__ import annotations

from pathlib import Path


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
