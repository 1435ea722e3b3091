"""Online label smoothing (`ols`; Zhang et al., TIP 2021).

A C x C matrix S (row c = the soft target for class c) is rebuilt at every epoch end from the mean
prediction of the correctly classified training samples of each class. Classes with no correct
sample get the uniform row 1/C (docs/METHODS.md; the reference PyTorch port leaves them at zero).

Data-parallel training: the harness all-reduces (sums) the two tensors of `epoch_sums()` across
workers before `on_epoch_end`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, Needs, StepContext, register
from .functional import ols_accumulate_, ols_matrix


@register("ols")
class OLS(Method):
    """L = 0.5 * CE + 0.5 * soft CE with target S[y], S from the previous epoch (constant within one).

    init `zeros` (the official CIFAR code: epoch 0 is effectively 0.5 * CE) or `uniform` (1/C).
    """

    needs = Needs(epoch=True)
    state = ("S", "sums", "counts")
    label, color, order, recipe = "OLS", "#8c564b", 5, "pskd"  # OLS trains with PS-KD's recipe

    @dataclass(frozen=True)
    class Params:
        init: Literal["zeros", "uniform"] = "zeros"

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        c = self.num_classes
        self.S = torch.zeros(c, c) if self.params.init == "zeros" else torch.full((c, c), 1.0 / c)
        self.sums = torch.zeros(c, c)
        self.counts = torch.zeros(c)

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        z = logits.float()
        logp = F.log_softmax(z, dim=1)
        ce = F.nll_loss(logp, targets)
        soft = -(self.S[targets] * logp).sum(1).mean()
        with torch.no_grad():
            ols_accumulate_(sums=self.sums, counts=self.counts, probs=logp.detach().exp(), targets=targets)
        total = 0.5 * ce + 0.5 * soft
        return {"loss": total, "ce": ce.detach(), "soft": soft.detach()}

    def epoch_sums(self) -> list[Tensor]:
        """[sums (C, C), counts (C,)] of this epoch so far, summed across workers in place."""
        return [self.sums, self.counts]

    def on_epoch_end(self, epoch: int) -> None:
        self.S = ols_matrix(sums=self.sums, counts=self.counts)
        self.sums.zero_()
        self.counts.zero_()

    def state_nbytes(self) -> int:
        return self.S.numel() * self.S.element_size()
