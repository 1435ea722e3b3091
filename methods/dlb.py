"""Self-distillation from the last mini-batch (`dlb`; Shen et al., CVPR 2022).

Each step trains on the current batch and, again, on the previous step's batch (a fresh augmentation of the
same samples), and distils the previous step's predictions into that second forward. The harness composes
the batches (`compose_batches`: cat(this batch, the previous one)) and forwards the second part apart, with
gradient (`ctx.overlap_logits`); the previous step's logits are this method's state.

Against the official code (Meta-knowledge-Lab/DLB, dlb.py), numbers kept:
- The two parts are two forward passes (batch-norm statistics per part), the current batch first.
- CE over cat(previous part, current part) (the mean over 2B); the KL is `batchmean` (over B) times T^2,
  with the previous step's logits, computed before that step's update, as the constant teacher.
- The previous batch carries over epoch boundaries (the first step of an epoch repeats the last batch of the
  one before); only the very first step of training has none and is plain CE on its batch.
- Official batches come from a two-view loader (view 0 now, view 1 when repeated); here the repeat is a new
  draw of the same augmentation, which is the same distribution.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, Needs, StepContext, register


def dlb_parts(*, logits: Tensor, targets: Tensor, overlap_logits: Tensor, overlap_targets: Tensor,
              teacher: Tensor, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """(CE over both parts, KL(softmax(teacher / T) || softmax(overlap / T)) * T^2 / B'). logits (B, C),
    overlap_logits and teacher (B', C)."""
    ce = F.cross_entropy(torch.cat([overlap_logits.float(), logits.float()]), torch.cat([overlap_targets, targets]))
    q = F.softmax(teacher.float() / temperature, dim=1)                        # (B', C)
    logp = F.log_softmax(overlap_logits.float() / temperature, dim=1)          # (B', C)
    kd = (torch.xlogy(q, q) - q * logp).sum() / overlap_logits.shape[0] * temperature ** 2
    return ce, kd


def last_batch_overlap(*, num_samples: int, batch_size: int, generator: torch.Generator,
                       previous: Tensor | None) -> Iterator[tuple[Tensor, Tensor | None]]:
    """One epoch of (this batch, the previous batch or None): a fresh permutation cut into full batches; the
    first batch's previous one is `previous` (the last batch of the epoch before), None at the very start."""
    perm = torch.randperm(num_samples, generator=generator, device=generator.device)
    for s in range(0, num_samples - batch_size + 1, batch_size):
        batch = perm[s:s + batch_size]
        yield batch, previous
        previous = batch


@register("dlb")
class DLB(Method):
    """L = CE(cat(z_prev_view, z), cat(y_prev, y)) + alpha * KL(softmax(z_last / T) || softmax(z_prev_view / T)) * T^2."""

    needs = Needs(batches=True, overlap=True)
    state = ("prev_positions", "prev_logits")
    label, color, order, recipe = "DLB", "#393b79", 9, "dlb"
    data_parallel_refusal = ("its second forward (the previous batch, with gradient) is not run through the "
                             "data-parallel wrapper; train it on one worker")

    @dataclass(frozen=True)
    class Params:
        temperature: float = 3.0
        alpha: float = 1.0

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        self.prev_positions: Tensor | None = None  # (B,) the last batch yielded (positions among the fitted samples)
        self.prev_logits: Tensor | None = None     # (B, C) that batch's logits, the next step's teacher

    def validate(self) -> None:
        if not self.params.temperature > 0:
            self.fail("temperature", f"must be > 0, got {self.params.temperature}")
        if not self.params.alpha >= 0:
            self.fail("alpha", f"must be >= 0, got {self.params.alpha}")

    def compose_batches(self, labels: Tensor, batch_size: int, generator: torch.Generator
                        ) -> Iterator[tuple[Tensor, Tensor | None]]:
        for batch, previous in last_batch_overlap(num_samples=len(labels), batch_size=batch_size,
                                                  generator=generator, previous=self.prev_positions):
            self.prev_positions = batch  # before the yield: the harness stops pulling after its last step
            yield batch, previous

    def _parts(self, logits: Tensor, targets: Tensor, ctx: StepContext, region: Any = None) -> dict[str, Tensor]:
        z = logits.float()
        if ctx.overlap_logits is None:  # the very first step of training: nothing to repeat yet
            ce, kd = F.cross_entropy(z, targets), z.new_zeros(())
        else:
            if self.prev_logits is None:
                raise ValueError("method 'dlb': a repeated batch arrived without the previous step's logits")
            ce, kd = (region or dlb_parts)(logits=z, targets=targets, overlap_logits=ctx.overlap_logits,
                                           overlap_targets=ctx.overlap_targets, teacher=self.prev_logits,
                                           temperature=self.params.temperature)
        self.prev_logits = z.detach()
        return {"loss": ce + self.params.alpha * kd, "ce": ce.detach(), "kd": kd.detach()}

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        return self._parts(logits, targets, ctx)

    def compiled_loss(self, mode: str | None = None):
        """`dlb_parts` as one compiled region (T an input); keeping the logits for the next step, and the first
        step's plain CE, stay eager."""
        from .compiled import compiled_region

        region = compiled_region(dlb_parts, mode)
        return lambda logits, targets, ctx: self._parts(logits, targets, ctx, region)
