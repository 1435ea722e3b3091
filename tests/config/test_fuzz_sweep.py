"""Property-based test of sweep-file validation: every malformed file is refused with exit code 2, one clear
line per problem naming where it is, no traceback, and nothing written under the results folder.

A generated file starts from a valid sweep and applies mutations that each make it invalid, so no example
can reach the runner (the runner is replaced by a stub that fails the test if one does). Mutations come in
three families, because validation has three stages: structural problems (checked together in one pass,
so several are combined and each must be reported), value problems found when trials are resolved
(reported once the structure is sound, so applied alone), and files that are not a sweep at all.
"""
from __future__ import annotations

import contextlib
import io
import math
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from helpers import write_sweep_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config.schema import SweepFile

BASE = {
    "schema_version": 1,
    "name": "fuzz",
    "methods": ["ce", {"name": "zipf", "params": {"alpha": [0.5, 1.0]}}],
    "datasets": ["digits"],
    "models": ["tiny_cnn"],
    "seeds": [0, 1],
    "train": {"epochs": 2, "batch_size": 32},
    "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
    "retries": 0,
}

NAN, INF = math.nan, math.inf
HUGE = 10**40
NOT_A_NUMBER = st.sampled_from(["two", "", None, [], {}, [1], {"a": 1}, True, False])
BAD_WHOLE = st.one_of(NOT_A_NUMBER, st.sampled_from([NAN, INF, -INF, 1.5, -1, -HUGE]),
                      st.integers(max_value=-1), st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer()))
BAD_FLOAT = st.one_of(NOT_A_NUMBER, st.sampled_from([NAN, INF, -INF, -1.0, -1e300]),
                      st.floats(max_value=-1e-9, allow_infinity=True))
# every key the schema knows (a mutation must not "misspell" one key into another real one, e.g. alpha)
TOP_KEYS = list(SweepFile.model_fields)


def misspell(word: str) -> st.SearchStrategy[str]:
    """A near miss of `word`: one letter dropped, doubled or swapped, or a different case."""
    variants = {word[:i] + word[i + 1:] for i in range(len(word))}
    variants |= {word[:i] + word[i] + word[i:] for i in range(len(word))}
    variants |= {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}
    variants |= {word.upper(), word.capitalize()}
    return st.sampled_from(sorted(v for v in variants if v != word and v))


def unknown_key(known: list[str]) -> st.SearchStrategy[str]:
    typo = st.sampled_from(known).flatmap(misspell)
    other = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
    return st.one_of(typo, other).filter(lambda k: k not in known)


# --- family A: structural problems (one pass; combinable on distinct top-level keys) ------------------
# each strategy yields (top-level key, new value or a function of the old, text expected in the message)

def _set(key, value):
    return lambda d: d.__setitem__(key, value)


STRUCTURAL = {
    "schema_version": st.one_of(st.sampled_from([2, 0, 1.5, "1", None, True, [1]]), st.integers().filter(lambda v: v != 1))
    .map(lambda v: (_set("schema_version", v), "schema_version")),
    "name": st.sampled_from([1, None, "", [], {}, "../evil", "a/b", ".hidden", "has space", "x\ny", True])
    .map(lambda v: (_set("name", v), "name")),
    "methods": st.sampled_from([3, "ce", {}, [], [1], [""], [None], [{"params": {}}], [{"name": "ce", "param": {}}],
                                [{"name": "ce", "params": [1]}], ["ce", "ce"], ["cee"], ["zipf-ls"]])
    .map(lambda v: (_set("methods", v), "methods")),
    "datasets": st.sampled_from([3, "digits", {}, [], [2], [""], [{"name": "digits", "extra": 1}], ["digits", "digits"],
                                 ["digitz"], [{"name": "digits", "params": {"nope": 1}}],
                                 [{"name": "digits", "params": {"val_fraction": "x"}}],
                                 [{"name": "imagenet", "params": {"on_bad_image": "ignore"}}]])
    .map(lambda v: (_set("datasets", v), "datasets")),
    "models": st.sampled_from(["tiny_cnn", [], [1], [""], ["tiny_cnn", "tiny_cnn"], {}, 3])
    .map(lambda v: (_set("models", v), "models")),
    "seeds": st.one_of(
        st.sampled_from(["0", 1.5, [], [0, 0], {}, {"count": 0}, {"count": -1}, {"cnt": 3}, {"count": "3"},
                         [2**40], {"count": HUGE}, {"count": 2, "start": -5}]),
        st.lists(BAD_WHOLE, min_size=1, max_size=3)).map(lambda v: (_set("seeds", v), "seeds")),
    "train": st.one_of(st.sampled_from([[], "fast", 3]).map(lambda v: (_set("train", v), "train")),
                       unknown_key(["epochs", "batch_size", "lr"]).map(
                           lambda k: (lambda d: d["train"].__setitem__(k, 1), "train."))),
    "resources": st.one_of(
        st.sampled_from([[], "lots", 2]).map(lambda v: (_set("resources", v), "resources")),
        unknown_key(["cpus_per_trial", "gpus_per_trial", "workers_per_trial", "max_concurrent"]).map(
            lambda k: (lambda d: d["resources"].__setitem__(k, 1), "resources.")),
        st.tuples(st.sampled_from(["cpus_per_trial", "gpus_per_trial", "max_concurrent"]), BAD_FLOAT).map(
            lambda kv: (lambda d: d["resources"].__setitem__(*kv), f"resources.{kv[0]}")),
        st.tuples(st.just("workers_per_trial"), st.one_of(BAD_WHOLE, st.just(0))).map(
            lambda kv: (lambda d: d["resources"].__setitem__(*kv), f"resources.{kv[0]}")),
        st.sampled_from([1.5, 2.5]).map(lambda v: (lambda d: d["resources"].__setitem__("gpus_per_trial", v),
                                                   "resources.gpus_per_trial"))),
    "retries": BAD_WHOLE.map(lambda v: (_set("retries", v), "retries")),
    "imports": st.sampled_from(["my_method.py", [1], ["no_such_file.py"], ["no_such_module_xyz"],
                                ["no.such.module"], ["sub/"], ["../../etc/passwd.py"], [None], {}])
    .map(lambda v: (_set("imports", v), "imports")),
    "unknown": unknown_key(TOP_KEYS).map(lambda k: (lambda d: d.__setitem__(k, 1), "unknown key")),
}


@st.composite
def structural_mutations(draw):
    keys = draw(st.lists(st.sampled_from(sorted(STRUCTURAL)), min_size=1, max_size=4, unique=True))
    return [draw(STRUCTURAL[k]) for k in keys]


# --- family B: value problems found when trials are resolved (applied one at a time) ------------------

def _train(k, v):
    return lambda d: d["train"].__setitem__(k, v)


def _zipf(k, v):
    return lambda d: d["methods"][1]["params"].__setitem__(k, v)


# (a null training setting means "the default", so None is no mistake there)
RESOLVED = st.one_of(
    st.tuples(st.sampled_from(["epochs", "batch_size", "warmup_epochs", "max_steps_per_epoch"]),
              st.one_of(BAD_WHOLE, st.sampled_from([HUGE, 2**31, 10**400])).filter(lambda v: v is not None)).map(
        lambda kv: (_train(*kv), f"train.{kv[0]}")),
    st.tuples(st.sampled_from(["lr", "momentum", "weight_decay", "gamma"]),
              BAD_FLOAT.filter(lambda v: v is not None)).map(lambda kv: (_train(*kv), f"train.{kv[0]}")),
    st.sampled_from([["a"], "0.5", [0.5, NAN], [-1], 5, [True], [10**400]]).map(
        lambda v: (_train("milestones", v), "train.milestones")),
    st.sampled_from(["nope", "sgd", ""]).map(lambda v: (_train("recipe", v), "recipe")),
    st.sampled_from(["cuda:x", 3, "gpu", "cuda:"]).map(lambda v: (_train("device", v), "train.device")),
    st.tuples(st.sampled_from(["alpha", "lam", "beta"]),
              st.one_of(BAD_FLOAT.filter(lambda v: not isinstance(v, list) and v is not None), st.just([]),
                        st.just([0.5, 0.5]), st.just([NAN]), st.just([1.0, INF]))).map(
        lambda kv: (_zipf(*kv), kv[0])),
    misspell("alpha").map(lambda k: (_zipf(k, 1.0), f"unknown parameter {k!r}")),
    st.sampled_from(["upsample", "distribution"]).map(lambda k: (_zipf(k, "nonsense"), repr(k))),
)


# --- family C: not a sweep at all (one at a time; text -> expected) -----------------------------------

def dumped() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


BROKEN_TEXT = st.one_of(
    st.sampled_from([
        ("methods: [ce\n", "not valid YAML"),
        ("name: fuzz\n\tmethods: [ce]\n", "not valid YAML"),
        ("name: [a, b\nseeds: {count: 2\n", "not valid YAML"),
        ("a: b: c\n", "not valid YAML"),
        ('name: "unterminated\n', "not valid YAML"),
        ("- a\n- list\n", "top level: found list"),
        ("just a string\n", "top level: found str"),
        ("", "top level: found NoneType"),
        ("name: fuzz\nname: other\n", "twice"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
        ("methods: !!python/name:os.system\n", "not valid YAML"),
    ]),
    # a valid file with a duplicated key: YAML keeps the last one silently; we refuse it
    st.sampled_from(["methods", "seeds", "train", "datasets"]).map(
        lambda k: (dumped() + f"{k}: {yaml.safe_dump(BASE[k], default_flow_style=True).strip()}\n", "twice")),
    # a valid file cut in the middle of a flow collection
    st.integers(min_value=1, max_value=200).map(lambda n: ("methods: [ce, {name: zipf, params: {alpha: [0.5"[:n % 40 + 10]
                                                           + "\n", "not valid YAML")).filter(
        lambda t: t[0].count("[") > t[0].count("]")),
)

RAISING_MODULES = st.tuples(
    st.sampled_from(["raise RuntimeError({msg!r})", "raise ValueError({msg!r})", "raise ImportError({msg!r})",
                     "import no_such_dependency_xyz", "1 / 0", "undefined_name", "def broken(:\n    pass",
                     "raise SystemExit({msg!r})", "from methods import no_such_thing"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
)


FOLDERS: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def remove_example_folders():
    yield
    for folder in FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def run_cli(text: str | bytes, files: dict[str, str] | None = None) -> tuple[int, str, Path, Path]:
    """Write the sweep (and any files beside it) to a fresh folder and run `tfbench run` on it in-process."""
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-fuzz-"))
    FOLDERS.append(tmp)
    (tmp / "sub").mkdir()
    path = write_sweep_file(tmp, text, beside=files)
    results = tmp / "results"
    err = io.StringIO()
    reached = AssertionError("a malformed sweep file passed validation and reached the runner")
    with mock.patch("harness.sweep.runner.run_sweep", side_effect=reached), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", str(path), "--results", str(results)])
    return code, err.getvalue(), path, results


def check(code: int, err: str, path: Path, results: Path, expected: list[str], problems: int = 1) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines, "no message"
    assert "Traceback" not in err, err
    assert all(line.startswith(("tfbench: error:", str(path))) for line in lines), err
    for text in expected:
        assert text in err, (text, err)
    assert len(lines) >= problems  # at least one line per problem
    assert not results.exists(), "something was written under results/"


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(structural_mutations())
def test_structural_problems_are_all_reported_one_line_each(mutations):
    doc = yaml.safe_load(dumped())
    for apply, _ in mutations:
        apply(doc)
    code, err, path, results = run_cli(yaml.safe_dump(doc, sort_keys=False))
    check(code, err, path, results, [expected for _, expected in mutations], problems=len(mutations))


@FUZZ
@given(RESOLVED)
def test_bad_values_are_refused_before_any_work(mutation):
    apply, expected = mutation
    doc = yaml.safe_load(dumped())
    apply(doc)
    code, err, path, results = run_cli(yaml.safe_dump(doc, sort_keys=False))
    check(code, err, path, results, [expected])


@settings(max_examples=60, deadline=None)
@given(BROKEN_TEXT)
def test_files_that_are_not_sweeps_are_one_line(case):
    text, expected = case
    code, err, path, results = run_cli(text)
    check(code, err, path, results, [expected])
    assert len(err.strip().splitlines()) == 1


@settings(max_examples=40, deadline=None)
@given(RAISING_MODULES)
def test_a_method_file_that_fails_on_import_is_one_line(case):
    template, msg = case
    body = template.format(msg=msg)
    code, err, path, results = run_cli(dumped() + "imports: [bad_method.py]\n", {"bad_method.py": body + "\n"})
    check(code, err, path, results, ["imports[0]", "bad_method.py"])


def test_non_utf8_bytes_are_one_line():
    code, err, path, results = run_cli(b"name: \xff\xfe\x00\x81 fuzz\n")
    check(code, err, path, results, [str(path)])
