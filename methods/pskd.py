"""Progressive self-knowledge distillation (`pskd`; Kim et al., ICCV 2021).

The last prediction for every training sample lives in a table P (N_train, C), kept where `to()`
puts it (float32, or float16 to halve it: ImageNet's 1.28 M x 1,000 is 5.1 GB in float32). The table
is allocated on first use and is part of `state_dict`, so a resumed run continues with it.

Data-parallel training uses the hooks `Method` declares for it: after the optimiser step the harness
takes `pending_update()` on every worker, gathers the indices and predictions from all of them, and calls
`apply_update` with the gathered tensors; `on_step_end()` applies whatever is still pending (the
single-process case).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, Needs, StepContext, register
from .functional import one_hot, pskd_alpha, pskd_target, soft_cross_entropy

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@register("pskd")
class PSKD(Method):
    """t = (1 - alpha_t) * onehot + alpha_t * P[index]; L = soft CE with t; then P[index] = softmax(z).

    alpha_t = alpha_T * (e + 1) / E. Epoch 0 trains on one-hot targets (its rows are taken to be
    onehot(y)); a row never written before (a sample not seen in an earlier epoch, e.g. with capped
    epochs) also counts as onehot(y). Logged parts: L = (1 - alpha_t) * ce + alpha_t * kd, kd being
    the soft CE with P[index].
    """

    needs = Needs(indices=True, epoch=True)
    state = ("table",)  # allocated on first use
    label, color, order, recipe = "PS-KD", "#9467bd", 4, "pskd"

    @dataclass(frozen=True)
    class Params:
        alpha_T: float = 0.8
        table_dtype: Literal["float32", "float16"] = "float32"

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        self.table: Tensor | None = None  # (N_train, C), allocated on first use
        self._pending: tuple[Tensor, Tensor] | None = None

    def validate(self) -> None:
        if not 0.0 <= self.params.alpha_T <= 1.0:
            self.fail("alpha_T", f"must be in [0, 1], got {self.params.alpha_T}")

    def _ensure_table(self) -> Tensor:
        if self.table is None:
            if self.num_train <= 0:
                raise ValueError("method 'pskd' needs num_train > 0 (the training-set size) for its table")
            self.table = torch.zeros(self.num_train, self.num_classes, dtype=_DTYPES[self.params.table_dtype],
                                     device=self.device)
        return self.table

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.indices is None:
            raise ValueError("method 'pskd' needs ctx.indices (the dataset index of every sample)")
        z = logits.float()
        oh = one_hot(targets=targets, num_classes=z.shape[1])
        if ctx.epoch == 0:
            previous = oh
        else:
            table = self._ensure_table()
            previous = table[ctx.indices.to(table.device)].to(z.device, torch.float32)  # (B, C)
            unseen = (previous.abs().sum(1, keepdim=True) == 0)
            previous = torch.where(unseen, oh, previous)
        alpha_t = pskd_alpha(alpha_T=self.params.alpha_T, epoch=ctx.epoch, num_epochs=ctx.num_epochs)
        logp = F.log_softmax(z, dim=1)
        total = soft_cross_entropy(logp=logp, target=pskd_target(targets=targets, previous=previous, alpha_t=alpha_t))
        ce = F.nll_loss(logp.detach(), targets)
        kd = soft_cross_entropy(logp=logp.detach(), target=previous)
        # the train-mode prediction on this view, from before this step's update
        self._pending = (ctx.indices.detach(), logp.detach().exp())
        return {"loss": total, "ce": ce, "kd": kd}

    # --- the table update ---------------------------------------------------------------------
    def compiled_loss(self, mode: str | None = None):
        """Eager by design: alpha_t changes every epoch (a graph per epoch, or a graph break to read it), the
        loss mutates the method's state (the pending table rows) and is a gather from the (N, C) table plus a
        soft CE, memory-bound; under `train.compile` the forward is compiled and this loss runs as it is."""
        return self.loss

    def pending_update(self) -> tuple[Tensor, Tensor] | None:
        """Hand over (and forget) this worker's (indices (B,), probs (B, C)) of the last step."""
        pending, self._pending = self._pending, None
        return pending

    def apply_update(self, indices: Tensor, probs: Tensor) -> None:
        """P[indices] = probs (possibly gathered from all workers)."""
        table = self._ensure_table()
        table[indices.to(table.device)] = probs.detach().to(table.device, table.dtype)

    def on_step_end(self) -> None:
        pending = self.pending_update()
        if pending is not None:
            self.apply_update(*pending)

    # --- state --------------------------------------------------------------------------------
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As the base, but the table is allocated lazily: its shape is checked against the data set's."""
        if "table" in state:
            table = state["table"]
            if tuple(table.shape) != (self.num_train, self.num_classes):
                raise ValueError(f"method 'pskd': checkpoint table has shape {tuple(table.shape)}, "
                                 f"expected {(self.num_train, self.num_classes)}")
            self.table = table.to(self.device, _DTYPES[self.params.table_dtype]).clone()

    def state_nbytes(self) -> int:
        return self.num_train * self.num_classes * _DTYPES[self.params.table_dtype].itemsize
