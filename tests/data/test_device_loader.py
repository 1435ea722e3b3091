"""The device path of file-based sets (harness.data.fast.DeviceLoader over `bundle.files`): workers hand over
uint8 images brought to size, the crop with padding, flip and normalisation run batched on the device. Checked
against torchvision's own float pipeline (v1 Resize/CenterCrop/ToTensor/Normalize) on the same files, and
against the uint8 pixels read with PIL and numpy for the augmentation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import bad_image_tree, tiny_fixture
from PIL import Image
from torchvision import transforms as T

from harness.config.resolve import resolve_trial
from harness.data import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, build_dataset
from harness.data.fast import DeviceLoader
from harness.train.loop import build_rig

# odd sizes and modes: landscape, portrait, smaller than the crop, grey, palette, RGBA (a PNG)
SHAPES = [((40, 57), "RGB"), ((90, 23), "RGB"), ((20, 20), "RGB"), ((64, 48), "L"), ((33, 70), "P"),  # P and RGBA as PNG
          ((50, 50), "RGBA")]


def photo_tree(root: Path) -> None:
    """ImageNet layout, two classes, every image a different size and mode; smooth content so JPEG is lossy
    in the usual way."""
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01", "n02")):
            for k, ((h, w), mode) in enumerate(SHAPES):
                small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((w, h), Image.BICUBIC).convert(mode)
                ext = "png" if mode in ("RGBA", "P") else "JPEG"
                path = root / split / wnid / f"{wnid}_{c}{k}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)


def reference(path: str, tf: T.Compose) -> torch.Tensor:
    with open(path, "rb") as f:
        return tf(Image.open(f).convert("RGB"))


def batches(ds, *, mean, std, batch_size=4, workers=0, **aug) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                     persistent_workers=workers > 0)
    xs, ys, ids = zip(*DeviceLoader(dl, device="cpu", mean=mean, std=std, **aug), strict=True)
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


@pytest.mark.parametrize("size", [32, 24])
def test_evaluation_batches_equal_torchvisions_float_pipeline(tmp_path, size):
    photo_tree(tmp_path)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": size})
    resize = round(size * 256 / 224)
    tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for split in ("val", "train_eval"):
        ds = getattr(b.files, split)
        assert ds[0][0].dtype == torch.uint8  # what crosses to the device
        x, y, idx = batches(ds, mean=b.mean, std=b.std)
        want = torch.stack([reference(p, tf) for p, _ in ds.samples])
        assert x.dtype == torch.float32 and x.shape == (len(ds), 3, size, size)
        torch.testing.assert_close(x, want, rtol=0, atol=1e-5)
        assert y.tolist() == [label for _, label in ds.samples] and idx.tolist() == list(range(len(ds)))
    # and the torchvision path of the bundle (the float splits) gives the same numbers
    torch.testing.assert_close(torch.stack([b.val[i][0] for i in range(len(b.val))]),
                               batches(b.files.val, mean=b.mean, std=b.std)[0], rtol=0, atol=1e-5)


def test_workers_give_the_same_batches(tmp_path):
    photo_tree(tmp_path)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16})
    x0, y0, i0 = batches(b.files.val, mean=b.mean, std=b.std, batch_size=5)
    x1, y1, i1 = batches(b.files.val, mean=b.mean, std=b.std, batch_size=5, workers=1)
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)


def test_training_crop_and_flip_on_the_device(tmp_path):
    """Tiny ImageNet at 64: Resize + CenterCrop in the worker, then RandomCrop(64, padding=4) + flip batched on
    the device: each image is one of the 9 x 9 x 2 crops of its zero-padded raw pixels (read with PIL and numpy
    here), drawn from the loader's generator."""
    tiny_fixture(tmp_path, val_layout="official")
    b = build_dataset("tinyimagenet", {"root": str(tmp_path), "image_size": 64})
    assert (b.files.crop_padding, b.files.flip) == (4, True)
    mean, std = np.array(CIFAR_MEAN)[:, None, None], np.array(CIFAR_STD)[:, None, None]

    def epoch(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return batches(b.files.train, mean=b.mean, std=b.std, crop_padding=4, flip=True, generator=gen)[0]

    x = epoch(0)
    raw = (x.double().numpy() * std + mean) * 255  # back to pixel values
    assert np.abs(raw - raw.round()).max() < 1e-3
    drawn = []
    for i, (path, _) in enumerate(b.files.train.samples):
        with open(path, "rb") as f:
            pixels = np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)  # (3, 64, 64): already 64x64
        padded = np.pad(pixels, ((0, 0), (4, 4), (4, 4)))
        found = [(oy, ox, fl) for oy in range(9) for ox in range(9) for fl in (False, True)
                 if np.array_equal((padded[:, oy:oy + 64, ox:ox + 64])[:, :, ::-1 if fl else 1], raw[i].round())]
        assert len(found) >= 1, f"image {i} is no padded crop of its file"
        drawn.append(found[0])
    assert len(set(drawn)) > 1 and {fl for _, _, fl in drawn} == {False, True}  # drawn per sample, not per batch
    assert torch.equal(epoch(0), x) and not torch.equal(epoch(1), x)  # the generator's draws


def test_skip_keeps_its_mask_on_the_device_path(tmp_path):
    bad = bad_image_tree(tmp_path)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16, "on_bad_image": "skip"})
    x, y, idx = batches(b.files.train, mean=b.mean, std=b.std, batch_size=4, workers=1)
    assert idx.tolist() == [0, 2, 2, 3] and y.tolist() == [0, 1, 1, 1]  # the bad file 1 -> the next sample
    assert b.skipped_images == 1 and b.skipped_files() == [str(bad)]  # seen by a worker, counted here
    assert b.train[1][2] == 2 and b.skipped_images == 1  # one mask for the float and uint8 twins


def test_trial_loaders_take_the_device_path(tmp_path):
    """build_rig's loaders on a file set: the device path by default (normalised float batches, the
    evaluation split equal to the float path's), the torchvision path with train.fast_path false."""
    photo_tree(tmp_path)
    rigs = {fast: build_rig(resolve_trial(method="ce", dataset="imagenet", model="tiny_cnn", seed=0,
                                          dataset_params={"root": str(tmp_path), "image_size": 16},
                                          train={"epochs": 1, "batch_size": 4, "fast_path": fast}))
            for fast in (True, False)}
    for fast, r in rigs.items():
        x, y, idx = next(iter(r.loaders.batches()))
        assert x.dtype == torch.float32 and x.shape == (4, 3, 16, 16) and idx.dtype == torch.int64
        assert isinstance(r.loaders.test.loader.dataset, type(r.bundle.val))
        assert (r.loaders.test.loader.dataset is r.bundle.files.val) == fast
    dev, tv = (torch.cat([x for x, _, _ in rigs[f].loaders.test]) for f in (True, False))
    torch.testing.assert_close(dev, tv, rtol=0, atol=1e-5)


def test_rejects_augmentation_without_generator():
    with pytest.raises(ValueError, match="generator"):
        DeviceLoader([], device="cpu", mean=(0.5,), std=(0.5,), flip=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_path_has_no_host_sync(tmp_path):
    tiny_fixture(tmp_path, val_layout="official")
    b = build_dataset("tinyimagenet", {"root": str(tmp_path), "image_size": 64})
    dl = torch.utils.data.DataLoader(b.files.train, batch_size=3, pin_memory=True)
    loader = DeviceLoader(dl, device="cuda", mean=b.mean, std=b.std, crop_padding=4, flip=True,
                          generator=torch.Generator().manual_seed(0), channels_last=True,
                          guard=lambda: _sync_error())
    got = list(loader)
    torch.cuda.synchronize()
    assert all(x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) for x, _, _ in got)


class _sync_error:
    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


class Interrupt(Exception):
    pass


def test_resume_on_the_device_path_equals_uninterrupted(tmp_path):
    """The flips are drawn from the trial's loader generator (checkpointed), the resized crops in the main
    process (num_workers 0) from the global generator (checkpointed): a resumed trial repeats the epochs."""
    from harness.train.loop import train_trial

    photo_tree(tmp_path / "data")
    spec = resolve_trial(method="ce", dataset="imagenet", model="tiny_cnn", seed=0,
                         dataset_params={"root": str(tmp_path / "data"), "image_size": 16},
                         train={"epochs": 3, "batch_size": 5, "protocol": "paper", "device": "cpu"})

    def untimed(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]

    train_trial(spec, tmp_path / "whole", log=lambda s: None)

    def die_after_epoch_2(m):
        if m["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_trial(spec, tmp_path / "cut", report=die_after_epoch_2, log=lambda s: None)
    train_trial(spec, tmp_path / "cut", log=lambda s: None)
    assert untimed(tmp_path / "cut") == untimed(tmp_path / "whole")


def test_flip_alone_mirrors_exactly_the_drawn_samples():
    from harness.data.fast import apply_augment

    x = torch.arange(3 * 2 * 2 * 4, dtype=torch.uint8).view(3, 2, 2, 4)  # (B, C, H, W), every pixel distinct
    draws = torch.tensor([[0, 0, 1], [0, 0, 0], [0, 0, 1]])
    out = apply_augment(x, draws, crop_padding=0).numpy()
    want = x.numpy().copy()
    want[[0, 2]] = want[[0, 2]][..., ::-1]
    assert np.array_equal(out, want)
