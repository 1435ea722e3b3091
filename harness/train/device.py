"""Where a trial runs and how its randomness starts: device choice, seeding, synchronisation, peak memory."""
from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from harness.errors import UserError
from harness.train.memory import peak_rss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """auto | cpu | cuda | cuda:N; `what` names the setting in the one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"{what} is {name!r}; allowed: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{what} is {name!r} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss()


class no_host_sync:
    """With train.sync_debug on CUDA, any host synchronisation inside a training step raises (the proof
    behind "no host sync in the step"; `tfbench bench gpu` turns it on)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc: Any) -> None:  # also on an exception, so the mode never leaks
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")
