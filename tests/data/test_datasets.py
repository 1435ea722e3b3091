"""Every dataset format on a fixture written here in the real on-disk format, plus the error paths."""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    FASHION_MEAN,
    ImageFileDataset,
    build_dataset,
    read_idx,
)
from harness.errors import UserError
from methods.registry import RegistryError

ROOT_VARS = [f"TFBENCH_{n.upper()}_ROOT" for n in DATASETS.names()] + ["TFBENCH_DATA"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ROOT_VARS:
        monkeypatch.delenv(var, raising=False)


def check_items(ds, *, n: int, shape: tuple[int, ...], num_classes: int) -> None:
    assert len(ds) == n
    for i in (0, n - 1):
        x, y, idx = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == shape
        assert isinstance(y, int) and 0 <= y < num_classes
        assert idx == i


def one_line_error(excinfo, *must_contain: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for s in must_contain:
        assert s in msg, (s, msg)
    return msg


# --- digits -----------------------------------------------------------------------------------

def test_digits_split_fixed_seeded_and_stratified():
    from sklearn.datasets import load_digits

    b = build_dataset("digits", {})
    assert (b.num_classes, b.in_chans, b.input_size) == (10, 1, 8)
    m = b.memory
    assert (len(m.train_y), len(m.val_y)) == (1437, 360)
    assert m.crop_padding == 0 and m.flip is False
    check_items(b.train, n=1437, shape=(1, 8, 8), num_classes=10)
    check_items(b.val, n=360, shape=(1, 8, 8), num_classes=10)
    assert torch.equal(b.train_labels, m.train_y)

    # the two splits are exactly the scikit-learn images, scaled 0..16 -> 0..255, each used once
    d = load_digits()
    ref = np.rint(d.images * 255 / 16).astype(np.uint8)
    ref_keys = sorted(img.tobytes() + bytes([t]) for img, t in zip(ref, d.target, strict=True))
    got = torch.cat([m.train_x, m.val_x])[:, 0].numpy()
    got_y = torch.cat([m.train_y, m.val_y]).numpy()
    assert sorted(img.tobytes() + bytes([int(t)]) for img, t in zip(got, got_y, strict=True)) == ref_keys
    # stratified: each class has ~20% of its images in val
    full = np.bincount(d.target, minlength=10)
    val_counts = np.bincount(m.val_y.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * full) <= 1)

    again = build_dataset("digits", {"split_seed": 0})
    assert torch.equal(again.memory.val_x, m.val_x) and torch.equal(again.memory.val_y, m.val_y)
    other = build_dataset("digits", {"split_seed": 1})
    assert not torch.equal(other.memory.val_x, m.val_x)
    smaller = build_dataset("digits", {"val_fraction": 0.5})
    assert abs(len(smaller.val) - 1797 / 2) <= 1

    # no augmentation by default: the train view is the eval view; normalisation by the train statistics
    x_tr, _, _ = b.train[7]
    x_ev, _, _ = b.train_eval[7]
    assert torch.equal(x_tr, x_ev)
    pix = m.train_x.double() / 255
    assert b.mean[0] == pytest.approx(pix.mean().item(), abs=1e-5)
    assert b.std[0] == pytest.approx(pix.std().item(), abs=1e-5)
    torch.testing.assert_close(x_ev.double(), (m.train_x[7].double() / 255 - b.mean[0]) / b.std[0],
                               rtol=0, atol=1e-5)


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_deterministic_with_superclass_structure():
    p = {"num_classes": 12, "num_superclasses": 3, "image_size": 12, "train_per_class": 30, "val_per_class": 15}
    a, b = build_dataset("synthetic", p), build_dataset("synthetic", p)
    assert torch.equal(a.memory.train_x, b.memory.train_x) and torch.equal(a.memory.val_x, b.memory.val_x)
    c = build_dataset("synthetic", {**p, "seed": 1})
    assert not torch.equal(a.memory.train_x, c.memory.train_x)
    assert (a.num_classes, a.in_chans, a.input_size) == (12, 3, 12)
    assert a.superclasses == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert len(a.superclass_names) == 3 and len(a.classes) == 12
    check_items(a.train, n=360, shape=(3, 12, 12), num_classes=12)
    check_items(a.val, n=180, shape=(3, 12, 12), num_classes=12)
    assert a.memory.train_x.dtype == torch.uint8 and a.memory.train_y.dtype == torch.int64

    # independent check in numpy: nearest class centroids separate the classes, and the nearest other
    # class is almost always from the same super-class (chance: 3 of 11)
    tx = a.memory.train_x.flatten(1).numpy() / 255.0
    vx = a.memory.val_x.flatten(1).numpy() / 255.0
    ty, vy = a.memory.train_y.numpy(), a.memory.val_y.numpy()
    cent = np.stack([tx[ty == k].mean(0) for k in range(12)])
    dist = ((vx[:, None, :] - cent[None]) ** 2).sum(-1)  # (M, C)
    assert (dist.argmin(1) == vy).mean() > 0.8
    dist[np.arange(len(vy)), vy] = np.inf
    sup = np.array(a.superclasses)
    assert (sup[dist.argmin(1)] == sup[vy]).mean() > 0.8
    # class prototypes: within a super-class closer than across
    cd = ((cent[:, None] - cent[None]) ** 2).sum(-1)
    same = sup[:, None] == sup[None]
    off = ~np.eye(12, dtype=bool)
    assert cd[same & off].max() < cd[~same].min()


def test_synthetic_bad_params():
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"num_superclasses": 30})
    one_line_error(e, "num_superclasses")
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"num_clases": 3})
    one_line_error(e, "num_clases", "did you mean 'num_classes'")
    with pytest.raises(UserError) as e:
        build_dataset("synthetic", {"noise": "high"})
    one_line_error(e, "noise", "float")


# --- Fashion-MNIST: IDX files -------------------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, *, compress: bool) -> None:
    magic = 0x0803 if arr.ndim == 3 else 0x0801   # 2051 images, 2049 labels (type 0x08 = ubyte)
    raw = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def fashion_fixture(folder: Path, *, compress: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(12) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 3, 3, 1]),
    }
    for name, arr in data.items():
        write_idx(folder / name, arr, compress=compress)
    return data


@pytest.mark.parametrize("layout", ["gz", "torchvision_raw"])
def test_fashion_mnist_idx(tmp_path, layout):
    rng = np.random.default_rng(0)
    folder = tmp_path if layout == "gz" else tmp_path / "FashionMNIST" / "raw"
    data = fashion_fixture(folder, compress=layout == "gz", rng=rng)
    b = build_dataset("fashion_mnist", {"root": str(tmp_path)})
    assert (b.num_classes, b.in_chans, b.input_size, len(b.classes)) == (10, 1, 28, 10)
    assert b.memory is not None and b.memory.train_x.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(b.memory.train_x[:, 0].numpy(), data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.memory.val_y.numpy(), data["t10k-labels-idx1-ubyte"])
    check_items(b.train, n=12, shape=(1, 28, 28), num_classes=10)
    check_items(b.val, n=5, shape=(1, 28, 28), num_classes=10)
    x, y, _ = b.val[1]
    assert y == 0
    torch.testing.assert_close(x[0].double(), torch.from_numpy(
        (data["t10k-images-idx3-ubyte"][1] / 255 - FASHION_MEAN[0]) / b.std[0]), rtol=0, atol=1e-5)
    if layout == "torchvision_raw":
        # torchvision's own IDX reader agrees with ours on the uncompressed files
        from torchvision.datasets.mnist import read_image_file, read_label_file

        assert torch.equal(read_image_file(str(folder / "train-images-idx3-ubyte")),
                           torch.from_numpy(np.array(read_idx(folder / "train-images-idx3-ubyte"))))
        assert torch.equal(read_label_file(str(folder / "t10k-labels-idx1-ubyte")),
                           torch.from_numpy(np.array(read_idx(folder / "t10k-labels-idx1-ubyte"))).long())


def test_fashion_mnist_malformed(tmp_path):
    fashion_fixture(tmp_path, compress=False, rng=np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">I", 0x0801) + struct.pack(">I", 7) + b"\x00")
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, "t10k-labels-idx1-ubyte")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, "t10k-labels-idx1-ubyte", "magic")
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(UserError) as e:
        build_dataset("fashion_mnist", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "t10k-labels-idx1-ubyte", "expected layout")


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


# --- CIFAR: python pickles --------------------------------------------------------------------

class Py2Str(bytes):
    """A Python 2 `str`: the CIFAR files are Python 2 pickles whose keys and names are such strings."""


class Py2Pickler(pickle._Pickler):
    """Protocol 2 writer that emits Python 2 string opcodes (SHORT_BINSTRING/BINSTRING) for `Py2Str`, so
    the fixture loads like the real files: bytes with encoding='bytes', str with encoding='latin1'."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj: Py2Str) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def py2(obj):
    if isinstance(obj, dict):
        return {py2(k): py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [py2(v) for v in obj]
    return Py2Str(obj) if isinstance(obj, bytes) else obj


def dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(py2(obj))


def cifar10_fixture(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (2, 3072)).astype(np.uint8)
        y = [(2 * i) % 10, (2 * i + 1) % 10]
        dump(base / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y,
                                        b"data": x, b"filenames": [b"a.png", b"b.png"]})
        xs.append(x)
        ys += y
    dump(base / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4],
                               b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8),
                               b"filenames": [b"c.png", b"d.png", b"e.png"]})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(base / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072})
    return np.concatenate(xs), np.array(ys)


def test_cifar10_pickles(tmp_path, monkeypatch):
    x, y = cifar10_fixture(tmp_path, np.random.default_rng(0))
    b = build_dataset("cifar10", {"root": str(tmp_path)})
    assert (b.num_classes, b.in_chans, b.input_size) == (10, 3, 32)
    assert b.classes[3] == "cat" and b.superclasses is None
    assert b.mean == CIFAR_MEAN and b.std == CIFAR_STD
    assert b.memory.crop_padding == 4 and b.memory.flip is True
    check_items(b.train, n=10, shape=(3, 32, 32), num_classes=10)
    check_items(b.val, n=3, shape=(3, 32, 32), num_classes=10)
    assert b.train_labels.tolist() == y.tolist()

    # torchvision's CIFAR10 reader (checksums disabled for the fixture) sees the same images and labels
    import torchvision

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    tv = torchvision.datasets.CIFAR10(str(tmp_path), train=True)
    assert torch.equal(b.memory.train_x, torch.from_numpy(tv.data).permute(0, 3, 1, 2))
    assert b.memory.train_y.tolist() == list(tv.targets)
    tv_test = torchvision.datasets.CIFAR10(str(tmp_path), train=False)
    assert torch.equal(b.memory.val_x, torch.from_numpy(tv_test.data).permute(0, 3, 1, 2))
    # the eval view is the normalised raw image
    x0, _, _ = b.val[2]
    want = (torch.from_numpy(tv_test.data[2]).permute(2, 0, 1).double() / 255
            - torch.tensor(CIFAR_MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(CIFAR_STD, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(x0.double(), want, rtol=0, atol=1e-5)

    # the batches folder itself is accepted as the root, and the environment variable is read
    b2 = build_dataset("cifar10", {"root": str(tmp_path / "cifar-10-batches-py")})
    assert torch.equal(b2.memory.val_x, b.memory.val_x)
    monkeypatch.setenv("TFBENCH_CIFAR10_ROOT", str(tmp_path))
    assert build_dataset("cifar10", {}).root == str(tmp_path)


def cifar100_fixture(root: Path, rng: np.random.Generator) -> None:
    base = root / "cifar-100-python"
    fine_names = [f"fine{k}".encode() for k in range(100)]
    coarse_names = [f"coarse{k}".encode() for k in range(20)]
    fine = np.arange(100).tolist() + [7, 42]
    coarse = [f // 5 for f in fine]  # fixture mapping: fine class k belongs to super-class k // 5
    dump(base / "train", {b"filenames": [b"x.png"] * len(fine), b"batch_label": b"training batch 1 of 1",
                          b"fine_labels": fine, b"coarse_labels": coarse,
                          b"data": rng.integers(0, 256, (len(fine), 3072)).astype(np.uint8)})
    dump(base / "test", {b"filenames": [b"y.png"] * 4, b"batch_label": b"testing batch 1 of 1",
                         b"fine_labels": [0, 99, 5, 6], b"coarse_labels": [0, 19, 1, 1],
                         b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8)})
    dump(base / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})


def test_cifar100_pickles_with_superclasses(tmp_path):
    cifar100_fixture(tmp_path, np.random.default_rng(1))
    b = build_dataset("cifar100", {"root": str(tmp_path)})
    assert (b.num_classes, len(b.classes), b.classes[42]) == (100, 100, "fine42")
    assert b.superclasses == [k // 5 for k in range(100)]
    assert b.superclass_names == [f"coarse{k}" for k in range(20)]
    check_items(b.train, n=102, shape=(3, 32, 32), num_classes=100)
    check_items(b.val, n=4, shape=(3, 32, 32), num_classes=100)
    assert b.memory.val_y.tolist() == [0, 99, 5, 6]


def test_cifar100_inconsistent_coarse_labels(tmp_path):
    cifar100_fixture(tmp_path, np.random.default_rng(1))
    d = pickle.load(open(tmp_path / "cifar-100-python" / "train", "rb"), encoding="bytes")
    d[b"coarse_labels"][-1] = 3  # fine 42 now under two super-classes
    dump(tmp_path / "cifar-100-python" / "train", d)
    with pytest.raises(UserError) as e:
        build_dataset("cifar100", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "coarse")


def test_cifar_malformed(tmp_path):
    cifar10_fixture(tmp_path, np.random.default_rng(0))
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "data_batch_3", "expected layout")
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8),
                                                             b"labels": [0, 1]})
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, "data_batch_3", "3072")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, "data_batch_3")


# --- JPEG trees: ImageNet (ImageFolder), Tiny ImageNet, iNat21 ------------------------------------

def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (10, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3)).astype(np.uint8)).save(path, "JPEG")


def test_imagenet_imagefolder(tmp_path):
    import torchvision

    rng = np.random.default_rng(0)
    for split, per in (("train", 3), ("val", 2)):
        for wnid in ("n02", "n01", "n03"):
            for k in range(per):
                write_jpeg(tmp_path / split / wnid / f"{wnid}_{k}.JPEG", rng)
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    b = build_dataset("imagenet", {"root": str(tmp_path)})
    assert b.classes == ["n01", "n02", "n03"] and b.memory is None and b.input_size == 224
    assert b.mean == (0.485, 0.456, 0.406)
    check_items(b.train, n=9, shape=(3, 224, 224), num_classes=3)
    check_items(b.val, n=6, shape=(3, 224, 224), num_classes=3)
    check_items(b.train_eval, n=9, shape=(3, 224, 224), num_classes=3)
    ref = torchvision.datasets.ImageFolder(str(tmp_path / "train"))
    assert [(Path(p).name, t) for p, t in ref.samples] == [(Path(p).name, t) for p, t in b.train.samples]
    assert b.train_labels.tolist() == ref.targets
    small = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 32})
    check_items(small.val, n=6, shape=(3, 32, 32), num_classes=3)
    # a DataLoader batches the (image, label, index) triples
    x, y, idx = next(iter(torch.utils.data.DataLoader(small.train, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and idx.tolist() == [0, 1, 2, 3]


def test_imagenet_class_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    write_jpeg(tmp_path / "train" / "n01" / "a.JPEG", rng)
    write_jpeg(tmp_path / "val" / "n09" / "a.JPEG", rng)
    with pytest.raises(UserError) as e:
        build_dataset("imagenet", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "val/")


def tiny_fixture(root: Path, *, val_layout: str) -> dict[str, str]:
    rng = np.random.default_rng(0)
    wnids = ["n04", "n01", "n02"]          # wnids.txt is not sorted in the official release
    (root).mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn04\tbus\nn99\tunused\n")
    for w in wnids:
        for k in range(2):
            write_jpeg(root / "train" / w / "images" / f"{w}_{k}.JPEG", rng, (64, 64))
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t10\t10\n")
    truth = {"val_0.JPEG": "n02", "val_1.JPEG": "n04", "val_2.JPEG": "n01", "val_3.JPEG": "n02"}
    if val_layout == "official":
        for f in truth:
            write_jpeg(root / "val" / "images" / f, rng, (64, 64))
        (root / "val" / "val_annotations.txt").write_text(
            "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in truth.items()))
    else:  # ImageFolder: val/<wnid>/images/*.JPEG (the Zipf repository's reorganised val)
        for f, w in truth.items():
            write_jpeg(root / "val" / w / "images" / f, rng, (64, 64))
    return truth


@pytest.mark.parametrize("val_layout", ["official", "imagefolder"])
def test_tinyimagenet_layouts(tmp_path, val_layout):
    truth = tiny_fixture(tmp_path, val_layout=val_layout)
    b = build_dataset("tinyimagenet", {"root": str(tmp_path)})
    # labels follow sorted wnids (ImageFolder's order); names from words.txt
    assert b.classes == ["goldfish", "salamander", "bus"]
    assert b.input_size == 32 and b.memory is None and b.num_classes == 3
    check_items(b.train, n=6, shape=(3, 32, 32), num_classes=3)
    check_items(b.val, n=4, shape=(3, 32, 32), num_classes=3)
    order = ["n01", "n02", "n04"]
    got = {Path(p).name: label for p, label in b.val.samples}
    assert got == {f: order.index(w) for f, w in truth.items()}
    assert b.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    b64 = build_dataset("tinyimagenet", {"root": str(tmp_path), "image_size": 64})
    check_items(b64.train, n=6, shape=(3, 64, 64), num_classes=3)
    check_items(b64.val, n=4, shape=(3, 64, 64), num_classes=3)
    # val at 64 is the image itself (normalised), no crop: compare with PIL's decode of the file
    from PIL import Image

    path, _ = b64.val.samples[0]
    raw = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).double() / 255
    want = (raw - torch.tensor(CIFAR_MEAN, dtype=torch.float64)[:, None, None]) \
        / torch.tensor(CIFAR_STD, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(b64.val[0][0].double(), want, rtol=0, atol=1e-5)


def test_tinyimagenet_malformed(tmp_path):
    tiny_fixture(tmp_path, val_layout="official")
    with open(tmp_path / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(UserError) as e:
        build_dataset("tinyimagenet", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "n77", "expected layout")
    with pytest.raises(UserError) as e:
        build_dataset("tinyimagenet", {"root": str(tmp_path), "image_size": 48})
    one_line_error(e, "image_size", "32, 64")


INAT_CATS = [
    "00000_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax",
    "00001_Animalia_Arthropoda_Insecta_Coleoptera_Cleridae_Trichodes_ornatus",
    "00002_Animalia_Arthropoda_Insecta_Lepidoptera_Nymphalidae_Vanessa_atalanta",
]


def inat_fixture(root: Path) -> None:
    rng = np.random.default_rng(0)
    for version, per in (("2021_train_mini", 3), ("2021_valid", 1)):
        for cat in INAT_CATS:
            for k in range(per):
                write_jpeg(root / version / cat / f"{k:08x}-aaaa-bbbb.jpg", rng)


def test_inat21_torchvision_layout(tmp_path):
    from torchvision.datasets import INaturalist

    inat_fixture(tmp_path)
    b = build_dataset("inat21", {"root": str(tmp_path), "image_size": 32})
    assert b.classes == ["Corvus corax", "Trichodes ornatus", "Vanessa atalanta"]
    assert b.superclass_names == ["Aves", "Insecta"] and b.superclasses == [0, 1, 1]
    check_items(b.train, n=9, shape=(3, 32, 32), num_classes=3)
    check_items(b.val, n=3, shape=(3, 32, 32), num_classes=3)
    # torchvision's own reader gives the same (file, label) pairs
    ref = INaturalist(str(tmp_path), version="2021_train_mini")
    want = sorted((os.path.join(ref.all_categories[c], f), c) for c, f in ref.index)
    got = sorted((os.path.relpath(p, tmp_path / "2021_train_mini"), c) for p, c in b.train.samples)
    assert got == want
    kingdom = build_dataset("inat21", {"root": str(tmp_path), "image_size": 32, "superclass_level": "order"})
    assert kingdom.superclass_names == ["Coleoptera", "Lepidoptera", "Passeriformes"]
    assert kingdom.superclasses == [2, 0, 1]


def test_inat21_bad_category_folder(tmp_path):
    inat_fixture(tmp_path)
    os.rename(tmp_path / "2021_valid" / INAT_CATS[2], tmp_path / "2021_valid" / "00002_Vanessa")
    with pytest.raises(UserError) as e:
        build_dataset("inat21", {"root": str(tmp_path), "image_size": 32})
    one_line_error(e, str(tmp_path), "2021_valid")


# --- bad images -------------------------------------------------------------------------------

def bad_image_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("a", "b"):
            for k in range(2):
                write_jpeg(root / split / wnid / f"{k}.jpg", rng)
    bad = root / "train" / "a" / "1.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return bad


def test_bad_image_fail(tmp_path):
    bad = bad_image_tree(tmp_path)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16})
    assert b.train.samples[1][0] == str(bad)
    b.train[0]  # fine
    with pytest.raises(UserError) as e:
        b.train[1]
    one_line_error(e, str(bad), "on_bad_image=skip")


def test_bad_image_skip(tmp_path):
    bad = bad_image_tree(tmp_path)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16, "on_bad_image": "skip"})
    assert b.skipped_images == 0
    x, y, idx = b.train[1]
    assert (idx, y) == (2, 1)  # the next decodable sample, with its own label and index
    assert x.shape == (3, 16, 16) and torch.equal(b.train_eval[1][0], b.train_eval[2][0])
    assert b.skipped_images == 1 and b.skipped_files() == [str(bad)]
    b.train_eval[1]  # shares the train files' record: still one
    assert b.skipped_images == 1
    # every file bad but one: the split still yields; found through DataLoader workers too
    b2 = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16, "on_bad_image": "skip"})
    for p in (tmp_path / "train" / "b").iterdir():
        p.write_bytes(b"junk")
    loader = torch.utils.data.DataLoader(b2.train, batch_size=4, num_workers=1)
    _, _, idx = next(iter(loader))
    assert idx.tolist() == [0, 0, 0, 0]  # 1, 2, 3 are bad and wrap around to 0
    assert b2.skipped_images == 3        # seen by the worker process, counted here
    (tmp_path / "train" / "a" / "0.jpg").write_bytes(b"junk")
    b3 = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16, "on_bad_image": "skip"})
    with pytest.raises(UserError) as e:
        b3.train[0]
    one_line_error(e, "no decodable image")
    assert isinstance(b3.train, ImageFileDataset)


# --- roots, registry, listing -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion_mnist", "tinyimagenet", "imagenet", "inat21"])
def test_missing_and_malformed_root(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as e:
        build_dataset(name, {"root": str(missing)})
    one_line_error(e, str(missing), "expected layout", f"TFBENCH_{name.upper()}_ROOT")
    assert not missing.exists()  # nothing created, nothing downloaded
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        build_dataset(name, {"root": str(empty)})
    one_line_error(e, str(empty), "expected layout")


def test_root_resolution_order(tmp_path, monkeypatch):
    cifar10_fixture(tmp_path / "home" / "cifar10", np.random.default_rng(0))
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path / "home"))
    assert build_dataset("cifar10", {}).root == str(tmp_path / "home" / "cifar10")
    monkeypatch.setenv("TFBENCH_CIFAR10_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError) as e:  # the per-dataset variable wins, and is used as given
        build_dataset("cifar10", {})
    one_line_error(e, str(tmp_path / "elsewhere"))
    assert build_dataset("cifar10", {"root": str(tmp_path / "home" / "cifar10")}).num_classes == 10


def test_unknown_dataset_and_params():
    with pytest.raises(RegistryError) as e:
        build_dataset("cifar1000", {})
    assert "cifar100" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        build_dataset("imagenet", {"download": True})  # torchvision cannot download ImageNet
    one_line_error(e, "download", "allowed")
    with pytest.raises(UserError) as e:
        build_dataset("imagenet", {"on_bad_image": "ignore"})
    one_line_error(e, "on_bad_image", "fail, skip")


def test_cmd_datasets_lists_roots(tmp_path, monkeypatch, capsys):
    from harness.cli import datasets as cmd_datasets

    cifar10_fixture(tmp_path / "cifar10", np.random.default_rng(0))
    (tmp_path / "cifar100").mkdir()
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("TFBENCH_IMAGENET_ROOT", str(tmp_path / "in1k"))
    p = argparse.ArgumentParser()
    cmd_datasets.add_arguments(p)
    assert cmd_datasets.run(p.parse_args(["--json"])) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == set(DATASETS.names())
    assert rows["cifar10"]["status"] == "present" and rows["cifar10"]["root"] == str(tmp_path / "cifar10")
    assert rows["cifar100"]["status"].startswith("malformed")
    assert rows["imagenet"]["status"] == "missing" and rows["imagenet"]["source"] == "env TFBENCH_IMAGENET_ROOT"
    assert rows["digits"]["status"] == "built in"
    assert cmd_datasets.run(p.parse_args(["cifar10", "digits"])) == 0
    text = capsys.readouterr().out
    assert "cifar10" in text and "present" in text and "TFBENCH_CIFAR10_ROOT" in text and "imagenet" not in text
    with pytest.raises(RegistryError):
        cmd_datasets.run(p.parse_args(["cifar"]))
