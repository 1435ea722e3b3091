"""`tfbench train`: one trial, in this process, without Ray."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.config.resolve import parse_sets, resolve_trial
from harness.errors import UserError
from harness.io import probe_folder
from harness.metrics import LAST, SELECTED
from methods import load_user_module


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="a registered method (see `tfbench methods`)")
    p.add_argument("--dataset", required=True, help="a registered dataset (see `tfbench datasets`)")
    p.add_argument("--model", default=None, help="a timm model name (default: the dataset's usual model)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the dataset's preset: 200 on CIFAR and Tiny ImageNet, "
                        "100 on ImageNet and iNat21, 30 on the small embedded sets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override anything: method.<param>, dataset.<param> (e.g. dataset.root), "
                        "model.<param>, train.<field> (e.g. train.batch_size=64); repeatable")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="a Python file or module that registers extra methods; repeatable")
    p.add_argument("--out", required=True, type=Path, help="output folder for this trial (rerunning the same "
                                                           "trial into it resumes it)")
    p.add_argument("--force", action="store_true",
                   help="when --out holds another trial's records (or trial files no tfbench trial wrote), move the "
                        "folder to <out>.moved-<key> (<out>.moved-unknown) and start fresh")


def run(args: argparse.Namespace) -> int:
    from harness.train.loop import TrialDiverged, train_trial

    out = Path(os.path.abspath(args.out))  # `--out .` moved aside by --force must not follow the folder
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder; give a folder (it is created if missing)")
    for ref in args.imports:
        load_user_module(ref)
    sets = parse_sets(args.sets)
    if args.epochs is not None:
        sets["train"]["epochs"] = args.epochs
    spec = resolve_trial(method=args.method, dataset=args.dataset, model=args.model, seed=args.seed,
                         method_params=sets["method"], dataset_params=sets["dataset"],
                         model_params=sets["model"], train=sets["train"],
                         imports=tuple(str(Path(r).resolve()) if r.endswith(".py") else r for r in args.imports))
    # before any work: the folder (and with --force, its parent, where the old one is moved) can be written
    for folder in (out, out.parent) if args.force and out.exists() else (out,):
        try:
            probe_folder(folder, keep=False)
        except OSError as e:
            raise UserError(f"cannot write the trial to {folder}: {e.strerror or e}; choose another --out") from None
    print(f"trial {spec.key()}: {spec.method} on {spec.dataset} with {spec.model}, seed {spec.seed}, "
          f"{spec.train.epochs} epochs -> {args.out}", flush=True)
    try:
        result = train_trial(spec, out, log=lambda s: print(s, flush=True), force=args.force)
    except TrialDiverged as e:
        print(f"tfbench: error: {e}", file=sys.stderr)
        return 1
    except UserError:
        raise
    if (args.out / "predictions.npz").exists():  # the metrics beyond top-1, from the predictions (docs/results.md)
        from harness.config.schema import Evaluate
        from harness.sweep.evaluate import evaluate_trial

        evaluate_trial(args.out, Evaluate(), device=str(spec.train.device), log=lambda s: print(s, flush=True))
    split = "test" if result["protocol"] == "clean" else "evaluation split"
    top1 = {epoch: result[f"{epoch}_top1"] for epoch in (SELECTED, LAST)}  # the vocabulary's names (reported())
    print(f"done ({result['protocol']} protocol): {split} top-1 {top1[SELECTED]:.4f} at the selected epoch "
          f"{result['selected_epoch']}, {top1[LAST]:.4f} at the last; {result['step_time_s'] * 1e3:.1f} "
          f"ms/step; {args.out / 'result.json'}")
    return 0
