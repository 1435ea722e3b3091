"""`tfbench datasets --import FILE`: the documented example lists and builds; a hook of the wrong kind is one line."""
from __future__ import annotations

from pathlib import Path

from harness.cli import main
from harness.data import DATASETS, build_dataset

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "my_dataset.py"


def test_import_lists_the_example(capsys):
    try:
        assert main(["datasets", "--import", str(EXAMPLE)]) == 0
        out = capsys.readouterr().out
        assert "bars" in out and "tiny_cnn" in out and "fashion_mnist" not in out
        b = build_dataset("bars", {"per_class": 8})
        assert (b.num_classes, b.in_chans, b.input_size, len(b.train_labels)) == (2, 1, 16, 16)
    finally:
        DATASETS.unregister("bars")


def test_wrong_hook_kind_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.data.registry import DatasetDef, register_dataset\n"
                   "@register_dataset('bad_hook')\n"
                   "class Bad(DatasetDef):\n"
                   "    def problem(self, root):\n"
                   "        return None\n")
    assert main(["datasets", "--import", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "problem must be a @classmethod" in err[0] and "Traceback" not in err[0]


def test_import_without_a_data_set(tmp_path, capsys):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["datasets", "--import", str(empty)]) != 0
    assert "registers no data set" in capsys.readouterr().err
