"""Beyond top-1 for a results folder's finished trials: what their predictions.npz lacks is computed from the
checkpoints (harness/train/evaluation.py, never retraining), and the metrics computed from the file
(harness/results/beyond.py) are merged into each result.json. `tfbench evaluate` runs it, and so does the
sweep after its trials, so that trials.csv and the summary carry the metrics; a folder trained before
predictions existed is filled the same way.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config.schema import Evaluate
from harness.errors import UserError
from harness.folders import ResultsFolder, TrialFolder
from harness.results.beyond import record_metrics
from harness.results.predictions import read_predictions


def folder_settings(folder: ResultsFolder) -> Evaluate:
    """The sweep's `evaluate:` section as recorded in its sweep.yaml (none: calibration and selection only)."""
    raw = folder.sweep_value("evaluate")
    try:
        return Evaluate.model_validate(raw or {})
    except ValueError as e:
        raise UserError(f"{folder.path / 'sweep.yaml'}: evaluate: {str(e).splitlines()[0]}") from None


def evaluate_trial(trial_dir: Path, settings: Evaluate, *, device: str, log: Callable[[str], None] = print) -> bool:
    """Fill `trial_dir`'s predictions and the record's metrics from them; True when result.json changed."""
    from harness.train.evaluation import fill_predictions

    trial = TrialFolder(trial_dir)
    have = read_predictions(trial_dir)
    new = fill_predictions(trial_dir, corruptions=settings.corruption_names(),
                           corruption_images=settings.corruption_images, ood=settings.ood, device=device,
                           have=have, log=log)
    pred = new if new is not None else have
    if pred is None:
        return False
    record = trial.result() or {}
    values = record_metrics(pred)
    if all(_same(record.get(k), v) for k, v in values.items()):  # a finished record is rewritten only to add
        return False
    trial.write_result({**record, **values})
    return True


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (a metric undefined for a trial is NaN both times: no reason to rewrite its record)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def evaluate_folder(results_dir: str | Path, settings: Evaluate | None = None, *, device: str = "auto",
                    keys: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every finished trial of the folder (or those of `keys`); the caller holds the folder's lock.
    Returns {"evaluated": n, "updated": n, "skipped": [keys without checkpoints]}."""
    from harness.train.device import resolve_device

    folder = ResultsFolder(Path(results_dir))
    settings = settings if settings is not None else folder_settings(folder)
    dev = str(resolve_device(device, "--device"))
    trials = [folder.trial(k) for k in keys] if keys is not None else list(folder.trial_folders())
    done: dict[str, Any] = {"evaluated": 0, "updated": 0, "skipped": []}
    for trial in trials:
        key = trial.path.name
        if trial.status() != "finished":
            continue
        try:
            changed = evaluate_trial(trial.path, settings, device=dev, log=log)
        except UserError as e:  # e.g. no checkpoint kept (train.checkpoint: false): the others go on
            log(f"{key}: not evaluated: {e}")
            done["skipped"].append(key)
            continue
        done["evaluated"] += 1
        done["updated"] += int(changed)
    return done
