"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) computed on the fly from a test split: pure functions
of uint8 images, a severity and a seed.

The ten corruptions that need no extra data and no ImageMagick: Gaussian, shot and impulse noise, defocus and
Gaussian blur, contrast, brightness, saturate, JPEG and pixelate. Motion blur (ImageMagick's kernel), fog (a
plasma fractal whose draws differ by implementation), frost (photographs shipped with ImageNet-C) and the
rest are left out rather than approximated. Severities 1-5 take the constants of the benchmark at the image's
size: CIFAR-10-C for sides up to 32 (Fashion-MNIST's 28 included), Tiny-ImageNet-C up to 64, ImageNet-C above.
Severity 0 is the identity. Each (corruption, severity) draws its noise from its own seeded generator on the
CPU, so a corrupted test set is the same on every machine and device.

As in the reference code, an image is corrupted in [0, 1] and stored back as uint8 by truncation (np.uint8).
Grey images (one channel): brightness adds to the grey value (the reference's grey branch); saturate turns a
grey image into an RGB one in the reference, which a one-channel model cannot take, so it is skipped there.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# name -> constants per scale (cifar, tin, in), severities 1..5
CONSTANTS: dict[str, dict[str, list]] = {
    "gaussian_noise": {"cifar": [0.04, 0.06, .08, .09, .10], "tin": [0.04, 0.08, .12, .15, .18],
                       "in": [.08, .12, 0.18, 0.26, 0.38]},
    "shot_noise": {"cifar": [500, 250, 100, 75, 50], "tin": [250, 100, 50, 30, 15], "in": [60, 25, 12, 5, 3]},
    "impulse_noise": {"cifar": [.01, .02, .03, .05, .07], "tin": [.01, .02, .05, .08, .14],
                      "in": [.03, .06, .09, 0.17, 0.27]},
    "defocus_blur": {"cifar": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
                     "tin": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
                     "in": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]},
    "gaussian_blur": {"cifar": [.4, .6, 0.7, .8, 1], "tin": [.5, .75, 1, 1.25, 1.5], "in": [1, 2, 3, 4, 6]},
    "contrast": {"cifar": [.75, .5, .4, .3, 0.15], "tin": [.4, .3, .2, .1, 0.05], "in": [0.4, .3, .2, .1, .05]},
    "brightness": {"cifar": [.05, .1, .15, .2, .3], "tin": [.1, .2, .3, .4, .5], "in": [.1, .2, .3, .4, .5]},
    "saturate": {"cifar": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
                 "tin": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
                 "in": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]},
    "jpeg_compression": {"cifar": [80, 65, 58, 50, 40], "tin": [65, 58, 50, 40, 25], "in": [25, 18, 15, 10, 7]},
    "pixelate": {"cifar": [0.95, 0.9, 0.85, 0.75, 0.65], "tin": [0.9, 0.8, 0.7, 0.6, 0.5],
                 "in": [0.6, 0.5, 0.4, 0.3, 0.25]},
}
CORRUPTIONS = tuple(CONSTANTS)  # the order of harness.metrics.CORRUPTIONS (a test checks)
SEVERITIES = (1, 2, 3, 4, 5)


def scale_of(size: int) -> str:
    """Which benchmark's constants an image side takes: cifar (<= 32), tin (<= 64), in (larger)."""
    return "cifar" if size <= 32 else "tin" if size <= 64 else "in"


def available(channels: int) -> tuple[str, ...]:
    """The corruptions defined for images of `channels` channels (saturate needs colour)."""
    return CORRUPTIONS if channels == 3 else tuple(c for c in CORRUPTIONS if c != "saturate")


def corrupt(images: Tensor, name: str, severity: int, *, seed: int = 0) -> Tensor:
    """`images` (N, C, H, W) uint8 on any device -> the same shape and dtype, corrupted; severity 0: unchanged.
    The noise of (name, severity) comes from a CPU generator seeded with (seed, corruption, severity)."""
    if name not in CONSTANTS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    if severity == 0:
        return images
    if severity not in SEVERITIES:
        raise ValueError(f"severity is {severity!r}; allowed: 0 to 5")
    if name == "saturate" and images.shape[1] != 3:
        raise ValueError("saturate needs RGB images")
    c = CONSTANTS[name][scale_of(max(images.shape[-2:]))][severity - 1]
    gen = torch.Generator().manual_seed(seed * 1000 + CORRUPTIONS.index(name) * 10 + severity)
    x = images.detach().cpu().double() / 255.0                                   # (N, C, H, W) in [0, 1]
    if name in ("jpeg_compression", "pixelate"):
        return _pil(images.detach().cpu(), name, c).to(images.device)
    out = _FLOAT[name](x, c, gen)
    return (out.clamp(0, 1) * 255).to(torch.uint8).to(images.device)              # truncation, as np.uint8


def _gaussian_noise(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    return x + torch.randn(x.shape, generator=gen, dtype=x.dtype) * c


def _shot_noise(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    return torch.poisson(x * c, generator=gen) / c


def _impulse_noise(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    # skimage's 's&p': each value is replaced with probability `amount`, by 1 or 0 with equal chance
    flip = torch.rand(x.shape, generator=gen, dtype=x.dtype) < c
    salt = torch.rand(x.shape, generator=gen, dtype=x.dtype) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


def gaussian_kernel1d(sigma: float, radius: int) -> Tensor:
    """scipy.ndimage's normalised Gaussian taps on [-radius, radius]."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _gaussian_blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    # skimage.filters.gaussian: scipy's gaussian_filter, truncate 4, mode 'nearest', per channel
    radius = int(4.0 * sigma + 0.5)
    k = gaussian_kernel1d(sigma, radius)
    n, ch, h, w = x.shape
    y = x.reshape(n * ch, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, ch, h, w)


def disk(radius: float, alias_blur: float) -> Tensor:
    """The reference's anti-aliased disk: a normalised disk on a 17x17 grid (wider for radius > 8), blurred
    by OpenCV's GaussianBlur (3x3, or 5x5 for large radii; reflect-101 border)."""
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).double()
    d = d / d.sum()
    g = gaussian_kernel1d(alias_blur, ksize // 2)
    pad = ksize // 2
    d = F.pad(d[None, None], (pad, pad, pad, pad), mode="reflect")
    d = F.conv2d(F.conv2d(d, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return d[0, 0]


def _defocus_blur(x: Tensor, c: tuple[float, float], gen: torch.Generator) -> Tensor:
    k = disk(*c)                                                                   # (K, K), symmetric
    pad = k.shape[0] // 2
    n, ch, h, w = x.shape
    y = x.reshape(n * ch, 1, h, w)
    if pad >= min(h, w):  # reflect-101 needs the pad below the side: repeat the reflection
        y = F.pad(y, (pad, pad, pad, pad), mode="circular")
    else:
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")                         # OpenCV's default border
    return F.conv2d(y, k.view(1, 1, *k.shape)).reshape(n, ch, h, w)


def _contrast(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)                                       # per image and channel
    return (x - means) * c + means


def _brightness(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    if x.shape[1] != 3:
        return x + c
    # HSV's V += c with H and S kept: RGB scales by V'/V; black (V = 0, S = 0) becomes grey V'
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-300), v2.expand_as(x))


def _saturate(x: Tensor, c: tuple[float, float], gen: torch.Generator) -> Tensor:
    # HSV's S -> clip(S * a + b) with H and V kept: each channel is V - (V - channel) * S'/S; a grey pixel has
    # hue 0 (red), so it becomes (V, V (1 - S'), V (1 - S'))
    v = x.amax(dim=1, keepdim=True)
    mn = x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - mn) / v.clamp_min(1e-300), torch.zeros_like(v))
    s2 = (s * c[0] + c[1]).clamp(0, 1)
    coloured = v - (v - x) * s2 / s.clamp_min(1e-300)
    grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    return torch.where(s > 0, coloured, grey)


def _pil(images: Tensor, name: str, c: float) -> Tensor:
    from PIL import Image

    arr = images.permute(0, 2, 3, 1).numpy()                                       # (N, H, W, C)
    out = np.empty_like(arr)
    h, w = arr.shape[1:3]
    for i, a in enumerate(arr):
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        if name == "jpeg_compression":
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=int(c))
            img = Image.open(buf)
            img.load()
        else:
            img = img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        b = np.asarray(img)
        out[i] = b[..., None] if b.ndim == 2 else b
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


_FLOAT = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
          "gaussian_blur": _gaussian_blur, "defocus_blur": _defocus_blur, "contrast": _contrast,
          "brightness": _brightness, "saturate": _saturate}
assert set(_FLOAT) | {"jpeg_compression", "pixelate"} == set(CORRUPTIONS)
