"""Trial keys hash the fully resolved trial and travel: no path in them, every default filled, what changes a
number in them, plus the stale-trial finder on hand-built results folders."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import scaled_ce_source, set_dataset_default, write_sweep_file

from harness.config.spec import TrainConfig
from harness.config.sweep_file import load_sweep
from harness.folders import ResultsFolder, describe_stale

PLUGIN = scaled_ce_source("keys_plugin_test")

SWEEP = """\
schema_version: 1
name: keys
{imports}methods: [{methods}]
datasets: [digits]
models: [tiny_cnn]
seeds: [0, 1]
train: {{epochs: 1}}
"""


@pytest.fixture(autouse=True)
def forget_plugin():
    from methods import METHODS

    METHODS.unregister("keys_plugin_test")
    yield
    METHODS.unregister("keys_plugin_test")


def write_sweep(folder: Path, methods: str, imports: bool, plugin: str = PLUGIN) -> Path:
    text = SWEEP.format(methods=methods, imports="imports: [plugin.py]\n" if imports else "")
    return write_sweep_file(folder, text, beside={"plugin.py": plugin})


def keys(path: Path) -> dict[tuple, str]:
    return {(t.method, t.seed): t.key() for t in load_sweep(path).trials}


def test_copying_a_sweep_and_its_plugin_elsewhere_keeps_every_key(tmp_path):
    a = keys(write_sweep(tmp_path / "a", "ce, keys_plugin_test", imports=True))
    from methods import METHODS

    METHODS.unregister("keys_plugin_test")  # the copy registers its own module, as a fresh process would
    b = keys(write_sweep(tmp_path / "elsewhere" / "b", "ce, keys_plugin_test", imports=True))
    assert a == b and len(a) == 4


def test_adding_an_import_leaves_the_builtins_keys_unchanged(tmp_path):
    without = keys(write_sweep(tmp_path / "a", "ce, zipf", imports=False))
    with_import = keys(write_sweep(tmp_path / "b", "ce, zipf", imports=True))
    assert without == with_import


def test_a_user_method_key_holds_the_content_hash_of_its_file(tmp_path):
    path = write_sweep(tmp_path / "a", "keys_plugin_test", imports=True)
    spec = load_sweep(path).trials[0]
    expected = hashlib.sha256((tmp_path / "a" / "plugin.py").read_bytes()).hexdigest()[:16]
    assert spec.method_source == expected
    assert str(tmp_path) not in json.dumps(spec.key_dict())  # no path in what the key hashes
    from methods import METHODS

    METHODS.unregister("keys_plugin_test")
    edited = write_sweep(tmp_path / "b", "keys_plugin_test", imports=True, plugin=PLUGIN + "\n# edited\n")
    assert load_sweep(edited).trials[0].key() != spec.key()


def test_the_key_holds_resolved_dataset_params_and_leaves_the_root_out(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "ce", imports=False)).trials[0]
    # Digits.Params' defaults (harness/data), written out here by hand
    assert spec.dataset_params == {"val_fraction": 0.2, "split_seed": 0, "crop_padding": 0, "flip": False}
    kd = spec.key_dict()
    assert kd["spec_version"] == 4 and kd["method_params"] == {} and kd["model"] == "tiny_cnn"
    # the recipe settings at their off values stay out of the key, so keys from before they existed hold
    recipe = {"optimizer", "schedule", "mixup", "cutmix", "mixup_prob", "switch_prob", "augment", "ema", "init_from",
              "freeze"}
    assert set(kd["train"]) == set(TrainConfig.model_fields) - {"device", "checkpoint", "checkpoint_every", "sync_debug"} - recipe
    blob = json.dumps(kd, sort_keys=True, separators=(",", ":"))
    assert spec.key() == "ce-digits-s0-" + hashlib.sha256(blob.encode()).hexdigest()[:10]
    a = load_sweep(write_sweep(tmp_path / "c", "ce", imports=False)).trials
    cifar = SWEEP.format(methods="ce", imports="").replace("datasets: [digits]", "datasets: [cifar10]")
    path = write_sweep_file(tmp_path / "d", cifar)
    b = load_sweep(path).trials
    path.write_text(path.read_text().replace("datasets: [cifar10]", "datasets: [{name: cifar10, params: {root: /x}}]"))
    assert [t.key() for t in load_sweep(path).trials] == [t.key() for t in b]
    assert {t.key() for t in a}.isdisjoint(t.key() for t in b)


def test_a_changed_dataset_default_changes_the_key(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, "ce", imports=False)
    before = load_sweep(path).trials[0]
    set_dataset_default(monkeypatch, "digits", "val_fraction", 0.25)
    after = load_sweep(path).trials[0]
    assert after.dataset_params["val_fraction"] == 0.25 and after.key() != before.key()
    assert after.request == before.request  # the file asks for the same thing


@pytest.mark.parametrize("setting, a, b, same", [("threads", 1, 2, False), ("num_workers", 0, 2, False),
                                                  ("device", "cpu", "auto", True), ("checkpoint", True, False, True)])
def test_what_changes_numbers_is_in_the_key_and_nothing_else(setting, a, b, same, tmp_path):
    path = write_sweep(tmp_path, "ce", imports=False)
    ka = load_sweep(path, [f"train.{setting}={a}"]).trials[0].key()
    kb = load_sweep(path, [f"train.{setting}={b}"]).trials[0].key()
    assert (ka == kb) is same


# --- stale trials on hand-built folders (no training) ---------------------------------------------

def fake_trial(folder: Path, key: str, spec: dict, finished: bool = True) -> None:
    tdir = folder / "trials" / key
    tdir.mkdir(parents=True)
    (tdir / "config.json").write_text(json.dumps({"key": key, "spec": spec}))
    (tdir / "result.json").write_text(json.dumps({"status": "finished" if finished else "running"}))


def test_stale_keys_finds_old_resolutions_of_a_current_request(tmp_path):
    spec = load_sweep(write_sweep(tmp_path / "sweep", "ce", imports=False)).trials[0]
    current = spec.to_dict()
    folder = tmp_path / "results"
    (folder / "trials").mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"trials": [{"key": spec.key(), "spec": current}]}))
    old = json.loads(json.dumps(current))
    old["dataset_params"]["val_fraction"] = 0.3
    fake_trial(folder, "ce-digits-s0-old", old)                          # same request, other resolution
    other = dict(old, request="something-else")
    fake_trial(folder, "ce-digits-s0-other", other)                      # another request: an orphan, not stale
    fake_trial(folder, "ce-digits-s0-unfinished", old, finished=False)   # not finished: nothing to protect
    legacy = {k: v for k, v in old.items() if k not in ("request", "spec_version", "method_source")}
    fake_trial(folder, "ce-digits-s0-legacy", legacy)                    # written before keys were resolved
    fake_trial(folder, spec.key(), current)                              # the current trial itself
    assert ResultsFolder(folder).stale_keys() == {"ce-digits-s0-old", "ce-digits-s0-legacy"}
    lines = describe_stale(ResultsFolder(folder).find_stale({spec.key(): current}))
    assert len(lines) == 2
    assert any("dataset_params.val_fraction 0.3 -> 0.2" in line for line in lines)
    assert any("stored by an older tfbench" in line for line in lines)
    moved = ResultsFolder(folder).move_aside({"ce-digits-s0-old"})
    assert moved == [folder / "stale" / "ce-digits-s0-old"] and (moved[0] / "config.json").exists()
    assert not (folder / "trials" / "ce-digits-s0-old").exists()


def test_stale_keys_of_a_folder_without_a_sweep_record_is_empty(tmp_path):
    assert ResultsFolder(tmp_path).stale_keys() == set()
    shutil.rmtree(tmp_path)
    assert ResultsFolder(tmp_path).stale_keys() == set()
