"""`torchvision`: torchvision's classification readers by name, `{name: torchvision, params: {dataset: SVHN,
root: DIR}}`, for the readers that take a root and a split (`split=` or `train=`) and read what is on disk
(`download: true` lets the reader fetch it).

Two paths, chosen by what the reader holds:
- readers that list image files (Flowers102, Food101, OxfordIIITPet, DTD, FGVCAircraft, GTSRB, StanfordCars,
  Country211, ...): the file path's device loader (`file_bundle`), the ImageNet recipe at `image_size`
  (224 by default): random-resized crop + flip; resize + centre crop;
- the others (MNIST, KMNIST, EMNIST, QMNIST, USPS, SVHN, STL10, CIFAR10, ...): every image decoded once into
  one uint8 tensor, the in-memory fast path like cifar10 (crop with padding `size/8` + flip when asked).
Mean and std come from the training images (all of them in memory, a sample of the files), as `folder`'s.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.folder import SMALL_IMAGE, SMALL_SET, imagenet_geometry, pixel_stats, sample_paths
from harness.data.registry import (
    HIGH,
    LOW,
    DataBundle,
    DatasetDef,
    file_bundle,
    in_memory_bundle,
    one_line,
    register_dataset,
    resolve_root,
)
from harness.errors import UserError

FILE_LISTS = (("_image_files", "_labels"), ("_images", "_labels"), ("_samples", None), ("samples", None))  # (paths, labels) by reader


def reader_class(name: str) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not isinstance(cls, type) or "root" not in inspect.signature(cls.__init__).parameters:
        raise UserError(f"dataset 'torchvision': {name!r} is not a torchvision.datasets reader; allowed: a reader "
                        f"that takes a root and a split, e.g. MNIST, KMNIST, EMNIST, SVHN, STL10, Flowers102, "
                        f"Food101, OxfordIIITPet, DTD")
    return cls


def open_split(p: Any, root: Path, train: bool) -> Any:
    """The reader over one split, with the split given as the reader takes it."""
    cls = reader_class(p.dataset)
    args = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {"download": p.download} if "download" in args else {}
    if "train" in args or p.dataset == "EMNIST":  # EMNIST: split is the variant, train the split
        kw["train"] = train
        if p.variant:
            kw["split"] = p.variant
    elif "split" in args:
        kw["split"] = p.train_split if train else p.test_split
    else:
        raise UserError(f"dataset 'torchvision': {p.dataset} takes no split (neither split= nor train=); use "
                        f"`folder` with its files instead")
    if p.variant and "split" not in kw:
        raise UserError(f"dataset 'torchvision': variant is for EMNIST only, got {p.variant!r} for {p.dataset}")
    try:
        return cls(str(root), **kw)
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as e:  # the reader's own checks
        raise UserError(f"dataset 'torchvision': {p.dataset} cannot read {root} ({type(e).__name__}: "
                        f"{one_line(e)}); put its files there as torchvision expects them, or set download: "
                        f"true") from None


def file_list(ds: Any) -> list[tuple[str, int]] | None:
    """The reader's (image file, label) pairs when it lists files, else None."""
    for paths, labels in FILE_LISTS:
        got = getattr(ds, paths, None)
        if isinstance(got, list) and got:
            if labels is None:
                return [(str(f), int(c)) for f, c in got]
            return [(str(f), int(c)) for f, c in zip(got, getattr(ds, labels), strict=True)]
    return None


def decode_all(ds: Any) -> tuple[Any, Any]:
    """Every image of a reader as uint8 (N, C, H, W) and labels (N,): the reader's own decoding (PIL)."""
    import torch
    from torchvision.transforms import v2

    to = v2.PILToTensor()
    xs, ys = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        xs.append(to(img))
        ys.append(int(label))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1 or xs[0].shape[-1] != xs[0].shape[-2]:
        raise UserError(f"dataset 'torchvision': the images have {len(shapes)} size(s) {sorted(shapes)[:2]} and the "
                        f"reader lists no files; allowed: readers of one square image size, or of image files")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


@register_dataset("torchvision")
class TorchvisionReader(DatasetDef):
    """A torchvision.datasets classification reader by name (its classes, splits and on-disk format)."""

    layout = "what torchvision.datasets.<dataset> reads from <root> (see its documentation)"
    can_download = True
    default_epochs = 30

    @dataclass(frozen=True)
    class Params:
        dataset: str = "MNIST"
        root: str | None = None
        download: bool = False
        train_split: str = "train"        # readers with split=: e.g. trainval for OxfordIIITPet
        test_split: str = "test"
        variant: str = ""                 # EMNIST's split (balanced, letters, ...)
        image_size: int = 0               # file readers: 0 = 224; in memory: the images' own size
        crop_padding: int = -1            # in memory: -1 = size/8 for colour images, 0 for grey ones
        flip: bool | None = None          # None: True for colour images, False for grey ones (digits)

    @classmethod
    def env_var(cls) -> str:
        return "TFBENCH_TORCHVISION_ROOT"

    @classmethod
    def defaults(cls, p: Any) -> dict[str, Any]:
        """From the training split: file readers are HIGH resolution (ResNet-18), in-memory ones by their size."""
        root = resolve_root(cls, p.root).path
        if root is None or not (root.exists() or p.download):
            return super().defaults(p)  # the root's error comes when the data is built, with its layout
        ds = open_split(p, root, True)
        if file_list(ds) is not None:
            return {"model": "resnet18", "epochs": cls.default_epochs, "resolution": HIGH}
        size = min(ds[0][0].size)
        low = size <= SMALL_IMAGE
        model = ("tiny_resnet" if len(ds) < SMALL_SET else "cifar_preact_resnet18") if low else "resnet18"
        return {"model": model, "epochs": cls.default_epochs, "resolution": LOW if low else HIGH}

    def build(self, p: Any, root: Path | None) -> DataBundle:
        assert root is not None
        tr, te = open_split(p, root, True), open_split(p, root, False)
        classes = [str(c) for c in getattr(tr, "classes", [])]
        files = file_list(tr)
        name = p.dataset.lower()
        if files is not None:
            test = file_list(te) or []
            classes = classes or [str(c) for c in range(max(c for _, c in files) + 1)]
            s = p.image_size or 224
            mean, std = pixel_stats(sample_paths([f for f, _ in files]), size=s, grey=False)
            bundle = file_bundle(name=name, classes=classes, train=files, val=test, **imagenet_geometry(s), flip=True,
                                 input_size=s, mean=mean, std=std, on_bad_image="fail", root=root)
            kind = "image files"
        else:
            train_x, train_y = decode_all(tr)
            val_x, val_y = decode_all(te)
            classes = classes or [str(c) for c in range(int(train_y.max()) + 1)]
            x = train_x.double() / 255                                   # (N, C, H, W)
            mean = tuple(x.mean((0, 2, 3)).tolist())
            std = tuple(x.std((0, 2, 3), correction=0).clamp_min(1e-3).tolist())
            colour = train_x.shape[1] == 3
            pad = p.crop_padding if p.crop_padding >= 0 else (train_x.shape[-1] // 8 if colour else 0)
            bundle = in_memory_bundle(name=name, classes=classes, train_x=train_x, train_y=train_y, val_x=val_x,
                                      val_y=val_y, mean=mean, std=std, crop_padding=pad,
                                      flip=colour if p.flip is None else p.flip, root=root)
            kind = "in memory"
        bundle.summary = (f"torchvision {p.dataset}: {len(classes)} classes, {len(bundle.train_labels)} train / "
                          f"{len(bundle.val_labels)} test images, {bundle.input_size}x{bundle.input_size}, "
                          f"{bundle.in_chans} channel(s), {kind}, mean/std from the training images")
        return bundle


__all__ = ["TorchvisionReader", "decode_all", "file_list", "open_split", "reader_class"]
