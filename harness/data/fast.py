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
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def augment_batch(x: Tensor, *, crop_padding: int, flip: bool, generator: torch.Generator | None) -> Tensor:
    """Random crop (zero padding `crop_padding`, same size out) and random horizontal flip, per sample.

    x (B, C, H, W) of any dtype; random draws, in order: row offsets, column offsets, flips.
    """
    if crop_padding <= 0 and not flip:
        return x
    B, C, H, W = x.shape
    dev = x.device
    p = max(int(crop_padding), 0)
    if p > 0:
        x = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
        oy = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=dev)
    else:
        oy = ox = torch.zeros(B, dtype=torch.long, device=dev)
    rows = oy[:, None] + torch.arange(H, device=dev)  # (B, H)
    cols = ox[:, None] + torch.arange(W, device=dev)  # (B, W)
    if flip:
        flipped = torch.rand(B, generator=generator, device=dev) < 0.5
        # Flipping the crop = reading its columns right to left.
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    # Two gathers (rows, then columns) cost half of one 4-index advanced-indexing gather on CPU.
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, x.shape[3]))  # (B, C, H, W+2p)
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))       # (B, C, H, W)


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


__all__ = ["TensorLoader", "augment_batch", "normalise"]
