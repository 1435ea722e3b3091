"""A non-editable install works from anywhere: `pip install --target` of a copy of the source, then
`tfbench train` on digits from another folder, with that install first on the path. Nothing may be
written into the installed package's folder (an installed copy once defaulted results to site-packages)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_non_editable_install_trains_from_another_folder(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build's egg-info and build/ never land in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("harness", "methods"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert not (site / "harness" / "__init__.py").is_symlink() and (site / "harness" / "cli" / "__init__.py").is_file()
    installed_before = _files(site)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TFBENCH_DATA": str(tmp_path / "data")}
    where = subprocess.run([sys.executable, "-c", "import harness, methods; print(harness.__file__, methods.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(site) for p in where.stdout.split()), where.stdout

    run = subprocess.run([sys.executable, "-m", "harness.cli", "train", "--method", "ce", "--dataset", "digits",
                          "--epochs", "1", "--out", "out"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((work / "out" / "result.json").read_text())
    assert 0.0 <= result["best_top1"] <= 1.0
    assert _files(site) == installed_before  # no results, data or logs inside the installed package

    version = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("tfbench ") and "git" not in version.stdout
