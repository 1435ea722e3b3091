"""`tfbench evaluate RESULTS_DIR`: fill what the finished trials of a results folder lack beyond top-1
(predictions.npz from their checkpoints, never retraining; the metrics into result.json), then rewrite
trials.csv, the summary and the plots. The sweep runs the same after its trials."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import add_device, split_list
from harness.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, help="a results folder (results/<sweep>)")
    p.add_argument("--corruptions", action="append", default=None, metavar="NAMES",
                   help="'all' or corruption names (repeatable or comma-separated); default: the sweep's evaluate:")
    p.add_argument("--corruption-images", type=int, default=None, metavar="N",
                   help="corrupt the first N test images only (0 = all; default: the sweep's)")
    p.add_argument("--ood", default=None, metavar="DATASET", help="a registered data set whose evaluation split is "
                                                                 "the OOD set (default: the sweep's evaluate.ood)")
    p.add_argument("--ood-param", dest="ood_params", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the --ood data set (YAML value); repeatable")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    import yaml

    from harness.config.schema import Evaluate
    from harness.folders import ResultsFolder
    from harness.results import records
    from harness.sweep.evaluate import evaluate_folder, folder_settings
    from harness.sweep.runner import summarise

    folder = ResultsFolder(args.results.resolve())
    if not folder.is_results_folder():
        raise UserError(f"{args.results}: not a tfbench results folder (no trials.csv or sweep.yaml)")
    settings = folder_settings(folder).model_dump()
    corruptions = split_list(args.corruptions)
    if corruptions is not None:
        settings["corruptions"] = "all" if corruptions == ["all"] else corruptions
    if args.corruption_images is not None:
        settings["corruption_images"] = args.corruption_images
    if args.ood is not None:
        params = {}
        for item in args.ood_params:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--ood-param {item!r}: allowed: KEY=VALUE")
            params[key] = yaml.safe_load(value)
        settings["ood"] = {"name": args.ood, "params": params}
    try:
        chosen = Evaluate.model_validate(settings)
    except ValueError as e:
        raise UserError(f"evaluate settings: {str(e).splitlines()[0]}: {str(e).splitlines()[1].strip()}") from None
    with folder.lock():
        done = evaluate_folder(folder.path, chosen, device=args.device)
        recorded = records.recorded_specs(folder.path)
        if recorded:
            records.write_trials_csv(folder.path, recorded)
            summarise(folder)
    print(f"evaluated {done['evaluated']} finished trial(s) of {folder.path}: {done['updated']} record(s) updated"
          + (f", {len(done['skipped'])} without checkpoints skipped" if done["skipped"] else ""))
    return 0
