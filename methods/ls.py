"""Label smoothing (`ls`; Szegedy et al. 2016), in its two published forms. No state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from .base import Method, StepContext, register
from .functional import ls_parts


@register("ls")
class LS(Method):
    """L = soft CE with t = (1 - eps) * onehot + eps * u, logged as (1 - eps) * ce + eps * smooth.

    form `uniform`: u = 1/C on every class (torch's `label_smoothing`);
    form `others`:  u = 1/(C-1) on the non-target classes (the Zipf's LS and TF-KD repositories).
    """

    label, color, order = "LS", "#1f77b4", 1

    @dataclass(frozen=True)
    class Params:
        epsilon: float = 0.1
        form: Literal["uniform", "others"] = "uniform"

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        # the Zipf's LS and TF-KD repositories' baseline spreads eps over the other classes
        return {"form": "others"}

    def validate(self) -> None:
        if not 0.0 <= self.params.epsilon < 1.0:
            self.fail("epsilon", f"must be in [0, 1), got {self.params.epsilon}")

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        eps = self.params.epsilon
        ce, smooth = ls_parts(logp=F.log_softmax(logits.float(), dim=1), targets=targets, form=self.params.form)
        total = (1.0 - eps) * ce + eps * smooth
        return {"loss": total, "ce": ce.detach(), "smooth": smooth.detach()}
