"""Datasets: one registry, one factory, one bundle type; a module per family.

`build_dataset(name, params) -> DataBundle`. Every dataset yields `(image, label, index)`: the image a
normalised float tensor (C, H, W), the label an int, the index the sample's position in its split (PS-KD
keys its table on it). Datasets small enough to live in memory (digits, synthetic, fashion_mnist, cifar10,
cifar100) also carry `bundle.memory`, the raw uint8 pixels of both splits, for the on-device fast path of
`harness.data.fast.TensorLoader`; `bundle.train` etc. are then the torchvision path over the same tensors,
with the same augmentation semantics (random crop with zero padding of the raw pixels, horizontal flip).
Datasets of image files carry `bundle.files` instead: the same splits as uint8 images brought to size in
the workers, for the device path of `harness.data.fast.DeviceLoader` (crop with padding, flip and
normalisation batched on the device).

- `registry`: `DATASETS`, `DatasetDef`, `DataBundle`, where each dataset looks for its files, the factory.
- `common`: the two per-split `Dataset` classes (tensor, image files with `on_bad_image`), transforms.
- `embedded`: digits, synthetic. `mnist`: fashion_mnist. `cifar`: cifar10, cifar100.
  `imagefolder`: tinyimagenet, imagenet, inat21. `fast`: the in-memory fast path.

Transforms (METHODS.md, "Training recipes"): CIFAR random crop 32 pad 4 + flip, mean (0.4914, 0.4822,
0.4465), std (0.2023, 0.1994, 0.2010) for both CIFARs; Tiny ImageNet random-resized-crop 32 + flip, test
resize 32, with the CIFAR normalisation (the Zipf/CS-KD code's), or at `image_size: 64` random crop 64 pad 4
+ flip and the test image as is; ImageNet and iNat21 random-resized-crop 224 + flip, resize 256 + centre
crop 224, ImageNet mean/std. digits, synthetic and fashion_mnist train without augmentation by default
(digits are not flip-invariant); every in-memory set takes `crop_padding` and `flip` to change that.
The family modules are imported here, explicitly, so that importing `harness.data` registers them all.
docs/datasets.md is the user-facing description.
"""
from __future__ import annotations

from typing import Any

from harness.data.cifar import CIFAR_MEAN, CIFAR_STD, Cifar10, Cifar100
from harness.data.embedded import Digits, Synthetic, make_synthetic
from harness.data.folder import Folder
from harness.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageNet, INat21, TinyImageNet
from harness.data.mnist import FASHION_CLASSES, FASHION_MEAN, FASHION_STD, FashionMNIST, read_idx
from harness.data.registry import (
    DATASETS,
    DataBundle,
    DatasetDef,
    InMemory,
    build_dataset,
    check_dataset,
    data_home,
    describe_datasets,
    make_dataset_params,
    register_dataset,
    resolve_root,
)
from harness.data.tvreaders import TorchvisionReader

# torch and torchvision are imported when a data set is built, not when the registry is read (`tfbench
# datasets`, a sweep's checks): the Dataset classes of `common` are imported on first use.
_COMMON = ("ImageFileDataset", "TensorImageDataset", "tensor_transform")


def __getattr__(name: str) -> Any:
    if name in _COMMON:
        from harness.data import common

        return getattr(common, name)
    raise AttributeError(f"module 'harness.data' has no attribute {name!r}")


__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "DATASETS", "FASHION_CLASSES", "FASHION_MEAN", "FASHION_STD", "IMAGENET_MEAN",
    "IMAGENET_STD", "Cifar10", "Cifar100", "DataBundle", "DatasetDef", "Digits", "FashionMNIST", "Folder",
    "INat21", "ImageFileDataset", "ImageNet", "InMemory", "Synthetic", "TensorImageDataset", "TinyImageNet", "TorchvisionReader",
    "build_dataset", "check_dataset", "data_home", "describe_datasets", "make_dataset_params",
    "make_synthetic", "read_idx", "register_dataset", "resolve_root", "tensor_transform",
]
