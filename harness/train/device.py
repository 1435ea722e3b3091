"""Where a trial runs and how its randomness starts: device choice, backends, seeding, synchronisation, peak
memory."""
from __future__ import annotations

import os
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


def configure_backends(device: torch.device, *, deterministic: bool) -> dict[str, Any]:
    """Set the process's backend switches for a trial on `device`; returns them for config.json.

    On CUDA, by default, cuDNN autotunes its convolution algorithms (`cudnn.benchmark`: the static training
    shapes make the search a one-off) and float32 matmuls and convolutions run in TF32 (Zipf's votes are
    float32 by design; bf16 autocast covers the rest). `deterministic` turns both off and asks torch for
    deterministic algorithms. Why every switch is set both ways: Ray reuses a worker process for trial after
    trial, so a deterministic trial must not leave its settings to the next one. On CPU only the
    determinism switch is touched, so CPU numbers do not depend on the GPU settings.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(deterministic)
    if device.type != "cuda":
        return {"deterministic": deterministic}
    fast = not deterministic
    torch.backends.cudnn.benchmark = fast
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = fast
    torch.set_float32_matmul_precision("high" if fast else "highest")
    return {"deterministic": deterministic, "cudnn_benchmark": fast, "tf32": fast}


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
