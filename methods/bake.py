"""Self-distillation with batch knowledge ensembling (`bake`; Ge et al., 2021).

Each sample's soft target is an ensemble of the other samples' predictions in its batch, weighted by feature
affinity and propagated to convergence; batches are built so that every sample has a few same-class partners.

Against the official code (yxgeee/BAKE, small_scale/train.py `knowledge_ensemble` and datasets.py
`IdentityBatchSampler`), numbers kept:
- Features are the L2-normalised pooled penultimate features (the classifier's input); the affinity is a
  softmax over cosine similarities with no temperature, the diagonal masked by subtracting 1e9.
- Propagation in closed form: Q = (1 - omega) * inverse(I - omega * A) @ softmax(z / T), under no gradient.
- kd = sum KL(Q || softmax(z / T)) * T^2 / B over the whole batch (KLDivLoss(sum)); L = CE + lam * kd.
- Batches: A = batch_size // (M + 1) anchors from a fresh permutation, each followed in the batch by M
  samples of its class drawn without replacement from its class without the anchor (with replacement where
  the class has fewer than M others). An epoch has N // A steps: every sample is an anchor once, so an epoch
  costs M + 1 times the images of a plain one, as in the official code (whose last partial batch is kept).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, Needs, StepContext, register


def bake_targets(*, features: Tensor, logits: Tensor, temperature: float | Tensor, omega: float | Tensor) -> Tensor:
    """The batch-ensembled soft targets Q (B, C). features (B, D), logits (B, C); no gradient flows."""
    f = F.normalize(features.detach().float(), p=2, dim=1)                     # (B, D)
    eye = torch.eye(f.shape[0], device=f.device, dtype=f.dtype)                # (B, B)
    affinity = F.softmax(f @ f.T - eye * 1e9, dim=1)                           # (B, B), zero diagonal
    p = F.softmax(logits.detach().float() / temperature, dim=1)                # (B, C)
    return (1.0 - omega) * torch.linalg.inv(eye - omega * affinity) @ p


def bake_parts(*, logits: Tensor, targets: Tensor, features: Tensor, temperature: float | Tensor,
               omega: float | Tensor) -> tuple[Tensor, Tensor]:
    """(CE, sum KL(Q || softmax(z / T)) * T^2 / B). logits (B, C), features (B, D)."""
    z = logits.float()
    q = bake_targets(features=features, logits=z, temperature=temperature, omega=omega)  # (B, C)
    logp = F.log_softmax(z / temperature, dim=1)
    kd = (torch.xlogy(q, q) - q * logp).sum() * temperature ** 2 / z.shape[0]
    return F.cross_entropy(z, targets), kd


def class_groups(*, labels: Tensor, anchors_per_batch: int, others: int, generator: torch.Generator
                 ) -> Iterator[Tensor]:
    """One epoch of batches cat(anchors (A,), their partners (A * M,), anchor-major), A = anchors_per_batch and
    M = others: N // A batches. Partners: M distinct members of the anchor's class other than the anchor (M
    draws with replacement where fewer exist; the anchor itself where it is alone in its class)."""
    device = generator.device
    labels = labels.detach().to(device, torch.long)
    n = labels.numel()
    by_class = torch.argsort(labels, stable=True)                              # (N,) indices grouped by class
    sizes = torch.bincount(labels)                                             # (K,)
    starts = sizes.cumsum(0) - sizes                                           # (K,)
    where = torch.empty_like(by_class)
    where[by_class] = torch.arange(n, device=device)                           # position of each index in by_class
    widest = int(sizes.max())
    perm = torch.randperm(n, generator=generator, device=device)
    for s in range(0, n - anchors_per_batch + 1, anchors_per_batch):
        a = perm[s:s + anchors_per_batch]                                      # (A,)
        y = labels[a]
        rest = sizes[y] - 1                                                    # (A,) members besides the anchor
        keys = torch.rand(len(a), widest, generator=generator, device=device)  # (A, W)
        cols = torch.arange(widest, device=device)
        keys = keys.masked_fill(cols[None, :] >= rest[:, None], 2.0)           # only the first `rest` columns
        distinct = keys.argsort(dim=1)[:, :others]                             # (A, M) distinct offsets
        drawn = (torch.rand(len(a), others, generator=generator, device=device, dtype=torch.float64)
                 * rest[:, None].clamp_min(1)).long()                          # (A, M) with replacement
        offset = torch.where((rest >= others)[:, None], distinct, drawn)
        mine = (where[a] - starts[y])[:, None]                                 # (A, 1) the anchor's own offset
        offset = offset + (offset >= mine).long()                              # skip the anchor
        offset = torch.where((rest > 0)[:, None], offset, mine)               # alone in its class: itself
        partners = by_class[starts[y][:, None] + offset]                       # (A, M)
        yield torch.cat([a, partners.reshape(-1)])


@register("bake")
class BAKE(Method):
    """L = CE + lam * sum KL(Q || softmax(z / T)) * T^2 / B, Q = (1 - omega)(I - omega A)^-1 softmax(z / T)."""

    needs = Needs(features=True, batches=True)
    label, color, order = "BAKE", "#e7ba52", 11  # not grey: grey is CE's, the reference
    data_parallel_refusal = ("its batches are class groups whose affinity spans the whole batch, which a "
                             "worker's slice would split; train it on one worker")

    @dataclass(frozen=True)
    class Params:
        temperature: float = 4.0
        lam: float = 1.0
        omega: float = 0.5
        intra_imgs: int = 3

    def validate(self) -> None:
        p = self.params
        if not p.temperature > 0:
            self.fail("temperature", f"must be > 0, got {p.temperature}")
        if not p.lam >= 0:
            self.fail("lam", f"must be >= 0, got {p.lam}")
        if not 0.0 <= p.omega < 1.0:
            self.fail("omega", f"must be in [0, 1), got {p.omega}")
        if not p.intra_imgs >= 0:
            self.fail("intra_imgs", f"must be >= 0, got {p.intra_imgs}")

    def anchors_per_batch(self, batch_size: int) -> int:
        return max(1, batch_size // (self.params.intra_imgs + 1))

    def steps_per_epoch(self, num_samples: int, batch_size: int) -> int:
        return num_samples // self.anchors_per_batch(batch_size)

    def compose_batches(self, labels: Tensor, batch_size: int, generator: torch.Generator
                        ) -> Iterator[tuple[Tensor, Tensor | None]]:
        for batch in class_groups(labels=labels, anchors_per_batch=self.anchors_per_batch(batch_size),
                                  others=self.params.intra_imgs, generator=generator):
            yield batch, None

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.final_map is None:
            raise ValueError("method 'bake' needs ctx.final_map (its pooled features)")
        p = self.params
        ce, kd = bake_parts(logits=logits, targets=targets, features=ctx.final_map.float().mean(dim=(2, 3)),
                            temperature=p.temperature, omega=p.omega)
        return {"loss": ce + p.lam * kd, "ce": ce.detach(), "kd": kd.detach()}
