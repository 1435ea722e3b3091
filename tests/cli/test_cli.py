"""The command line's shape: a fast `--help` that imports no command module, `--version`, one command's
module imported only when that command runs, and the flags that mean one thing everywhere."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import COMMANDS, build_parser, chosen_command, main

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_help_is_fast_and_lists_every_command():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, env=env,
                         timeout=60)
    seconds = time.perf_counter() - t0
    print(f"tfbench --help: {seconds:.2f} s (a new Python process included)")
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert f"    {name}" in out.stdout
    assert seconds < 3.0  # 1 s on an idle machine; 3 s leaves room for a loaded one


def test_importing_the_cli_and_building_the_top_parser_imports_no_heavy_module():
    code = ("import sys; import harness.cli as c; c.build_parser(); c.build_parser(c.chosen_command(['--help']));"
            "print(sorted(m for m in ('torch', 'ray', 'pandas', 'matplotlib', 'timm', 'numpy', 'methods')"
            " if m in sys.modules))")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_the_chosen_commands_module_is_imported():
    code = ("import sys; import harness.cli as c; c.build_parser('methods');"
            "print(sorted(m for m in sys.modules if m.startswith('harness.cli.') and m != 'harness.cli.common'))")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['harness.cli.methods']"


def test_chosen_command_is_the_first_word_that_is_not_an_option():
    assert chosen_command(["train", "--method", "ce"]) == "train"
    assert chosen_command(["--version"]) is None
    assert chosen_command(["-h", "bench", "methods"]) == "bench"
    assert chosen_command(["nosuch", "x"]) is None
    assert chosen_command([]) is None


def test_version_names_the_package_version_and_the_git_revision(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"tfbench {version('tfbench')}")
    if (REPO / ".git").exists():  # a checkout: the revision is HEAD's
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        assert f"(git {head}" in out


def test_unknown_command_is_argparses_one_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nosuch"])
    assert e.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def _parsed(command: str, argv: list[str]) -> argparse.Namespace:
    return build_parser(command).parse_args([command, *argv])


def test_device_defaults_to_auto_in_every_command_that_takes_one():
    cases = {"landscape": ["results/x"], "zipf": ["fit", "--toy"], "bench": ["methods"]}
    for command, argv in cases.items():
        assert _parsed(command, argv).device == "auto", command
    for target in ("step", "harness"):
        assert _parsed("bench", [target]).device == "auto", target
    assert _parsed("zipf", ["examples", "t"]).device == "auto"
    assert _parsed("zipf", ["snr", "--toy"]).device == "auto"


def test_method_is_repeatable_and_accepts_commas():
    from harness.cli.common import split_list

    args = _parsed("landscape", ["results/x", "--method", "ce", "--method", "ls,zipf", "--seeds", "0,1",
                                 "--seeds", "2"])
    assert split_list(args.methods) == ["ce", "ls", "zipf"] and split_list(args.seeds) == ["0", "1", "2"]
    assert split_list(_parsed("landscape", ["results/x", "--methods", "ce,zipf"]).methods) == ["ce", "zipf"]
    args = _parsed("bench", ["methods", "--method", "ls,zipf", "--method", "ce"])
    assert split_list(args.methods) == ["ls", "zipf", "ce"]


def test_format_means_a_results_file_format_and_tablefmt_a_tabulate_style():
    # --format picks md / tex / csv (what `table` and `zipf fit` print); bench tables take --tablefmt
    assert _parsed("zipf", ["fit", "--toy", "--format", "csv"]).format == "csv"
    with pytest.raises(SystemExit):
        _parsed("zipf", ["fit", "--toy", "--format", "github"])
    for target in ("methods", "step", "harness", "sweep"):
        args = _parsed("bench", [target, "--tablefmt", "simple"])
        assert args.tablefmt == "simple" and not hasattr(args, "format"), target
