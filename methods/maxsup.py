"""Maximum suppression regularisation (`maxsup`; Zhou et al., 2025), label smoothing's variant that penalises
the top-1 logit instead of the target's.

Against the official code (ZhouYuxuanYX/Maximum-Suppression-Regularization, Conv/ffcv/losses.py,
`MaxSuppression`, the ImageNet code): the weight grows linearly from `begin_lam` to `end_lam` with the 0-based
epoch, divided by the number of epochs E (so the last epoch uses begin + (end - begin) * (E - 1) / E, never
`end_lam` itself; the long-tail copy divides by E - 1 instead). No state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .base import Method, StepContext, register


def maxsup_parts(*, logits: Tensor, targets: Tensor, lam: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(CE + lam * reg, CE, reg) with reg = mean_i (max_k z_ik - mean_k z_ik). logits (B, C), targets (B,)."""
    z = logits.float()
    ce = F.cross_entropy(z, targets)
    reg = (z.amax(dim=1) - z.mean(dim=1)).mean()
    return ce + lam * reg, ce, reg


@register("maxsup")
class MaxSup(Method):
    """L = CE + lam_e * mean_i (max_k z_ik - mean_k z_ik), lam_e = begin + (end - begin) * e / E."""

    label, color, order, recipe = "MaxSup", "#17becf", 7, "imagenet"

    @dataclass(frozen=True)
    class Params:
        begin_lam: float = 0.1
        end_lam: float = 0.2

    def validate(self) -> None:
        for name in ("begin_lam", "end_lam"):
            if not getattr(self.params, name) >= 0:
                self.fail(name, f"must be >= 0, got {getattr(self.params, name)}")

    def lam(self, epoch: int, num_epochs: int) -> float:
        p = self.params
        return p.begin_lam + (p.end_lam - p.begin_lam) * epoch / num_epochs

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        total, ce, reg = maxsup_parts(logits=logits, targets=targets, lam=self.lam(ctx.epoch, ctx.num_epochs))
        return {"loss": total, "ce": ce.detach(), "maxsup": reg.detach()}

    def compiled_loss(self, mode: str | None = None):
        """`maxsup_parts` as one compiled region; the epoch's weight enters as a 0-dim tensor (one graph for
        every epoch)."""
        from .compiled import compiled_region

        region = compiled_region(maxsup_parts, mode)

        def loss(logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
            total, ce, reg = region(logits=logits, targets=targets, lam=self.lam(ctx.epoch, ctx.num_epochs))
            return {"loss": total, "ce": ce.detach(), "maxsup": reg.detach()}

        return loss
