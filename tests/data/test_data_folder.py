"""`folder` and `torchvision`: generated image folders and fixtures in each reader's on-disk format; the split,
statistics and sizes checked against numbers computed by hand or with numpy from the pixels written."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import build_dataset
from harness.data.folder import Folder, stratified_split
from harness.errors import UserError

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def make_folder(root: Path, *, per_class: int = 6, test: int = 2, size: int = 12, grey: bool = False,
                split_dir: str | None = "test") -> None:
    """Solid-colour images (PNG for even i, lossless; BMP for odd), so every pixel value is known."""
    splits = [("train", per_class)] + ([(split_dir, test)] if split_dir else [])
    for split, count in splits:
        for c, col in enumerate(COLOURS):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                px = np.full((size, size, 3), col, np.uint8)
                img = Image.fromarray(px).convert("L") if grey else Image.fromarray(px)
                img.save(d / f"{i}.{'png' if i % 2 == 0 else 'bmp'}")


def test_stratified_split_by_hand():
    labels = [0] * 10 + [1] * 5 + [2]  # class 2 has one image: it stays in training
    fit, held = stratified_split(labels, fraction=0.2, seed=3)
    held_classes = sorted(labels[i] for i in held)
    assert held_classes == [0, 0, 1]                  # round(0.2 * 10) = 2, max(1, round(0.2 * 5)) = 1, none of 1
    assert sorted(fit + held) == list(range(16)) and not set(fit) & set(held)
    assert stratified_split(labels, fraction=0.2, seed=3) == (fit, held)


def test_folder_sizes_stats_and_name(tmp_path):
    root = tmp_path / "my_pets"
    make_folder(root)
    b = build_dataset("folder", {"root": str(root)})
    assert (b.num_classes, b.in_chans, b.input_size) == (4, 3, 12)
    assert b.classes == ["c0", "c1", "c2", "c3"] and b.name == "my_pets"
    assert len(b.train_labels) == 24 and len(b.val_labels) == 8
    # every training image is one colour, every class equally often: mean = the colours' mean / 255
    px = np.array(COLOURS, float) / 255
    np.testing.assert_allclose(b.mean, px.mean(0), atol=1e-6)
    np.testing.assert_allclose(b.std, px.std(0), atol=1e-6)
    x, y, _ = b.files.val[0]
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (3, 12, 12)
    assert tuple(x[:, 0, 0].tolist()) == COLOURS[y]
    assert "median size" in b.summary and "tiny_resnet" in b.summary
    d = Folder.defaults(Folder.Params(root=str(root)))
    assert d == {"model": "tiny_resnet", "epochs": 30, "resolution": "low"}


def test_folder_grey_given_size_and_split(tmp_path):
    root = tmp_path / "g"
    make_folder(root, per_class=5, grey=True, split_dir=None, size=20)
    b = build_dataset("folder", {"root": str(root), "image_size": 10, "val_fraction": 0.4})
    assert (b.in_chans, b.input_size) == (1, 10)
    assert len(b.val_labels) == 4 * 2 and len(b.train_labels) == 4 * 3  # round(0.4 * 5) = 2 per class
    x, _, _ = b.files.train_eval[0]
    assert tuple(x.shape) == (1, 10, 10)


def test_folder_problems_are_one_line(tmp_path):
    root = tmp_path / "bad"
    make_folder(root)
    (root / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="without images in train/: empty"):
        build_dataset("folder", {"root": str(root)})
    with pytest.raises(UserError, match="does not exist"):
        build_dataset("folder", {"root": str(tmp_path / "nope")})


def test_folder_trial_label_in_spec(tmp_path):
    from harness.config.resolve import resolve_trial

    root = tmp_path / "shapes"
    make_folder(root)
    spec = resolve_trial(method="ce", dataset="folder", seed=0, dataset_params={"root": str(root)})
    assert spec.dataset_params["label"] == "shapes" and spec.model == "tiny_resnet" and spec.train.epochs == 30
    other = resolve_trial(method="ce", dataset="folder", seed=0, dataset_params={"root": str(root), "label": "x"})
    assert other.key() == spec.key()  # a table's name changes no number


# --- torchvision readers, each from a fixture in its own format ---------------------------------

def write_idx(path: Path, arr: np.ndarray) -> None:
    magic = 0x0803 if arr.ndim == 3 else 0x0801
    with gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in arr.shape) + arr.tobytes())


def test_torchvision_mnist_from_idx(tmp_path):
    rng = np.random.RandomState(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = rng.randint(0, 256, (20, 28, 28)).astype(np.uint8)
    y = np.arange(20, dtype=np.uint8) % 10
    for stem, n in (("train", 20), ("t10k", 10)):
        write_idx(raw / f"{stem}-images-idx3-ubyte", x[:n])
        write_idx(raw / f"{stem}-labels-idx1-ubyte", y[:n])
    b = build_dataset("torchvision", {"dataset": "MNIST", "root": str(tmp_path)})
    assert (b.num_classes, b.in_chans, b.input_size) == (10, 1, 28)
    assert b.memory is not None and np.array_equal(b.memory.train_x[:, 0].numpy(), x)
    np.testing.assert_allclose(b.mean, [x.mean() / 255], rtol=1e-6)
    assert b.memory.crop_padding == 0 and not b.memory.flip  # grey digits: no crop, no flip


def test_torchvision_emnist_variant(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(1)
    for split, n in (("train", 12), ("test", 6)):
        write_idx(raw / f"emnist-letters-{split}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(raw / f"emnist-letters-{split}-labels-idx1-ubyte", (np.arange(n) % 26 + 1).astype(np.uint8))
    b = build_dataset("torchvision", {"dataset": "EMNIST", "variant": "letters", "root": str(tmp_path)})
    assert (b.in_chans, b.input_size, len(b.train_labels), len(b.val_labels)) == (1, 28, 12, 6)
    assert b.classes[0] == "N/A" and b.num_classes == 27  # torchvision's letters: 'N/A' then a..z
    assert b.memory.train_y.tolist() == [i % 26 + 1 for i in range(12)]


def test_torchvision_pets_from_files(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    for split, names in (("trainval", ["Abyssinian_1", "beagle_1", "Abyssinian_2", "beagle_2"]),
                         ("test", ["Abyssinian_3", "beagle_3"])):
        lines = []
        for n in names:
            Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(base / "images" / f"{n}.jpg")
            cls = 1 if n.startswith("Aby") else 2
            lines.append(f"{n} {cls} 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    b = build_dataset("torchvision", {"dataset": "OxfordIIITPet", "root": str(tmp_path), "train_split": "trainval",
                                      "image_size": 16})
    assert b.files is not None and b.classes == ["Abyssinian", "Beagle"] and b.input_size == 16
    assert b.train_labels.tolist() == [0, 1, 0, 1] and len(b.val_labels) == 2


def test_torchvision_unknown_reader():
    with pytest.raises(UserError, match="not a torchvision.datasets reader"):
        build_dataset("torchvision", {"dataset": "NoSuch", "root": "/tmp"})


def test_folder_spec_round_trips_and_takes_given_stats(tmp_path):
    """A stored spec (JSON) rebuilds the same data set; given mean/std are used as given."""
    from harness.config.resolve import resolve_trial
    from harness.config.spec import TrialSpec

    root = tmp_path / "rt"
    make_folder(root)
    spec = resolve_trial(method="ce", dataset="folder", seed=0,
                         dataset_params={"root": str(root), "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    again = TrialSpec.from_dict(spec.to_dict())
    b = build_dataset("folder", dict(again.dataset_params))
    assert b.mean == (0.5, 0.5, 0.5) and b.std == (0.25, 0.25, 0.25)
