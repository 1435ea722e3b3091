"""Fashion-MNIST from its IDX files, parsed by torchvision's MNIST reader.

`torchvision.datasets.FashionMNIST` itself only reads `<root>/FashionMNIST/raw/` with uncompressed files,
so it cannot read the flat folder of gzipped files that Zalando publishes and Debian's
`dataset-fashion-mnist` installs. The files are therefore located here (either layout, plain or `.gz`)
and each is parsed with `torchvision.datasets.mnist.read_image_file` / `read_label_file`.

`train_per_class: N` trains on a subset: the first N images of each class in the order of the training
IDX file (no seed: the same images on every machine), kept in that file order. The evaluation split is
always the whole official test file (10,000 images), so numbers on a subset stay comparable with each
other and with the full set's.
"""
from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.registry import DataBundle, DatasetDef, in_memory_bundle, one_line, register_dataset
from harness.errors import UserError

if TYPE_CHECKING:  # torch only when the data is built: listing and checking data sets imports none of it
    from torch import Tensor


# Fashion-MNIST's pixel statistics over its 60,000 training images (the values commonly used with it).
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "val_x": "t10k-images-idx3-ubyte", "val_y": "t10k-labels-idx1-ubyte",
}
# Where Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1, bookworm) installs the four .gz files,
# read from the package's file list (`dpkg -c`); a fixed path needs no dpkg at run time.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def first_per_class(labels: Tensor, n: int) -> Tensor:
    """Positions of the first `n` images of each class in file order, ascending: (N,) int64 from labels
    (M,) int64. A class with fewer than `n` images gives all of its own."""
    import torch

    counts = torch.bincount(labels)                                     # (K,)
    # rank of each image among the images of its class before it: a stable sort keeps file order in a class
    order = torch.sort(labels, stable=True).indices                     # (M,)
    starts = torch.cumsum(counts, 0) - counts                           # (K,)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(labels)) - starts[labels[order]]
    return torch.nonzero(rank < n).flatten()


def read_idx(path: Path, *, images: bool) -> Tensor:
    """One IDX file, plain or gzipped: uint8 images (N, H, W) or int64 labels (N,).

    torchvision's parser opens plain paths only, so a `.gz` file is first decompressed (with torchvision's
    `extract_archive`) into a temporary folder that is removed afterwards.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file
    from torchvision.datasets.utils import extract_archive

    read = read_image_file if images else read_label_file
    try:
        if path.suffix != ".gz":
            return read(str(path))
        with tempfile.TemporaryDirectory(prefix="tfbench-idx-") as tmp:
            return read(str(extract_archive(str(path), tmp)))  # the parser reads the whole file into memory
    # The parser signals a bad header with `assert` (AssertionError, or KeyError/ValueError under -O) and
    # a size mismatch with RuntimeError from `view`; gzip errors are OSError/EOFError (a cut file) or
    # zlib.error (corrupt compressed data).
    except (OSError, EOFError, zlib.error, AssertionError, RuntimeError, ValueError, TypeError, KeyError,
            IndexError) as e:
        want = "0x00000803 (uint8 images, 3 sizes)" if images else "0x00000801 (uint8 labels, 1 size)"
        raise UserError(f"cannot read IDX file {path} ({type(e).__name__}: {one_line(e) or 'bad header'}); "
                        f"expected magic {want}, big-endian sizes, then exactly that many bytes") from None


@register_dataset("fashion_mnist")
class FashionMNIST(DatasetDef):
    """Zalando's Fashion-MNIST (28x28 grey, 10 classes, 60,000 + 10,000) from its IDX files."""

    known_classes = 10
    default_model, default_epochs = "tiny_cnn", 30  # converges in a few dozen epochs

    @classmethod
    def train_images(cls, p: Any) -> int | None:
        return 10 * p.train_per_class if p.train_per_class else 60_000

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        download: bool = False
        crop_padding: int = 0      # no augmentation by default (the Fashion-MNIST benchmark's setting)
        flip: bool = False
        train_per_class: int = 0   # 0: all 60,000; N: the first N of each class in file order (10 N images)

        def __post_init__(self) -> None:
            # here rather than in build, so that a sweep refuses the value in its data check, before it
            # writes anything (the type is checked earlier still, with every other parameter)
            if self.train_per_class < 0:
                raise UserError(f"dataset 'fashion_mnist': train_per_class must be >= 0 (0 = every training "
                                f"image), got {self.train_per_class}")

    layout = ("<root>/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,"
              "t10k-labels-idx1-ubyte}[.gz] (or <root>/FashionMNIST/raw/ with the same files)")
    can_download = True
    in_memory = True
    known_roots = ((DEBIAN_FASHION_MNIST, "debian package dataset-fashion-mnist"),)

    @classmethod
    def files(cls, root: Path) -> dict[str, Path] | str:
        for base in (root, root / "FashionMNIST" / "raw"):
            found = {}
            for key, stem in IDX_FILES.items():
                for cand in (base / stem, base / f"{stem}.gz"):
                    if cand.is_file():
                        found[key] = cand
                        break
            if len(found) == len(IDX_FILES):
                return found
        missing = [IDX_FILES[k] for k in IDX_FILES if not any(
            (b / IDX_FILES[k]).is_file() or (b / f"{IDX_FILES[k]}.gz").is_file()
            for b in (root, root / "FashionMNIST" / "raw"))]
        return "lacks " + ", ".join(f"{m}[.gz]" for m in missing) if missing else "mixes two layouts"

    @classmethod
    def problem(cls, root: Path) -> str | None:
        got = cls.files(root)
        return got if isinstance(got, str) else None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        import torch

        assert root is not None
        if p.download and isinstance(self.files(root), str):
            import torchvision

            with self.fetching(root):
                for train in (True, False):
                    torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        files = self.files(root)
        if isinstance(files, str):
            raise self.malformed(root, files)
        t = {k: read_idx(path, images=k.endswith("_x")) for k, path in files.items()}
        for split in ("train", "val"):
            x, y = t[f"{split}_x"], t[f"{split}_y"]
            if len(x) != len(y):
                raise self.malformed(root, f"has {len(x)} images but {len(y)} labels in the {split} split")
            if y.numel() and (y.min() < 0 or y.max() >= len(FASHION_CLASSES)):
                raise self.malformed(root, f"has labels outside 0..9 in {files[f'{split}_y'].name}")
        if p.train_per_class:
            counts = torch.bincount(t["train_y"], minlength=len(FASHION_CLASSES))
            c = int(counts.argmin())
            if counts[c] < p.train_per_class:  # fewer images than asked would be a silent imbalance
                most = int(counts[c])
                raise UserError(
                    f"dataset 'fashion_mnist': train_per_class {p.train_per_class} is more than the {most} "
                    f"training images of class {c} ({FASHION_CLASSES[c]!r}) in {files['train_y']}; allowed: 0 "
                    f"(every image)" + (f" or 1..{most}" if most else ""))
            keep = first_per_class(t["train_y"], p.train_per_class)
            t["train_x"], t["train_y"] = t["train_x"][keep], t["train_y"][keep]
        # FASHION_MEAN/STD stay the full training set's on a subset: fixed constants, so a subset's numbers
        # differ from the full set's by the images trained on, not by the normalisation
        return in_memory_bundle(
            name="fashion_mnist", classes=list(FASHION_CLASSES), train_x=t["train_x"].unsqueeze(1),
            train_y=t["train_y"], val_x=t["val_x"].unsqueeze(1), val_y=t["val_y"],
            mean=FASHION_MEAN, std=FASHION_STD, crop_padding=p.crop_padding, flip=p.flip, root=root)


__all__ = ["DEBIAN_FASHION_MNIST", "FASHION_CLASSES", "FASHION_MEAN", "FASHION_STD", "FashionMNIST",
           "IDX_FILES", "first_per_class", "read_idx"]
