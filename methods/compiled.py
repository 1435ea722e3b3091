"""Static-shape forms of Zipf's LS for `torch.compile` (and CUDA graphs); `methods.functional` is the reference.

Why a second form: the eager path (`zipf_pdf_from_votes` + `ce_and_zipf_kl`) is built for few FLOPs (a
sparse pdf, a hand-fused backward in an `autograd.Function` that reuses its buffers), which on a GPU
means a few dozen small kernel launches per step. Compiled, launches are what costs, and FLOPs over a
(B, C) tensor are free: so this form is plain autograd over dense (B, C) tensors that inductor fuses
into a handful of kernels. Every shape depends only on (B, C, V) and the parameters, never on values:
no host synchronisation, no data-dependent shapes, so a captured CUDA graph can replay it.

The numbers are those of the eager path (tests/methods/test_zipf_compiled.py pins loss and gradients to
1e-6 relative on random inputs): the same competition ranks of the vote counts (ties share the lowest
rank), the same weights and normaliser, the same KL of the non-target softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import dense_votes, nontarget_pdf, rank_weights, vote_counts, zipf_ranks_from_counts


def zipf_pdf_dense(*, votes: Tensor, targets: Tensor, num_classes: int, distribution: str = "zipf",
                   alpha: float = 1.0, smallest_prob: float | None = None,
                   exp_lambda: float | None = None) -> Tensor:
    """The dense-vote Zipf pdf in full layout. votes (B, V) long, targets (B,) -> (B, C), 0 at the target."""
    counts = vote_counts(votes=votes, num_classes=num_classes)                  # (B, C)
    ranks = zipf_ranks_from_counts(counts=counts, max_count=votes.shape[1])      # (B, C)
    w = rank_weights(ranks=ranks, distribution=distribution, alpha=alpha, num_classes=num_classes,
                     smallest_prob=smallest_prob, exp_lambda=exp_lambda)         # (B, C)
    return nontarget_pdf(weights=w, targets=targets)


def ce_and_zipf_kl_dense(*, logits: Tensor, targets: Tensor, pdf: Tensor, mask: bool = False
                         ) -> tuple[Tensor, Tensor]:
    """(CE(z), mean_i KL(pdf_i || softmax(z_i without the target))) in plain autograd. logits, pdf (B, C).

    The target column is masked to -inf before the non-target softmax; its pdf entry is 0 and
    `torch.where` keeps 0 * -inf out of both the value and the gradient.
    """
    z = logits.float()
    pdf = pdf.detach().float()
    is_target = F.one_hot(targets, z.shape[1]).bool()                          # (B, C)
    ce = F.cross_entropy(z, targets)
    logq = F.log_softmax(z.masked_fill(is_target, float("-inf")), dim=1)       # (B, C), -inf at the target
    kl = torch.where(is_target, 0.0, torch.xlogy(pdf, pdf) - pdf * logq).sum(1)  # (B,)
    if mask:
        correct = (z.detach().argmax(1) == targets).float()
        return ce, (kl * correct).sum() / correct.sum().clamp_min(1.0)
    return ce, kl.mean()


def zipf_loss_dense(*, logits: Tensor, targets: Tensor, final_map: Tensor, weight: Tensor, bias: Tensor | None,
                    extra_votes_map: Tensor | None = None, extra_weight: Tensor | None = None,
                    extra_bias: Tensor | None = None, upsample: str = "none", distribution: str = "zipf",
                    alpha: float = 1.0, smallest_prob: float | None = None, exp_lambda: float | None = None,
                    mask: bool = False) -> tuple[Tensor, Tensor]:
    """Votes, pdf, CE and KL of the dense Zipf loss as one region to compile. -> (ce, kl), both ().

    final_map (B, D, H, W) with the model's classifier weight (C, D) and bias (C,); with the extra dense
    layer, its votes on the previous map (B, D', H', W') are appended as in `Zipf.votes`.
    """
    votes = dense_votes(final_map=final_map, weight=weight, bias=bias, upsample=upsample)  # (B, V)
    if extra_votes_map is not None:
        extra = dense_votes(final_map=extra_votes_map, weight=extra_weight, bias=extra_bias, upsample=upsample)
        votes = torch.cat([votes, extra], dim=1)
    pdf = zipf_pdf_dense(votes=votes, targets=targets, num_classes=logits.shape[1], distribution=distribution,
                         alpha=alpha, smallest_prob=smallest_prob, exp_lambda=exp_lambda)
    return ce_and_zipf_kl_dense(logits=logits, targets=targets, pdf=pdf, mask=mask)


@cache
def compiled_zipf_loss(mode: str | None = None, backend: str = "inductor") -> Callable[..., tuple[Tensor, Tensor]]:
    """`zipf_loss_dense` under `torch.compile` (one compiled function per process, mode and backend).

    `fullgraph=True`: a graph break would silently bring back the eager launches, so it is an error.
    `dynamic=False`: one graph per (B, C, V) and parameters, which is what a training run has (the last,
    smaller batch compiles once more). `mode="reduce-overhead"` adds CUDA-graph capture on the GPU.
    """
    return torch.compile(zipf_loss_dense, dynamic=False, fullgraph=True, mode=mode, backend=backend)
