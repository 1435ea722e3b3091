"""The dataset registry, the bundle every dataset builds, where each dataset looks, and the one factory.

`build_dataset(name, params) -> DataBundle`. A dataset is a `DatasetDef` subclass registered by name
(`@register_dataset("cifar10")`), with typed parameters (a frozen dataclass `Params`), a one-line
`layout` for errors and listings, and `build(params, root)`.

Where the data comes from (datasets with files), first match wins:
1. `params["root"]` (`--set dataset.root=...`), used as given, present or not;
2. the environment variable `TFBENCH_<NAME>_ROOT` (e.g. TFBENCH_CIFAR100_ROOT), used as given;
3. the data home's `<name>` folder: `$TFBENCH_DATA/<name>` when TFBENCH_DATA is set, otherwise the user
   cache `$XDG_CACHE_HOME/tfbench/data/<name>` (`~/.cache/tfbench/data/<name>` by default), so the data
   home never depends on where the package is installed;
4. fixed system folders a dataset knows (`DatasetDef.known_roots`: Fashion-MNIST's Debian package).
Of 3 and 4 the first that exists wins; when none does, the error names 3. `download: true` (cifar10,
cifar100, fashion_mnist, inat21) lets torchvision fetch the data into the chosen root; nothing is ever
downloaded otherwise. A missing or malformed root raises `UserError` with one line naming the root and
the layout expected there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import UserError, one_line  # one_line: what the families quote library errors with
from methods.params import check_params
from methods.registry import Registry
from methods.traits import HIGH, LOW, DataSet

if TYPE_CHECKING:  # torch only when the data is built: listing and checking data sets imports none of it
    from torch import Tensor
    from torch.utils.data import Dataset



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
class Uint8Files:
    """The device path of a file-based set: each split's images decoded and brought to size in DataLoader
    workers as uint8 (C, S, S), then cropped with padding, flipped and normalised on the device, batched
    (`harness.data.fast.DeviceLoader`). Same files, labels, indices and bad-file masks as the float splits."""

    train: Dataset
    val: Dataset
    train_eval: Dataset
    crop_padding: int          # random crop with this zero padding, on the device (0 = none)
    flip: bool                 # random horizontal flip, on the device


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
    val_labels: Tensor         # the evaluation split's labels (its size and class counts are reported)
    memory: InMemory | None
    root: str | None
    files: Uint8Files | None = None  # file-based sets: the uint8 splits of the device path
    summary: str | None = None       # what a set read from its data (`folder`): a trial states it when it starts

    @property
    def skipped_images(self) -> int:
        """Distinct undecodable files met so far (on_bad_image=skip); 0 for in-memory datasets."""
        return sum(int(m.sum()) for m in self._bad_masks())

    def skipped_files(self) -> list[str]:
        import torch

        from harness.data.common import ImageFileDataset

        out: list[str] = []
        for ds in (self.train, self.val):
            if isinstance(ds, ImageFileDataset):
                out += [ds.samples[i][0] for i in torch.nonzero(ds.bad).flatten().tolist()]
        return out

    def _bad_masks(self) -> list[Tensor]:
        # train and train_eval share one mask (same files), so count each mask once.
        from harness.data.common import ImageFileDataset

        masks: dict[int, Tensor] = {}
        for ds in (self.train, self.val, self.train_eval):
            if isinstance(ds, ImageFileDataset):
                masks[id(ds.bad)] = ds.bad
        return list(masks.values())


def in_memory_bundle(*, name: str, classes: list[str], train_x: Tensor, train_y: Tensor, val_x: Tensor,
                     val_y: Tensor, mean: tuple[float, ...], std: tuple[float, ...], crop_padding: int,
                     flip: bool, root: Path | None, superclasses: list[int] | None = None,
                     superclass_names: list[str] | None = None) -> DataBundle:
    """A bundle over uint8 tensors: the fast path's `memory` plus the torchvision path over the same pixels."""
    from harness.data.common import TensorImageDataset, tensor_transform

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
        train_labels=train_y, val_labels=val_y,
        memory=InMemory(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
                        crop_padding=int(crop_padding), flip=bool(flip)),
        root=str(root) if root is not None else None,
    )


def file_bundle(*, name: str, classes: list[str], train: list[tuple[str, int]], val: list[tuple[str, int]],
                train_geometry: list[Any], eval_geometry: list[Any], crop_padding: int, flip: bool, input_size: int,
                mean: tuple[float, ...], std: tuple[float, ...], on_bad_image: str, root: Path,
                superclasses: list[int] | None = None, superclass_names: list[str] | None = None,
                in_chans: int = 3) -> DataBundle:
    """A bundle over image files from each split's per-sample geometry (v2 ops on the PIL image) and the
    augmentation after it: the torchvision float splits and the device path's uint8 ones (`files`). Every
    split over the same files shares one bad-file mask (train, train_eval and their uint8 twins)."""
    import torch

    from harness.data.common import ImageFileDataset, file_transforms

    aug = dict(size=input_size, mean=mean, std=std)
    train_f, train_u8 = file_transforms(train_geometry, crop_padding=crop_padding, flip=flip, **aug)
    eval_f, eval_u8 = file_transforms(eval_geometry, crop_padding=0, flip=False, **aug)
    tr = ImageFileDataset(train, train_f, on_bad_image=on_bad_image)
    va = ImageFileDataset(val, eval_f, on_bad_image=on_bad_image)

    def twin(samples: list[tuple[str, int]], tf: Any, like: ImageFileDataset) -> ImageFileDataset:
        return ImageFileDataset(samples, tf, on_bad_image=on_bad_image, bad=like.bad)

    return DataBundle(
        name=name, num_classes=len(classes), in_chans=in_chans, input_size=input_size, classes=classes,
        superclasses=superclasses, superclass_names=superclass_names, mean=tuple(mean), std=tuple(std),
        train=tr, val=va, train_eval=twin(train, eval_f, tr),
        train_labels=torch.tensor([label for _, label in train], dtype=torch.int64),
        val_labels=torch.tensor([label for _, label in val], dtype=torch.int64),
        memory=None, root=str(root),
        files=Uint8Files(train=twin(train, train_u8, tr), val=twin(val, eval_u8, va),
                         train_eval=twin(train, eval_u8, tr), crop_padding=int(crop_padding), flip=bool(flip)),
    )


# --- the dataset definition and its parameters ----------------------------------------------------

class DatasetDef:
    """Base class of a registered dataset: its parameters, its layout, where it looks, how it loads."""

    name: ClassVar[str] = "?"
    Params: ClassVar[type]
    layout: ClassVar[str] = ""            # the expected on-disk layout, one line (for errors and listings)
    needs_root: ClassVar[bool] = True
    can_download: ClassVar[bool] = False
    in_memory: ClassVar[bool] = False
    # Fixed system folders where a package manager installs this dataset: (path, what installs it).
    known_roots: ClassVar[tuple[tuple[str, str], ...]] = ()
    # The parameter that seeds the data set's own train/evaluation split, if it draws one: with
    # train.split_per_seed it is offset by the trial seed like the holdout split (digits: split_seed).
    split_seed_param: ClassVar[str | None] = None
    # The class count when it is fixed before any file is read (None: read from the files). Why: a trial's
    # method parameters are checked against it once, when the trial is resolved, instead of on every worker.
    known_classes: ClassVar[int | None] = None

    # Likewise the training split's size, when fixed (the clean protocol's holdout must be smaller).
    known_train_images: ClassVar[int | None] = None

    # The data set's facts that a trial defaults from (harness/config/resolve.py) and that methods' presets
    # key on (`traits`). Why here and not in a table keyed by name: a new data set is one file and one import.
    default_model: ClassVar[str] = "cifar_preact_resnet18"  # when a sweep names no model
    default_epochs: ClassVar[int] = 200    # when neither the sweep file nor --epochs says
    holdout: ClassVar[float] = 0.1         # the clean protocol's validation split: a fraction, or images (>= 1)
    recipe: ClassVar[str] = "zipf"         # the official training recipe (harness/config/presets.py RECIPES)
    resolution: ClassVar[str] = LOW        # LOW or HIGH (methods/traits.py): what a method's presets key on

    # The hooks read from the class, before anything is built: classmethods. `build` is the one ordinary method.
    CLASS_HOOKS: ClassVar[tuple[str, ...]] = ("problem", "defaults", "fill_params", "class_count", "train_images",
                                              "env_var", "traits")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A hook of the wrong kind is one line when the class is defined, not a TypeError when it is first used."""
        super().__init_subclass__(**kwargs)
        for hook in cls.CLASS_HOOKS:
            if hook in vars(cls) and not isinstance(vars(cls)[hook], classmethod):
                raise UserError(f"dataset class {cls.__name__}: {hook} must be a @classmethod (the harness calls "
                                f"{cls.__name__}.{hook}(...) without an instance); see docs/datasets.md")
        if "build" in vars(cls) and isinstance(vars(cls)["build"], (classmethod, staticmethod)):
            raise UserError(f"dataset class {cls.__name__}: build must be an ordinary method, "
                            f"def build(self, p, root) -> DataBundle")
        if "Params" in vars(cls) and not dataclasses.is_dataclass(cls.Params):
            raise UserError(f"dataset class {cls.__name__}: Params must be a @dataclass(frozen=True)")

    @classmethod
    def traits(cls) -> DataSet:
        """The name and traits a method's `preset` sees."""
        return DataSet(cls.name, resolution=cls.resolution)

    @classmethod
    def defaults(cls, p: Any) -> dict[str, Any]:
        """The model, epochs and resolution class a trial with parameters `p` defaults to: the class attributes,
        unless the data set reads them from its data (`folder`: from its images' size). Read once, when a
        trial is resolved."""
        return {"model": cls.default_model, "epochs": cls.default_epochs, "resolution": cls.resolution}

    @classmethod
    def fill_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The resolved parameters, with any a data set fills itself (`folder`'s label from its root)."""
        return values

    @classmethod
    def class_count(cls, p: Any) -> int | None:
        """The class count with parameters `p`, when it is known without reading the data."""
        return cls.known_classes

    @classmethod
    def train_images(cls, p: Any) -> int | None:
        """The training split's size with parameters `p`, when it is known without reading the data."""
        return cls.known_train_images

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

    @classmethod
    @contextlib.contextmanager
    def fetching(cls, root: Path):
        """Around torchvision's download: a failure (offline, a proxy, a checksum) is one line naming the root
        and what to do, not urllib's traceback."""
        try:
            yield
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  whatever urllib, ssl or torchvision raised
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"dataset {cls.name!r}: download into {root} failed ({type(e).__name__}: {first}); "
                            f"offline, put the files there yourself (layout: {cls.layout}) and set download: "
                            f"false") from None

    @classmethod
    def require_layout(cls, root: Path) -> None:
        """The one-line error of `malformed` when `problem` finds the root's layout wrong."""
        what = cls.problem(root)
        if what:
            raise cls.malformed(root, what)


DATASETS = Registry("dataset", base=DatasetDef)


def make_dataset_params(cls: type[DatasetDef], values: dict[str, Any] | None) -> Any:
    """Build `cls.Params` from a plain dict through the one parameter validator (methods.params, as for
    methods' parameters): every unknown key and wrong type in one `UserError`."""
    resolved, problems = check_params(cls.Params, dict(values or {}))
    if problems:
        raise UserError(" | ".join(f"dataset {cls.name!r}: parameter {'.'.join(map(str, loc))}: {what}"
                                   for loc, what in problems))
    return cls.Params(**resolved)


# --- where each dataset looks -----------------------------------------------------------------

@dataclass(frozen=True)
class RootChoice:
    path: Path | None
    source: str                              # "param", "env TFBENCH_X_ROOT", "TFBENCH_DATA", "user cache", ...
    candidates: tuple[tuple[Path, str], ...] = ()  # every place looked at, in order (for messages, listings)


def data_home() -> tuple[Path, str]:
    """The folder holding `<name>/` per dataset, and where that choice came from."""
    env = os.environ.get("TFBENCH_DATA")
    if env:
        return Path(env).expanduser(), "TFBENCH_DATA"
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "tfbench" / "data", "user cache"


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
    candidates += [(Path(path), src) for path, src in cls.known_roots]
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
            "defaults": {"model": cls.default_model, "epochs": cls.default_epochs, "holdout": cls.holdout,
                         "recipe": cls.recipe, "resolution": cls.resolution}
            if vars(cls).get("defaults") is None else  # read from the data (`folder`): stated when a trial starts
            {"model": "from the data", "epochs": cls.default_epochs, "holdout": cls.holdout, "recipe": cls.recipe,
             "resolution": "from the data"},
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


__all__ = [
    "DATASETS", "HIGH", "LOW", "DataBundle", "DatasetDef", "InMemory", "RootChoice", "Uint8Files", "build_dataset",
    "check_dataset",
    "data_home", "describe_datasets", "file_bundle", "in_memory_bundle", "make_dataset_params",
    "one_line", "register_dataset", "resolve_root",
]
