"""The in-memory fast path: a whole split as one uint8 tensor on the training device.

Each epoch permutes the split with a seeded generator; each batch is gathered, augmented (random crop with
zero padding, horizontal flip) and normalised on the device in a few batched tensor operations. No
DataLoader, no PIL, no worker processes, and no host synchronisation inside the iteration (every size is a
Python int known up front; every random draw stays on the device).

The augmentation has the semantics of torchvision's `RandomCrop(size, padding=p)` followed by
`RandomHorizontalFlip(0.5)` on the raw pixels, then `ToDtype(float32, scale=True)` and `Normalize`: the
zero padding is applied to raw pixels (so it normalises to -mean/std, as in the torchvision path), both crop
offsets are uniform on 0..2p, and each sample is flipped with probability 1/2. With augmentation off the
output equals the torchvision path's bit for bit (same float operations in the same order).

`DeviceLoader` is the same idea for data sets of files (timm's prefetch loader is the anchor): DataLoader
workers decode each image and bring it to size (the per-sample geometry, on uint8), batches cross to the
device as uint8 (pinned, non-blocking, a quarter of float32's bytes), and the crop with padding, the flip,
the float conversion and the normalisation run there, batched, with `augment_draws`, `apply_augment` and
`normalise` above: one implementation for both paths.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def augment_draws(n: int, *, crop_padding: int, flip: bool, generator: torch.Generator | None,
                  device: torch.device | str) -> Tensor:
    """(n, 3) int64 per sample: row offset, column offset, flipped (0/1) for `apply_augment`.

    Drawn on `device` (the generator's) in a fixed order: row offsets, column offsets, flips; offsets are
    uniform on 0..2p (0 when there is no padding), each flip has probability 1/2.
    """
    p = max(int(crop_padding), 0)
    if p > 0:
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=device)
    else:
        oy = ox = torch.zeros(n, dtype=torch.long, device=device)
    flipped = (torch.rand(n, generator=generator, device=device) < 0.5 if flip
               else torch.zeros(n, dtype=torch.bool, device=device))
    return torch.stack([oy, ox, flipped.long()], dim=1)  # (n, 3)


def apply_augment(x: Tensor, draws: Tensor, *, crop_padding: int) -> Tensor:
    """Crop each sample at its offsets out of the zero-padded batch (same size out) and flip where drawn.

    x (B, C, H, W) of any dtype, draws (B, 3) from `augment_draws` on x's device.
    """
    B, C, H, W = x.shape
    dev = x.device
    p = max(int(crop_padding), 0)
    oy, ox, flipped = draws.unbind(1)
    if p == 0:  # the flip alone (file sets after a resized crop): one select, not two gathers
        return torch.where(flipped.bool()[:, None, None, None], x.flip(3), x)
    x = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
    rows = oy[:, None] + torch.arange(H, device=dev)  # (B, H)
    cols = ox[:, None] + torch.arange(W, device=dev)  # (B, W)
    # Flipping the crop = reading its columns right to left.
    cols = torch.where(flipped.bool()[:, None], cols.flip(1), cols)
    # Two gathers (rows, then columns) cost half of one 4-index advanced-indexing gather on CPU.
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, x.shape[3]))  # (B, C, H, W+2p)
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))       # (B, C, H, W)


def augment_batch(x: Tensor, *, crop_padding: int, flip: bool, generator: torch.Generator | None) -> Tensor:
    """Random crop (zero padding `crop_padding`, same size out) and random horizontal flip, per sample.

    x (B, C, H, W) of any dtype; the draws come from `generator` on x's device (`augment_draws`).
    """
    if crop_padding <= 0 and not flip:
        return x
    draws = augment_draws(len(x), crop_padding=crop_padding, flip=flip, generator=generator, device=x.device)
    return apply_augment(x, draws, crop_padding=crop_padding)


def normalise(x_uint8: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1] -> (x - mean) / std, the operations torchvision's v2 transforms use."""
    return x_uint8.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


class TensorLoader:
    """Batches of (x float (B, C, H, W) normalised, y (B,) int64, idx (B,) int64), all on `device`.

    `indices` restricts the loader to those sample indices (the yielded idx stay the split's own).
    `batch(idx)` builds one augmented batch for given indices (CS-KD's anchor and partner halves).
    """

    def __init__(self, x_uint8: Tensor, y: Tensor, *, batch_size: int, shuffle: bool, drop_last: bool,
                 generator: torch.Generator | None, device: torch.device | str, mean: Sequence[float],
                 std: Sequence[float], crop_padding: int = 0, flip: bool = False, indices: Tensor | None = None,
                 channels_last: bool = False):
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise ValueError(f"x must be a (N, C, H, W) uint8 tensor, got {tuple(x_uint8.shape)} {x_uint8.dtype}")
        if len(y) != len(x_uint8):
            raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device)                     # (N, C, H, W) uint8, stays resident
        self.y = y.to(self.device, dtype=torch.int64)        # (N,)
        C = self.x.shape[1]
        if len(mean) != C or len(std) != C:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {C} channels")
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(C, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(C, 1, 1)
        self.indices = (torch.arange(len(self.y), device=self.device) if indices is None
                        else indices.to(self.device, dtype=torch.int64))
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.generator = generator
        self.crop_padding, self.flip = int(crop_padding), bool(flip)
        self.channels_last = channels_last

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(self.num_samples, generator=self.generator, device=self.device)
            order = order[perm]
        for i in range(len(self)):
            yield self.batch(order[i * self.batch_size:(i + 1) * self.batch_size])

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One batch for the given sample indices, with this loader's augmentation."""
        idx = idx.to(self.device, dtype=torch.int64)
        x = augment_batch(self.x[idx], crop_padding=self.crop_padding, flip=self.flip, generator=self.generator)
        x = normalise(x, self.mean, self.std)  # (B, C, H, W) float32
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx], idx


class DeviceLoader:
    """A DataLoader's host batches (x, y, idx) as device-ready ones: x float (B, C, H, W), normalised.

    x uint8 (the file path's workers: decoded and brought to size) is augmented (random crop with zero
    padding `crop_padding`, flip; the draws from `generator`, on its device, in the main process, so they
    follow the loader's seed and not the workers') and normalised on `device`; x already float (the
    torchvision path) is only moved. Every copy is non-blocking (the DataLoader pins on CUDA; the draws are
    pinned here), so nothing waits on the device. `guard()` wraps the work of each batch (the loop's
    host-sync check); channels_last on request.
    """

    def __init__(self, loader: Iterable, *, device: torch.device | str, mean: Sequence[float], std: Sequence[float],
                 crop_padding: int = 0, flip: bool = False, generator: torch.Generator | None = None,
                 channels_last: bool = False, guard: Callable[[], Any] = contextlib.nullcontext):
        if (crop_padding > 0 or flip) and generator is None:
            raise ValueError("DeviceLoader: augmentation needs a generator")
        self.loader, self.device = loader, torch.device(device)
        C = len(mean)
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(C, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(C, 1, 1)
        self.crop_padding, self.flip, self.generator = int(crop_padding), bool(flip), generator
        self.channels_last, self.guard = channels_last, guard

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y, idx in self.loader:
            with self.guard():
                batch = self.to_device(x, y, idx)
            yield batch

    def to_device(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dev = self.device
        if x.dtype == torch.uint8:
            draws = None
            if self.crop_padding > 0 or self.flip:
                assert self.generator is not None
                draws = augment_draws(len(x), crop_padding=self.crop_padding, flip=self.flip,
                                      generator=self.generator, device=self.generator.device)
                if dev.type == "cuda" and draws.device.type == "cpu":
                    draws = draws.pin_memory()
            x = x.to(dev, non_blocking=True)
            if draws is not None:
                x = apply_augment(x, draws.to(dev, non_blocking=True), crop_padding=self.crop_padding)
            x = normalise(x, self.mean, self.std)  # (B, C, H, W) float32
        else:
            x = x.to(dev, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(dev, non_blocking=True), idx.to(dev, non_blocking=True)


__all__ = ["DeviceLoader", "TensorLoader", "apply_augment", "augment_batch", "augment_draws", "normalise"]
