"""Stale trials: finished trials whose stored resolved spec no longer matches what the sweep now means.

A trial's key hashes its fully resolved spec, so a changed default (a dataset's Params, a preset, a
recipe) gives the same request a new key: the old folder is never reused for it. This module finds those
old folders (same request and seed as a current trial, another key) so that `tfbench run` can report
them and `tfbench table` can mark them. It reads files only: the results reader imports it without the
runner (`stale_keys`).

Folders written before keys were resolved (no `request` in their config.json) are matched on method,
dataset, model, seed and resolved method params instead.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

STALE_FOLDER = "stale"  # --rerun-stale moves old trial folders to results/<sweep>/stale/<key>/
_IGNORED = {"imports", "request", "spec_version"}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def finished_specs(folder: Path) -> dict[str, dict[str, Any]]:
    """{key: stored spec} of every finished trial folder under <folder>/trials/."""
    out = {}
    for tdir in sorted((folder / "trials").glob("*")):
        result = _read_json(tdir / "result.json")
        config = _read_json(tdir / "config.json")
        if result and result.get("status") == "finished" and config and isinstance(config.get("spec"), dict):
            out[tdir.name] = config["spec"]
    return out


def _identity(spec: dict[str, Any]) -> tuple:
    if spec.get("request"):
        return ("request", spec["request"], spec.get("seed"))
    return ("legacy", spec.get("method"), spec.get("dataset"), spec.get("model"), spec.get("seed"),
            json.dumps(spec.get("method_params"), sort_keys=True, default=str))


def find_stale(folder: Path, current: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict, dict]]:
    """{old key: (current key, old spec, current spec)} for finished folders that answer a current trial's
    request (or, for old folders, its identity) under another key. `current` is {key: spec dict}."""
    by_request: dict[tuple, str] = {}
    for key, spec in current.items():
        by_request[_identity(spec)] = key
        legacy = dict(spec)
        legacy.pop("request", None)
        by_request.setdefault(_identity(legacy), key)
    out = {}
    for key, spec in finished_specs(folder).items():
        if key in current:
            continue
        match = by_request.get(_identity(spec))
        if match is not None:
            out[key] = (match, spec, current[match])
    return out


def stale_keys(results_folder: str | Path) -> set[str]:
    """Keys of the stale trial folders of a results folder, against the sweep as last run (its sweep.yaml).
    For the results reader: exclude these rows from every statistic and say how many were left out."""
    folder = Path(results_folder)
    try:
        record = yaml.safe_load((folder / "sweep.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return set()
    trials = record.get("trials") if isinstance(record, dict) else None
    if not isinstance(trials, list):
        return set()
    current = {t["key"]: t["spec"] for t in trials if isinstance(t, dict) and "key" in t and isinstance(t.get("spec"), dict)}
    return set(find_stale(folder, current))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            if not prefix and k in _IGNORED:
                continue
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def describe_stale(stale: dict[str, tuple[str, dict, dict]]) -> list[str]:
    """One line per group (method, dataset, model, what changed): how many trials, and the differences."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for old_key, (_new_key, old, new) in stale.items():
        a, b = _flatten(old), _flatten(new)
        diffs = [f"{k} {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
                 if a.get(k) != b.get(k) and k != "seed"]
        if "spec_version" not in old:
            diffs.insert(0, "stored by an older tfbench (keys now hash the resolved spec)")
        groups[(old.get("method"), old.get("dataset"), old.get("model"), tuple(diffs[:4]))].append(old_key)
    lines = []
    for (method, dataset, model, diffs), keys in groups.items():
        lines.append(f"{len(keys)} finished trial(s) of {method} on {dataset} ({model}) no longer match what the "
                     f"sweep now means ({'; '.join(diffs) or 'settings changed'}): kept, not reused "
                     f"(e.g. trials/{keys[0]})")
    return lines


def move_aside(folder: Path, keys: set[str] | list[str]) -> list[Path]:
    """Rename trials/<key> to stale/<key> (one atomic rename each; a name already there gets a suffix)."""
    moved = []
    (folder / STALE_FOLDER).mkdir(exist_ok=True)
    for key in sorted(keys):
        src = folder / "trials" / key
        if not src.is_dir():
            continue
        dst, n = folder / STALE_FOLDER / key, 1
        while dst.exists():
            dst, n = folder / STALE_FOLDER / f"{key}.{n}", n + 1
        os.rename(src, dst)
        moved.append(dst)
    return moved
