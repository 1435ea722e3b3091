"""The common corruptions against independent computations: scipy's filters, the standard library's colorsys,
the formulas of Hendrycks & Dietterich's reference code written out; severity 0 is the identity."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from scipy import ndimage

from harness import metrics
from harness.data.corruptions import CONSTANTS, CORRUPTIONS, available, corrupt, scale_of


def _images(n=4, c=3, size=16, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_the_vocabulary_names_every_corruption_in_the_same_order():
    assert CORRUPTIONS == metrics.CORRUPTIONS


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_the_identity_and_shapes_are_kept(name):
    x = _images()
    assert torch.equal(corrupt(x, name, 0), x)
    y = corrupt(x, name, 3)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(corrupt(x, name, 3), y)  # seeded: the same corrupted set every time
    assert not torch.equal(y, x)


def test_the_scale_follows_the_image_side_and_grey_images_skip_saturate():
    assert (scale_of(28), scale_of(32), scale_of(64), scale_of(224)) == ("cifar", "cifar", "tin", "in")
    assert "saturate" not in available(1) and available(3) == CORRUPTIONS
    with pytest.raises(ValueError, match="RGB"):
        corrupt(_images(c=1), "saturate", 1)


def test_contrast_is_the_reference_formula():
    x = _images()
    c = CONSTANTS["contrast"]["cifar"][1]
    a = x.double().numpy() / 255
    means = a.mean(axis=(2, 3), keepdims=True)
    expected = (np.clip((a - means) * c + means, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(corrupt(x, "contrast", 2).numpy(), expected)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_brightness_and_saturate_equal_colorsys_hsv(name):
    x = _images(n=2, size=6)
    severity = 5
    c = CONSTANTS[name]["cifar"][severity - 1]
    a = x.double().numpy() / 255
    expected = np.empty_like(a)
    for i in range(a.shape[0]):
        for r in range(a.shape[2]):
            for q in range(a.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*a[i, :, r, q])
                if name == "brightness":
                    v = min(max(v + c, 0), 1)
                else:
                    s = min(max(s * c[0] + c[1], 0), 1)
                expected[i, :, r, q] = colorsys.hsv_to_rgb(h, s, v)
    got = corrupt(x, name, severity).numpy().astype(int)
    # truncation to uint8 may differ by one level where float rounding lands on either side of an integer
    assert np.abs(got - (np.clip(expected, 0, 1) * 255).astype(np.uint8).astype(int)).max() <= 1


def test_gaussian_blur_equals_scipys_gaussian_filter():
    x = _images(size=20)
    sigma = CONSTANTS["gaussian_blur"]["cifar"][4]
    a = x.double().numpy() / 255
    expected = ndimage.gaussian_filter(a, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    got = corrupt(x, "gaussian_blur", 5).numpy().astype(int)
    assert np.abs(got - (np.clip(expected, 0, 1) * 255).astype(np.uint8)).max() <= 1


def test_defocus_blur_equals_the_reference_disk_through_scipy():
    x = _images(size=20)
    radius, alias = CONSTANTS["defocus_blur"]["cifar"][3]
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    d /= d.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias ** 2))
    g /= g.sum()
    kernel = ndimage.correlate(d, np.outer(g, g), mode="mirror")   # OpenCV's GaussianBlur, reflect-101 border
    a = x.double().numpy() / 255
    expected = np.stack([[ndimage.correlate(a[i, ch], kernel, mode="mirror") for ch in range(3)]
                         for i in range(len(a))])
    got = corrupt(x, "defocus_blur", 4).numpy().astype(int)
    assert np.abs(got - (np.clip(expected, 0, 1) * 255).astype(np.uint8)).max() <= 1


def test_noise_has_the_reference_strength():
    x = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    c = CONSTANTS["gaussian_noise"]["cifar"][4]
    diff = corrupt(x, "gaussian_noise", 5).double() / 255 - 128 / 255
    assert diff.std().item() == pytest.approx(c, rel=0.05)
    amount = CONSTANTS["impulse_noise"]["cifar"][4]
    y = corrupt(x, "impulse_noise", 5)
    flipped = ((y == 0) | (y == 255)).double().mean().item()
    assert flipped == pytest.approx(amount, rel=0.1)
