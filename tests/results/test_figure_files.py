"""A results folder's figure files: their width (`tfbench plot --width`, the sweep file's `figures: {width:}`),
their captions (`<stem>.txt` beside each, listed in summary.md), and a user's method shown by the label its
class declares (recorded in sweep.yaml by the run, read back by the tables and figures)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread

from harness.cli import main
from harness.config import catalog
from harness.results.plots import write_plots
from harness.results.summary import render_summary

LONG = "Cross-entropy with a deliberately long display label (control)"


def folder(root: Path, *, figures: dict | None = None, labels: dict | None = None) -> Path:
    """A results folder of CE and a user's method `mine` on digits, two seeds, three epochs each."""
    rows = []
    for m, v in (("ce", 0.80), ("mine", 0.82)):
        for s in (0, 1):
            key = f"{m}-digits-s{s}-0123456789"
            rows.append({"key": key, "status": "finished", "method": m, "dataset": "digits", "model": "tiny_cnn",
                         "seed": s, "epochs": 3, "protocol": "clean", "select": "top1",
                         "selected_top1": v + 0.01 * s, "last_top1": v, "val_selected_top1": 0.9,
                         "step_time_s": 0.01, "selected_epoch": 3})
            t = root / "trials" / key
            t.mkdir(parents=True)
            (t / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_top1": 0.3 * e, "train_loss": 1 / e,
                                                                 "train_ce": 1 / e}) + "\n" for e in (1, 2, 3)))
    import pandas as pd

    pd.DataFrame(rows).to_csv(root / "trials.csv", index=False)
    record = {"source": "x.yaml", "sets": [], "file": {"name": "t", **({"figures": figures} if figures else {})},
              "labels": labels or {}, "trials": []}
    (root / "sweep.yaml").write_text(yaml.safe_dump(record))
    return root


def png_width_in(path: Path) -> float:
    return imread(path).shape[1] / 300


def test_the_sweep_files_width_and_the_command_line_width(tmp_path):
    root = folder(tmp_path, figures={"width": "page"})
    paths = write_plots(root)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and all(png_width_in(p) == pytest.approx(6.9) for p in pngs)
    assert main(["plot", str(root), "--width", "column"]) == 0  # the command line wins over the file
    assert all(png_width_in(p) == pytest.approx(3.3) for p in pngs)
    assert main(["plot", str(root), "--width", "5"]) == 0
    assert all(png_width_in(p) == pytest.approx(5.0) for p in pngs)


@pytest.mark.parametrize("width", ["huge", "1", "30", "nan"])
def test_a_width_that_is_not_one_is_one_line(tmp_path, capsys, width):
    root = folder(tmp_path)
    assert main(["plot", str(root), "--width", width]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "allowed: column (3.3 in), page (6.9 in)" in err
    assert not (root / "plots").exists()  # refused before any work


def test_a_sweep_record_with_a_bad_width_is_one_line(tmp_path, capsys):
    root = folder(tmp_path, figures={"width": "wide"})
    assert main(["plot", str(root)]) == 2
    assert "sweep.yaml: figures.width: found 'wide'" in capsys.readouterr().err


def test_captions_beside_the_figures_and_in_the_summary(tmp_path):
    root = folder(tmp_path)
    paths = write_plots(root)
    stems = sorted({p.stem for p in paths})
    assert sorted(p.stem for p in paths if p.suffix == ".txt") == stems  # every figure has its caption
    md = render_summary(root, write=False)["md"]
    section = md[md.index("## Figures"):]
    for stem in stems:
        caption = (root / "plots" / f"{stem}.txt").read_text().strip()
        assert f"- `plots/{stem}.png`: {caption}" in section
    # the answer first: the differences figure leads the list
    assert section.index("differences_") < section.index("learning_")
    # a caption that is not this folder's (a user's file of that name, unrecorded) is not listed
    (root / "plots" / ".tfbench-outputs.json").write_text(json.dumps({"files": {}}))
    assert "## Figures" not in render_summary(root, write=False)["md"]


def test_a_user_methods_label_from_the_sweep_record(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "_RECORDED", {})
    root = folder(tmp_path, labels={"mine": LONG, "ce": "not CE's label", "bad": "two\nlines"})
    write_plots(root)
    md = render_summary(root, write=False)["md"]
    assert f"| {LONG} " in md and "not CE's label" not in md  # a built-in keeps its own label
    assert catalog.label("bad") == "bad"
    learning = (root / "plots" / "learning_digits_tiny_cnn.txt").read_text()
    assert learning.startswith("digits / tiny_cnn")


def test_the_run_records_a_user_methods_label():
    """(The method file stays imported, as for every shipped sweep that imports one: a module is imported once.)"""
    from harness.config.sweep_file import load_sweep

    spec = load_sweep(Path(__file__).parents[2] / "sweeps" / "figures_check.yaml")
    assert spec.record()["labels"] == {"ce_long_label": LONG}
    assert spec.raw["figures"] == {"width": "column"}
