"""What every dataset family shares: the two per-split `Dataset` classes and the transforms.

A split is either one uint8 tensor in memory (`TensorImageDataset`: digits, synthetic, Fashion-MNIST,
CIFAR) or a list of `(image file, label)` pairs decoded with PIL on demand (`ImageFileDataset`: Tiny
ImageNet, ImageNet, iNat21; twice over the same files: normalised float images, and uint8 images for the
device path, see `file_transforms`). Both yield `(image, label, index)`, the index being the sample's
position in its split (PS-KD keys its table on it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import pil_loader
from torchvision.transforms import v2

from harness.errors import UserError, one_line


class TensorImageDataset(Dataset):
    """A split held as one uint8 tensor; the torchvision path (transforms per sample, on the host)."""

    def __init__(self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor]):
        self.x, self.y, self.transform = x, y, transform  # x (N, C, H, W) uint8, y (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.transform(self.x[index]), int(self.y[index]), int(index)


class ImageFileDataset(Dataset):
    """Images read from files with PIL (torchvision's `pil_loader`), with the `on_bad_image` policy.

    - `fail`: `__getitem__` raises `UserError` naming the file.
    - `skip`: the sample is replaced by the next decodable sample of the same split (index + 1, wrapping
      around), and that sample's image, label AND index are returned, so index-keyed state (PS-KD) stays
      consistent with what was trained on. Bad files are remembered in `bad`, a shared-memory mask, so
      DataLoader workers' findings reach the main process and no file is decoded twice.
    With DataLoader workers, PyTorch re-raises a worker's `UserError` as a `UserError` whose message also
    holds the worker's traceback: the first line is still the one that matters.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Any], Tensor], *,
                 on_bad_image: str, bad: Tensor | None = None):
        self.samples = samples
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.bad = bad if bad is not None else torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        n = len(self.samples)
        for step in range(n):
            i = (int(index) + step) % n
            if self.bad[i]:
                continue
            path, label = self.samples[i]
            try:
                img = pil_loader(path)  # convert("RGB") forces the full decode inside this try
            except (OSError, ValueError, SyntaxError) as e:  # PIL's decode errors (UnidentifiedImageError is an OSError)
                if self.on_bad_image == "fail":
                    raise UserError(f"cannot decode image {path} ({type(e).__name__}: {one_line(e)}); "
                                    "use --set dataset.on_bad_image=skip to skip undecodable files") from None
                self.bad[i] = True
                continue
            return self.transform(img), label, i
        raise UserError(f"no decodable image among the {n} files of this split "
                        f"(first: {self.samples[0][0] if n else 'none'})")


# --- transforms (torchvision v2; the official recipes of METHODS.md) ----------------------------

def tensor_transform(*, size: int, crop_padding: int, flip: bool, mean: tuple[float, ...],
                     std: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    """uint8 (C, H, W) -> normalised float: RandomCrop(size, padding) + flip, as the CIFAR recipe."""
    ops: list[Any] = []
    if crop_padding > 0:
        ops.append(v2.RandomCrop(size, padding=crop_padding))  # zero padding of the raw pixels
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def file_transforms(geometry: list[Any], *, size: int, crop_padding: int, flip: bool, mean: tuple[float, ...],
                    std: tuple[float, ...]) -> tuple[Any, Any]:
    """(float, uint8) transforms of a file-based split from its per-sample `geometry` (v2 ops on the PIL image:
    resizes and crops that need the image's own size).

    float: the torchvision path, everything in the worker: geometry, RandomCrop(size, padding) and flip,
    then PIL -> normalised float (C, H, W). uint8: the geometry only, then PIL -> uint8 (C, size, size); the
    crop with padding, the flip and the normalisation are left to `fast.DeviceLoader`, batched on the device.
    The geometry runs on the PIL image in both, so without augmentation both give the same pixels.
    """
    aug: list[Any] = []
    if crop_padding > 0:
        aug.append(v2.RandomCrop(size, padding=crop_padding))  # zero padding of the raw pixels
    if flip:
        aug.append(v2.RandomHorizontalFlip())
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose([*geometry, *aug, *tail]), v2.Compose([*geometry, v2.PILToTensor()])


__all__ = ["ImageFileDataset", "TensorImageDataset", "file_transforms", "one_line", "tensor_transform"]
