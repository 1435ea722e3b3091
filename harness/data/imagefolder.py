"""Datasets stored as image files: Tiny ImageNet, ImageNet (any ImageFolder pair) and iNaturalist 2021.

Class folders and sample lists come from torchvision's ImageFolder machinery (`find_classes`,
`IMG_EXTENSIONS`; the walk is our own: it follows no link to a folder), iNat21's from
`torchvision.datasets.INaturalist`; Tiny ImageNet's official validation split (one folder plus
`val_annotations.txt`) has no torchvision reader and is parsed here. Images are decoded lazily by
`ImageFileDataset` (see `harness.data.common` for `on_bad_image`). Each data set states its recipe as the
per-sample geometry (on the PIL image, in the workers) and the augmentation after it (crop with padding,
flip), which the device path runs batched on the device.
Hidden files and folders (names starting with a dot: macOS `._*` files, `.ipynb_checkpoints`) are not
images or classes, where torchvision's defaults would take them for such.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from harness.data.cifar import CIFAR_MEAN, CIFAR_STD
from harness.data.registry import HIGH, DataBundle, DatasetDef, file_bundle, one_line, register_dataset
from harness.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_image(path: str) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    name = os.path.basename(path)
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def class_folders(folder: Path) -> list[str]:
    """ImageFolder's classes (sorted sub-folder names), without hidden folders."""
    from torchvision.datasets.folder import find_classes

    try:
        classes, _ = find_classes(folder)
    except FileNotFoundError:  # no sub-folder at all
        return []
    return [c for c in classes if not c.startswith(".")]


def image_folder_samples(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """ImageFolder semantics: folder/<class>/**/<image> -> (path, index of class in `classes`), in
    torchvision's order (classes by name, then files sorted within each folder of the walk). A class
    without a folder or without images contributes nothing. Unlike torchvision's `make_dataset`, symbolic
    links to folders inside a class folder are not followed (`class_images`)."""
    index = {c: i for i, c in enumerate(classes)}
    return [(path, index[c]) for c in sorted(index) for path in class_images(folder / c)]


def class_images(folder: Path) -> list[str]:
    """The images under one class folder (itself a link or not), sorted as torchvision walks them. Why links
    to folders inside it are not followed: `train/cat/up -> ..` would loop, and list every other class's
    images as cats; a linked image file is still an image."""
    if not folder.is_dir():
        return []
    return [os.path.join(root, name) for root, _dirs, names in sorted(os.walk(folder, followlinks=False))
            for name in sorted(names) if is_image(os.path.join(root, name))]


@register_dataset("tinyimagenet")
class TinyImageNet(DatasetDef):
    """Tiny ImageNet (200 classes, 64x64): trained and tested at 32x32 by default as in the official recipe."""

    known_classes, known_train_images = 200, 100_000

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        image_size: Literal[32, 64] = 32
        on_bad_image: Literal["fail", "skip"] = "fail"

    layout = ("<root>/train/<wnid>/images/*.JPEG and either <root>/val/images/*.JPEG + "
              "<root>/val/val_annotations.txt (official) or <root>/val/<wnid>/[images/]*.JPEG (ImageFolder); "
              "wnids.txt and words.txt optional")

    @classmethod
    def problem(cls, root: Path) -> str | None:
        if not (root / "train").is_dir():
            return "lacks train/"
        if not (root / "val").is_dir():
            return "lacks val/"
        return None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        from torchvision.transforms import v2

        assert root is not None
        self.require_layout(root)
        wnids = class_folders(root / "train")
        if not wnids:
            raise self.malformed(root, "has no class folders in train/")
        if (root / "wnids.txt").is_file():
            listed = sorted(w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip())
            if listed != wnids:
                raise self.malformed(root, f"has {len(wnids)} train/ class folders that differ from the "
                                           f"{len(listed)} ids in wnids.txt")
        train = image_folder_samples(root / "train", wnids)
        ann = root / "val" / "val_annotations.txt"
        if ann.is_file():
            val = self._official_val(root, ann, {w: i for i, w in enumerate(wnids)})
        else:
            stray = [c for c in class_folders(root / "val") if c not in set(wnids) and c != "images"]
            if stray:
                raise self.malformed(root, f"has val/ class folders not in train/: {', '.join(stray[:3])}")
            if (root / "val" / "images").is_dir() and "images" not in wnids:
                raise self.malformed(root, "has val/images/ but no val/val_annotations.txt")
            val = image_folder_samples(root / "val", wnids)
        if not train or not val:
            raise self.malformed(root, f"has {len(train)} train and {len(val)} val images")
        s = p.image_size
        sized = [v2.Resize(s), v2.CenterCrop(s)]
        if s == 32:
            # The official Zipf/CS-KD recipe: random-resized-crop 32 + flip; test images resized to 32.
            train_geometry, padding = [v2.RandomResizedCrop(32)], 0
        else:
            # Native 64x64: CIFAR-style crop with padding + flip; the test image as it is.
            train_geometry, padding = sized, 4
        return file_bundle(name="tinyimagenet", classes=self._names(root, wnids), train=train, val=val,
                           train_geometry=train_geometry, eval_geometry=sized, crop_padding=padding, flip=True,
                           input_size=s, mean=CIFAR_MEAN, std=CIFAR_STD, on_bad_image=p.on_bad_image, root=root)

    def _official_val(self, root: Path, ann: Path, index: dict[str, int]) -> list[tuple[str, int]]:
        out = []
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 2:
                raise self.malformed(root, f"has val_annotations.txt line {n} without '<file>\\t<wnid>'")
            fname, wnid = parts[0].strip(), parts[1].strip()
            if wnid not in index:
                raise self.malformed(root, f"has val_annotations.txt line {n} with unknown wnid {wnid}")
            path = root / "val" / "images" / fname
            if not path.is_file():
                raise self.malformed(root, f"lacks val/images/{fname} (val_annotations.txt line {n})")
            out.append((str(path), index[wnid]))
        return sorted(out)

    @staticmethod
    def _names(root: Path, wnids: list[str]) -> list[str]:
        words = root / "words.txt"
        if not words.is_file():
            return list(wnids)
        table = {}
        for line in words.read_text(errors="replace").splitlines():
            if "\t" in line:
                k, v = line.split("\t", 1)
                table[k.strip()] = v.split(",")[0].strip()
        return [table.get(w, w) for w in wnids]


@register_dataset("imagenet")
class ImageNet(DatasetDef):
    """ImageNet-1k (or any ImageFolder pair) at 224: random-resized-crop + flip; resize 256 + centre crop."""

    default_model, default_epochs, recipe, resolution = "resnet50", 100, "imagenet", HIGH

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        image_size: int = 224
        on_bad_image: Literal["fail", "skip"] = "fail"

        def __post_init__(self) -> None:  # in the parameters, so a trial is refused when it is resolved
            _check_size(self.image_size)

    layout = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG (ImageFolder), same class folders"

    @classmethod
    def problem(cls, root: Path) -> str | None:
        for split in ("train", "val"):
            if not (root / split).is_dir():
                return f"lacks {split}/"
        return None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        assert root is not None
        self.require_layout(root)
        classes = class_folders(root / "train")
        val_classes = class_folders(root / "val")
        if not classes:
            raise self.malformed(root, "has no class folders in train/")
        if val_classes != classes:
            raise self.malformed(root, f"has {len(classes)} class folders in train/ but {len(val_classes)} "
                                       "different ones in val/")
        train = image_folder_samples(root / "train", classes)
        val = image_folder_samples(root / "val", classes)
        if not train or not val:
            raise self.malformed(root, f"has {len(train)} train and {len(val)} val images")
        return file_bundle(name=self.name, classes=classes, train=train, val=val, **_imagenet_recipe(p.image_size),
                           input_size=p.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           on_bad_image=p.on_bad_image, root=root)


def _check_size(size: int) -> None:
    if size < 8:
        raise UserError(f"image_size must be >= 8, got {size}")


def _imagenet_recipe(size: int) -> dict[str, Any]:
    """Random-resized-crop + flip; resize (256 for 224) + centre crop: `file_bundle`'s geometry arguments."""
    from torchvision.transforms import v2

    _check_size(size)
    resize = round(size * 256 / 224)  # 256 for 224, the usual ratio otherwise
    return dict(train_geometry=[v2.RandomResizedCrop(size)], eval_geometry=[v2.Resize(resize), v2.CenterCrop(size)],
                crop_padding=0, flip=True)


INAT_LEVELS = ("kingdom", "phylum", "class", "order", "family", "genus")


@register_dataset("inat21")
class INat21(DatasetDef):
    """iNaturalist 2021 in torchvision's layout: train = 2021_train_mini, val = 2021_valid (10,000 species)."""

    default_model, default_epochs, recipe, resolution = "resnet50", 100, "imagenet", HIGH

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        download: bool = False
        image_size: int = 224
        superclass_level: Literal["kingdom", "phylum", "class", "order", "family", "genus"] = "class"
        on_bad_image: Literal["fail", "skip"] = "fail"

        def __post_init__(self) -> None:  # in the parameters, so a trial is refused when it is resolved
            _check_size(self.image_size)

    train_version: ClassVar[str] = "2021_train_mini"
    val_version: ClassVar[str] = "2021_valid"
    layout = ("<root>/2021_train_mini/<NNNNN_Kingdom_Phylum_Class_Order_Family_Genus_species>/*.jpg and "
              "<root>/2021_valid/<same folders>/*.jpg (torchvision.datasets.INaturalist)")
    can_download = True

    @classmethod
    def problem(cls, root: Path) -> str | None:
        for v in (cls.train_version, cls.val_version):
            if not (root / v).is_dir() or not any(os.scandir(root / v)):
                return f"lacks a non-empty {v}/"
        return None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        from torchvision.datasets import INaturalist

        assert root is not None
        if not p.download:
            self.require_layout(root)  # before torchvision, which would create the root
        splits = {}
        for v in (self.train_version, self.val_version):
            try:
                if p.download:
                    with self.fetching(root):
                        splits[v] = INaturalist(str(root), version=v, download=True)
                else:
                    splits[v] = INaturalist(str(root), version=v, download=False)
            except RuntimeError as e:  # torchvision's layout checks (folder naming, numbering)
                raise self.malformed(root, f"is not readable as {v}: {one_line(e)}") from None
        tr, va = splits[self.train_version], splits[self.val_version]
        if tr.all_categories != va.all_categories:
            raise self.malformed(root, f"has {len(tr.all_categories)} category folders in {self.train_version}/ "
                                       f"but {len(va.all_categories)} different ones in {self.val_version}/")
        cats = tr.all_categories
        level = p.superclass_level
        # Rebuild the super-class index from names (sorted) so that it does not depend on listing order.
        names = sorted({d.split("_")[1 + INAT_LEVELS.index(level)] for d in cats})
        supers = [names.index(d.split("_")[1 + INAT_LEVELS.index(level)]) for d in cats]
        classes = [" ".join(d.split("_")[6:8]) for d in cats]
        return file_bundle(name=self.name, classes=classes, train=self._samples(tr), val=self._samples(va),
                           **_imagenet_recipe(p.image_size), input_size=p.image_size, mean=IMAGENET_MEAN,
                           std=IMAGENET_STD, on_bad_image=p.on_bad_image, root=root, superclasses=supers,
                           superclass_names=names)

    @staticmethod
    def _samples(ds: Any) -> list[tuple[str, int]]:
        return [(os.path.join(ds.root, ds.all_categories[c], f), c) for c, f in sorted(ds.index) if is_image(f)]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INat21", "ImageNet", "TinyImageNet", "class_folders",
           "image_folder_samples", "is_image"]
