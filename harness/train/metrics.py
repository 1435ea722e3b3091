"""The numbers a trial records: the learning-rate schedule, top-1/top-5, NLL and ECE (15 equal-width bins).

Evaluation always uses plain cross-entropy, whatever the method trained with, so methods compare on one scale.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ECE_BINS = 15


def lr_at(step: int, *, steps_per_epoch: int, lr: float, milestones: tuple[int, ...], gamma: float,
          warmup_epochs: int, schedule: str = "step", total_steps: int = 0) -> float:
    """The learning rate of global step `step` (0-based), with an optional linear warm-up over `warmup_epochs`
    (TF-KD warms up for one epoch): lr * (step + 1) / warm-up steps.

    step: multistep, x gamma at each milestone epoch. cosine: after the warm-up W, over the rest of the run
    (T = total_steps): lr * (1 + cos(pi * (step - W) / (T - W))) / 2, from lr down to 0 (timm's cosine with
    its warm-up as a prefix, no floor)."""
    warm = warmup_epochs * steps_per_epoch
    if step < warm:
        return lr * (step + 1) / warm * (1.0 if schedule == "cosine" else _step_factor(step, steps_per_epoch,
                                                                                        milestones, gamma))
    if schedule == "cosine":
        span = max(total_steps - warm, 1)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))
    return lr * _step_factor(step, steps_per_epoch, milestones, gamma)


def _step_factor(step: int, steps_per_epoch: int, milestones: tuple[int, ...], gamma: float) -> float:
    epoch = step // steps_per_epoch
    return gamma ** sum(epoch >= m for m in milestones)


def ece_counts(probs: Tensor, targets: Tensor, bins: int = ECE_BINS) -> Tensor:
    """Per-bin (count, sum confidence, sum correct) as a (3, bins) tensor, so batches add up on the device."""
    conf, pred = probs.max(dim=1)                                          # (B,), (B,)
    idx = torch.clamp((conf * bins).ceil().long() - 1, 0, bins - 1)        # bins (0, 1/b], (1/b, 2/b], ...
    out = torch.zeros(3, bins, device=probs.device, dtype=torch.float64)
    out[0].index_add_(0, idx, torch.ones_like(conf, dtype=torch.float64))
    out[1].index_add_(0, idx, conf.double())
    out[2].index_add_(0, idx, (pred == targets).double())
    return out


def ece_from_counts(counts: Tensor) -> float:
    n, conf, correct = counts.double().cpu()
    total = n.sum().clamp_min(1)
    return float((torch.abs(correct - conf)).sum() / total)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, device: torch.device, amp: bool) -> dict[str, float]:
    """{"val_top1", "val_top5", "val_nll", "val_ece"} of `model` over every (x, y, idx) batch of `loader`."""
    model.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # n, correct@1, correct@5, nll
    ece = torch.zeros(3, ECE_BINS, device=device, dtype=torch.float64)
    for x, y, _ in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices                                  # (B, k)
        hit = top == y[:, None]
        sums += torch.stack([torch.tensor(float(len(y)), device=device), hit[:, 0].sum(), hit.any(1).sum(),
                             F.cross_entropy(logits, y, reduction="sum")]).double()
        ece += ece_counts(logits.softmax(1), y)
    n, c1, c5, nll = sums.tolist()
    return {"val_top1": c1 / n, "val_top5": c5 / n, "val_nll": nll / n, "val_ece": ece_from_counts(ece)}
