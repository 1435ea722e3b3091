"""The transfer form of a sweep file: `transfer_from: results/<sweep>` fine-tunes every finished trial of that
results folder on each data set of this file (the seed's Table 4 question as one command).

Each target trial keeps its source's method, method parameters, model and seed, and starts from the source's
weights (`train.init_from` = the source's trial folder), so the summary pairs methods by seed as any sweep's
does: it compares methods by their downstream accuracy with the same paired statistics. `methods:` filters the
sources by name (names only: the parameters are the source's); `seeds:` and `models:` are the source's and are
refused here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.folders import ResultsFolder


def source_trials(folder: str | Path, methods: set[str]) -> list[tuple[Path, dict[str, Any]]]:
    """(trial folder, resolved spec) of every finished trial of `folder` whose method is in `methods`, in key
    order. A folder with none is one line."""
    results = ResultsFolder(Path(folder).expanduser())
    if not results.path.is_dir():
        raise UserError(f"transfer_from: {results.path} does not exist; allowed: the results folder of a finished "
                        f"sweep (results/<name>)")
    out = []
    for trial in sorted(results.trial_folders(), key=lambda t: t.path.name):
        result, spec = trial.result(), trial.spec()
        if result and result.get("status") == "finished" and spec and spec.get("method") in methods:
            out.append((trial.path, spec))
    if not out:
        raise UserError(f"transfer_from: {results.path} holds no finished trial of {', '.join(sorted(methods))}")
    return out


def transfer_requests(folder: str | Path, methods: set[str]) -> list[dict[str, Any]]:
    """resolve_trial's arguments (but the data set's) for each source: its method, parameters, model and seed,
    and its folder as `train.init_from`."""
    return [{"method": spec["method"], "method_params": dict(spec.get("method_params") or {}),
             "model": spec["model"], "model_params": dict(spec.get("model_params") or {}), "seed": int(spec["seed"]),
             "init_from": str(path.resolve())}
            for path, spec in source_trials(folder, methods)]


__all__ = ["source_trials", "transfer_requests"]
