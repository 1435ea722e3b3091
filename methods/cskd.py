"""Class-wise self-knowledge distillation (`cskd`; Yun et al., CVPR 2020).

The harness builds each batch from `pair_batches`: B anchors plus one same-class partner each, runs
the partners under no-grad in train mode, and hands their logits over as `ctx.partner_logits`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, Needs, StepContext, register
from .functional import cskd_kd


def class_pairs(*, labels: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of (anchor indices, partner indices), each (b,) long with b <= batch_size.

    Anchors: a fresh permutation of all N indices, cut into consecutive batches (the last may be
    short), so every sample is an anchor exactly once. Partners: for each anchor, an index drawn
    uniformly from all samples of its class (possibly the anchor itself), as the official
    PairBatchSampler's `random.choice(class_indices[label])`. All draws come from `generator`, on its
    device (the indices come back there too).
    """
    device = generator.device
    labels = labels.detach().to(device, torch.long)
    n = labels.numel()
    by_class = torch.argsort(labels, stable=True)  # (N,) indices grouped by class
    sizes = torch.bincount(labels)  # (K,)
    starts = sizes.cumsum(0) - sizes
    anchors = torch.randperm(n, generator=generator, device=device)
    y = labels[anchors]
    offset = (torch.rand(n, generator=generator, device=device, dtype=torch.float64) * sizes[y]).long()
    partners = by_class[starts[y] + torch.minimum(offset, sizes[y] - 1)]
    for i in range(0, n, batch_size):
        yield anchors[i:i + batch_size], partners[i:i + batch_size]


@register("cskd")
class CSKD(Method):
    """L = CE(z_a, y) + lam * sum KL(softmax(z_p / T) || softmax(z_a / T)) * T^2 / B."""

    needs = Needs(pairs=True)
    label, color, order = "CS-KD", "#2ca02c", 3

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        return {"lam": 3.0} if dataset == "inat21" else {}  # lambda 3 on fine-grained sets

    @dataclass(frozen=True)
    class Params:
        temperature: float = 4.0
        lam: float = 1.0

    def validate(self) -> None:
        if not self.params.temperature > 0:
            self.fail("temperature", f"must be > 0, got {self.params.temperature}")
        if not self.params.lam >= 0:
            self.fail("lam", f"must be >= 0, got {self.params.lam}")

    def pair_batches(self, labels: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        return class_pairs(labels=labels, batch_size=batch_size, generator=generator)

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.partner_logits is None:
            raise ValueError("method 'cskd' needs ctx.partner_logits (the partners' logits); the harness must pair batches")
        z = logits.float()
        ce = F.cross_entropy(z, targets)
        kd = cskd_kd(logits=z, partner_logits=ctx.partner_logits.float(), temperature=self.params.temperature)
        total = ce + self.params.lam * kd
        return {"loss": total, "ce": ce.detach(), "kd": kd.detach()}
