"""Datasets: one registry, one factory, one bundle type.

`build_dataset(name, params) -> DataBundle`. Every dataset yields `(image, label, index)`: the image a
normalised float tensor (C, H, W), the label an int, the index the sample's position in its split (PS-KD
keys its table on it). Datasets small enough to live in memory (digits, synthetic, fashion_mnist, cifar10,
cifar100) also carry `bundle.memory`, the raw uint8 pixels of both splits, for the on-device fast path of
`harness.data.fast.TensorLoader`; `bundle.train` etc. are then the torchvision path over the same tensors,
with the same augmentation semantics (random crop with zero padding of the raw pixels, horizontal flip).

Where the data comes from (datasets with files): `params["root"]`, else the environment variable
`TFBENCH_<NAME>_ROOT` (e.g. TFBENCH_CIFAR100_ROOT); both are used as given, present or not. Otherwise the
candidates are `$TFBENCH_DATA/<name>` (TFBENCH_DATA defaults to `data/` in the repository) and, for
fashion_mnist, the folder Debian's `dataset-fashion-mnist` package installs (found with `dpkg -L`); the
first that exists wins. `download: true` (cifar10, cifar100, fashion_mnist, inat21) lets torchvision fetch
the data into that root; nothing is ever downloaded otherwise. A missing or malformed root raises
`UserError` with one line naming the root and the layout expected there.

Images that cannot be decoded (the file-based sets: tinyimagenet, imagenet, inat21) follow the parameter
`on_bad_image`, checked lazily when a sample is read:
- `fail` (default): `__getitem__` raises `UserError` naming the file.
- `skip`: the sample is replaced by the next decodable sample of the same split (index + 1, wrapping
  around), and that sample's image, label AND index are returned, so index-keyed state (PS-KD) stays
  consistent with what was trained on. Bad files are remembered in a shared-memory mask (visible across
  DataLoader workers) and never decoded again; `bundle.skipped_images` is the number of distinct bad
  files seen so far and `bundle.skipped_files()` their paths. A split with no decodable image at all
  raises `UserError`.
(With DataLoader workers, PyTorch re-raises a worker's `UserError` as a `UserError` whose message also
holds the worker's traceback: the first line is still the one that matters.)

Transforms (METHODS.md, "Training recipes"): CIFAR random crop 32 pad 4 + flip, mean (0.4914, 0.4822,
0.4465), std (0.2023, 0.1994, 0.2010) for both CIFARs; Tiny ImageNet random-resized-crop 32 + flip, test
resize 32, with the CIFAR normalisation (the Zipf/CS-KD code's), or at `image_size: 64` random crop 64 pad 4
+ flip and the test image as is; ImageNet and iNat21 random-resized-crop 224 + flip, resize 256 + centre
crop 224, ImageNet mean/std. digits, synthetic and fashion_mnist train without augmentation by default
(digits are not flip-invariant); every in-memory set takes `crop_padding` and `flip` to change that.
digits and synthetic normalise with their own training split's per-channel mean and std.
"""
from __future__ import annotations

import dataclasses
import difflib
import gzip
import os
import pickle
import shutil
import subprocess
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from harness.errors import UserError
from harness.io import REPO_ROOT
from methods.registry import Registry

DATASETS = Registry("dataset")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fashion-MNIST's pixel statistics over its 60,000 training images (the values commonly used with it).
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def register_dataset(name: str) -> Callable[[type], type]:
    """Register a `DatasetDef` subclass under `name`: `@register_dataset("cifar10")`."""
    return DATASETS.register(name)


# --- the bundle -------------------------------------------------------------------------------

@dataclass
class InMemory:
    """The fast path: each split as one uint8 tensor of raw pixels (before normalisation)."""

    train_x: Tensor            # (N, C, H, W) uint8
    train_y: Tensor            # (N,) int64
    val_x: Tensor              # (M, C, H, W) uint8
    val_y: Tensor              # (M,) int64
    crop_padding: int          # random crop with this zero padding (0 = no crop)
    flip: bool                 # random horizontal flip


@dataclass
class DataBundle:
    name: str
    num_classes: int
    in_chans: int
    input_size: int
    classes: list[str]
    superclasses: list[int] | None
    superclass_names: list[str] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Dataset
    val: Dataset
    train_eval: Dataset
    train_labels: Tensor
    memory: InMemory | None
    root: str | None

    @property
    def skipped_images(self) -> int:
        """Distinct undecodable files met so far (on_bad_image=skip); 0 for in-memory datasets."""
        return sum(int(m.sum()) for m in self._bad_masks())

    def skipped_files(self) -> list[str]:
        out: list[str] = []
        for ds in (self.train, self.val):
            if isinstance(ds, ImageFileDataset):
                out += [ds.samples[i][0] for i in torch.nonzero(ds.bad).flatten().tolist()]
        return out

    def _bad_masks(self) -> list[Tensor]:
        # train and train_eval share one mask (same files), so count each mask once.
        masks: dict[int, Tensor] = {}
        for ds in (self.train, self.val, self.train_eval):
            if isinstance(ds, ImageFileDataset):
                masks[id(ds.bad)] = ds.bad
        return list(masks.values())


# --- split datasets ---------------------------------------------------------------------------

class TensorImageDataset(Dataset):
    """A split held as one uint8 tensor; the torchvision path (transforms per sample, on the host)."""

    def __init__(self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor]):
        self.x, self.y, self.transform = x, y, transform  # x (N, C, H, W) uint8, y (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.transform(self.x[index]), int(self.y[index]), int(index)


class ImageFileDataset(Dataset):
    """Images read from files with PIL; `on_bad_image` as in the module docstring."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Any], Tensor], *,
                 on_bad_image: str, bad: Tensor | None = None):
        self.samples = samples
        self.transform = transform
        self.on_bad_image = on_bad_image
        # Shared memory so that DataLoader workers' findings reach the main process.
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
                img = _load_rgb(path)
            except (OSError, ValueError, SyntaxError) as e:  # PIL's decode errors (UnidentifiedImageError is an OSError)
                if self.on_bad_image == "fail":
                    raise UserError(f"cannot decode image {path} ({type(e).__name__}: {_one_line(e)}); "
                                    "use --set dataset.on_bad_image=skip to skip undecodable files") from None
                self.bad[i] = True
                continue
            return self.transform(img), label, i
        raise UserError(f"no decodable image among the {n} files of this split "
                        f"(first: {self.samples[0][0] if n else 'none'})")


def _load_rgb(path: str) -> Any:
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")  # forces the full decode inside the try of the caller


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


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


def _pil_tail(mean: tuple[float, ...], std: tuple[float, ...]) -> list[Any]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


# --- parameters -------------------------------------------------------------------------------

class DatasetDef:
    """Base class of a registered dataset: its parameters, its layout, where it looks, how it loads."""

    name: ClassVar[str] = "?"
    Params: ClassVar[type]
    layout: ClassVar[str] = ""            # the expected on-disk layout, one line (for errors and listings)
    needs_root: ClassVar[bool] = True
    can_download: ClassVar[bool] = False
    in_memory: ClassVar[bool] = False
    debian_package: ClassVar[str | None] = None

    @classmethod
    def env_var(cls) -> str:
        return f"TFBENCH_{cls.name.upper()}_ROOT"

    @classmethod
    def problem(cls, root: Path) -> str | None:
        """A cheap layout check: None when the root looks right, else what is missing."""
        return None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        raise NotImplementedError

    # helpers for subclasses
    @classmethod
    def malformed(cls, root: Path | str, what: str) -> UserError:
        return UserError(f"dataset {cls.name!r}: root {root} {what}; expected layout: {cls.layout}")


def make_dataset_params(cls: type[DatasetDef], values: dict[str, Any] | None) -> Any:
    """Build `cls.Params` from a plain dict; unknown keys and wrong types are one clear `UserError`."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    hints = typing.get_type_hints(cls.Params)
    out = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"dataset {cls.name!r}: unknown parameter {key!r}{hint}; "
                            f"allowed: {', '.join(fields) or 'none'}")
        out[key] = _coerce(cls.name, key, value, hints[key])
    return cls.Params(**out)


def _coerce(dataset: str, key: str, value: Any, hint: Any) -> Any:
    base = hint
    if typing.get_origin(hint) is not Literal:  # Optional[X] / X | None: unwrap to X
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        base = next((a for a in args if a is not type(None)), hint) if args else hint
    if typing.get_origin(base) is Literal:
        if value in typing.get_args(base):
            return value
        raise UserError(f"dataset {dataset!r}: parameter {key!r} is {value!r}; "
                        f"allowed: {', '.join(map(str, typing.get_args(base)))}")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(base, True)
    if not ok:
        raise UserError(f"dataset {dataset!r}: parameter {key!r} is {value!r} ({type(value).__name__}); "
                        f"expected {getattr(base, '__name__', base)}")
    return float(value) if base is float else value


# --- where each dataset looks -----------------------------------------------------------------

@dataclass(frozen=True)
class RootChoice:
    path: Path | None
    source: str                              # "param", "env TFBENCH_X_ROOT", "TFBENCH_DATA", "default", "debian"
    candidates: tuple[tuple[Path, str], ...] = ()  # every place looked at, in order (for messages, listings)


def data_home() -> tuple[Path, str]:
    env = os.environ.get("TFBENCH_DATA")
    return (Path(env).expanduser(), "TFBENCH_DATA") if env else (REPO_ROOT / "data", "default")


@cache
def debian_package_dir(package: str) -> Path | None:
    """The folder holding a Debian package's data files (`dpkg -L`), or None without dpkg / the package."""
    if shutil.which("dpkg") is None:
        return None
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        if line.strip().endswith(("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
            return Path(line.strip()).parent
    return None


def resolve_root(cls: type[DatasetDef], param_root: str | None) -> RootChoice:
    """Explicit roots (the parameter, the per-dataset variable) are used as given; otherwise the first
    existing default candidate, or the first candidate when none exists (the error then names it)."""
    if not cls.needs_root:
        return RootChoice(None, "none")
    if param_root:
        return RootChoice(Path(param_root).expanduser(), "param")
    env = os.environ.get(cls.env_var())
    if env:
        return RootChoice(Path(env).expanduser(), f"env {cls.env_var()}")
    home, source = data_home()
    candidates: list[tuple[Path, str]] = [(home / cls.name, source)]
    if cls.debian_package:
        deb = debian_package_dir(cls.debian_package)
        if deb is not None:
            candidates.append((deb, f"debian package {cls.debian_package}"))
    for path, src in candidates:
        if path.exists():
            return RootChoice(path, src, tuple(candidates))
    return RootChoice(candidates[0][0], candidates[0][1], tuple(candidates))


def _require_root(cls: type[DatasetDef], choice: RootChoice, download: bool) -> Path:
    root = choice.path
    assert root is not None
    if root.exists() or download:
        return root
    hint = " (or set download: true)" if cls.can_download else ""
    looked = ""
    if len(choice.candidates) > 1:
        looked = " (also looked in " + ", ".join(str(p) for p, _ in choice.candidates[1:]) + ")"
    raise UserError(f"dataset {cls.name!r}: root {root} does not exist{looked}; use --set dataset.root=... or "
                    f"{cls.env_var()}{hint}; expected layout: {cls.layout}")


# --- the factory ------------------------------------------------------------------------------

def build_dataset(name: str, params: dict[str, Any] | None = None) -> DataBundle:
    """The one factory: `build_dataset("cifar100", {"root": "/data/cifar"})`."""
    cls = DATASETS.get(name)
    p = make_dataset_params(cls, params)
    root: Path | None = None
    if cls.needs_root:
        download = bool(getattr(p, "download", False))
        root = _require_root(cls, resolve_root(cls, getattr(p, "root", None)), download)
    return cls().build(p, root)


def check_dataset(name: str, params: dict[str, Any] | None = None) -> None:
    """The cheap checks of `build_dataset` without reading the data: parameters, the root exists, its
    top-level layout. A sweep runs them for every data set before anything is written."""
    cls = DATASETS.get(name)
    p = make_dataset_params(cls, params)
    if not cls.needs_root:
        return
    download = bool(getattr(p, "download", False))
    root = _require_root(cls, resolve_root(cls, getattr(p, "root", None)), download)
    problem = cls.problem(root) if root.exists() else None
    if problem and not download:
        raise cls.malformed(root, problem)


def describe_datasets() -> list[dict[str, Any]]:
    """One record per registered dataset for `tfbench datasets`: where it looks and whether data is there."""
    rows = []
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        rec: dict[str, Any] = {
            "name": name, "in_memory": cls.in_memory, "download": cls.can_download, "layout": cls.layout,
            "params": [f.name for f in dataclasses.fields(cls.Params)],
        }
        if cls.needs_root:
            choice = resolve_root(cls, None)
            rec.update(env_var=cls.env_var(), root=str(choice.path), source=choice.source,
                       candidates=[(str(p), s) for p, s in choice.candidates])
            if choice.path is None or not choice.path.exists():
                rec["status"] = "missing"
            else:
                prob = cls.problem(choice.path)
                rec["status"] = "present" if prob is None else f"malformed: {prob}"
        else:
            rec.update(env_var=None, root=None, source="built in", candidates=[], status="built in")
        rows.append(rec)
    return rows


def _in_memory_bundle(*, name: str, classes: list[str], train_x: Tensor, train_y: Tensor, val_x: Tensor,
                      val_y: Tensor, mean: tuple[float, ...], std: tuple[float, ...], crop_padding: int,
                      flip: bool, root: Path | None, superclasses: list[int] | None = None,
                      superclass_names: list[str] | None = None) -> DataBundle:
    size = int(train_x.shape[-1])
    aug = tensor_transform(size=size, crop_padding=crop_padding, flip=flip, mean=mean, std=std)
    plain = tensor_transform(size=size, crop_padding=0, flip=False, mean=mean, std=std)
    return DataBundle(
        name=name, num_classes=len(classes), in_chans=int(train_x.shape[1]), input_size=size,
        classes=classes, superclasses=superclasses, superclass_names=superclass_names,
        mean=tuple(mean), std=tuple(std),
        train=TensorImageDataset(train_x, train_y, aug),
        val=TensorImageDataset(val_x, val_y, plain),
        train_eval=TensorImageDataset(train_x, train_y, plain),
        train_labels=train_y,
        memory=InMemory(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
                        crop_padding=int(crop_padding), flip=bool(flip)),
        root=str(root) if root is not None else None,
    )


def _file_bundle(*, name: str, classes: list[str], train: list[tuple[str, int]], val: list[tuple[str, int]],
                 train_tf: Any, eval_tf: Any, input_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 on_bad_image: str, root: Path, superclasses: list[int] | None = None,
                 superclass_names: list[str] | None = None) -> DataBundle:
    tr = ImageFileDataset(train, train_tf, on_bad_image=on_bad_image)
    return DataBundle(
        name=name, num_classes=len(classes), in_chans=3, input_size=input_size, classes=classes,
        superclasses=superclasses, superclass_names=superclass_names, mean=tuple(mean), std=tuple(std),
        train=tr, val=ImageFileDataset(val, eval_tf, on_bad_image=on_bad_image),
        train_eval=ImageFileDataset(train, eval_tf, on_bad_image=on_bad_image, bad=tr.bad),
        train_labels=torch.tensor([label for _, label in train], dtype=torch.int64),
        memory=None, root=str(root),
    )


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 pixels scaled to [0, 1] (float64 for a stable sum)."""
    v = x.to(torch.float64).div(255).transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
    return tuple(round(float(m), 6) for m in v.mean(1)), tuple(round(float(s), 6) for s in v.std(1))


# --- digits -----------------------------------------------------------------------------------

@register_dataset("digits")
class Digits(DatasetDef):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download."""

    @dataclass(frozen=True)
    class Params:
        val_fraction: float = 0.2
        split_seed: int = 0
        crop_padding: int = 0      # digits are not flip-invariant and fill their 8x8 frame: no augmentation
        flip: bool = False

    layout = "bundled with scikit-learn (sklearn.datasets.load_digits)"
    needs_root = False
    in_memory = True

    def build(self, p: Any, root: Path | None) -> DataBundle:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if not 0 < p.val_fraction < 1:
            raise UserError(f"dataset 'digits': val_fraction must be in (0, 1), got {p.val_fraction}")
        d = load_digits()
        # 0..16 grey levels -> 0..255, the uint8 range every in-memory dataset uses.
        x = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
        y = torch.from_numpy(d.target.astype(np.int64))
        tr, va = train_test_split(np.arange(len(y)), test_size=p.val_fraction, random_state=p.split_seed,
                                  stratify=d.target)
        tr, va = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
        mean, std = _channel_stats(x[tr])
        return _in_memory_bundle(name="digits", classes=[str(c) for c in d.target_names], train_x=x[tr],
                                 train_y=y[tr], val_x=x[va], val_y=y[va], mean=mean, std=std,
                                 crop_padding=p.crop_padding, flip=p.flip, root=None)


# --- synthetic --------------------------------------------------------------------------------

@register_dataset("synthetic")
class Synthetic(DatasetDef):
    """Generated images with super-classes: sample = super prototype + class pattern + noise, shifted.

    Every pattern is a smooth random field (random values on a coarse grid, bilinearly upsampled), so a
    small CNN learns it in a few epochs and a shift moves it without destroying it. Classes of one super-
    class share the large super-class prototype and differ by a smaller class pattern, so their images are
    closer to each other than to other super-classes': a trained model ranks same-super-class classes first
    among the non-targets. Drawn from numpy's PCG64 with `seed`: identical on every machine.
    """

    @dataclass(frozen=True)
    class Params:
        num_classes: int = 20
        num_superclasses: int = 4
        image_size: int = 16
        channels: int = 3
        train_per_class: int = 50
        val_per_class: int = 20
        super_scale: float = 0.3     # amplitude of the super-class prototypes
        class_scale: float = 0.15    # amplitude of the class-specific patterns
        noise: float = 0.15          # i.i.d. Gaussian pixel noise
        max_shift: int = 2           # random translation of each sample, in pixels
        grid: int = 4                # coarse grid of the smooth fields (patterns have about grid x grid blobs)
        seed: int = 0
        crop_padding: int = 0
        flip: bool = False

    layout = "generated in memory (no files)"
    needs_root = False
    in_memory = True

    def build(self, p: Any, root: Path | None) -> DataBundle:
        for key in ("num_classes", "num_superclasses", "image_size", "channels", "train_per_class",
                    "val_per_class", "grid"):
            if getattr(p, key) < 1:
                raise UserError(f"dataset 'synthetic': {key} must be >= 1, got {getattr(p, key)}")
        if p.num_superclasses > p.num_classes:
            raise UserError(f"dataset 'synthetic': num_superclasses ({p.num_superclasses}) must not exceed "
                            f"num_classes ({p.num_classes})")
        if p.max_shift < 0 or p.noise < 0:
            raise UserError("dataset 'synthetic': max_shift and noise must be >= 0")
        data = make_synthetic(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)
                                 if f.name not in ("crop_padding", "flip")})
        tx, ty, vx, vy, supers = data
        mean, std = _channel_stats(tx)
        k = p.num_superclasses
        return _in_memory_bundle(
            name="synthetic", classes=[f"s{supers[c]}_c{c}" for c in range(p.num_classes)],
            train_x=tx, train_y=ty, val_x=vx, val_y=vy, mean=mean, std=std, crop_padding=p.crop_padding,
            flip=p.flip, root=None, superclasses=supers, superclass_names=[f"super{s}" for s in range(k)])


def make_synthetic(*, num_classes: int, num_superclasses: int, image_size: int, channels: int,
                   train_per_class: int, val_per_class: int, super_scale: float, class_scale: float,
                   noise: float, max_shift: int, grid: int, seed: int
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
    """Pure generator of the synthetic set: (train_x, train_y, val_x, val_y, superclass of each class)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    canvas = image_size + 2 * max_shift  # patterns live on a larger canvas; each sample is a window of it

    def smooth_fields(n: int) -> np.ndarray:
        coarse = torch.from_numpy(rng.standard_normal((n, channels, grid, grid)))
        up = torch.nn.functional.interpolate(coarse, size=(canvas, canvas), mode="bilinear",
                                             align_corners=False)  # (n, C, canvas, canvas)
        up = up / up.flatten(1).std(1).clamp_min(1e-8)[:, None, None, None]  # unit pixel std per field
        return up.numpy()

    supers = [c * num_superclasses // num_classes for c in range(num_classes)]  # contiguous, balanced groups
    proto = super_scale * smooth_fields(num_superclasses)[supers] + class_scale * smooth_fields(num_classes)

    def draw(per_class: int) -> tuple[Tensor, Tensor]:
        y = np.repeat(np.arange(num_classes), per_class)
        oy = rng.integers(0, 2 * max_shift + 1, size=len(y))
        ox = rng.integers(0, 2 * max_shift + 1, size=len(y))
        rows = oy[:, None] + np.arange(image_size)  # (N, S)
        cols = ox[:, None] + np.arange(image_size)  # (N, S)
        windows = proto[y][np.arange(len(y))[:, None, None, None], np.arange(channels)[None, :, None, None],
                           rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, S, S)
        img = 0.5 + windows + noise * rng.standard_normal(windows.shape)
        x = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    tx, ty = draw(train_per_class)
    vx, vy = draw(val_per_class)
    return tx, ty, vx, vy, supers


# --- Fashion-MNIST (IDX files) ----------------------------------------------------------------

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "val_x": "t10k-images-idx3-ubyte", "val_y": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped): magic 0x0000 <type> <ndim>, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {_one_line(e)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] < 1:
        raise UserError(f"{path} is not an IDX file (bad magic {raw[:4].hex()}; expected 0x0803 images, "
                        "0x0801 labels)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    n = int(np.prod(dims))
    if len(raw) != 4 + 4 * ndim + n * dtype.itemsize:
        raise UserError(f"IDX file {path}: {len(raw)} bytes, but the header {tuple(dims)} needs "
                        f"{4 + 4 * ndim + n * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(tuple(dims))


@register_dataset("fashion_mnist")
class FashionMNIST(DatasetDef):
    """Zalando's Fashion-MNIST (28x28 grey, 10 classes, 60,000 + 10,000) from its IDX files."""

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        download: bool = False
        crop_padding: int = 0      # no augmentation by default (the Fashion-MNIST benchmark's setting)
        flip: bool = False

    layout = ("<root>/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,"
              "t10k-labels-idx1-ubyte}[.gz] (or <root>/FashionMNIST/raw/ with the same files)")
    can_download = True
    in_memory = True
    debian_package = "dataset-fashion-mnist"

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
        assert root is not None
        if p.download and isinstance(self.files(root), str):
            import torchvision

            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        files = self.files(root)
        if isinstance(files, str):
            raise self.malformed(root, files)
        arrays = {k: read_idx(path) for k, path in files.items()}
        for split in ("train", "val"):
            x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8:
                raise self.malformed(root, f"has IDX files of unexpected shapes: images {x.shape} {x.dtype}, "
                                           f"labels {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= len(FASHION_CLASSES)):
                raise self.malformed(root, f"has labels outside 0..9 in {files[f'{split}_y'].name}")
        t = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        return _in_memory_bundle(
            name="fashion_mnist", classes=list(FASHION_CLASSES), train_x=t["train_x"].unsqueeze(1),
            train_y=t["train_y"].long(), val_x=t["val_x"].unsqueeze(1), val_y=t["val_y"].long(),
            mean=FASHION_MEAN, std=FASHION_STD, crop_padding=p.crop_padding, flip=p.flip, root=root)


# --- CIFAR (torchvision's python-pickle layout) --------------------------------------------------

def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle; keys and name lists come back as str whether they were pickled as bytes or str."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"cannot read CIFAR pickle {path}: {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(d, dict):
        raise UserError(f"CIFAR pickle {path} holds a {type(d).__name__}, expected a dict")

    def s(v: Any) -> Any:
        return v.decode("latin1") if isinstance(v, bytes) else v

    return {s(k): ([s(x) for x in v] if isinstance(v, list) else v) for k, v in d.items()}


class _Cifar(DatasetDef):
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
    def base(cls, root: Path) -> Path:
        # Accept torchvision's root (holding the folder) or the folder itself.
        return root if (root / cls.meta_file).is_file() and not (root / cls.folder).is_dir() else root / cls.folder

    @classmethod
    def problem(cls, root: Path) -> str | None:
        base = cls.base(root)
        missing = [f for f in (*cls.train_files, cls.test_file, cls.meta_file) if not (base / f).is_file()]
        return f"lacks {cls.folder}/{', '.join(missing)}" if missing else None

    def _download(self, root: Path) -> None:
        raise NotImplementedError

    def build(self, p: Any, root: Path | None) -> DataBundle:
        assert root is not None
        if p.download and self.problem(root):
            self._download(root)
        prob = self.problem(root)
        if prob:
            raise self.malformed(root, prob)
        base = self.base(root)
        meta = _unpickle(base / self.meta_file)
        if self.names_key not in meta:
            raise self.malformed(root, f"has a {self.meta_file} without '{self.names_key}'")
        classes = [str(c) for c in meta[self.names_key]]
        tx, ty, tc = self._read(base, self.train_files, len(classes), root)
        vx, vy, _ = self._read(base, (self.test_file,), len(classes), root)
        supers, super_names = self._superclasses(meta, ty, tc, root)
        return _in_memory_bundle(name=self.name, classes=classes, train_x=tx, train_y=ty, val_x=vx, val_y=vy,
                                 mean=CIFAR_MEAN, std=CIFAR_STD, crop_padding=p.crop_padding, flip=p.flip,
                                 root=root, superclasses=supers, superclass_names=super_names)

    def _read(self, base: Path, files: tuple[str, ...], num_classes: int, root: Path
              ) -> tuple[Tensor, Tensor, np.ndarray | None]:
        xs, ys, cs = [], [], []
        for name in files:
            d = _unpickle(base / name)
            if "data" not in d or self.label_key not in d:
                raise self.malformed(root, f"has {name} without 'data' / '{self.label_key}'")
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d[self.label_key], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
                raise self.malformed(root, f"has {name} with data {x.shape} and {len(y)} labels "
                                           "(expected (N, 3072) and N)")
            if y.size and (y.min() < 0 or y.max() >= num_classes):
                raise self.malformed(root, f"has {name} with labels outside 0..{num_classes - 1}")
            xs.append(x.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane, each row-major
            ys.append(y)
            if "coarse_labels" in d:
                cs.append(np.asarray(d["coarse_labels"], dtype=np.int64))
        coarse = np.concatenate(cs) if len(cs) == len(files) else None
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), coarse

    def _superclasses(self, meta: dict[str, Any], y: Tensor, coarse: np.ndarray | None, root: Path
                      ) -> tuple[list[int] | None, list[str] | None]:
        return None, None


@register_dataset("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10: 32x32 colour, 10 classes, 50,000 + 10,000."""

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    layout = ("<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} "
              "(torchvision's python-pickle layout)")

    def _download(self, root: Path) -> None:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)


@register_dataset("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100: 32x32 colour, 100 classes in 20 super-classes, 50,000 + 10,000."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    layout = "<root>/cifar-100-python/{train,test,meta} (torchvision's python-pickle layout)"

    def _download(self, root: Path) -> None:
        import torchvision

        torchvision.datasets.CIFAR100(str(root), train=True, download=True)

    def _superclasses(self, meta: dict[str, Any], y: Tensor, coarse: np.ndarray | None, root: Path
                      ) -> tuple[list[int] | None, list[str] | None]:
        if coarse is None or "coarse_label_names" not in meta:
            raise self.malformed(root, "lacks 'coarse_labels' in train or 'coarse_label_names' in meta")
        names = [str(c) for c in meta["coarse_label_names"]]
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


# --- image folders ----------------------------------------------------------------------------

def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _image_tree(folder: Path) -> list[str]:
    """Every image file under `folder`, recursively, in sorted order (deterministic across machines)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return out


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_folder_samples(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """ImageFolder semantics: folder/<class>/**/<image> -> (path, index of class in `classes`)."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for c in _class_dirs(folder):
        if c not in index:
            continue
        out += [(p, index[c]) for p in _image_tree(folder / c)]
    return out


@register_dataset("tinyimagenet")
class TinyImageNet(DatasetDef):
    """Tiny ImageNet (200 classes, 64x64): trained and tested at 32x32 by default as in the official recipe."""

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
        assert root is not None
        prob = self.problem(root)
        if prob:
            raise self.malformed(root, prob)
        wnids = _class_dirs(root / "train")
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
            stray = [c for c in _class_dirs(root / "val") if c not in set(wnids) and c != "images"]
            if stray:
                raise self.malformed(root, f"has val/ class folders not in train/: {', '.join(stray[:3])}")
            if (root / "val" / "images").is_dir() and "images" not in wnids:
                raise self.malformed(root, "has val/images/ but no val/val_annotations.txt")
            val = image_folder_samples(root / "val", wnids)
        if not train or not val:
            raise self.malformed(root, f"has {len(train)} train and {len(val)} val images")
        s = p.image_size
        if s == 32:
            # The official Zipf/CS-KD recipe: random-resized-crop 32 + flip; test images resized to 32.
            train_tf = v2.Compose([v2.RandomResizedCrop(32), v2.RandomHorizontalFlip(), *_pil_tail(CIFAR_MEAN, CIFAR_STD)])
            eval_tf = v2.Compose([v2.Resize(32), v2.CenterCrop(32), *_pil_tail(CIFAR_MEAN, CIFAR_STD)])
        else:
            # Native 64x64: CIFAR-style crop with padding + flip; the test image as it is.
            train_tf = v2.Compose([v2.Resize(64), v2.CenterCrop(64), v2.RandomCrop(64, padding=4),
                                   v2.RandomHorizontalFlip(), *_pil_tail(CIFAR_MEAN, CIFAR_STD)])
            eval_tf = v2.Compose([v2.Resize(64), v2.CenterCrop(64), *_pil_tail(CIFAR_MEAN, CIFAR_STD)])
        return _file_bundle(name="tinyimagenet", classes=self._names(root, wnids), train=train, val=val,
                            train_tf=train_tf, eval_tf=eval_tf, input_size=s, mean=CIFAR_MEAN, std=CIFAR_STD,
                            on_bad_image=p.on_bad_image, root=root)

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

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        image_size: int = 224
        on_bad_image: Literal["fail", "skip"] = "fail"

    layout = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG (ImageFolder), same class folders"

    @classmethod
    def problem(cls, root: Path) -> str | None:
        for split in ("train", "val"):
            if not (root / split).is_dir():
                return f"lacks {split}/"
        return None

    def build(self, p: Any, root: Path | None) -> DataBundle:
        assert root is not None
        prob = self.problem(root)
        if prob:
            raise self.malformed(root, prob)
        classes = _class_dirs(root / "train")
        val_classes = _class_dirs(root / "val")
        if not classes:
            raise self.malformed(root, "has no class folders in train/")
        if val_classes != classes:
            raise self.malformed(root, f"has {len(classes)} class folders in train/ but {len(val_classes)} "
                                       "different ones in val/")
        train = image_folder_samples(root / "train", classes)
        val = image_folder_samples(root / "val", classes)
        if not train or not val:
            raise self.malformed(root, f"has {len(train)} train and {len(val)} val images")
        train_tf, eval_tf = _imagenet_transforms(p.image_size)
        return _file_bundle(name=self.name, classes=classes, train=train, val=val, train_tf=train_tf,
                            eval_tf=eval_tf, input_size=p.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            on_bad_image=p.on_bad_image, root=root)


def _imagenet_transforms(size: int) -> tuple[Any, Any]:
    if size < 8:
        raise UserError(f"image_size must be >= 8, got {size}")
    resize = round(size * 256 / 224)  # 256 for 224, the usual ratio otherwise
    train_tf = v2.Compose([v2.RandomResizedCrop(size), v2.RandomHorizontalFlip(), *_pil_tail(IMAGENET_MEAN, IMAGENET_STD)])
    eval_tf = v2.Compose([v2.Resize(resize), v2.CenterCrop(size), *_pil_tail(IMAGENET_MEAN, IMAGENET_STD)])
    return train_tf, eval_tf


INAT_LEVELS = ("kingdom", "phylum", "class", "order", "family", "genus")


@register_dataset("inat21")
class INat21(DatasetDef):
    """iNaturalist 2021 in torchvision's layout: train = 2021_train_mini, val = 2021_valid (10,000 species)."""

    @dataclass(frozen=True)
    class Params:
        root: str | None = None
        download: bool = False
        image_size: int = 224
        superclass_level: Literal["kingdom", "phylum", "class", "order", "family", "genus"] = "class"
        on_bad_image: Literal["fail", "skip"] = "fail"

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
            prob = self.problem(root)
            if prob:
                raise self.malformed(root, prob)  # before torchvision, which would create the root
        splits = {}
        for v in (self.train_version, self.val_version):
            try:
                splits[v] = INaturalist(str(root), version=v, download=p.download)
            except RuntimeError as e:  # torchvision's layout checks (folder naming, numbering)
                raise self.malformed(root, f"is not readable as {v}: {_one_line(e)}") from None
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
        train_tf, eval_tf = _imagenet_transforms(p.image_size)
        return _file_bundle(name=self.name, classes=classes, train=self._samples(tr), val=self._samples(va),
                            train_tf=train_tf, eval_tf=eval_tf, input_size=p.image_size, mean=IMAGENET_MEAN,
                            std=IMAGENET_STD, on_bad_image=p.on_bad_image, root=root, superclasses=supers,
                            superclass_names=names)

    @staticmethod
    def _samples(ds: Any) -> list[tuple[str, int]]:
        return [(os.path.join(ds.root, ds.all_categories[c], f), c) for c, f in sorted(ds.index) if _is_image(f)]


__all__ = [
    "DATASETS", "DataBundle", "DatasetDef", "ImageFileDataset", "InMemory", "TensorImageDataset",
    "build_dataset", "describe_datasets", "make_synthetic", "read_idx", "register_dataset", "resolve_root",
    "tensor_transform",
]
