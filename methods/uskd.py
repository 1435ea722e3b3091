"""USKD, self-knowledge distillation with normalised loss and customised soft labels (`uskd`; Yang et al.,
ICCV 2023), the Zipf's-LS follow-up of "From Knowledge Distillation to Self-Knowledge Distillation".

Against the official code (yzd-v/cls_KD, mmcls/distillation/losses/uskd.py and the self-KD branch of
classification_distiller.py), quirks kept because they change numbers:
- The weak classifier is an extra Linear on the globally pooled *previous-stage* map (`fea_s[-2]`: ResNet-18's
  256-channel layer3), trained by a soft CE with target 0.9 * onehot + 0.1 / C, weighted by `mu`.
- The target's soft label is p_t^2 + 1 - mean over the batch of p_t^2 (constant), in a soft CE on log p_t.
- The rank that orders the Zipf labels adds the weak classifier's normalised probabilities to the final
  classifier's *log*-probabilities: the code reuses the name `s_i` after overwriting it with log_softmax, so
  the score is w_k / (1 - w_t + 1e-6) + log p_k / (1 - log p_t + 1e-6). The target is ranked too (rank 1 gets
  1/1), then dropped; the C - 1 others are normalised and enter a soft CE (not a KL) with the non-target
  log-softmax.
- The model's own CE is added with weight 1 (the distiller's `ori_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Method, Needs, StepContext, register
from .traits import LOW


def uskd_parts(*, logits: Tensor, weak_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(ce, loss_t, loss_non, loss_weak) of USKD, unweighted. logits, weak_logits (B, C), targets (B,)."""
    z, w = logits.float(), weak_logits.float()
    c = z.shape[1]
    y = targets[:, None]                                                     # (B, 1)
    is_target = F.one_hot(targets, c).bool()                                 # (B, C)
    ce = F.cross_entropy(z, targets)
    logp = F.log_softmax(z, dim=1)                                           # (B, C)
    logp_t = logp.gather(1, y)                                               # (B, 1)
    p_t2 = logp_t.detach().exp() ** 2                                        # (B, 1)
    soft_t = p_t2 + 1.0 - p_t2.mean(dim=0, keepdim=True)                     # (B, 1), a constant
    loss_t = -(soft_t * logp_t).sum(dim=1).mean()
    logw = F.log_softmax(w, dim=1)                                           # (B, C)
    weak_target = is_target.float() * 0.9 + 0.1 / c
    loss_weak = -(weak_target * logw).sum(dim=1).mean()
    pw = logw.detach().exp()
    score = (pw / (1.0 - pw.gather(1, y) + 1e-6)
             + logp.detach() / (1.0 - logp_t.detach() + 1e-6))               # (B, C); log-probabilities: the quirk
    order = torch.argsort(score, dim=1, descending=True)                     # (B, C) classes, best first
    position = torch.argsort(order, dim=1)                                   # (B, C) 0-based rank of each class
    zipf = torch.where(is_target, 0.0, 1.0 / (position + 1).float())         # (B, C), target dropped
    zipf = zipf / zipf.sum(dim=1, keepdim=True)
    logq = F.log_softmax(z.masked_fill(is_target, float("-inf")), dim=1)     # (B, C), -inf at the target
    loss_non = -torch.where(is_target, 0.0, zipf * logq).sum(dim=1).mean()
    return ce, loss_t, loss_non, loss_weak


@register("uskd")
class USKD(Method):
    """L = CE + alpha * loss_t + beta * loss_non + mu * loss_weak (the weak classifier on the pooled previous map)."""

    needs = Needs(features=True)
    label, color, order, recipe = "USKD", "#bcbd22", 8, "uskd"

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        # configs/distillers/cifar100/res18_sd_cifar.py; ImageNet: the loss class's defaults
        return dict(alpha=0.1, beta=0.1, mu=0.1) if getattr(dataset, "resolution", None) == LOW else {}

    @dataclass(frozen=True)
    class Params:
        alpha: float = 1.0
        beta: float = 0.1
        mu: float = 0.005

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        if self.feature_channels is None or len(self.feature_channels) < 2:
            self.fail("mu", "needs feature_channels=(D, D') from the model to size the weak classifier")
        self.weak = nn.Linear(self.feature_channels[1], self.num_classes)

    def validate(self) -> None:
        for name in ("alpha", "beta", "mu"):
            if not getattr(self.params, name) >= 0:
                self.fail(name, f"must be >= 0, got {getattr(self.params, name)}")

    def extra_modules(self) -> nn.Module:
        return self.weak

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.prev_map is None:
            raise ValueError("method 'uskd' needs ctx.prev_map (the previous stage's map)")
        p = self.params
        weak = self.weak(ctx.prev_map.float().mean(dim=(2, 3)))  # (B, C): global average pool, then Linear
        ce, loss_t, loss_non, loss_weak = uskd_parts(logits=logits, weak_logits=weak, targets=targets)
        total = ce + p.alpha * loss_t + p.beta * loss_non + p.mu * loss_weak
        return {"loss": total, "ce": ce.detach(), "target": loss_t.detach(), "nontarget": loss_non.detach(),
                "weak": loss_weak.detach()}
