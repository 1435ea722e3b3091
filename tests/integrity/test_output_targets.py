"""Hostile inputs, fourth set: output targets that hold a user's files, read-only targets, symbolic links out of a
results folder, another tool's trial folder, text that would escape its output format, numbers at the edges of
the power helpers, corrupt archives, looping image folders, `search:` values from every source.

Each case runs like those of test_hostile_inputs.py (`run_case`): the documented exit code, one line on stderr,
no traceback, and every file the command may not write byte for byte as it was (a user's files in an `--out`
folder included).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_hostile_inputs import (  # noqa: F401  (the fixtures apply to this module's tests too)
    BASE,
    Case,
    no_network,
    results_folder,
    rewrite_trials_csv,
    run_case,
    sweep,
    trial_record,
    unregister,
    warm_imports,
)

from harness.cli import main

TRAIN = ["train", "--method", "ce", "--dataset", "digits", "--model", "tiny_cnn", "--epochs", "2", "--set",
         "train.max_steps_per_epoch=2", "--set", "train.threads=1"]
LOCKED: list[Path] = []


def read_only(path: Path) -> Path:
    """A folder nobody may write into: permission bits for a user, the immutable attribute for root (root ignores
    permission bits); undone after the test so that pytest can remove it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    LOCKED.append(path)
    return path


@pytest.fixture(autouse=True)
def unlock():
    yield
    while LOCKED:
        path = LOCKED.pop()
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def user_folder(root: Path, *names: str) -> Path:
    """A folder of the user's own files (`thesis.pdf`, `photo.png`, ...), each with its own bytes."""
    folder = root / "paper"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"the user's own {name}".encode())
    return folder


def source(root: Path) -> Path:
    return root / "results" / "hostile"


def wrote_figures(root: Path, out: str) -> None:
    figures = sorted(p.name for p in (root / "paper").glob("learning_*"))
    assert figures == ["learning_digits_tiny_cnn.pdf", "learning_digits_tiny_cnn.png", "learning_digits_tiny_cnn.txt"], figures


def no_result(folder: Path) -> Path:
    for result in folder.glob("trials/*/result.json"):
        result.unlink()
    return folder


def with_summary_in(folder: Path, out: Path) -> Path:
    """`tfbench table SRC --out OUT` run once while SRC had finished trials: OUT holds a good summary."""
    assert main(["table", str(folder), "--out", str(out)]) == 0
    return folder


def other_results(root: Path) -> Path:
    """Another results folder with its own figures in plots/ (the same names the hostile sweep's plot makes)."""
    other = root / "results" / "other"
    (other / "plots").mkdir(parents=True)
    (other / ".tfbench").write_text("a tfbench results folder\n")
    for name in ("learning_digits_tiny_cnn.png", "learning_digits_tiny_cnn.pdf", "cost_digits_tiny_cnn.png"):
        (other / "plots" / name).write_bytes(f"other's {name}".encode())
    return other


def another_tools_folder(root: Path, *, config: bool = False) -> Path:
    """A folder another tool trained into: its own best.pt, metrics.jsonl and checkpoint.pt (and config.json)."""
    out = root / "theirs"
    out.mkdir()
    for name in ("best.pt", "checkpoint.pt"):
        (out / name).write_bytes(b"another tool's weights")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.3}\n')
    if config:
        (out / "config.json").write_text('{"lr": 0.1, "epochs": 90}\n')
    return out


def tex_check(marker: str):
    def check(root: Path, out: str) -> None:
        tex = (source(root) / "summary.tex").read_text()
        assert marker in tex  # shown as the text it is
        plain = tex.replace(r"\{", "").replace(r"\}", "")
        assert plain.count("{") == plain.count("}")  # every group LaTeX opens is closed
        for line in tex.splitlines():
            if marker in line:
                assert r"\textbf{" not in line.split(marker)[1].split("&")[0]
    return check


def csv_check(root: Path, out: str) -> None:
    cells = [c for row in csv.reader(io.StringIO((source(root) / "summary.csv").read_text())) for c in row]
    assert any(c.startswith("'-2+3+cmd") for c in cells)
    # OWASP: no cell a spreadsheet evaluates starts with = + - @ tab or CR unless it is a plain number
    for c in cells:
        if c[:1] in ("=", "+", "-", "@", "\t", "\r"):
            float(c)


def seeds_column(expected: str):
    def check(root: Path, out: str) -> None:
        rows = [line for line in out.splitlines() if line.startswith("| texty")]
        assert rows and all(line.rstrip(" |").split("|")[-1].strip() == expected for line in rows), out
    return check


def spread(folder: Path) -> Path:
    """Paired differences with CE that vary over seeds (sd > 0): texty seed 1 at 0.75 instead of 0.71."""
    for t in folder.glob("trials/texty-digits-s1-*/result.json"):
        record = json.loads(t.read_text())
        t.write_text(json.dumps({**record, "selected_top1": 0.75, "last_top1": 0.75}))
    rewrite_trials_csv(folder)
    return folder


def corrupt_gz(root: Path) -> Path:
    """Fashion-MNIST's four IDX files, gzipped, the training images' compressed data corrupt (not cut short)."""
    fm = root / "fm"
    fm.mkdir()
    images = lambda n: np.array([0x803, n, 28, 28], ">u4").tobytes() + bytes(n * 28 * 28)  # noqa: E731
    labels = lambda n: np.array([0x801, n], ">u4").tobytes() + bytes(n)  # noqa: E731
    for name, raw in (("train-images-idx3-ubyte", images(20)), ("train-labels-idx1-ubyte", labels(20)),
                      ("t10k-images-idx3-ubyte", images(10)), ("t10k-labels-idx1-ubyte", labels(10))):
        data = bytearray(gzip.compress(raw))
        if name.startswith("train-images"):
            data[10] = 0xFF  # the first deflate block: type 3, which does not exist
        (fm / f"{name}.gz").write_bytes(bytes(data))
    return fm


def damaged_spec(folder: Path) -> Path:
    import yaml

    record = yaml.safe_load((folder / "sweep.yaml").read_text())
    record["trials"][0]["spec"]["method_params"] = ["a", "list"]
    (folder / "sweep.yaml").write_text(yaml.safe_dump(record))
    (folder / "trials.csv").unlink()  # rebuilt from the records: the damaged one among them
    return folder


def linked_lock(root: Path) -> Path:
    (root / "outside.txt").write_text("a file outside the results folder\n")
    folder = root / "results" / "hostile"
    folder.mkdir(parents=True)
    (folder / ".lock").symlink_to(root / "outside.txt")
    return root


def linked_trial(root: Path) -> Path:
    from harness.config.sweep_file import load_sweep

    key = load_sweep(sweep(root, BASE)).trials[0].key()
    (root / "elsewhere").mkdir()
    (root / "results" / "hostile" / "trials").mkdir(parents=True)
    (root / "results" / "hostile" / "trials" / key).symlink_to(root / "elsewhere")
    return root


RUN = lambda r: ["run", str(sweep(r, BASE)), "--results", str(r / "results")]  # noqa: E731
FIGURES = 60.0  # making the figures is the work there, not the checks
SEARCH = "search: {budget: 2, space: {ls: {epsilon: {uniform: [0.0, 0.3]}}}}\n"

CASES: dict[str, Case] = {
    # --- a user's folder as --out ------------------------------------------------------------------------------
    "plot --out a folder of the user's own PDFs and PNGs": Case(
        lambda r: ["plot", str(results_folder(r)), "--out", str(user_folder(r, "thesis.pdf", "photo.png"))], "",
        code=0, may_write=lambda r: [r / "paper"], check=wrote_figures, seconds=FIGURES),
    "plot --out a user's folder with nothing to plot": Case(
        lambda r: ["plot", str(no_result(results_folder(r))), "--out", str(user_folder(r, "thesis.pdf"))], "",
        code=0, may_write=lambda r: [source(r)]),
    "plot --out a user's figure of the same name": Case(
        lambda r: ["plot", str(results_folder(r)), "--out",
                   str(user_folder(r, "thesis.pdf", "learning_digits_tiny_cnn.png"))],
        "learning_digits_tiny_cnn.png is not tfbench's output of", seconds=FIGURES),
    "plot --out another results folder's plots/": Case(
        lambda r: ["plot", str(results_folder(r)), "--out", str(other_results(r) / "plots")],
        "are not tfbench's output of", seconds=FIGURES),
    "zipf toy --out a user's toy.json": Case(
        lambda r: ["zipf", "toy", "--samples", "20", "--classes", "10", "--top", "5", "--out",
                   str(user_folder(r, "toy.json", "notes.txt"))], "toy.json is not tfbench's output"),
    "table --out over a good summary when no trial is finished any more": Case(
        lambda r: ["table", str(no_result(with_summary_in(results_folder(r), r / "paper"))), "--out",
                   str(r / "paper")], "the existing summary is kept", may_write=lambda r: [source(r)]),
    "table from a stale trials.csv whose result.json are gone": Case(
        lambda r: ["table", str(no_result(results_folder(r)))], "", code=0, may_write=lambda r: [source(r)],
        check=lambda r, out: ("Trials: 6 (0 finished, 0 failed, 6 pending)" in out) or pytest.fail(out)),
    # --- another tool's trial folder ----------------------------------------------------------------------------
    "train --out another tool's folder": Case(
        lambda r: [*TRAIN, "--out", str(another_tools_folder(r))], "holds files that no tfbench trial wrote"),
    "train --out a folder with a config.json of its own": Case(
        lambda r: [*TRAIN, "--out", str(another_tools_folder(r, config=True))], "config.json, metrics.jsonl"),
    "train --out another trial's checkpoint and metrics without its config": Case(
        lambda r: [*TRAIN, "--out", str(_without_config(trial_record(r, "reuse", "ls", 0, 0.8)))],
        "holds files that no tfbench trial wrote (metrics.jsonl, checkpoint.pt)"),
    # --- read-only targets --------------------------------------------------------------------------------------
    "table --out a read-only folder": Case(
        lambda r: ["table", str(results_folder(r)), "--out", str(read_only(r / "ro"))], "cannot write to"),
    "plot --out a read-only folder": Case(
        lambda r: ["plot", str(results_folder(r)), "--out", str(read_only(r / "ro"))], "cannot write to"),
    "table on a read-only results folder": Case(
        lambda r: ["table", str(read_only(results_folder(r)))], "cannot write to"),
    "train --out a new folder in a read-only one": Case(
        lambda r: [*TRAIN, "--out", str(read_only(r / "ro") / "new")], "cannot write the trial to"),
    "train --force with a read-only parent": Case(
        lambda r: [*TRAIN, "--force", "--out", str(_locked_parent(r))], "cannot write the trial to"),
    "zipf toy --out a read-only folder": Case(
        lambda r: ["zipf", "toy", "--samples", "20", "--classes", "10", "--top", "5", "--out",
                   str(read_only(r / "ro"))], "cannot write to"),
    # --- symbolic links out of a results folder ----------------------------------------------------------------
    "a .lock that links to a file outside": Case(
        lambda r: RUN(linked_lock(r)), ".lock is a symbolic link", may_write=lambda r: [source(r)]),
    "a trial folder that links outside": Case(
        lambda r: RUN(linked_trial(r)), "is a symbolic link to", may_write=lambda r: [source(r)]),
    # --- escaping -----------------------------------------------------------------------------------------------
    "the LaTeX bold placeholder in a text parameter": Case(
        lambda r: ["table", str(results_folder(r, text="TFBSENTBOLDOPEN x")), "--format", "tex"], "", code=0,
        may_write=lambda r: [source(r)], check=tex_check("TFBSENTBOLDOPEN x")),
    "OWASP's CSV example in a text parameter": Case(
        lambda r: ["table", str(results_folder(r, text="-2+3+cmd|' /C calc'!A0")), "--format", "csv"], "", code=0,
        may_write=lambda r: [source(r)], check=csv_check),
    "mathtext in a text parameter": Case(
        lambda r: ["plot", str(results_folder(r, text=r"$\fzbogus{a}$"))], "", code=0,
        may_write=lambda r: [source(r)], seconds=FIGURES,
        check=lambda r, out: sorted(p.name for p in (source(r) / "plots").glob("ablation_*")) == [
            "ablation_texty_note.pdf", "ablation_texty_note.png", "ablation_texty_note.txt"] or pytest.fail(out)),
    # --- numbers at the edges ---------------------------------------------------------------------------------
    "seeds --effect 1e15": Case(lambda r: ["seeds", str(spread(results_folder(r))), "--effect", "1e15"], "",
                                code=0, may_write=lambda r: [source(r)], check=seeds_column("2")),
    "seeds --effect 1e-200": Case(lambda r: ["seeds", str(spread(results_folder(r))), "--effect", "1e-200"], "",
                                  code=0, may_write=lambda r: [source(r)], check=seeds_column("> 10000")),
    "table --effect 1e-200": Case(lambda r: ["table", str(spread(results_folder(r))), "--effect", "1e-200"], "",
                                  code=0, may_write=lambda r: [source(r)]),
    # --- data ---------------------------------------------------------------------------------------------------
    "a Fashion-MNIST .gz with corrupt compressed data": Case(
        lambda r: ["train", "--method", "ce", "--dataset", "fashion_mnist", "--set",
                   f"dataset.root={corrupt_gz(r)}", "--out", str(r / "t")], "cannot read IDX file"),
    # --- search: -------------------------------------------------------------------------------------------------
    "a grid through dataset_defaults in a searched sweep": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("[ce]", "[ce, ls]"),
                                    SEARCH + "dataset_defaults: {digits: {methods: {ls: {epsilon: [0.1, 0.2]}}}}\n")),
                   "--results", str(r / "res")], "dataset_defaults.digits.methods.ls.epsilon: found a grid"),
    "a fixed value and a range for one parameter": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("[ce]", "[ce, {name: ls, params: {epsilon: 0.1}}]"), SEARCH)),
                   "--results", str(r / "res")], "found a fixed value 0.1 for 'ls''s 'epsilon'"),
    "--set of a parameter the search ranges over": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("[ce]", "[ce, ls]"), SEARCH)), "--set", "method.epsilon=0.2",
                   "--results", str(r / "res")], "--set method.epsilon=0.2: search.space.ls.epsilon"),
    # --- left from the previous set -----------------------------------------------------------------------------
    "a list where sweep.yaml's method_params should be a mapping": Case(
        lambda r: ["table", str(damaged_spec(results_folder(r)))], "", code=0, may_write=lambda r: [source(r)],
        lines=2, check=lambda r, out: "Trials: 6 (6 finished, 0 failed)" in out or pytest.fail(out)),
}


def _without_config(trial: Path) -> Path:
    """Another trial's checkpoint and metrics, its config.json and result.json gone."""
    (trial / "config.json").unlink()
    (trial / "result.json").unlink()
    (trial / "checkpoint.pt").write_bytes(b"a checkpoint of trial reuse")
    return trial


def _locked_parent(root: Path) -> Path:
    trial = trial_record(root / "ro", "reuse", "ls", 0, 0.8)
    read_only(root / "ro" / "trials")
    return trial


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_output_target(name, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], tmp_path, capsys, monkeypatch)


def test_plot_into_its_own_out_twice_replaces_only_its_own_figures(tmp_path, capsys):
    """The second plot of the same folder into the same --out replaces the figures the first recorded and
    removes those it no longer makes; the user's files there stay byte for byte."""
    folder = results_folder(tmp_path)
    out = user_folder(tmp_path, "thesis.pdf")
    assert main(["plot", str(folder), "--out", str(out)]) == 0
    record = json.loads((out / ".tfbench-outputs.json").read_text())["files"]
    assert set(record) == {p.name for p in out.iterdir() if p.suffix in (".png", ".pdf", ".txt")
                           and p.name != "thesis.pdf"}
    # an earlier plot of this folder recorded a figure this one no longer makes
    (out / "ablation_gone.png").write_bytes(b"an earlier figure")
    (out / ".tfbench-outputs.json").write_text(json.dumps({"files": {**record, "ablation_gone.png":
                                                                     record["learning_digits_tiny_cnn.png"]}}))
    assert main(["plot", str(folder), "--out", str(out)]) == 0
    assert not (out / "ablation_gone.png").exists()
    assert (out / "thesis.pdf").read_bytes() == b"the user's own thesis.pdf"


def test_train_force_moves_a_folder_without_config_aside(tmp_path, capsys):
    """Another trial's checkpoint and metrics without a config.json: --force moves the whole folder aside
    before anything is written, and the new trial starts from nothing."""
    out = _without_config(trial_record(tmp_path, "reuse", "ls", 0, 0.8))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*TRAIN, "--out", str(out), "--force"]) == 0
    aside = out.with_name("reuse.moved-unknown")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    assert json.loads((out / "config.json").read_text())["spec"]["method"] == "ce"
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_train_out_dot_force_moves_the_current_folder_aside(tmp_path, capsys, monkeypatch):
    out = trial_record(tmp_path, "reuse", "ls", 0, 0.8)
    monkeypatch.chdir(out)
    assert main([*TRAIN, "--out", ".", "--force"]) == 0
    other = json.loads((tmp_path / "trials" / "reuse.moved-reuse" / "config.json").read_text())
    mine = json.loads((out / "config.json").read_text())
    assert other["key"] == "reuse" and mine["spec"]["method"] == "ce" and (out / "result.json").is_file()


def test_a_link_loop_inside_a_class_folder_is_not_followed(tmp_path):
    """train/cat/up -> .. would list cat's images again under cat/up/cat/... and dog's images as cats; a class
    folder that is itself a link is still read."""
    from harness.data.imagefolder import image_folder_samples

    train = tmp_path / "train"
    for cls, name in (("cat", "a.png"), ("dog", "b.png")):
        (train / cls).mkdir(parents=True)
        (train / cls / name).write_bytes(b"png")
    (train / "cat" / "up").symlink_to("..")
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "c.png").write_bytes(b"png")
    (train / "bird").symlink_to(tmp_path / "birds")
    samples = image_folder_samples(train, ["bird", "cat", "dog"])
    assert samples == [(str(train / "bird" / "c.png"), 0), (str(train / "cat" / "a.png"), 1),
                       (str(train / "dog" / "b.png"), 2)]


def test_seeds_needed_is_exact_at_both_ends():
    """A huge effect needs the fewest seeds a paired test has (2: its power there is 1 to double precision);
    a tiny one more than MAX_SEEDS (the normal approximation (z sd / effect)^2 alone is beyond it)."""
    from harness.results.stats import MAX_SEEDS, paired_power, seeds_needed

    assert seeds_needed(effect=1e15, sd=1.0) == 2 and seeds_needed(effect=-1e300, sd=0.3) == 2
    assert paired_power(2, effect=1e15, sd=1.0) == 1.0
    z = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}
    assert (z * 1.0 / 1e-2) ** 2 > MAX_SEEDS and seeds_needed(effect=1e-2, sd=1.0) is None
    for tiny in (1e-200, 5e-324):
        assert seeds_needed(effect=tiny, sd=1.0) is None


def test_latex_cells_are_escaped_once_and_marked_after():
    from harness.results.render import Table, to_latex

    t = Table("T", ["method", "top-1"], [[r"a\textbf{", "1.00 +- 0.10"], ["TFBSENTPM", "2.00 +- 0.20"]],
              [["", "better"], ["", ""]])
    tex = to_latex(t)
    assert r"a\textbackslash{}textbf\{" in tex and "TFBSENTPM" in tex
    assert r"\textbf{1.00 $\pm$ 0.10}$^{\blacktriangle}$" in tex
    assert re.search(r"^\\toprule$", tex, re.M) and re.search(r"^\\bottomrule$", tex, re.M)
