"""Cross-entropy (`ce`): the baseline every other method is compared with. No state."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .base import Method, StepContext, register


@register("ce")
class CE(Method):
    """L = mean_i -log softmax(z_i)[y_i]."""

    label, color, order = "CE", "#4d4d4d", 0  # the reference: a neutral grey

    @dataclass(frozen=True)
    class Params:
        pass

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        ce = F.cross_entropy(logits.float(), targets)
        return {"loss": ce, "ce": ce.detach()}
