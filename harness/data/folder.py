"""`folder`: any image folder, `{name: folder, params: {root: DIR}}`, with its facts read from the data.

`DIR/train/<class>/*` is trained on and `DIR/test/<class>/*` (else `DIR/val/<class>/*`) evaluated on; without
either, a stratified split of train/ (`val_fraction` of each class, at least one image of a class with two or
more, drawn with `split_seed`). Any format torchvision's ImageFolder reads (jpg, png, webp, bmp, ...), on the
file path's device loader (`file_bundle`). What the data is decides the rest, each stated when a trial starts:
- `image_size` 0 (default): the median shorter side of a sample of the training images;
- channels: 1 when every sampled image is greyscale, else 3;
- `mean`/`std` None (default): per channel over a sample of the training images at `image_size`;
- the defaults a trial takes (`facts`): images of at most 64 pixels are LOW resolution (a CIFAR-style recipe:
  crop with padding size/8 + flip, a CIFAR ResNet-18, or `tiny_resnet` under 5,000 training images), larger
  ones HIGH (random-resized crop + flip, ResNet-18); 30 epochs either way;
- tables name it by `label`, else the folder's base name.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.data.registry import (
    HIGH,
    LOW,
    DataBundle,
    DatasetDef,
    file_bundle,
    register_dataset,
    resolve_root,
)
from harness.errors import UserError

SMALL_IMAGE = 64        # pixels: at most this is LOW resolution (CIFAR, Tiny ImageNet at 32 or 64)
SMALL_SET = 5_000       # training images: under this, a LOW-resolution folder gets the small ResNet
STATS_IMAGES = 256      # images read for the default size, channels, mean and std (evenly spaced, no seed)


@dataclass(frozen=True)
class FolderFacts:
    """What a folder's data is: the size and channels its images are trained at, and the defaults that follow."""

    image_size: int
    in_chans: int
    train_images: int
    resolution: str
    default_model: str
    default_epochs: int


def stratified_split(labels: list[int], *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train positions, evaluation positions), both ascending: of each class with n >= 2 images,
    max(1, round(fraction * n)) drawn without replacement by numpy's RandomState(seed) go to evaluation."""
    import numpy as np

    rng = np.random.RandomState(seed)
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    held: list[int] = []
    for c in sorted(by_class):
        members = by_class[c]
        if len(members) >= 2:
            take = min(max(1, round(fraction * len(members))), len(members) - 1)
            held += [members[j] for j in rng.permutation(len(members))[:take]]
    chosen = set(held)
    return [i for i in range(len(labels)) if i not in chosen], sorted(held)


def sample_paths(paths: list[str], n: int = STATS_IMAGES) -> list[str]:
    """At most `n` paths spread evenly over the list (every class is met when the list is in class order)."""
    if len(paths) <= n:
        return list(paths)
    return [paths[i * len(paths) // n] for i in range(n)]


def image_headers(paths: list[str]) -> tuple[list[int], bool]:
    """(shorter side of each readable image, whether every one is greyscale): headers only, nothing decoded."""
    from PIL import Image

    sides, grey = [], True
    for p in paths:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
                grey = grey and im.mode in ("L", "1", "I;16", "I")
        except (OSError, ValueError, SyntaxError):
            continue  # the loader's on_bad_image decides about it when training
    return sides, grey and bool(sides)


def pixel_stats(paths: list[str], *, size: int, grey: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels / 255 over the readable images, each resized (shorter side) and
    centre-cropped to `size`, as training sees them."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    tf = v2.Compose([v2.Resize(size), v2.CenterCrop(size), v2.PILToTensor()])
    stack = []
    for p in paths:
        try:
            with Image.open(p) as im:
                stack.append(tf(im.convert("L" if grey else "RGB")))
        except (OSError, ValueError, SyntaxError):
            continue
    if not stack:
        raise UserError(f"dataset 'folder': none of the {len(paths)} sampled training images could be decoded")
    x = torch.stack(stack).double() / 255                                  # (N, C, S, S)
    x = x.transpose(0, 1).reshape(x.shape[1], -1)                         # (C, N*S*S)
    return tuple(x.mean(1).tolist()), tuple(x.std(1, correction=0).clamp_min(1e-3).tolist())


def imagenet_geometry(size: int, mode: list[Any] | None = None) -> dict[str, Any]:
    """The ImageNet recipe as `file_bundle`'s geometry: random-resized crop + flip; resize (256 for 224) + centre
    crop. `mode`: ops first on every image (a greyscale conversion)."""
    from torchvision.transforms import v2

    mode = mode or []
    return dict(train_geometry=[*mode, v2.RandomResizedCrop(size)], crop_padding=0,
                eval_geometry=[*mode, v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size)])


@register_dataset("folder")
class Folder(DatasetDef):
    """Your own images: DIR/train/<class>/* and DIR/test/<class>/* (or val/, or a split of train/)."""

    layout = ("<root>/train/<class>/*.{jpg,png,webp,bmp,...} and <root>/test/<class>/* or <root>/val/<class>/* "
              "(optional: without them a stratified split of train/)")
    split_seed_param = "split_seed"
    default_epochs = 30

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        image_size: int = 0              # 0: the median shorter side of the training images
        mean: list[float] | None = None  # None: computed from a sample of the training images
        std: list[float] | None = None
        val_fraction: float = 0.2        # without test/ or val/: each class's share held out for evaluation
        split_seed: int = 0
        flip: bool = True
        label: str = ""                  # the name tables give it ('' = the folder's base name)
        on_bad_image: Literal["fail", "skip"] = "fail"

        def __post_init__(self) -> None:  # in the parameters, so a trial is refused when it is resolved
            if self.image_size and self.image_size < 8:
                raise UserError(f"dataset 'folder': image_size must be 0 (the median) or >= 8, got {self.image_size}")
            if not 0 < self.val_fraction < 1:
                raise UserError(f"dataset 'folder': val_fraction must be in (0, 1), got {self.val_fraction}")
            if (self.mean is None) != (self.std is None) or (
                    self.std is not None and (len(self.mean or []) != len(self.std) or any(s <= 0 for s in self.std))):
                raise UserError("dataset 'folder': mean and std need one value per channel each, std > 0")

    @classmethod
    def problem(cls, root: Path) -> str | None:
        return None if (root / "train").is_dir() else "lacks train/"

    @classmethod
    def fill_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        if not values.get("label"):
            root = resolve_root(cls, values.get("root")).path
            values = {**values, "label": Path(root).resolve().name if root else cls.name}
        return values

    # --- what the data is ---
    @classmethod
    def scan(cls, root: Path) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]] | None]:
        """(classes, train samples, evaluation samples from test/ or val/, or None)."""
        from harness.data.imagefolder import class_folders, image_folder_samples

        cls.require_layout(root)
        classes = class_folders(root / "train")
        if not classes:
            raise cls.malformed(root, "has no class folders in train/")
        train = image_folder_samples(root / "train", classes)
        empty = sorted(set(classes) - {classes[c] for _, c in train})
        if empty:
            raise cls.malformed(root, f"has {len(empty)} class folder(s) without images in train/: "
                                      f"{', '.join(empty[:3])}")
        for split in ("test", "val"):
            if (root / split).is_dir():
                stray = [c for c in class_folders(root / split) if c not in set(classes)]
                if stray:
                    raise cls.malformed(root, f"has {split}/ class folders not in train/: {', '.join(stray[:3])}")
                held = image_folder_samples(root / split, classes)
                if not held:
                    raise cls.malformed(root, f"has no images in {split}/")
                return classes, train, held
        return classes, train, None

    @classmethod
    def facts(cls, p: Any, root: Path | None = None) -> FolderFacts:
        """The folder's size, channels and defaults, from its files (headers of a sample of them)."""
        root = root or resolve_root(cls, p.root).path
        if root is None or not root.is_dir():
            raise UserError(f"dataset 'folder': root {root} does not exist; use --set dataset.root=DIR; expected "
                            f"layout: {cls.layout}")
        _, train, _ = cls.scan(root)
        sides, grey = image_headers(sample_paths([f for f, _ in train]))
        if not sides:
            raise cls.malformed(root, "has no readable image among the sampled training images")
        size = p.image_size or max(8, int(statistics.median(sides)))
        low = size <= SMALL_IMAGE
        model = ("tiny_resnet" if len(train) < SMALL_SET else "cifar_preact_resnet18") if low else "resnet18"
        return FolderFacts(image_size=size, in_chans=1 if grey else 3, train_images=len(train),
                           resolution=LOW if low else HIGH, default_model=model, default_epochs=cls.default_epochs)

    @classmethod
    def defaults(cls, p: Any) -> dict[str, Any]:
        f = cls.facts(p)
        return {"model": f.default_model, "epochs": f.default_epochs, "resolution": f.resolution}

    def build(self, p: Any, root: Path | None) -> DataBundle:
        from torchvision.transforms import v2

        assert root is not None
        classes, train, held = self.scan(root)
        facts = self.facts(p, root)
        where = "test/" if (root / "test").is_dir() else "val/"
        if held is None:
            fit, ev = stratified_split([c for _, c in train], fraction=p.val_fraction, seed=p.split_seed)
            held, train = [train[i] for i in ev], [train[i] for i in fit]
            where = f"{p.val_fraction:g} of train/ (split_seed {p.split_seed})"
        s, grey = facts.image_size, facts.in_chans == 1
        mean, std = (p.mean, p.std) if p.mean is not None else pixel_stats(sample_paths([f for f, _ in train]), size=s, grey=grey)
        if len(mean) != facts.in_chans:
            raise UserError(f"dataset 'folder': mean/std have {len(mean)} values for {facts.in_chans} channel(s)")
        mode = [v2.Grayscale(1)] if grey else []  # the loader decodes to RGB: back to one channel
        sized = [*mode, v2.Resize(s), v2.CenterCrop(s)]
        recipe = (dict(train_geometry=sized, eval_geometry=sized, crop_padding=max(1, s // 8))  # CIFAR's
                  if facts.resolution == LOW else imagenet_geometry(s, mode))
        bundle = file_bundle(name=p.label or root.name, classes=classes, train=train, val=held, **recipe, flip=p.flip,
                             input_size=s, mean=tuple(mean), std=tuple(std), on_bad_image=p.on_bad_image, root=root,
                             in_chans=facts.in_chans)
        bundle.summary = (f"folder {p.label or root.name}: {len(classes)} classes, {len(train)} train / {len(held)} "
                          f"evaluation images ({where}), {s}x{s} ({'given' if p.image_size else 'median size'}), "
                          f"{facts.in_chans} channel(s), mean/std {'given' if p.mean is not None else 'from the images'}; "
                          f"defaults: {facts.resolution} resolution, model {facts.default_model}, "
                          f"{facts.default_epochs} epochs")
        return bundle


__all__ = ["Folder", "FolderFacts", "imagenet_geometry", "image_headers", "pixel_stats", "sample_paths", "stratified_split"]
