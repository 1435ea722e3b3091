"""Hostile inputs: names that are paths, cells a spreadsheet would run, folders of another tool, damaged and
foreign records, named pipes, checks that used to come late, inputs that used to end in a traceback.

Every case runs `tfbench` in this process (its imports warmed once) and checks what a user sees and what is
left on disk: the documented exit code (2 for bad input; 0 where a damaged record is left out with one
warning), one line on stderr, no traceback, nothing written outside the folder the command may write, no
good file deleted or changed, and an answer within 2 s.
"""
from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.cli import main

GOOD_SPEC = {"train": {"epochs": 2, "protocol": "clean", "select": "top1"}, "method_params": {}}


def trial_record(folder: Path, key: str, method: str, seed: int, top1: float, **result) -> Path:
    """A finished trial folder as a tfbench run writes it (config.json, result.json, metrics.jsonl)."""
    t = folder / "trials" / key
    t.mkdir(parents=True)
    spec = {"method": method, "dataset": "digits", "model": "tiny_cnn", "seed": seed, **GOOD_SPEC}
    (t / "config.json").write_text(json.dumps({"key": key, "seed": seed, "spec": spec}))
    (t / "result.json").write_text(json.dumps({"status": "finished", "key": key, "protocol": "clean",
                                               "selected_top1": top1, "last_top1": top1, "selected_epoch": 2,
                                               "val_selected_top1": 0.9, "step_time_s": 0.01, **result}))
    (t / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_top1": 0.5, "train_loss": 1.0}) + "\n"
                                             for e in (1, 2)))
    return t


def results_folder(root: Path, *, text: str = "plain") -> Path:
    """A small results folder: CE and two configurations of a method with a text parameter `note` (one of
    them `text`, so that the tables' labels show it), 2 seeds each, with its records."""
    folder = root / "results" / "hostile"
    trials = []
    for method, note, top1, tail in (("ce", None, 0.8, "0123456789"), ("texty", text, 0.7, "0123456789"),
                                     ("texty", "other", 0.75, "abcdefabcd")):
        for seed in (0, 1):
            key = f"{method}-digits-s{seed}-{tail}"
            trial_record(folder, key, method, seed, top1 + 0.01 * seed)
            spec = {"method": method, "dataset": "digits", "model": "tiny_cnn", "seed": seed, **GOOD_SPEC,
                    "method_params": {} if note is None else {"note": note}}
            trials.append({"key": key, "spec": spec})
    import yaml

    (folder / "sweep.yaml").write_text(yaml.safe_dump({"source": "x.yaml", "file": {"name": "hostile"},
                                                       "trials": trials}))
    (folder / ".tfbench").write_text("a tfbench results folder\n")
    rewrite_trials_csv(folder)
    return folder


def rewrite_trials_csv(folder: Path) -> None:
    """trials.csv from the records, as `tfbench run` writes it at the end of a run."""
    from harness.folders import ResultsFolder
    from harness.results import records

    records.write_trials_csv(folder, ResultsFolder(folder).recorded_trials(), warn=lambda message: None)


def plugin(root: Path, body: str, name: str = "plug.py") -> Path:
    path = root / name
    path.write_text("from dataclasses import dataclass\nimport torch.nn.functional as F\n"
                    "from methods import Method, register\n" + textwrap.dedent(body))
    return path


def sweep(root: Path, body: str, extra: str = "", name: str = "s.yaml") -> Path:
    path = root / name
    path.write_text("schema_version: 1\n" + textwrap.dedent(body) + textwrap.dedent(extra))
    return path


BASE = textwrap.dedent("""\
    name: hostile
    methods: [ce]
    datasets: [digits]
    models: [tiny_cnn]
    train: {epochs: 2}
    """)


@dataclass
class Case:
    argv: Callable[[Path], list[str]]   # built in the case's folder
    expect: str                         # a part of the one stderr line
    code: int = 2
    may_write: Callable[[Path], list[Path]] = field(default=lambda root: [])  # folders it may write into
    check: Callable[[Path, str], None] | None = None                          # more checks: (root, stdout)
    lines: int = 1                      # problems reported, or at most warnings given (one line each)
    seconds: float = 2.0                # the answer's bound (more where the command's work is to make figures)


def texty(root: Path) -> Path:
    return plugin(root, '''
        @register("texty")
        class Texty(Method):
            @dataclass(frozen=True)
            class Params:
                note: str = "plain"

            def loss(self, logits, targets, ctx):
                ce = F.cross_entropy(logits.float(), targets)
                return {"loss": ce, "ce": ce.detach()}
        ''', "texty.py")


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


def foreign_folder(root: Path) -> Path:
    """Another tool's folder: its own `.cache.abcdefgh.tmp` and `.write-probe-1` must survive tfbench."""
    d = root / "other"
    d.mkdir()
    (d / ".cache.abcdefgh.tmp").write_text("another tool's file")
    (d / ".write-probe-1").write_text("another tool's file")
    (d / "data.csv").write_text("a,b\n1,2\n")
    return d


def summary_checks(marker: str) -> Callable[[Path, str], None]:
    def check(root: Path, out: str) -> None:
        folder = root / "results" / "hostile"
        csv = (folder / "summary.csv").read_text()
        md = (folder / "summary.md").read_text()
        tex = (folder / "summary.tex").read_text()
        if marker == "formula":
            assert "'=HYPERLINK" in csv and ",=HYPERLINK" not in csv and "\n=HYPERLINK" not in csv
        if marker == "pipe":
            label = next(line for line in md.splitlines() if line.startswith("| texty"))
            assert r"a\|b" in label and len(label.split(" | ")) == len(md.splitlines()[md.splitlines().index(label) - 1].split(" | "))
        if marker == "latex":
            assert r"\textbackslash{}input\{x\}" in tex and r"\input{x}" not in tex
    return check


def damaged(result_patch: dict) -> Callable[[Path], list[str]]:
    def argv(root: Path) -> list[str]:
        folder = results_folder(root)
        t = folder / "trials" / "ce-digits-s1-0123456789"
        record = json.loads((t / "result.json").read_text())
        (t / "result.json").write_text(json.dumps({**record, **result_patch}))
        rewrite_trials_csv(folder)  # a run that meets the damaged record (its warning is the run's)
        return ["table", str(folder)]
    return argv


def left_out(root: Path, out: str) -> None:
    # the damaged CE seed is not counted: CE's cell holds one seed, and no 750.00 or nan anywhere
    md = (root / "results" / "hostile" / "summary.md").read_text()
    assert "750.00" not in md and "nan" not in md.lower().replace("n/a", "")
    assert "80.00 +- n/a (n=1" in md


def results_may_write(root: Path) -> list[Path]:
    return [root / "results" / "hostile"]


CASES: dict[str, Case] = {
    # --- names ---------------------------------------------------------------------------------------------
    "method name that is a path": Case(
        lambda r: ["methods", "--import", str(plugin(r, '@register("../../../x")\nclass X(Method):\n    pass\n'))],
        "is not an identifier"),
    "a 300-character method name": Case(
        lambda r: ["methods", "--import", str(plugin(r, f'@register("{"m" * 300}")\nclass X(Method):\n    pass\n'))],
        "is not an identifier"),
    "a method name with a pipe": Case(
        lambda r: ["methods", "--import", str(plugin(r, '@register("a|b")\nclass X(Method):\n    pass\n'))],
        "is not an identifier"),
    "a plugin class that is not a Method": Case(
        lambda r: ["methods", "--import", str(plugin(r, '@register("notamethod")\nclass X:\n    pass\n'))],
        "which is not a Method subclass"),
    "a data set name that is a path": Case(
        lambda r: ["datasets", "--json"] if False else ["methods", "--import", str(plugin(
            r, "from harness.data import DatasetDef, register_dataset\n@register_dataset('a/b')\n"
               "class D(DatasetDef):\n    pass\n"))], "is not an identifier"),
    "a sweep name that climbs out of results": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("name: hostile", "name: ../escape"))), "--results",
                   str(r / "results")], "name: found '../escape'"),
    "a sweep name with a newline": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("name: hostile", 'name: "a\\nb"'))), "--results",
                   str(r / "results")], "name: found 'a\\nb'"),
    "a trial key in sweep.yaml that is a path": Case(
        lambda r: ["table", str(_with_record(results_folder(r), {"trials": [{"key": "../../etc", "spec": {}}]}))],
        "", code=0, may_write=results_may_write),
    # --- escaping ------------------------------------------------------------------------------------------
    "a formula in a text parameter": Case(
        lambda r: ["table", str(results_folder(r, text='=HYPERLINK("http://x","y")')), "--format", "csv"], "",
        code=0, may_write=results_may_write, check=summary_checks("formula")),
    "a pipe in a text parameter": Case(
        lambda r: ["table", str(results_folder(r, text="a|b"))], "", code=0, may_write=results_may_write,
        check=summary_checks("pipe")),
    "LaTeX in a text parameter": Case(
        lambda r: ["table", str(results_folder(r, text=r"\input{x}")), "--format", "tex"], "", code=0,
        may_write=results_may_write, check=summary_checks("latex")),
    "control characters in a --set value": Case(
        lambda r: ["run", str(sweep(r, BASE)), "--set", "train.protocol=\x1b[31mred", "--results", str(r / "res")],
        "\\x1b[31mred"),
    "control characters in a method name": Case(
        lambda r: ["methods", "\x1b[2Jcleared"], "\\x1b[2Jcleared"),
    # --- foreign folders --------------------------------------------------------------------------------------
    "table on another tool's folder": Case(lambda r: ["table", str(foreign_folder(r))], "no trials.csv"),
    "plot on another tool's folder": Case(lambda r: ["plot", str(foreign_folder(r))], "no trials.csv"),
    "seeds on another tool's folder": Case(lambda r: ["seeds", str(foreign_folder(r))], "no trials.csv"),
    "a copied trial folder (its record names another key)": Case(
        lambda r: ["table", str(_copied(results_folder(r)))], "", code=0, may_write=results_may_write,
        check=left_out),
    "train into a folder that holds another trial": Case(
        lambda r: ["train", "--method", "ls", "--dataset", "digits", "--out",
                   str(trial_record(r, "reuse", "ce", 0, 0.8).parent / "reuse")],
        "holds the records of trial"),
    # --- damaged records ---------------------------------------------------------------------------------------
    "selected_top1 as a string": Case(damaged({"selected_top1": "0.9"}), "", code=0, may_write=results_may_write,
                                      check=left_out),
    "selected_top1 NaN": Case(damaged({"selected_top1": float("nan")}), "", code=0, may_write=results_may_write,
                              check=left_out),
    "selected_top1 of 7.5": Case(damaged({"selected_top1": 7.5}), "", code=0, may_write=results_may_write,
                                 check=left_out),
    "a negative NLL": Case(damaged({"last_nll": -1.0}), "", code=0, may_write=results_may_write, check=left_out),
    "a selected epoch of 0": Case(damaged({"selected_epoch": 0}), "", code=0, may_write=results_may_write,
                                  check=left_out),
    "trials.csv with a top-1 of 7.5": Case(
        lambda r: ["table", str(_edited_csv(results_folder(r), "0.81", "7.5"))], "", code=0,
        may_write=results_may_write, check=left_out),
    "trials.csv listing a trial twice": Case(
        lambda r: ["table", str(_duplicated_csv(results_folder(r)))], "", code=0, may_write=results_may_write),
    "sweep.yaml of the wrong types": Case(
        lambda r: ["table", str(_with_record(results_folder(r), {"trials": "abc", "file": 3, "alpha": None}))],
        "", code=0, may_write=results_may_write),
    # --- non-regular files ------------------------------------------------------------------------------------
    "metrics.jsonl a named pipe": Case(
        lambda r: ["seeds", str(_piped(results_folder(r), "trials/ce-digits-s0-0123456789/metrics.jsonl"))],
        "", code=0, may_write=results_may_write),
    "result.json a named pipe": Case(
        lambda r: ["table", str(_piped(_no_csv(results_folder(r)), "trials/ce-digits-s0-0123456789/result.json"))],
        "", code=0, may_write=results_may_write),
    "trials.csv a named pipe": Case(
        lambda r: ["seeds", str(_piped(results_folder(r), "trials.csv"))], "", code=0, may_write=results_may_write),
    "a sweep file that is a named pipe": Case(lambda r: ["run", str(fifo(r / "p.yaml"))], "no such file"),
    "a sweep file that is a folder": Case(lambda r: ["run", str(_mkdir(r / "d.yaml"))], "no such file"),
    # --- checks that used to come late ---------------------------------------------------------------------------
    "grace_period beyond a data set's default epochs": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("train: {epochs: 2}\n", ""), """\
            search: {budget: 2, scheduler: {name: asha, grace_period: 40}}
            """)), "--results", str(r / "res")], "trains 30 epochs"),
    "search with data-parallel workers": Case(
        lambda r: ["run", str(sweep(r, BASE, """\
            resources: {cpus_per_trial: 1, workers_per_trial: 2}
            search: {budget: 2}
            """)), "--results", str(r / "res")], "a search trial trains in one process"),
    "a paper protocol through dataset_defaults under search": Case(
        lambda r: ["run", str(sweep(r, BASE, """\
            dataset_defaults: {digits: {train: {protocol: paper}}}
            search: {budget: 2}
            """)), "--results", str(r / "res")], "resolves to protocol 'paper'"),
    "val_fraction of 20": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("[digits]", "[{name: digits, params: {val_fraction: 20}}]"))),
                   "--results", str(r / "res")], "val_fraction must be in (0, 1)"),
    "a holdout larger than the training split": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("{epochs: 2}", "{epochs: 2, holdout: 5000}"))),
                   "--results", str(r / "res")], "but digits trains on 1,437"),
    "an absurd thread count": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("{epochs: 2}", "{epochs: 2, threads: 1000000}"))),
                   "--results", str(r / "res")], "train.threads: found 1000000; allowed: <= 1024"),
    "a range problem found in the same pass as a structural one": Case(
        lambda r: ["run", str(sweep(r, BASE.replace("[ce]", "[{name: zipf, params: {lam: [-1.0]}}]") + "retry: 1\n")),
                   "--results", str(r / "res")], "retry: unknown key", lines=2),
    # --- used to end in a traceback -------------------------------------------------------------------------
    "--out that is a file": Case(
        lambda r: ["train", "--method", "ce", "--dataset", "digits", "--out", str(_file(r / "f"))],
        "exists and is not a folder"),
    "table --out that is a file": Case(
        lambda r: ["table", str(results_folder(r)), "--out", str(_file(r / "f"))], "exists and is not a folder"),
    "--set dataset.split_seed=-1": Case(
        lambda r: ["train", "--method", "ce", "--dataset", "digits", "--set", "dataset.split_seed=-1", "--out",
                   str(r / "t")], "split_seed and crop_padding must be >= 0"),
    "a download with no network": Case(
        lambda r: ["train", "--method", "ce", "--dataset", "fashion_mnist", "--set", f"dataset.root={r / 'fm'}",
                   "--set", "dataset.download=true", "--out", str(r / "t")], "download into",
        may_write=lambda r: [r / "fm"]),
    "a method file that calls exit()": Case(
        lambda r: ["train", "--import", str(plugin(r, "raise SystemExit(0)\n")), "--method", "ce", "--dataset",
                   "digits", "--out", str(r / "t")], "called exit(0) while being imported"),
    "a method file that raises": Case(
        lambda r: ["methods", "--import", str(plugin(r, "raise RuntimeError('no')\n"))], "raised RuntimeError: no"),
}


def _with_record(folder: Path, record: dict) -> Path:
    import yaml

    (folder / "sweep.yaml").write_text(yaml.safe_dump(record))
    return folder


def _copied(folder: Path) -> Path:
    """trials/<ce seed 1> replaced by a copy of CE seed 0's folder: its result.json names seed 0's key."""
    import shutil

    dst = folder / "trials" / "ce-digits-s1-0123456789"
    shutil.rmtree(dst)
    shutil.copytree(folder / "trials" / "ce-digits-s0-0123456789", dst)
    rewrite_trials_csv(folder)
    return folder


def _csv(folder: Path) -> Path:
    return folder / "trials.csv"


def _edited_csv(folder: Path, old: str, new: str) -> Path:
    path = _csv(folder)
    path.write_text(path.read_text().replace(f",{old},", f",{new},", 1))
    return folder


def _duplicated_csv(folder: Path) -> Path:
    path = _csv(folder)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    return folder


def _no_csv(folder: Path) -> Path:
    (folder / "trials.csv").unlink(missing_ok=True)
    return folder


def _piped(folder: Path, relative: str) -> Path:
    if relative != "trials.csv":
        _csv(folder)
    fifo(folder / relative)
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _file(path: Path) -> Path:
    path.write_text("a file\n")
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    out = {}
    for p in root.rglob("*"):
        if p.is_fifo():
            out[str(p)] = b"fifo"
        elif p.is_file():
            out[str(p)] = p.read_bytes()
        elif p.is_dir():
            out[str(p)] = None
    return out


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """The 2 s bound is for tfbench's checks, not for importing torch, timm, pandas and matplotlib."""
    import matplotlib  # noqa: F401
    import pandas  # noqa: F401
    import timm  # noqa: F401

    import harness.data  # noqa: F401
    import harness.models  # noqa: F401
    import harness.results.plots  # noqa: F401
    import harness.results.tables  # noqa: F401
    import harness.train.loop  # noqa: F401


@pytest.fixture(autouse=True)
def unregister():
    yield
    from methods import METHODS

    METHODS.unregister("texty")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError(101, "Network is unreachable (test)")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse())


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_input(name, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], tmp_path, capsys, monkeypatch)


def run_case(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    """Run one case and check what a user sees and what is left on disk (see the module's doc)."""
    root = tmp_path / "case"
    root.mkdir()
    monkeypatch.chdir(root)  # relative outputs (./results) would land here
    texty(root)
    monkeypatch.setenv("TFBENCH_DATA", str(root / "data-home"))
    argv = case.argv(root)
    capsys.readouterr()
    before = snapshot(root)
    from methods import load_user_module

    load_user_module(str(root / "texty.py"))  # the results folders name it, as a sweep would import it
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    after = snapshot(root)
    assert code == case.code, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    if case.code == 2:  # at most one warning about a damaged record before the error
        assert len([line for line in lines if line.startswith("tfbench: warning: ")]) <= 1, err
        lines = [line for line in lines if not line.startswith("tfbench: warning: ")]
        assert len(lines) == case.lines and lines[0].startswith("tfbench: error: "), err
        assert case.expect in lines[0], lines[0]
        if case.lines == 2:  # every problem in one pass: the range of lam as well as the unknown key
            assert "parameter 'lam' must be >= 0" in lines[1], lines[1]
    else:
        assert len(lines) <= case.lines, err  # at most the warnings about what was left out (one each)
    # nothing written outside the folders the command may write, nothing good deleted or changed
    allowed = [str(p) for p in case.may_write(root)]
    for path in set(after) - set(before):
        assert any(path.startswith(a) for a in allowed), f"{path} was written"
    for path, content in before.items():
        if any(path.startswith(a) for a in allowed) and Path(path).name.startswith(("summary", "trials.csv")):
            continue  # the summary and trials.csv are what the command writes
        assert after.get(path, "gone") == content, f"{path} was changed or deleted"
    assert seconds < case.seconds, f"took {seconds:.2f} s"
    if case.check is not None:
        case.check(root, out)
