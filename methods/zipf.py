"""Zipf's label smoothing (`zipf`; Liang et al., ECCV 2022), the seed paper's method.

Each sample's non-target classes get a Zipf-shaped soft target ranked by dense votes: the model's
own classifier applied at every location of the final feature map. The math lives in
`methods.functional` (`dense_votes`, `zipf_pdf_from_votes`, `ce_and_zipf_kl`, ...).

Against the official code (megvii-research/zipfls, pytorch_zipfls/losses.py):
- Same numbers, computed on the device: the official code copies votes to the host and builds the
  pdf with scipy's rankdata and numpy every step. Here ranks, weights, normaliser and entropy are
  per vote count (O(B*V)), the pdf stays a row constant plus the voted classes (`SparsePdf`), and
  CE and the KL share one softmax pass with a fused backward.
- The distribution ablation follows `get_masked_distribution`: `random_uniform` and `random_pareto`
  draw one weight per (sample, class) regardless of the rank (they are not sorted by rank);
  `linear_decay` and `exponential_decay` use the tie-sharing lowest rank, as the official code does
  (its `rank_max` only enters `unbiased_zipf`, which is not part of the paper's ablation). Random
  draws come from the run's seeded `ctx.generator` instead of numpy's global state.
- A row whose non-target weights sum to 0 (linear_decay with smallest_prob 0 and C = 2) becomes
  uniform instead of NaN. Votes are computed in float32 even under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Method, Needs, StepContext, register
from .functional import (
    RANK_FREE_DISTRIBUTIONS,
    SparsePdf,
    ce_and_zipf_kl,
    dense_votes,
    nontarget_pdf,
    rank_free_weights,
    rank_weights,
    ranks_from_logits,
    zipf_pdf_from_votes,
)
from .traits import LOW


@register("zipf")
class Zipf(Method):
    """L = CE(z) + beta * CE(z_extra) + lam * mean_i KL(pdf_i || softmax(z_i without the target)).

    pdf_i: ranks of the dense votes (or of the logits, `dense: false`) over all C classes, ties
    sharing the lowest rank, weights (1/r)**alpha (or the chosen `distribution`), target dropped,
    normalised over the C-1 others. `z_extra` is the extra classifier on the pooled previous-stage
    map (`extra_dense_layer`), whose votes on that map are added to the final map's.
    """

    needs = Needs(features=True)  # the default (dense) form; __init__ narrows it per instance
    label, color, order = "Zipf's LS", "#d62728", 6  # the seed paper's method: red

    # The seed's Table 2 (alpha = 1 everywhere) plus the official commands' bilinear vote upsampling on the
    # low-resolution sets, per data set where the paper gives values; any other data set by its resolution
    # class: a low-resolution one (the small embedded sets, whose maps are smaller still) gets the extra dense
    # layer and bilinear votes, a high-resolution one the ImageNet form (the Params defaults).
    LOW_RES: ClassVar[dict[str, Any]] = dict(alpha=1.0, lam=0.1, beta=0.1, extra_dense_layer=True, upsample="bilinear")
    BY_DATASET: ClassVar[dict[str, dict[str, Any]]] = {
        "cifar100": LOW_RES, "cifar10": LOW_RES,
        "tinyimagenet": dict(alpha=1.0, lam=1.0, beta=0.5, extra_dense_layer=True, upsample="bilinear"),
        "imagenet": dict(alpha=1.0, lam=0.1, extra_dense_layer=False, upsample="none"),
        "inat21": dict(alpha=1.0, lam=1.0, extra_dense_layer=False, upsample="none"),
    }

    @classmethod
    def preset(cls, dataset: str, model: str) -> dict[str, Any]:
        if dataset in cls.BY_DATASET:
            return dict(cls.BY_DATASET[dataset])
        return dict(cls.LOW_RES) if getattr(dataset, "resolution", None) == LOW else {}

    @dataclass(frozen=True)
    class Params:
        alpha: float = 1.0
        lam: float = 0.1
        beta: float = 0.1
        extra_dense_layer: bool = False
        upsample: Literal["none", "bilinear"] = "none"
        mask: bool = False
        dense: bool = True
        distribution: Literal["zipf", "constant", "random_uniform", "random_pareto",
                              "linear_decay", "exponential_decay"] = "zipf"
        smallest_prob: float | None = None
        exp_lambda: float | None = None

    def __init__(self, params: Any = None, **context: Any):
        super().__init__(params, **context)
        p = self.params
        self.uses_votes = p.dense and p.distribution not in RANK_FREE_DISTRIBUTIONS
        # the harness computes feature maps only when asked: a non-dense Zipf without the extra
        # layer is as cheap as CE
        self.needs = Needs(features=self.uses_votes or p.extra_dense_layer)
        self.extra: nn.Linear | None = None
        if p.extra_dense_layer:
            if self.feature_channels is None or len(self.feature_channels) < 2:
                self.fail("extra_dense_layer", "needs feature_channels=(D, D') from the model to size its classifier")
            self.extra = nn.Linear(self.feature_channels[1], self.num_classes)

    def validate(self) -> None:
        p, c = self.params, self.num_classes
        if not p.alpha > 0:
            self.fail("alpha", f"must be > 0, got {p.alpha}")
        if not p.lam >= 0:
            self.fail("lam", f"must be >= 0, got {p.lam}")
        if not p.beta >= 0:
            self.fail("beta", f"must be >= 0, got {p.beta}")
        if p.distribution == "linear_decay":
            if p.smallest_prob is None:
                self.fail("smallest_prob", "is required by distribution 'linear_decay'")
            if c is None:  # the class count is not known yet: the smallest bound that holds for any C >= 2
                if not 0.0 <= p.smallest_prob <= 0.5:
                    self.fail("smallest_prob", f"must be in [0, 1/C] (at most 0.5), got {p.smallest_prob}")
            elif not 0.0 <= p.smallest_prob <= 1.0 / c:
                self.fail("smallest_prob", f"must be in [0, 1/C] = [0, {1.0 / c:.6g}] for C = {c}, got {p.smallest_prob}")
        elif p.smallest_prob is not None:
            self.fail("smallest_prob", f"is only used by distribution 'linear_decay', not {p.distribution!r}")
        if p.distribution == "exponential_decay":
            if p.exp_lambda is None:
                self.fail("exp_lambda", "is required by distribution 'exponential_decay'")
            if not p.exp_lambda >= 0:
                self.fail("exp_lambda", f"must be >= 0, got {p.exp_lambda}")
        elif p.exp_lambda is not None:
            self.fail("exp_lambda", f"is only used by distribution 'exponential_decay', not {p.distribution!r}")

    def extra_modules(self) -> nn.Module | None:
        return self.extra

    def votes(self, ctx: StepContext) -> Tensor:
        """(B, V) class votes of the final map, plus the extra classifier's on the previous map."""
        if ctx.final_map is None or ctx.classifier is None:
            raise ValueError("method 'zipf' (dense: true) needs ctx.final_map and ctx.classifier")
        up = self.params.upsample
        votes = dense_votes(final_map=ctx.final_map, weight=ctx.classifier.weight, bias=ctx.classifier.bias, upsample=up)
        if self.extra is not None:
            prev = dense_votes(final_map=self._prev_map(ctx), weight=self.extra.weight, bias=self.extra.bias, upsample=up)
            votes = torch.cat([votes, prev], dim=1)
        return votes

    def pdf(self, logits: Tensor, targets: Tensor, ctx: StepContext, votes: Tensor | None = None) -> Tensor | SparsePdf:
        """The constant target of the KL: (B, C) in full layout, or a `SparsePdf` for dense votes."""
        p = self.params
        if p.distribution in RANK_FREE_DISTRIBUTIONS:
            w = rank_free_weights(shape=tuple(logits.shape), distribution=p.distribution, device=logits.device,
                                  generator=ctx.generator)
            return nontarget_pdf(weights=w, targets=targets)
        kw = dict(distribution=p.distribution, alpha=p.alpha, smallest_prob=p.smallest_prob, exp_lambda=p.exp_lambda)
        if p.dense:
            votes = self.votes(ctx) if votes is None else votes
            return zipf_pdf_from_votes(votes=votes, targets=targets, num_classes=logits.shape[1], **kw)
        w = rank_weights(ranks=ranks_from_logits(logits=logits), num_classes=logits.shape[1], **kw)
        return nontarget_pdf(weights=w, targets=targets)

    def loss(self, logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        return self.loss_from_votes(logits, targets, ctx, votes=None)

    def loss_from_votes(self, logits: Tensor, targets: Tensor, ctx: StepContext,
                        votes: Tensor | None) -> dict[str, Tensor]:
        """`loss` with the dense votes (B, V) given (None: computed from ctx when needed)."""
        p = self.params
        z = logits.float()
        if p.lam > 0:
            pdf = self.pdf(z.detach(), targets, ctx, votes)
            ce, zipf = ce_and_zipf_kl(logits=z, targets=targets, pdf=pdf, mask=p.mask)
        else:  # as the official code: no pdf at all
            ce, zipf = F.cross_entropy(z, targets), z.new_zeros(())
        return self._total(ce, zipf, targets, ctx)

    def _total(self, ce: Tensor, zipf: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """CE + lam * KL, plus beta * the extra classifier's CE on the pooled previous map; the logged parts."""
        p = self.params
        total = ce + p.lam * zipf
        parts = {"ce": ce.detach(), "zipf": zipf.detach()}
        if self.extra is not None:
            pooled = self._prev_map(ctx).float().mean(dim=(2, 3))  # (B, D'): global average pool
            aux = F.cross_entropy(self.extra(pooled).float(), targets)
            total = total + p.beta * aux
            parts["aux_ce"] = aux.detach()
        return {"loss": total, **parts}

    def compiled_loss(self, mode: str | None = None):
        """The pdf, CE and KL as one fullgraph region of `methods.compiled` (equal to `loss` to 1e-6): from the
        dense votes, from the ranks of the logits (`dense: false`), or from rank-free weights, which are drawn
        here, eagerly, with `ctx.generator` exactly as `loss` draws them (the same numbers for the same seed)
        and enter the region as an input. alpha, smallest_prob and exp_lambda enter as tensors: one graph
        per shape and choice of distribution, upsample and mask, whatever their values. The rest stays eager
        by design: the weighted sum, the extra classifier's CE (one small linear layer), and `lam: 0`
        (plain CE, no pdf, one fused kernel)."""
        from .compiled import (
            compiled_region,
            compiled_zipf_loss,
            float_params_as_tensors,
            zipf_loss_given_weights,
            zipf_loss_logit_ranks,
        )

        p = self.params
        rank_free = p.distribution in RANK_FREE_DISTRIBUTIONS
        region = (compiled_region(zipf_loss_given_weights, mode) if rank_free
                  else compiled_zipf_loss(mode) if p.dense else compiled_region(zipf_loss_logit_ranks, mode))
        as_tensors: list[Any] = []  # the float parameters as 0-dim tensors, made once on the logits' device

        def loss(logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
            z = logits.float()
            if p.lam <= 0:
                return self._total(F.cross_entropy(z, targets), z.new_zeros(()), targets, ctx)
            if rank_free:
                w = rank_free_weights(shape=tuple(z.shape), distribution=p.distribution, device=z.device,
                                      generator=ctx.generator)  # (B, C)
                ce, zipf = region(logits=z, targets=targets, weights=w, mask=p.mask)
                return self._total(ce, zipf, targets, ctx)
            if not as_tensors:
                as_tensors.append(float_params_as_tensors(p, z.device))
            t = as_tensors[0]
            rank = dict(distribution=p.distribution, alpha=t.alpha, smallest_prob=t.smallest_prob,
                        exp_lambda=t.exp_lambda, mask=p.mask)
            if not p.dense:
                ce, zipf = region(logits=z, targets=targets, **rank)
                return self._total(ce, zipf, targets, ctx)
            if ctx.final_map is None or ctx.classifier is None:
                raise ValueError("method 'zipf' (dense: true) needs ctx.final_map and ctx.classifier")
            extra = self.extra
            ce, zipf = region(logits=z, targets=targets, final_map=ctx.final_map, weight=ctx.classifier.weight,
                              bias=ctx.classifier.bias, extra_votes_map=self._prev_map(ctx) if extra is not None else None,
                              extra_weight=None if extra is None else extra.weight,
                              extra_bias=None if extra is None else extra.bias, upsample=p.upsample, **rank)
            return self._total(ce, zipf, targets, ctx)

        return loss

    def _prev_map(self, ctx: StepContext) -> Tensor:
        if ctx.prev_map is None:
            raise ValueError("method 'zipf' (extra_dense_layer: true) needs ctx.prev_map")
        return ctx.prev_map
