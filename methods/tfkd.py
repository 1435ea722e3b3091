"""Teacher-free KD by manually designed regularisation (`tfkd`; Yuan et al., CVPR 2020, "Tf-KD_reg").

Follows the official code, quirks included: the teacher is softmax(u / T) of a *probability* vector
u (nearly uniform for T >= 10), the student is not temperature-scaled, there is no T^2, and the KL
uses PyTorch's element-wise 'mean' (divided by B*C), which `multiplier` undoes. No state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from .base import Method, StepContext, register
from .functional import tfkd_kd, tfkd_teacher


@register("tfkd")
class TFKD(Method):
    """L = (1 - alpha) * CE + alpha * multiplier * kd."""

    label, color, order, recipe = "TF-KD", "#ff7f0e", 2, "tfkd"
    # the official CIFAR-100 settings per architecture (METHODS.md section 3), matched in the model's name
    BY_MODEL: ClassVar[dict[str, dict[str, float]]] = {
        "resnet18": dict(temperature=20.0, alpha=0.1, multiplier=100.0),
        "densenet121": dict(temperature=40.0, alpha=0.1, multiplier=1.0),
        "mobilenetv2": dict(temperature=40.0, alpha=0.95, multiplier=1.0),
    }

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        return next((dict(v) for arch, v in cls.BY_MODEL.items() if arch in model.replace("_", "")), {})

    @dataclass(frozen=True)
    class Params:
        alpha: float = 0.1
        temperature: float = 20.0
        multiplier: float = 100.0
        correct_prob: float = 0.99

    def validate(self) -> None:
        p = self.params
        if not 0.0 <= p.alpha <= 1.0:
            self.fail("alpha", f"must be in [0, 1], got {p.alpha}")
        if not p.temperature > 0:
            self.fail("temperature", f"must be > 0, got {p.temperature}")
        if not p.multiplier >= 0:
            self.fail("multiplier", f"must be >= 0, got {p.multiplier}")
        if not 0.0 <= p.correct_prob <= 1.0:
            self.fail("correct_prob", f"must be in [0, 1], got {p.correct_prob}")

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        p = self.params
        z = logits.float()
        logp = F.log_softmax(z, dim=1)
        ce = F.nll_loss(logp, targets)
        teacher = tfkd_teacher(targets=targets, num_classes=z.shape[1], correct_prob=p.correct_prob,
                               temperature=p.temperature)
        kd = tfkd_kd(logp=logp, teacher=teacher)
        total = (1.0 - p.alpha) * ce + p.alpha * p.multiplier * kd
        return {"loss": total, "ce": ce.detach(), "kd": kd.detach()}
