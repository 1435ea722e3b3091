"""The dataset registry (harness/data/registry.py): where each dataset looks (parameter, per-dataset
variable, data home, known system folders), missing and malformed roots, parameters, `tfbench datasets`.
The families' own tests are test_data_{embedded,mnist,cifar,imagefolder}.py."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from dataset_files import cifar10_fixture, one_line_error

import harness
from harness.data import DATASETS, build_dataset, check_dataset, data_home
from harness.errors import UserError
from methods.registry import RegistryError


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
    assert text.splitlines()[0] == f"data home: {tmp_path} (from TFBENCH_DATA; TFBENCH_DATA sets it)"
    with pytest.raises(RegistryError):
        cmd_datasets.run(p.parse_args(["cifar"]))


def test_data_home_is_tfbench_data_else_the_user_cache(tmp_path, monkeypatch):
    repo = Path(harness.__file__).resolve().parent.parent
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == (tmp_path / "xdg" / "tfbench" / "data", "user cache")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert data_home() == (tmp_path / "me" / ".cache" / "tfbench" / "data", "user cache")
    monkeypatch.setenv("TFBENCH_DATA", str(tmp_path / "shared"))
    assert data_home() == (tmp_path / "shared", "TFBENCH_DATA")
    # never the folder the package was installed into
    monkeypatch.delenv("TFBENCH_DATA")
    assert repo not in data_home()[0].parents


def test_user_cache_is_read_and_named_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache_root = tmp_path / "xdg" / "tfbench" / "data" / "cifar10"
    with pytest.raises(UserError) as e:
        check_dataset("cifar10", {})
    one_line_error(e, str(cache_root), "TFBENCH_CIFAR10_ROOT", "download: true", "expected layout")
    assert not cache_root.exists()  # looking creates nothing
    cifar10_fixture(cache_root, np.random.default_rng(0))
    check_dataset("cifar10", {})
    assert build_dataset("cifar10", {}).root == str(cache_root)
    (cache_root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError) as e:
        check_dataset("cifar10", {})
    one_line_error(e, str(cache_root), "test_batch")


def test_docs_example_dataset_registers_and_builds():
    """The 'Adding a data set' example of docs/datasets.md, run as written."""
    doc = (Path(harness.__file__).resolve().parent.parent / "docs" / "datasets.md").read_text()
    code = doc.split("## Adding a data set", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    try:
        exec(compile(code, "docs/datasets.md", "exec"), {})
        b = build_dataset("stripes", {"per_class": 3})
        assert "stripes" in DATASETS.names() and b.classes == ["horizontal", "vertical"]
        m = b.memory
        assert m.train_x.shape == (6, 1, 8, 8) and m.train_y.tolist() == [0, 0, 0, 1, 1, 1]
        stripes = np.zeros((8, 8), np.uint8)
        stripes[::2] = 255
        np.testing.assert_array_equal(m.train_x[0, 0].numpy(), stripes)
        np.testing.assert_array_equal(m.train_x[5, 0].numpy(), stripes.T)
        x, y, idx = b.val[4]
        assert (y, idx) == (1, 4) and x.shape == (1, 8, 8) and float(x.max()) == 1.0  # (1 - 0.5) / 0.5
    finally:
        DATASETS.unregister("stripes")
