"""fashion_mnist (harness/data/mnist.py): IDX files in both layouts, plain or gzipped, the Debian package's
folder, and damaged files."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import check_items, fashion_fixture, one_line_error, write_idx

from harness.data import FASHION_MEAN, FashionMNIST, build_dataset, read_idx
from harness.data.mnist import DEBIAN_FASHION_MNIST
from harness.errors import UserError


@pytest.mark.parametrize("layout", ["gz", "torchvision_raw"])
def test_fashion_mnist_idx(tmp_path, layout):
    rng = np.random.default_rng(0)
    folder = tmp_path if layout == "gz" else tmp_path / "FashionMNIST" / "raw"
    data = fashion_fixture(folder, compress=layout == "gz", rng=rng)
    b = build_dataset("fashion_mnist", {"root": str(tmp_path)})
    assert (b.num_classes, b.in_chans, b.input_size, len(b.classes)) == (10, 1, 28, 10)
    assert b.memory is not None and b.memory.train_x.shape == (12, 1, 28, 28)
    # the tensors are the arrays written into the files, in file order
    np.testing.assert_array_equal(b.memory.train_x[:, 0].numpy(), data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.memory.val_x[:, 0].numpy(), data["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.memory.train_y.numpy(), data["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(b.memory.val_y.numpy(), data["t10k-labels-idx1-ubyte"])
    assert b.memory.train_x.dtype == torch.uint8 and b.memory.train_y.dtype == torch.int64
    check_items(b.train, n=12, shape=(1, 28, 28), num_classes=10)
    check_items(b.val, n=5, shape=(1, 28, 28), num_classes=10)
    x, y, _ = b.val[1]
    assert y == 0
    torch.testing.assert_close(x[0].double(), torch.from_numpy(
        (data["t10k-images-idx3-ubyte"][1] / 255 - FASHION_MEAN[0]) / b.std[0]), rtol=0, atol=1e-5)


def test_read_idx_plain_and_gzipped(tmp_path):
    rng = np.random.default_rng(3)
    images, labels = rng.integers(0, 256, (4, 5, 6)), np.array([9, 0, 2, 2])
    for compress in (False, True):
        write_idx(tmp_path / "img", images, compress=compress)
        write_idx(tmp_path / "lab", labels, compress=compress)
        suffix = ".gz" if compress else ""
        got = read_idx(tmp_path / f"img{suffix}", images=True)
        assert got.dtype == torch.uint8 and tuple(got.shape) == (4, 5, 6)
        np.testing.assert_array_equal(got.numpy(), images)
        got = read_idx(tmp_path / f"lab{suffix}", images=False)
        assert got.dtype == torch.int64 and got.tolist() == [9, 0, 2, 2]
    assert sorted(os.listdir(tmp_path)) == ["img", "img.gz", "lab", "lab.gz"]  # no decompressed copy left


def test_fashion_mnist_malformed(tmp_path):
    fashion_fixture(tmp_path, compress=False, rng=np.random.default_rng(0))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">I", 0x0801) + struct.pack(">I", 7) + b"\x00")  # 7 announced, 1 there
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(labels), "magic")
    labels.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, "t10k-labels-idx1-ubyte", "magic")
    write_idx(labels, np.array([1, 2, 3, 4, 10]), compress=False)  # a label outside 0..9
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "outside 0..9", "t10k-labels-idx1-ubyte")
    write_idx(labels, np.array([1, 2, 3]), compress=False)  # 5 images, 3 labels
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "5 images but 3 labels")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28)), compress=False)  # 2-D images
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, "t10k-images-idx3-ubyte")
    os.remove(labels)
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "t10k-labels-idx1-ubyte", "expected layout")


def test_fashion_mnist_damaged_gzip(tmp_path):
    fashion_fixture(tmp_path, compress=True, rng=np.random.default_rng(0))
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 12) + bytes(12))[:-6])  # truncated
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(gz))


def test_debian_package_folder_is_a_fallback_root(tmp_path, monkeypatch):
    """After the data home, the loader looks where Debian's package installs the files."""
    assert FashionMNIST.known_roots[0][0] == DEBIAN_FASHION_MNIST == "/usr/share/datasets/fashion-mnist"
    fake = tmp_path / "usr-share-datasets-fashion-mnist"
    data = fashion_fixture(fake, compress=True, rng=np.random.default_rng(0))
    monkeypatch.setattr(FashionMNIST, "known_roots", ((str(fake), "debian package dataset-fashion-mnist"),))
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path / "home"))  # empty data home: falls through
    b = build_dataset("fashion_mnist", {})
    assert b.root == str(fake)
    np.testing.assert_array_equal(b.memory.val_y.numpy(), data["t10k-labels-idx1-ubyte"])
    (tmp_path / "home" / "fashion_mnist").mkdir(parents=True)  # the data home, once present, wins
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {})
    one_line_error(e, str(tmp_path / "home" / "fashion_mnist"), "lacks")
    monkeypatch.setattr(FashionMNIST, "known_roots", ((str(tmp_path / "not-installed"), "debian"),))
    os.rmdir(tmp_path / "home" / "fashion_mnist")
    with pytest.raises(UserError) as e:  # neither exists: the error names both places
        build_dataset("fashion_mnist", {})
    one_line_error(e, str(tmp_path / "home" / "fashion_mnist"), "also looked in", str(tmp_path / "not-installed"))


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path))  # nothing there: falls through to the package
    b = build_dataset("fashion_mnist", {})
    assert Path(b.root) == DEBIAN_FASHION
    assert b.memory.train_x.shape == (60000, 1, 28, 28) and b.memory.val_x.shape == (10000, 1, 28, 28)
    assert b.memory.train_y.bincount().tolist() == [6000] * 10
    assert (b.memory.train_x.double() / 255).mean().item() == pytest.approx(FASHION_MEAN[0], abs=1e-3)
