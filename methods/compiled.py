"""Static-shape forms of the losses for `torch.compile` (and CUDA graphs); `methods.functional` is the reference.

Why a second form of Zipf's LS: the eager path (`zipf_pdf_from_votes` + `ce_and_zipf_kl`) is built for few
FLOPs (a sparse pdf, a hand-fused backward in an `autograd.Function` that reuses its buffers), which on a GPU
means a few dozen small kernel launches per step. Compiled, launches are what costs, and FLOPs over a
(B, C) tensor are free: so this form is plain autograd over dense (B, C) tensors that inductor fuses
into a handful of kernels. Every shape depends only on (B, C, V), never on values: no host
synchronisation, no data-dependent shapes, so a captured CUDA graph can replay it.

The numbers are those of the eager path (tests/methods/test_zipf_compiled.py pins loss and gradients to
1e-6 relative on random inputs): the same competition ranks of the vote counts (ties share the lowest
rank), the same weights and normaliser, the same KL of the non-target softmax.

One graph per shape, whatever the parameters, across every trial a process runs (a Ray worker runs trial
after trial): `compiled_region` compiles with `fullgraph=True` (a graph break is an error) and
`dynamic=False` (static shapes), takes every float parameter (alpha, smallest_prob, exp_lambda, a loss
weight) as a 0-dim tensor, an input of the graph and never a constant baked into it, and keeps one compiled
copy per signature (the shapes, dtypes and devices of the tensors; the string and bool choices, each of
which selects a graph of its own). Dynamo keeps its graphs per code object and refuses a ninth
(`torch._dynamo.config.recompile_limit`, under fullgraph an error): each copy has a code object of its own
and compiles exactly once, so no sweep, however long, reaches that limit. Random priors are drawn outside,
eagerly, with the method's generator, and enter as an input (a `torch.Generator` cannot be in a graph).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import (
    dense_votes,
    nontarget_pdf,
    rank_weights,
    ranks_from_logits,
    vote_counts,
    zipf_ranks_from_counts,
)

Scalar = float | Tensor  # a float parameter: a 0-dim tensor inside a compiled region


def zipf_pdf_dense(*, votes: Tensor, targets: Tensor, num_classes: int, distribution: str = "zipf",
                   alpha: Scalar = 1.0, smallest_prob: Scalar | None = None,
                   exp_lambda: Scalar | None = None) -> Tensor:
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
                    alpha: Scalar = 1.0, smallest_prob: Scalar | None = None, exp_lambda: Scalar | None = None,
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


def zipf_loss_logit_ranks(*, logits: Tensor, targets: Tensor, distribution: str = "zipf", alpha: Scalar = 1.0,
                          smallest_prob: Scalar | None = None, exp_lambda: Scalar | None = None,
                          mask: bool = False) -> tuple[Tensor, Tensor]:
    """Zipf's LS without dense votes (`dense: false`): ranks of the logits themselves. logits (B, C) -> (ce, kl)."""
    w = rank_weights(ranks=ranks_from_logits(logits=logits), distribution=distribution, alpha=alpha,
                     num_classes=logits.shape[1], smallest_prob=smallest_prob, exp_lambda=exp_lambda)  # (B, C)
    return ce_and_zipf_kl_dense(logits=logits, targets=targets, pdf=nontarget_pdf(weights=w, targets=targets),
                                mask=mask)


def zipf_loss_given_weights(*, logits: Tensor, targets: Tensor, weights: Tensor, mask: bool = False
                            ) -> tuple[Tensor, Tensor]:
    """Zipf's LS with rank-free weights drawn outside (constant, random_uniform, random_pareto). weights (B, C)."""
    return ce_and_zipf_kl_dense(logits=logits, targets=targets, pdf=nontarget_pdf(weights=weights, targets=targets),
                                mask=mask)


# --- one compiled copy per signature ------------------------------------------------------------------

def _own_code(fn: Callable) -> Callable:
    """`fn` with a code object of its own (same body, globals, defaults and closure): Dynamo's graphs and its
    recompilation count live on the code object, so each copy starts with an empty cache."""
    code = fn.__code__.replace()
    copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__, copy.__doc__ = fn.__qualname__, fn.__doc__
    return copy


@cache
def _compiled_copy(fn: Callable, signature: tuple, mode: str | None, backend: str) -> Callable:
    return torch.compile(_own_code(fn), fullgraph=True, dynamic=False, mode=mode, backend=backend)


def signature(value: Any) -> Any:
    """What selects a graph: a tensor's (shape, dtype, device); a string, bool, int or None as it is; a
    module or an object by its type (its tensors are inputs, their metadata guarded by Dynamo)."""
    if isinstance(value, Tensor):
        return (tuple(value.shape), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    return type(value)


def as_input(value: Any, device: torch.device) -> Any:
    """A float becomes a 0-dim float32 tensor on `device` (an input of the graph, not a constant)."""
    return torch.tensor(value, dtype=torch.float32, device=device) if type(value) is float else value


def compiled_region(fn: Callable, mode: str | None = None, backend: str = "inductor") -> Callable[..., Any]:
    """`fn(**kwargs)` compiled once per signature of its arguments (module docstring): float arguments become
    0-dim tensors on the device of `logits` (pass tensors made once to spare the conversion every step)."""
    def call(**kwargs: Any) -> Any:
        device = kwargs["logits"].device
        kwargs = {k: as_input(v, device) for k, v in kwargs.items()}
        key = tuple((k, signature(v)) for k, v in kwargs.items())
        return _compiled_copy(fn, key, mode, backend)(**kwargs)

    call.__name__ = call.__qualname__ = fn.__name__
    return call


@cache
def compiled_zipf_loss(mode: str | None = None, backend: str = "inductor") -> Callable[..., tuple[Tensor, Tensor]]:
    """`zipf_loss_dense` as a compiled region (`compiled_region`): one graph per shape and choice of
    upsample, distribution and mask; alpha, smallest_prob and exp_lambda are inputs.
    `mode="reduce-overhead"` adds CUDA-graph capture on the GPU."""
    return compiled_region(zipf_loss_dense, mode, backend)


def float_params_as_tensors(params: Any, device: torch.device) -> Any:
    """A copy of a method's Params dataclass whose float fields are 0-dim float32 tensors on `device`."""
    floats = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if type(getattr(params, f.name)) is float}
    return dataclasses.replace(params, **{k: as_input(v, device) for k, v in floats.items()})


def compiled_method_loss(method: Any, mode: str | None = None, backend: str = "inductor"
                         ) -> Callable[[Tensor, Tensor, Any], dict[str, Tensor]]:
    """`method.loss` compiled (the default `Method.compiled_loss`): its class's `loss`, with fullgraph and
    static shapes, one copy per signature (the method's class and non-float parameters, the tensors' shapes);
    the float parameters are read as 0-dim tensors (the call swaps them in for the duration of the step), so
    a new value in a new trial reuses the graph. The loss must not read ctx.epoch (an int: a graph per epoch)
    nor draw random numbers (a generator breaks the graph): such a method overrides `compiled_loss`."""
    loss_fn = type(method).loss
    plain = method.params
    structure = tuple((f.name, getattr(plain, f.name)) for f in dataclasses.fields(plain)
                      if type(getattr(plain, f.name)) is not float)
    as_tensors: list[Any] = []  # made on the first call, on the logits' device

    def loss(logits: Tensor, targets: Tensor, ctx: Any) -> dict[str, Tensor]:
        if not as_tensors:
            as_tensors.append(float_params_as_tensors(plain, logits.device))
        key = (type(method), structure, signature(logits), signature(targets),
               *(signature(getattr(ctx, f.name)) for f in dataclasses.fields(ctx) if f.name not in ("epoch", "num_epochs")))
        method.params = as_tensors[0]
        try:
            return _compiled_copy(loss_fn, key, mode, backend)(method, logits, targets, ctx)
        finally:
            method.params = plain

    loss.__name__ = loss.__qualname__ = "loss"
    return loss


def reset() -> None:
    """Forget every compiled copy (Dynamo's graphs go with them after `torch._dynamo.reset()`): for tests that
    count compilations, or a process that wants the memory back."""
    _compiled_copy.cache_clear()
    compiled_zipf_loss.cache_clear()
