"""The prepared GPU suite (`tfbench bench gpu --suite`) in its CPU smoke form: every section runs, a failing
section is one line of the report while the others still run, and the report is written as markdown and JSON."""
from __future__ import annotations

import json

import pytest

from harness.bench import suite
from harness.bench.gpu import ALL_METHODS
from harness.cli import main


def test_suite_sections_run_and_write_markdown_and_json(tmp_path):
    report = suite.run_suite(device="cpu", smoke=True, out=tmp_path,
                             sections=("losses", "steps", "deterministic", "data", "sync"), log=lambda s: None)
    sections = report["sections"]
    assert list(sections) == ["losses", "steps", "deterministic", "data", "sync"]
    assert not [name for name, entry in sections.items() if "error" in entry]
    steps = sections["steps"]["rows"]
    assert [r["method"] for r in steps] == list(ALL_METHODS) and {r["mode"] for r in steps} == {"eager"}
    assert all(r["images_per_s"] > 0 and r["finite"] for r in steps)
    default, deterministic = sections["deterministic"]["rows"]
    assert (default["deterministic"], deterministic["deterministic"]) == (False, True)
    assert deterministic["x_default"] == pytest.approx(deterministic["ms"] / default["ms"])
    data = sections["data"]["rows"]  # our loader, the torchvision path, timm's, then the model's step
    assert len(data) == 4 and data[-1]["what"].startswith("training step") and all(r["images_per_s"] > 0 for r in data)
    assert sections["sync"]["rows"] == [{"line": "host synchronisation: not checked (no CUDA device)"}]
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved["sections"]["steps"]["rows"] == steps
    md = (tmp_path / "suite.md").read_text()
    assert "SMOKE" in md and all(f"## {name} (" in md for name in sections)


def test_a_failing_section_is_one_line_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(**kw):
        raise RuntimeError("the card fell off\nsecond line")

    monkeypatch.setattr(suite, "RUNNERS", {**suite.RUNNERS, "losses": broken})
    assert main(["bench", "gpu", "--suite", "--device", "cpu", "--smoke", "--section", "losses,sync",
                 "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "failed: RuntimeError: the card fell off\n" in out and "second line" not in out
    assert "## sync (" in out
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert "the card fell off" in saved["sections"]["losses"]["traceback"]


def test_suite_on_a_cpu_needs_smoke_and_known_sections(capsys):
    assert main(["bench", "gpu", "--suite", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "runs only in its --smoke form" in err and len(err.splitlines()) == 1
    assert main(["bench", "gpu", "--suite", "--smoke", "--device", "cpu", "--section", "stepz"]) == 2
    assert "unknown section 'stepz'; allowed: cuda_tests, losses" in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_suite_runs_in_smoke_form_with_its_sweep(tmp_path):
    code = main(["bench", "gpu", "--suite", "--device", "cpu", "--smoke", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "suite.json").read_text())
    assert code == 0, {k: v["error"] for k, v in report["sections"].items() if "error" in v}
    assert sorted(report["sections"]) == sorted(suite.SECTIONS)  # the JSON file sorts its keys
    tests = report["sections"]["cuda_tests"]["rows"][0]
    assert tests["exit_code"] == 0 and tests["passed"] >= 1 and "failed" not in tests
    *trials, whole = report["sections"]["sweep"]["rows"]
    assert sorted(r["method"] for r in trials) == sorted(suite.sweep_doc(smoke=True, device="cpu")["methods"])
    for r in trials:  # the wall time is its parts, each measured on its own
        assert r["status"] == "finished"
        assert sum(r[k] for k in suite.TIME_PARTS) == pytest.approx(r["wall_time_s"], rel=1e-6)
    assert whole["steps_time_s"] == pytest.approx(sum(r["steps_time_s"] for r in trials))
    assert whole["wall_time_s"] > max(r["wall_time_s"] for r in trials)
