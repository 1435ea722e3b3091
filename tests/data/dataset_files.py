"""Writers of every dataset's real on-disk format (IDX, CIFAR's Python 2 pickles, JPEG trees), written here
byte by byte from numpy arrays the tests keep, so the expected tensors never come from the code under test.
Shared by the tests of tests/data/ (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from harness.data import DATASETS

ROOT_VARS = [f"TFBENCH_{n.upper()}_ROOT" for n in DATASETS.names()] + ["TFBENCH_DATA"]


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


# --- IDX (Fashion-MNIST) ----------------------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, *, compress: bool) -> None:
    magic = 0x0800 + arr.ndim   # type 0x08 = ubyte, then the number of sizes: 0x0803 images, 0x0801 labels
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


# --- CIFAR (Python 2 pickles) -------------------------------------------------------------------

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


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(py2(obj))


def cifar10_fixture(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Five training batches of 2 images and a test batch of 3, as rows of 3072 bytes (R, G, B planes)."""
    base = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (2, 3072)).astype(np.uint8)
        y = [(2 * i) % 10, (2 * i + 1) % 10]
        dump(base / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y,
                                        b"data": x, b"filenames": [b"a.png", b"b.png"]})
        xs.append(x)
        ys += y
    test_x = rng.integers(0, 256, (3, 3072)).astype(np.uint8)
    dump(base / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4],
                               b"data": test_x, b"filenames": [b"c.png", b"d.png", b"e.png"]})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(base / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072})
    return {"train_x": np.concatenate(xs), "train_y": np.array(ys), "test_x": test_x, "test_y": np.array([3, 1, 4])}


def cifar100_fixture(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    base = root / "cifar-100-python"
    fine_names = [f"fine{k}".encode() for k in range(100)]
    coarse_names = [f"coarse{k}".encode() for k in range(20)]
    fine = np.arange(100).tolist() + [7, 42]
    coarse = [f // 5 for f in fine]  # fixture mapping: fine class k belongs to super-class k // 5
    train_x = rng.integers(0, 256, (len(fine), 3072)).astype(np.uint8)
    test_x = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
    dump(base / "train", {b"filenames": [b"x.png"] * len(fine), b"batch_label": b"training batch 1 of 1",
                          b"fine_labels": fine, b"coarse_labels": coarse, b"data": train_x})
    dump(base / "test", {b"filenames": [b"y.png"] * 4, b"batch_label": b"testing batch 1 of 1",
                         b"fine_labels": [0, 99, 5, 6], b"coarse_labels": [0, 19, 1, 1], b"data": test_x})
    dump(base / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    return {"train_x": train_x, "train_y": np.array(fine), "test_x": test_x, "test_y": np.array([0, 99, 5, 6])}


def planes_to_chw(rows: np.ndarray) -> np.ndarray:
    """CIFAR's documented row format, decoded by hand: 1024 red, 1024 green, 1024 blue bytes, each plane
    row-major 32x32 -> (N, 3, 32, 32)."""
    out = np.empty((len(rows), 3, 32, 32), dtype=np.uint8)
    for n, row in enumerate(rows):
        for c in range(3):
            for i in range(32):
                out[n, c, i] = row[c * 1024 + i * 32: c * 1024 + i * 32 + 32]
    return out


# --- JPEG trees (ImageNet, Tiny ImageNet, iNat21) -------------------------------------------------

def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (10, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3)).astype(np.uint8)).save(path, "JPEG")


def imagenet_fixture(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, per in (("train", 3), ("val", 2)):
        for wnid in ("n02", "n01", "n03"):
            for k in range(per):
                write_jpeg(root / split / wnid / f"{wnid}_{k}.JPEG", rng)


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


def bad_image_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("a", "b"):
            for k in range(2):
                write_jpeg(root / split / wnid / f"{k}.jpg", rng)
    bad = root / "train" / "a" / "1.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return bad
