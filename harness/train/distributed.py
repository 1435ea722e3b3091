"""Data-parallel plumbing (torch.distributed, set up by Ray Train's TorchTrainer): every worker takes its
slice of each global batch, gradients are averaged by DistributedDataParallel, rank 0 writes the files."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from methods import Method


def rank_world() -> tuple[int, int]:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def worker_device(name: str, world: int) -> torch.device:
    from harness.train.device import resolve_device

    if world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        from ray.train.torch import get_device  # the GPU Ray Train assigned to this worker

        return get_device()
    return resolve_device(name)


def broadcast(tensors: list[Tensor]) -> None:
    for t in tensors:
        torch.distributed.broadcast(t.data, src=0)


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


class Replicated(nn.Module):
    """What DistributedDataParallel wraps: the step's forward module (the model, or `MapsForward` for a method
    that needs maps) and the method's extra modules. Why one container: DDP reduces the gradients of its
    module's parameters, and a method's own modules (Zipf's extra classifier) are used outside the forward, in
    the loss; held here, their parameters are in DDP's buckets like the model's. `forward` is the forward
    module's, so the forward goes through DDP's, which arms the reducer for the backward that follows."""

    def __init__(self, forward: nn.Module, extra: nn.Module | None):
        super().__init__()
        self.forward_module = forward
        self.extra = extra
        self.returns_maps = getattr(forward, "returns_maps", False)  # forward_with_maps calls it as it is

    def forward(self, x: Tensor) -> Any:
        return self.forward_module(x)


def data_parallel(forward: nn.Module, extra: nn.Module | None, device: torch.device) -> nn.Module:
    """`forward` and `extra` in torch's DistributedDataParallel: gradients averaged in buckets, each bucket's
    all-reduce started during the backward as soon as its gradients exist, into buffers the gradients are
    views of (no extra copy). Collective: every rank calls it (DDP starts from rank 0's weights).

    - forward_sync_buffers=False (torch 2.14's name for broadcast_buffers=False): each worker keeps its own
      batch-norm statistics during an epoch and rank 0's are taken once per epoch (`reduce_epoch`), as before
      DDP; DDP's default would broadcast rank 0's before every forward.
    - find_unused_parameters=False: every built-in method gives every parameter a gradient in every step
      (tests/train/test_data_parallel.py trains each under DDP). Parameters used outside the forward are
      reduced all the same: DDP hooks each parameter's gradient accumulator, which autograd runs once per
      backward however many times the parameter was used (the classifier in the logits and in Zipf's votes).
    """
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(Replicated(forward, extra), device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, gradient_as_bucket_view=True,
                                   find_unused_parameters=False)


def gather_update(method: Method, slots: int) -> None:
    """`Method.pending_update` from every worker, gathered, handed to `apply_update` on every worker
    (PS-KD: each table gets the predictions of the whole global batch). Collective: every rank calls it.

    `slots` bounds every worker's share of a global batch (ceil(batch_size / world): the plan gives rank r the
    slice [r::world]), so each worker pads its update to `slots` rows and nobody exchanges sizes or reads one
    on the host. Padding rows become copies of rank 0's first row (never padding: rank 0's slice is the
    largest), so the update is one fixed-shape write; a row written twice with the same values is written once.
    """
    pending = method.pending_update()
    if pending is None:  # the same on every rank: a method either keeps per-step updates or never does
        return
    idx, values = pending  # (b,), (b, ...) with b <= slots
    if len(idx) > slots:
        raise ValueError(f"gather_update: {len(idx)} updates on one worker, more than its {slots} slots")
    pad = slots - len(idx)
    idx = torch.cat([idx, idx.new_full((pad,), -1)])  # (slots,)
    values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])  # (slots, ...)
    world = torch.distributed.get_world_size()
    all_idx = idx.new_empty((world * slots,))
    all_values = values.new_empty((world * slots, *values.shape[1:]))
    torch.distributed.all_gather_single(all_idx, idx)
    torch.distributed.all_gather_single(all_values, values)
    valid = all_idx >= 0  # (world * slots,)
    all_idx = torch.where(valid, all_idx, all_idx[0])
    all_values = torch.where(valid.view(-1, *[1] * (values.ndim - 1)), all_values, all_values[:1])
    method.apply_update(all_idx, all_values)


def reduce_epoch(method: Method, sums: dict[str, Tensor], counts: Tensor, buffers: list[Tensor]) -> None:
    """Once per epoch: sum the loss sums, counts and the method's per-epoch accumulators over workers, and
    take rank 0's batch-norm statistics so that every worker evaluates the same model."""
    for v in list(sums.values()) + [counts] + list(method.epoch_sums()):
        torch.distributed.all_reduce(v)
    broadcast(buffers)
