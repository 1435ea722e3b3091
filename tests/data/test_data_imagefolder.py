"""tinyimagenet, imagenet and inat21 (harness/data/imagefolder.py): JPEG trees, their sample lists and
labels (written out by hand here), transforms, damaged trees and the on_bad_image policy."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import (
    INAT_CATS,
    bad_image_tree,
    check_items,
    imagenet_fixture,
    inat_fixture,
    one_line_error,
    tiny_fixture,
    write_jpeg,
)

from harness.data import CIFAR_MEAN, CIFAR_STD, ImageFileDataset, build_dataset
from harness.errors import UserError


def rel(samples: list[tuple[str, int]], root: Path) -> list[tuple[str, int]]:
    return [(os.path.relpath(p, root), label) for p, label in samples]


def test_imagenet_imagefolder(tmp_path):
    imagenet_fixture(tmp_path)
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    b = build_dataset("imagenet", {"root": str(tmp_path)})
    assert b.classes == ["n01", "n02", "n03"] and b.memory is None and b.input_size == 224
    assert b.mean == (0.485, 0.456, 0.406)
    check_items(b.train, n=9, shape=(3, 224, 224), num_classes=3)
    check_items(b.val, n=6, shape=(3, 224, 224), num_classes=3)
    check_items(b.train_eval, n=9, shape=(3, 224, 224), num_classes=3)
    # classes by name, files by name within each class (ImageFolder's order), labels = class positions
    want = [(f"train/{w}/{w}_{k}.JPEG", c) for c, w in enumerate(["n01", "n02", "n03"]) for k in range(3)]
    assert rel(b.train.samples, tmp_path) == want
    assert b.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rel(b.val.samples, tmp_path)[:3] == [("val/n01/n01_0.JPEG", 0), ("val/n01/n01_1.JPEG", 0),
                                                ("val/n02/n02_0.JPEG", 1)]
    small = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 32})
    check_items(small.val, n=6, shape=(3, 32, 32), num_classes=3)
    # a DataLoader batches the (image, label, index) triples
    x, y, idx = next(iter(torch.utils.data.DataLoader(small.train, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and idx.tolist() == [0, 1, 2, 3]


def test_hidden_files_and_folders_are_not_images_or_classes(tmp_path):
    imagenet_fixture(tmp_path)
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        write_jpeg(tmp_path / split / ".ipynb_checkpoints" / "x.JPEG", rng)  # Jupyter's folder
    (tmp_path / "train" / "n01" / "._n01_0.JPEG").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble file
    write_jpeg(tmp_path / "train" / "n02" / "sub" / "deep.png", rng)  # images in sub-folders count
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16})
    assert b.classes == ["n01", "n02", "n03"]
    got = rel(b.train.samples, tmp_path)
    assert len(got) == 10 and ("train/n02/sub/deep.png", 1) in got
    assert not any("/." in p for p, _ in got)


def test_nested_folders_follow_torchvisions_walk_order(tmp_path):
    """Within a class folder, torchvision sorts the walked folders by their path as a string, so 'a/b'
    comes after 'a-b' ('-' < '/'), not straight after 'a' as in a depth-first walk."""
    rng = np.random.default_rng(2)
    for name in ("c/a/x.jpg", "c/a-b/y.jpg", "c/z.jpg", "c/a/b/w.jpg"):
        write_jpeg(tmp_path / "train" / name, rng)
    write_jpeg(tmp_path / "val" / "c" / "v.jpg", rng)
    b = build_dataset("imagenet", {"root": str(tmp_path), "image_size": 16})
    assert [p for p, _ in rel(b.train.samples, tmp_path)] == [
        "train/c/z.jpg", "train/c/a/x.jpg", "train/c/a-b/y.jpg", "train/c/a/b/w.jpg"]


def test_imagenet_class_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    write_jpeg(tmp_path / "train" / "n01" / "a.JPEG", rng)
    write_jpeg(tmp_path / "val" / "n09" / "a.JPEG", rng)
    with pytest.raises(UserError) as e:
        build_dataset("imagenet", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "val/")




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



def test_tinyimagenet_train_samples(tmp_path):
    tiny_fixture(tmp_path, val_layout="official")
    b = build_dataset("tinyimagenet", {"root": str(tmp_path)})
    # wnids sorted (n01, n02, n04), the images/ files of each; the *_boxes.txt files are not images
    assert rel(b.train.samples, tmp_path) == [(f"train/{w}/images/{w}_{k}.JPEG", c)
                                              for c, w in enumerate(["n01", "n02", "n04"]) for k in range(2)]
    assert rel(b.val.samples, tmp_path) == [("val/images/val_0.JPEG", 1), ("val/images/val_1.JPEG", 2),
                                            ("val/images/val_2.JPEG", 0), ("val/images/val_3.JPEG", 1)]


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


