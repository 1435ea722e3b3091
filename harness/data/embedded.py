"""The datasets that need no files: scikit-learn's bundled digits (the quickstart's) and a generated set.

Both live in memory (the fast path) and normalise with their own training split's per-channel mean and
std; neither augments by default (digits are not flip-invariant and fill their 8x8 frame).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.data.registry import DataBundle, DatasetDef, in_memory_bundle, register_dataset
from harness.errors import UserError

if TYPE_CHECKING:  # torch only when the data is built: listing and checking data sets imports none of it
    from torch import Tensor



def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 pixels scaled to [0, 1] (float64 for a stable sum)."""
    import torch

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

        def __post_init__(self) -> None:  # in the parameters, so a trial is refused when it is resolved
            if not 0 < self.val_fraction < 1:
                raise UserError(f"dataset 'digits': val_fraction must be in (0, 1), got {self.val_fraction}")
            if self.split_seed < 0 or self.crop_padding < 0:
                raise UserError(f"dataset 'digits': split_seed and crop_padding must be >= 0, got "
                                f"{self.split_seed} and {self.crop_padding}")

    layout = "bundled with scikit-learn (sklearn.datasets.load_digits)"
    needs_root = False
    in_memory = True
    split_seed_param = "split_seed"
    known_classes = 10
    default_model, default_epochs = "tiny_cnn", 30  # converges in a few dozen epochs

    @classmethod
    def train_images(cls, p: Any) -> int | None:
        return 1797 - math.ceil(1797 * p.val_fraction)  # scikit-learn's train_test_split rounds the test share up

    def build(self, p: Any, root: Path | None) -> DataBundle:
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        # 0..16 grey levels -> 0..255, the uint8 range every in-memory dataset uses.
        x = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
        y = torch.from_numpy(d.target.astype(np.int64))
        tr, va = train_test_split(np.arange(len(y)), test_size=p.val_fraction, random_state=p.split_seed,
                                  stratify=d.target)
        tr, va = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
        mean, std = _channel_stats(x[tr])
        return in_memory_bundle(name="digits", classes=[str(c) for c in d.target_names], train_x=x[tr],
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

        def __post_init__(self) -> None:  # in the parameters, so a trial is refused when it is resolved
            for key in ("num_classes", "num_superclasses", "image_size", "channels", "train_per_class",
                        "val_per_class", "grid"):
                if getattr(self, key) < 1:
                    raise UserError(f"dataset 'synthetic': {key} must be >= 1, got {getattr(self, key)}")
            if self.num_superclasses > self.num_classes:
                raise UserError(f"dataset 'synthetic': num_superclasses ({self.num_superclasses}) must not exceed "
                                f"num_classes ({self.num_classes})")
            if self.max_shift < 0 or self.noise < 0 or self.seed < 0 or self.crop_padding < 0:
                raise UserError("dataset 'synthetic': max_shift, noise, seed and crop_padding must be >= 0")

    layout = "generated in memory (no files)"
    default_model, default_epochs = "tiny_cnn", 30  # converges in a few dozen epochs
    needs_root = False
    in_memory = True

    @classmethod
    def class_count(cls, p: Any) -> int | None:
        return p.num_classes

    @classmethod
    def train_images(cls, p: Any) -> int | None:
        return p.num_classes * p.train_per_class

    def build(self, p: Any, root: Path | None) -> DataBundle:
        data = make_synthetic(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)
                                 if f.name not in ("crop_padding", "flip")})
        tx, ty, vx, vy, supers = data
        mean, std = _channel_stats(tx)
        k = p.num_superclasses
        return in_memory_bundle(
            name="synthetic", classes=[f"s{supers[c]}_c{c}" for c in range(p.num_classes)],
            train_x=tx, train_y=ty, val_x=vx, val_y=vy, mean=mean, std=std, crop_padding=p.crop_padding,
            flip=p.flip, root=None, superclasses=supers, superclass_names=[f"super{s}" for s in range(k)])


def make_synthetic(*, num_classes: int, num_superclasses: int, image_size: int, channels: int,
                   train_per_class: int, val_per_class: int, super_scale: float, class_scale: float,
                   noise: float, max_shift: int, grid: int, seed: int
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
    """Pure generator of the synthetic set: (train_x, train_y, val_x, val_y, superclass of each class)."""
    import torch

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


__all__ = ["Digits", "Synthetic", "make_synthetic"]
