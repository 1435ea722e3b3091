"""cifar10 and cifar100 (harness/data/cifar.py): the python-pickle release through torchvision's readers.

The expected tensors are decoded by hand from the bytes written into the fixture files (CIFAR's documented
row format), not by torchvision or the code under test; before the readers moved onto torchvision, the old
hand-written reader's output on these fixtures was checked equal to the same hand decoding.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from dataset_files import check_items, cifar10_fixture, cifar100_fixture, dump, one_line_error, planes_to_chw

from harness.data import CIFAR_MEAN, CIFAR_STD, build_dataset
from harness.errors import UserError


def test_cifar10_pickles(tmp_path, monkeypatch):
    data = cifar10_fixture(tmp_path, np.random.default_rng(0))
    b = build_dataset("cifar10", {"root": str(tmp_path)})
    assert (b.num_classes, b.in_chans, b.input_size) == (10, 3, 32)
    assert b.classes[3] == "cat" and b.superclasses is None
    assert b.mean == CIFAR_MEAN and b.std == CIFAR_STD
    assert b.memory.crop_padding == 4 and b.memory.flip is True
    check_items(b.train, n=10, shape=(3, 32, 32), num_classes=10)
    check_items(b.val, n=3, shape=(3, 32, 32), num_classes=10)

    # same order (batch 1..5, rows in file order), same pixels, same labels
    m = b.memory
    assert m.train_x.dtype == torch.uint8 and m.train_x.is_contiguous() and m.val_x.is_contiguous()
    np.testing.assert_array_equal(m.train_x.numpy(), planes_to_chw(data["train_x"]))
    np.testing.assert_array_equal(m.val_x.numpy(), planes_to_chw(data["test_x"]))
    assert m.train_y.dtype == torch.int64 and m.train_y.tolist() == data["train_y"].tolist()
    assert m.val_y.tolist() == data["test_y"].tolist() and b.train_labels.tolist() == data["train_y"].tolist()
    # the eval view is the normalised raw image
    x0, _, _ = b.val[2]
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(CIFAR_STD, dtype=torch.float64)[:, None, None]
    want = (torch.from_numpy(planes_to_chw(data["test_x"][2:3])[0]).double() / 255 - mean) / std
    torch.testing.assert_close(x0.double(), want, rtol=0, atol=1e-5)

    # the batches folder itself is accepted as the root, and the environment variable is read
    b2 = build_dataset("cifar10", {"root": str(tmp_path / "cifar-10-batches-py")})
    assert torch.equal(b2.memory.val_x, b.memory.val_x)
    monkeypatch.setenv("TFBENCH_CIFAR10_ROOT", str(tmp_path))
    assert build_dataset("cifar10", {}).root == str(tmp_path)


def test_cifar100_pickles_with_superclasses(tmp_path):
    data = cifar100_fixture(tmp_path, np.random.default_rng(1))
    b = build_dataset("cifar100", {"root": str(tmp_path)})
    assert (b.num_classes, len(b.classes), b.classes[42]) == (100, 100, "fine42")
    assert b.superclasses == [k // 5 for k in range(100)]
    assert b.superclass_names == [f"coarse{k}" for k in range(20)]
    check_items(b.train, n=102, shape=(3, 32, 32), num_classes=100)
    check_items(b.val, n=4, shape=(3, 32, 32), num_classes=100)
    np.testing.assert_array_equal(b.memory.train_x.numpy(), planes_to_chw(data["train_x"]))
    np.testing.assert_array_equal(b.memory.val_x.numpy(), planes_to_chw(data["test_x"]))
    assert b.memory.train_y.tolist() == data["train_y"].tolist()
    assert b.memory.val_y.tolist() == [0, 99, 5, 6]


def test_cifar100_inconsistent_coarse_labels(tmp_path):
    cifar100_fixture(tmp_path, np.random.default_rng(1))
    train = tmp_path / "cifar-100-python" / "train"
    d = pickle.load(open(train, "rb"), encoding="bytes")
    d[b"coarse_labels"][-1] = 3  # fine 42 now under two super-classes
    dump(train, d)
    with pytest.raises(UserError) as e:
        build_dataset("cifar100", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "coarse")
    d[b"coarse_labels"] = d[b"coarse_labels"][:-1]  # one coarse label short
    dump(train, d)
    with pytest.raises(UserError) as e:
        build_dataset("cifar100", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "101 coarse labels for 102 images")
    del d[b"coarse_labels"]
    dump(train, d)
    with pytest.raises(UserError) as e:
        build_dataset("cifar100", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "coarse_labels")


def test_cifar_malformed(tmp_path):
    cifar10_fixture(tmp_path, np.random.default_rng(0))
    base = tmp_path / "cifar-10-batches-py"
    os.remove(base / "data_batch_3")
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "data_batch_3", "expected layout")
    cases = [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),      # rows of the wrong length
        ({b"data": np.zeros((3, 1024), np.uint8), b"labels": [0, 1, 2]}, "3072"),  # reshapes into 1 image
        ({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside 0..9"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ([1, 2, 3], "data_batch_3"),                                                 # not a dict
    ]
    for content, words in cases:
        if isinstance(content, list):
            with open(base / "data_batch_3", "wb") as f:
                pickle.dump(content, f, protocol=2)
        else:
            dump(base / "data_batch_3", content)
        with pytest.raises(UserError) as e:
            build_dataset("cifar10", {"root": str(tmp_path)})
        one_line_error(e, str(tmp_path), "data_batch_3", words)
    (base / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, "data_batch_3")
    dump(base / "data_batch_3", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    build_dataset("cifar10", {"root": str(tmp_path)})  # repaired
    dump(base / "batches.meta", {b"names": [b"a"]})
    with pytest.raises(UserError) as e:
        build_dataset("cifar10", {"root": str(tmp_path)})
    one_line_error(e, str(tmp_path), "batches.meta", "label_names")
