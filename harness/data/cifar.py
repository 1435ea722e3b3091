"""CIFAR-10 and CIFAR-100 from the python-pickle release, read by `torchvision.datasets.CIFAR10/100`.

Two adjustments to torchvision's readers, both by class attributes of a subclass:
- checksums off (md5 None: torchvision then only checks that each file exists), because its checksums
  are those of the official archive's files and would reject a re-pickled or test copy; the contents are
  validated here instead (pixel dtype, one label per image, labels in range);
- one reader per pickle file, so an unreadable file is named in the error.
torchvision does not keep CIFAR-100's coarse labels, so they are read from the same `train` pickle here.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from harness.data.registry import DataBundle, DatasetDef, in_memory_bundle, one_line, register_dataset
from harness.errors import UserError

if TYPE_CHECKING:  # torch only when the data is built: listing and checking data sets imports none of it
    from torch import Tensor


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# What torchvision's reader raises on a damaged pickle: unpickling errors, a missing key, a data array
# that does not reshape to (N, 3, 32, 32).
_READ_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError,
                IndexError, RuntimeError)


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as torchvision opens it (latin1, for the release's Python 2 strings)."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except _READ_ERRORS as e:
        raise UserError(f"cannot read CIFAR pickle {path}: {type(e).__name__}: {one_line(e)}") from None
    if not isinstance(d, dict):
        raise UserError(f"CIFAR pickle {path} holds a {type(d).__name__}, expected a dict")
    return d


class _Cifar(DatasetDef):
    holdout = 5000  # the held-out split of the papers that hold one out
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_file: ClassVar[str]
    meta_file: ClassVar[str]
    label_key: ClassVar[str]
    names_key: ClassVar[str]
    can_download = True
    in_memory = True

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        download: bool = False
        crop_padding: int = 4
        flip: bool = True

    @classmethod
    def torchvision_class(cls) -> type:
        raise NotImplementedError

    @classmethod
    def base(cls, root: Path) -> Path:
        # Accept torchvision's root (holding the folder) or the folder itself.
        return root if (root / cls.meta_file).is_file() and not (root / cls.folder).is_dir() else root / cls.folder

    @classmethod
    def problem(cls, root: Path) -> str | None:
        base = cls.base(root)
        missing = [f for f in (*cls.train_files, cls.test_file, cls.meta_file) if not (base / f).is_file()]
        return f"lacks {cls.folder}/{', '.join(missing)}" if missing else None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        import torch

        assert root is not None
        if p.download and self.problem(root):
            with self.fetching(root):
                self.torchvision_class()(str(root), train=True, download=True)
        self.require_layout(root)
        base = self.base(root)
        parts = [self._read(base, name, root) for name in self.train_files]
        classes = parts[0][2]
        tx, ty = torch.cat([x for x, _, _ in parts]), torch.cat([y for _, y, _ in parts])
        vx, vy, _ = self._read(base, self.test_file, root)
        supers, super_names = self._superclasses(base, ty, root)
        return in_memory_bundle(name=self.name, classes=classes, train_x=tx, train_y=ty, val_x=vx, val_y=vy,
                                mean=CIFAR_MEAN, std=CIFAR_STD, crop_padding=p.crop_padding, flip=p.flip,
                                root=root, superclasses=supers, superclass_names=super_names)

    def _read(self, base: Path, name: str, root: Path) -> tuple[Tensor, Tensor, list[str]]:
        """One pickle file through torchvision: images (N, 3, 32, 32) uint8, labels (N,), class names."""
        import torch

        tv = self.torchvision_class()
        reader = type(f"{tv.__name__}File", (tv,), {
            "base_folder": "",  # `base` is the batches folder itself
            "train_list": [[name, None]], "test_list": [],
            "meta": {"filename": self.meta_file, "key": self.names_key, "md5": None},
        })
        try:
            ds = reader(str(base), train=True)
            x, y = ds.data, np.asarray(ds.targets, dtype=np.int64)  # x (N, 32, 32, 3): torchvision's HWC view
        except KeyError as e:
            if e.args and e.args[0] == self.names_key:  # only torchvision's meta reading looks this key up
                raise self.malformed(root, f"has a {self.meta_file} without '{self.names_key}'") from None
            raise self.malformed(root, f"has {name} without 'data' / '{self.label_key}'") from None
        except _READ_ERRORS as e:
            raise self.malformed(root, f"has {name} that is not a CIFAR batch of (N, 3072) uint8 'data' and N "
                                       f"labels ({type(e).__name__}: {one_line(e)})") from None
        if x.dtype != np.uint8 or len(x) != len(y):
            raise self.malformed(root, f"has {name} holding {len(x)} images of {x.dtype} for {len(y)} labels "
                                       "(expected (N, 3072) uint8 'data' and N labels)")
        classes = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in ds.classes]
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise self.malformed(root, f"has {name} with labels outside 0..{len(classes) - 1}")
        # The HWC view permuted back is the release's own layout (R plane, G plane, B plane, row-major).
        return torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y), classes  # (N, 3, 32, 32), (N,)

    def _superclasses(self, base: Path, y: Tensor, root: Path) -> tuple[list[int] | None, list[str] | None]:
        return None, None


@register_dataset("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10: 32x32 colour, 10 classes, 50,000 + 10,000."""

    known_classes, known_train_images = 10, 50_000

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    layout = ("<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} "
              "(torchvision's python-pickle layout)")

    @classmethod
    def torchvision_class(cls) -> type:
        import torchvision

        return torchvision.datasets.CIFAR10


@register_dataset("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100: 32x32 colour, 100 classes in 20 super-classes, 50,000 + 10,000."""

    known_classes, known_train_images = 100, 50_000

    folder = "cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    layout = "<root>/cifar-100-python/{train,test,meta} (torchvision's python-pickle layout)"

    @classmethod
    def torchvision_class(cls) -> type:
        import torchvision

        return torchvision.datasets.CIFAR100

    def _superclasses(self, base: Path, y: Tensor, root: Path) -> tuple[list[int] | None, list[str] | None]:
        """Each fine class's super-class, from the coarse labels that torchvision's reader drops."""
        meta, train = _unpickle(base / self.meta_file), _unpickle(base / self.train_files[0])
        if "coarse_labels" not in train or "coarse_label_names" not in meta:
            raise self.malformed(root, "lacks 'coarse_labels' in train or 'coarse_label_names' in meta")
        names = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in meta["coarse_label_names"]]
        coarse = np.asarray(train["coarse_labels"], dtype=np.int64)
        if len(coarse) != len(y):
            raise self.malformed(root, f"has {len(coarse)} coarse labels for {len(y)} images in train")
        pairs = np.unique(np.stack([y.numpy(), coarse], 1), axis=0)  # distinct (fine, coarse)
        mapping = dict(pairs.tolist())
        if len(mapping) != len(pairs):
            raise self.malformed(root, "has a fine class under two coarse classes")
        num_fine = len(meta[self.names_key])
        missing = [c for c in range(num_fine) if c not in mapping]
        if missing or (coarse.size and (coarse.min() < 0 or coarse.max() >= len(names))):
            raise self.malformed(root, f"has no super-class for fine classes {missing[:5]} or coarse labels "
                                       "outside coarse_label_names")
        return [int(mapping[c]) for c in range(num_fine)], names


__all__ = ["CIFAR_MEAN", "CIFAR_STD", "Cifar10", "Cifar100"]
