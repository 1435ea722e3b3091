"""Data-parallel plumbing (torch.distributed, set up by Ray Train's TorchTrainer): every worker takes its
slice of each global batch, gradients are averaged by hand, rank 0 writes the files."""
from __future__ import annotations

import torch
from torch import Tensor

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


def average_gradients(params: list[Tensor], world: int) -> None:
    """All-reduce every gradient as one flat buffer. Why not DDP: methods call the classifier outside
    forward (dense votes) and add their own modules (Zipf's extra classifier), which DDP's forward hooks miss."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_update(method: Method) -> None:
    """`Method.pending_update` from every worker, gathered, handed to `apply_update` on every worker
    (PS-KD: each table gets the predictions of the whole global batch). Collective: every rank calls it."""
    pending = method.pending_update()
    if pending is None:  # the same on every rank: a method either keeps per-step updates or never does
        return
    idx, values = pending
    world = torch.distributed.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=idx.device) for _ in range(world)]
    torch.distributed.all_gather(sizes, torch.tensor([len(idx)], device=idx.device))
    n = int(max(s.item() for s in sizes))
    pad_idx = torch.full((n,), -1, dtype=idx.dtype, device=idx.device)
    pad_idx[:len(idx)] = idx
    pad_val = torch.zeros((n, values.shape[1]), dtype=values.dtype, device=values.device)
    pad_val[:len(idx)] = values
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_val = [torch.empty_like(pad_val) for _ in range(world)]
    torch.distributed.all_gather(all_idx, pad_idx)
    torch.distributed.all_gather(all_val, pad_val)
    idx, values = torch.cat(all_idx), torch.cat(all_val)
    keep = idx >= 0
    method.apply_update(idx[keep], values[keep])


def reduce_epoch(method: Method, sums: dict[str, Tensor], counts: Tensor, buffers: list[Tensor]) -> None:
    """Once per epoch: sum the loss sums, counts and the method's per-epoch accumulators over workers, and
    take rank 0's batch-norm statistics so that every worker evaluates the same model."""
    for v in list(sums.values()) + [counts] + list(method.epoch_sums()):
        torch.distributed.all_reduce(v)
    broadcast(buffers)
