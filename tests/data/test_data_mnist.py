"""fashion_mnist (harness/data/mnist.py): IDX files in both layouts, plain or gzipped, the Debian package's
folder, damaged files, the `train_per_class` subset, and the shipped sweeps/fashion_mnist.yaml."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import check_items, fashion_fixture, one_line_error, write_idx

from harness.config.resolve import resolve_trial
from harness.config.selection import MIN_PER_CLASS
from harness.config.sweep_file import load_sweep
from harness.data import FASHION_MEAN, FashionMNIST, build_dataset, check_dataset, read_idx
from harness.data.mnist import DEBIAN_FASHION_MNIST
from harness.errors import UserError
from harness.train.splits import per_class_holdout


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


# --- train_per_class: the subset ------------------------------------------------------------------

def first_n_by_hand(labels: np.ndarray, n: int) -> np.ndarray:
    """The documented subset, computed without the code under test: for each class its first n positions
    in file order, then all of them in file order."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)]))


def subset_fixture(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Like fashion_fixture, but with 4 to 9 shuffled training images per class (so 'first n per class' is
    not 'the first 10 n images'), gzipped."""
    labels = rng.permutation(np.concatenate([np.full(4 + c % 6, c) for c in range(10)]))
    data = {"train-images-idx3-ubyte": rng.integers(0, 256, (len(labels), 28, 28)),
            "train-labels-idx1-ubyte": labels,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28)),
            "t10k-labels-idx1-ubyte": np.array([9, 0, 3, 3, 1, 5, 5])}
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in data.items():
        write_idx(folder / name, arr, compress=True)
    return data


@pytest.mark.parametrize("n", [1, 3, 4])
def test_train_per_class_takes_the_first_n_of_each_class_in_file_order(tmp_path, n):
    data = subset_fixture(tmp_path, np.random.default_rng(5))
    labels = data["train-labels-idx1-ubyte"]
    want = first_n_by_hand(labels, n)
    assert len(want) == 10 * n and not np.array_equal(want, np.arange(10 * n))  # the fixture discriminates
    b = build_dataset("fashion_mnist", {"root": str(tmp_path), "train_per_class": n})
    np.testing.assert_array_equal(b.memory.train_y.numpy(), labels[want])
    np.testing.assert_array_equal(b.memory.train_x[:, 0].numpy(), data["train-images-idx3-ubyte"][want])
    assert np.bincount(b.memory.train_y.numpy(), minlength=10).tolist() == [n] * 10
    assert b.train_labels.tolist() == labels[want].tolist() and len(b.train) == len(b.train_eval) == 10 * n
    # the evaluation split is the whole test file, whatever the subset
    np.testing.assert_array_equal(b.memory.val_x[:, 0].numpy(), data["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.memory.val_y.numpy(), data["t10k-labels-idx1-ubyte"])


def test_train_per_class_zero_is_every_image(tmp_path):
    data = subset_fixture(tmp_path, np.random.default_rng(6))
    b = build_dataset("fashion_mnist", {"root": str(tmp_path), "train_per_class": 0})
    np.testing.assert_array_equal(b.memory.train_y.numpy(), data["train-labels-idx1-ubyte"])
    assert b.memory.train_x.shape[0] == len(data["train-labels-idx1-ubyte"]) == 61


def test_train_per_class_bad_values_are_one_line(tmp_path):
    subset_fixture(tmp_path, np.random.default_rng(7))  # the smallest classes (0, 6) have 4 images
    with pytest.raises(UserError) as e:  # more than some class has: refused, not a silent imbalance
        build_dataset("fashion_mnist", {"root": str(tmp_path), "train_per_class": 5})
    one_line_error(e, "train_per_class 5", "4 training images of class 0 ('T-shirt/top')",
                   "train-labels-idx1-ubyte.gz", "allowed: 0 (every image) or 1..4")
    # a negative count is refused by the cheap check a sweep runs before it writes anything
    with pytest.raises(UserError) as e:
        check_dataset("fashion_mnist", {"root": str(tmp_path), "train_per_class": -1})
    one_line_error(e, "fashion_mnist", "train_per_class must be >= 0", "got -1")
    for bad in (2.5, True, "10"):  # strict types, through the one parameter validator
        with pytest.raises(UserError) as e:
            build_dataset("fashion_mnist", {"root": str(tmp_path), "train_per_class": bad})
        one_line_error(e, "fashion_mnist", "train_per_class", "a whole number")


def test_train_per_class_is_in_the_trial_key():
    keys = {n: resolve_trial(method="ce", dataset="fashion_mnist", seed=0,
                             dataset_params={"train_per_class": n} if n is not None else None)
            for n in (None, 0, 500, 600)}
    assert keys[None].key_dict()["dataset_params"]["train_per_class"] == 0
    assert keys[500].key_dict()["dataset_params"]["train_per_class"] == 500
    assert keys[None].key() == keys[0].key()  # the default, given or not, is one trial
    assert len({keys[n].key() for n in (0, 500, 600)}) == 3


def read_idx_by_hand(path: Path) -> np.ndarray:
    """A gzipped IDX file with numpy alone: magic (type 0x08, ndim), ndim big-endian sizes, then the bytes."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_subset_is_the_first_n_of_each_class(monkeypatch, tmp_path):
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path))
    images = read_idx_by_hand(DEBIAN_FASHION / "train-images-idx3-ubyte.gz")
    labels = read_idx_by_hand(DEBIAN_FASHION / "train-labels-idx1-ubyte.gz")
    want = first_n_by_hand(labels, 500)  # the shipped sweep's subset
    b = build_dataset("fashion_mnist", {"train_per_class": 500})
    assert b.memory.train_x.shape == (5000, 1, 28, 28)
    assert b.memory.train_y.bincount().tolist() == [500] * 10
    np.testing.assert_array_equal(b.memory.train_y.numpy(), labels[want])
    np.testing.assert_array_equal(b.memory.train_x[:, 0].numpy(), images[want])
    # the classes are interleaved in the file, so the first 500 of each lie in its first few thousand
    assert want[-1] < 6000
    np.testing.assert_array_equal(b.memory.val_y.numpy(), read_idx_by_hand(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"train_per_class": 6001})
    one_line_error(e, "6000 training images of class", "allowed: 0 (every image) or 1..6000")


# --- sweeps/fashion_mnist.yaml ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_fashion_mnist_sweep_is_seven_methods_times_three_seeds_on_the_documented_subset():
    sweep = load_sweep(REPO / "sweeps" / "fashion_mnist.yaml")
    assert sweep.name == "fashion_mnist" and len(sweep.trials) == 21 and len({t.key() for t in sweep.trials}) == 21
    assert sorted((t.method, t.seed) for t in sweep.trials) == sorted(
        (m, s) for m in ("ce", "ls", "tfkd", "cskd", "pskd", "ols", "zipf") for s in (0, 1, 2))
    assert {(t.dataset, t.model) for t in sweep.trials} == {("fashion_mnist", "tiny_cnn")}
    assert {t.dataset_params["train_per_class"] for t in sweep.trials} == {500}
    assert {(t.train.epochs, t.train.protocol, t.train.holdout) for t in sweep.trials} == {(10, "clean", 0.1)}
    assert (sweep.resources.cpus_per_trial, sweep.resources.max_concurrent) == (1, 2)
    # 10% of each class's 500 held out: 50 selection images per class, enough for the selection diagnosis
    held = per_class_holdout(torch.full((10,), 500), 0.1)
    assert held.tolist() == [50] * 10 and int(held.min()) >= MIN_PER_CLASS
    header = "\n".join(line for line in (REPO / "sweeps" / "fashion_mnist.yaml").read_text().splitlines()
                       if line.startswith("#"))
    assert "tfbench run sweeps/fashion_mnist.yaml" in header and "500" in header and "10 epochs" in header
