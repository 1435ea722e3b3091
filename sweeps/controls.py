"""Control methods for checking tfbench's verdicts: an A/A twin of CE and a known-worse CE.

Imported by sweeps/controls.yaml (`imports:`), like any user's method file. Why ship controls: a verdict
is only worth something when a case with a known answer comes out right. The twin must never be marked
(it is CE); the noisy one must be marked worse.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods import Method, register


@register("ce_twin")
class CETwin(Method):
    """A/A control: CE written as logsumexp(z) - z_y. Mathematically CE; its arithmetic rounds differently,
    so its runs drift from CE's by numerical noise only."""

    def loss(self, logits, targets, ctx):
        z = logits.float()
        ce = (torch.logsumexp(z, dim=1) - z.gather(1, targets[:, None]).squeeze(1)).mean()
        return {"loss": ce, "ce": ce.detach()}


@register("ce_noisy")
class CENoisy(Method):
    """Known-worse control: CE on targets of which a share `noise` per batch is replaced by uniformly random
    classes (drawn from the trial's seeded method generator)."""

    @dataclass(frozen=True)
    class Params:
        noise: float = 0.4

    def validate(self):
        if not 0.0 <= self.params.noise <= 1.0:
            self.fail("noise", f"must be in [0, 1], got {self.params.noise}")

    def loss(self, logits, targets, ctx):
        b, c = logits.shape
        flip = torch.rand(b, generator=ctx.generator, device=logits.device) < self.params.noise
        random = torch.randint(0, c, (b,), generator=ctx.generator, device=logits.device)
        ce = F.cross_entropy(logits.float(), torch.where(flip, random, targets))
        return {"loss": ce, "ce": ce.detach()}
