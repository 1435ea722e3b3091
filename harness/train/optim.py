"""The one optimiser of a trial: `make_optimizer(params, train)`.

Why one place: the training loop, `tfbench bench step` and the bench's bare loop must step with exactly the
optimiser a trial gets, so a change to it (another optimiser, parameter groups) reaches all of them at once.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from harness.config.spec import TrainConfig


def make_optimizer(params: Iterable[Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` over `params` (one parameter group, in the given order); the learning rate is then set
    per step (`lr_at`). SGD: momentum, Nesterov, and weight decay as L2 in the gradient (coupled); AdamW:
    torch's default betas and eps, weight decay decoupled (w -= lr * wd * w), momentum and Nesterov unused."""
    if train.optimizer == "adamw":
        return torch.optim.AdamW(list(params), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(list(params), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                           nesterov=train.nesterov)


__all__ = ["make_optimizer"]
