"""`tfbench landscape results/<name>`: loss landscapes and sharpness of a sweep's trained trials.

For each (dataset, model) in the sweep and each selected method, the trial with the smallest selected seed
gets a 2-D grid and a 1-D curve (the side-by-side figures); every selected trial gets a sharpness number,
aggregated mean +- std over seeds. All trials are probed along directions built from the same seed on the
same fixed training subset. Output under results/<name>/landscape/:

  <key>/directions.pt, <key>/grid.npz (resumable), <key>/curve.npz   per figure trial
  contour_<dataset>_<model>.{png,pdf}, curves_<dataset>_<model>.{png,pdf} (+ surface_... with --surface)
  sharpness.csv, sharpness.md, landscape.json (the settings and environment)
"""
from __future__ import annotations

import argparse
import io
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.cli.common import add_device, resolved_device, split_list
from harness.errors import UserError
from harness.folders import ResultsFolder, TrialFolder
from harness.io import atomic_write_bytes, atomic_write_json, atomic_write_text, environment, write_csv
from harness.progress import Progress, fmt_duration
from methods.registry import did_you_mean

SHARPNESS_COLUMNS = ["key", "method", "dataset", "model", "seed", "sharpness", "sharpness_std",
                     "label", "radius", "k", "train_loss", "train_acc"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="a sweep's results folder (holds trials.csv), e.g. results/quickstart")
    p.add_argument("--method", "--methods", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable, or comma-separated: --method ce --method zipf, "
                        "--method ce,zipf; default: every finished one)")
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset in the sweep)")
    p.add_argument("--model", default=None, help="only this model (default: every model in the sweep)")
    p.add_argument("--seeds", action="append", metavar="SEEDS",
                   help="only these trial seeds (repeatable or comma-separated; default all); sharpness uses "
                        "every selected seed, the figures the first")
    p.add_argument("--grid", type=int, default=21, help="points per axis of the 2-D grid (odd includes 0; default 21)")
    p.add_argument("--span", type=float, default=1.0,
                   help="the grid and curve cover [-span, span] in filter-normalised units (default 1.0)")
    p.add_argument("--subset", type=int, default=2048,
                   help="training images (no augmentation) every point is evaluated on (default 2048)")
    p.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size (default 1024)")
    p.add_argument("--radius", type=float, default=0.5,
                   help="sharpness radius in filter-normalised units: each filter moves by radius x its norm")
    p.add_argument("--k", type=int, default=10, help="random directions averaged for sharpness (default 10)")
    p.add_argument("--surface", action="store_true", help="also draw 3-D surfaces")
    p.add_argument("--include-1d", action="store_true",
                   help="perturb 1-D parameters (biases, BN) too, along themselves (Li et al. without biasbn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions and of the training subset")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write into DIR instead of <results>/landscape/ (the results folder is then only read; "
                        "the summary's sharpness table reads <results>/landscape/ only)")
    add_device(p)


# --- selecting trials ---------------------------------------------------------------------------

@dataclass
class Pick:
    row: dict[str, Any]   # the trial's row of trials.csv
    label: str            # the tables' label: display name plus the parameters that vary (an ablation)
    figure: bool          # the first selected seed of its label: gets the grid and the curve

    @property
    def key(self) -> str:
        return str(self.row["key"])

    @property
    def seed(self) -> int:
        return int(self.row["seed"])


def read_trials(results: Path) -> pd.DataFrame:
    """trials.csv with the tables' row label of each trial (labels from the whole table, as the tables do)."""
    from harness.results.aggregate import config_labels, load_trials

    if not results.is_dir():
        raise UserError(f"{results}: not a folder; pass a sweep's results folder, e.g. results/quickstart")
    trials = load_trials(results)
    trials["label"] = config_labels(trials)
    return trials


def _check_known(kind: str, wanted: list[str] | None, available: list[str], where: Path) -> None:
    for name in wanted or []:
        if name not in available:
            raise UserError(f"{where}/trials.csv: no finished trial with {kind} {name!r}{did_you_mean(name, available)}; "
                            f"available: {', '.join(available) or 'none'}")


def select_trials(trials: pd.DataFrame, *, results: Path, methods: list[str] | str | None, dataset: str | None,
                  model: str | None, seeds: list[str] | str | None) -> list[Pick]:
    """Finished trials matching the filters, in --methods order (else the paper's), then seed."""
    from harness.results.aggregate import method_sort_key

    finished = trials[trials["status"].astype(str) == "finished"]
    if finished.empty:
        raise UserError(f"{results}/trials.csv: no finished trials ({len(trials)} rows)")
    present = {c: list(dict.fromkeys(finished[c].astype(str))) for c in ("method", "dataset", "model")}
    wanted_methods = split_list([methods] if isinstance(methods, str) else methods)
    _check_known("method", wanted_methods, present["method"], results)
    _check_known("dataset", [dataset] if dataset else None, present["dataset"], results)
    _check_known("model", [model] if model else None, present["model"], results)
    seed_items = split_list([seeds] if isinstance(seeds, str) else seeds) or ["all"]
    if [s.lower() for s in seed_items] == ["all"]:
        wanted_seeds = None
    else:
        try:
            wanted_seeds = {int(s) for s in seed_items}
        except ValueError:
            raise UserError(f"--seeds {','.join(seed_items)!r}: use 'all' or integers (repeatable or "
                            f"comma-separated), e.g. 0 or 0,1,2") from None
    order = wanted_methods or sorted(present["method"], key=method_sort_key)
    rows = [r for r in finished.to_dict("records")
            if str(r["method"]) in order and (dataset is None or str(r["dataset"]) == dataset)
            and (model is None or str(r["model"]) == model)
            and (wanted_seeds is None or int(r["seed"]) in wanted_seeds)]
    if not rows:
        raise UserError(f"{results}/trials.csv: no finished trial matches methods={','.join(order)} "
                        f"dataset={dataset or 'any'} model={model or 'any'} seeds={','.join(seed_items)}")
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["model"]), order.index(str(r["method"])), str(r["label"]),
                             int(r["seed"]), str(r["key"])))
    picks, seen = [], set()
    for r in rows:
        group = (str(r["dataset"]), str(r["model"]), str(r["label"]))
        picks.append(Pick(row=r, label=str(r["label"]), figure=group not in seen))
        seen.add(group)
    return picks


# --- the command --------------------------------------------------------------------------------

def _validate(args: argparse.Namespace) -> None:
    if args.grid < 2:
        raise UserError(f"--grid {args.grid}: need at least 2 points per axis (odd, e.g. 11 or 21, includes 0)")
    if not (args.span > 0 and math.isfinite(args.span)):
        raise UserError(f"--span {args.span}: must be a positive number (filter-normalised units, e.g. 1.0)")
    if args.subset < 1 or args.batch_size < 1:
        raise UserError("--subset and --batch-size must be positive integers")
    if args.k < 1:
        raise UserError(f"--k {args.k}: sharpness needs at least one direction")
    if not (args.radius >= 0 and math.isfinite(args.radius)):
        raise UserError(f"--radius {args.radius}: must be >= 0 (filter-normalised units)")


def _stem(group: tuple[str, str]) -> str:
    from harness.io import file_stem

    return file_stem(f"{group[0]}_{group[1]}")


def _target(args: argparse.Namespace, results: Path, picks: list[Pick]) -> Path:
    """results/<name>/landscape/ or --out, checked before any work (harness/outputs.py): writable, inside the
    results folder when it is its own place, and none of the files this run writes replacing one that
    tfbench did not write there."""
    from harness.outputs import OutputFolder, source_of

    own = args.out is None
    out = results / "landscape" if own else args.out
    groups = sorted({(str(p.row["dataset"]), str(p.row["model"])) for p in picks if p.figure})
    figures = [f"{kind}_{_stem(g)}" for g in groups for kind in ("contour", "curves", "surface")
               if kind != "surface" or args.surface]
    names = ["landscape.json", "sharpness.csv", "sharpness.md",
             *[f"{p.key}/{f}" for p in picks if p.figure for f in ("directions.pt", "grid.npz", "curve.npz")],
             *[f"{stem}.{fmt}" for stem in figures for fmt in ("png", "pdf")]]
    OutputFolder(out, source=source_of(results), own=own, kinds=[re.escape(n) for n in names],
                 within=results if own else None).open().claim(names)
    return out


def run(args: argparse.Namespace) -> int:
    _validate(args)
    results = Path(args.results)
    picks = select_trials(read_trials(results), results=results, methods=args.methods, dataset=args.dataset,
                          model=args.model, seeds=args.seeds)
    for p in picks:
        if not (ResultsFolder(results).trial(p.key) / TrialFolder.CHECKPOINT).exists():
            raise UserError(f"{results}/trials/{p.key}: no checkpoint.pt (the landscape needs the final weights; "
                            f"run the sweep with train.checkpoint: true)")
    out = _target(args, results, picks)
    device = resolved_device(args.device)

    import torch

    from harness.analysis import landscape as L
    from harness.analysis import landscape_plots as LP
    from harness.results.plots import method_colors, save_figure
    from harness.train.trained import load_trained

    xs = L.axis(args.span, args.grid)
    alphas = L.axis(args.span, 2 * args.grid - 1)
    ignore_1d = not args.include_1d
    n_fig = sum(p.figure for p in picks)
    progress = Progress("landscape", n_fig * (args.grid ** 2 + len(alphas)) + len(picks) * (args.k + 1),
                        unit="model evaluations")
    print(f"landscape: {len(picks)} trials ({n_fig} with grids of {args.grid}x{args.grid}), up to {args.subset} "
          f"training images, sharpness radius {args.radius} over {args.k} directions, device {device}", flush=True)
    atomic_write_json(out / "landscape.json", {
        "trials": [p.key for p in picks], "grid": args.grid, "span": args.span, "subset": args.subset,
        "seed": args.seed, "radius": args.radius, "k": args.k, "ignore_1d": ignore_1d,
        "batch_size": args.batch_size, "env": environment(device)})

    batches_by_data: dict[str, list] = {}
    grids: dict[tuple[str, str], dict[str, Any]] = {}
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    n_images: dict[tuple[str, str], int] = {}
    t_start = time.perf_counter()
    for p in picks:
        trained = load_trained(results / "trials" / p.key, device=device)
        model = trained.model
        data_id = json.dumps([trained.spec.dataset, {k: v for k, v in trained.spec.dataset_params.items()
                                                     if k != "root"}], sort_keys=True, default=str)
        if data_id not in batches_by_data:  # one fixed subset per dataset, shared by every method
            batches_by_data[data_id] = L.subset_batches(trained.bundle.train_eval, n=args.subset, seed=args.seed,
                                                        batch_size=args.batch_size, device=device)
        batches = batches_by_data[data_id]
        name = f"{p.label} s{p.seed} ({p.row['dataset']}/{p.row['model']})"
        group = (str(p.row["dataset"]), str(p.row["model"]))
        n_images[group] = sum(len(y) for _, y in batches)
        if p.figure:
            d1, d2 = L.random_directions(model, seed=args.seed, n=2, ignore_1d=ignore_1d)
            L.save_directions(out / p.key / "directions.pt", [d1, d2], model=model, seed=args.seed,
                              ignore_1d=ignore_1d)
            computed = []

            def on_row(done: int, total: int, name: str = name, computed: list = computed) -> None:
                computed.append(done)
                progress.advance(len(xs), f"{name}: grid row {done}/{total}")

            grid = L.grid_2d(model, d1, d2, xs, xs, batches, out / p.key / "grid.npz", seed=args.seed,
                             on_row=on_row)
            if len(computed) < len(xs):  # rows resumed from an earlier run: not part of this run's work
                progress.total -= (len(xs) - len(computed)) * len(xs)
                progress.note(f"{name}: {len(xs) - len(computed)} grid rows resumed from {out / p.key / 'grid.npz'}")
            curve = L.curve_1d(model, d1, alphas, batches)
            buf = io.BytesIO()
            np.savez(buf, **curve, seed=np.int64(args.seed))
            atomic_write_bytes(out / p.key / "curve.npz", buf.getvalue())
            progress.advance(len(alphas), f"{name}: 1-D curve")
            grids.setdefault(group, {})[p.label] = grid
            curves.setdefault(group, {})[p.label] = curve
            del d1, d2
        loss0, acc0 = L.eval_loss_acc(model, batches)
        sharp, sharp_std = L.sharpness(model, batches, radius=args.radius, k=args.k, seed=args.seed,
                                       ignore_1d=ignore_1d)
        progress.advance(args.k + 1, f"{name}: sharpness {sharp:.4f} +- {sharp_std:.4f}")
        rows.append({"key": p.key, "method": p.row["method"], "dataset": p.row["dataset"], "model": p.row["model"],
                     "seed": p.seed, "sharpness": sharp, "sharpness_std": sharp_std, "label": p.label,
                     "radius": args.radius, "k": args.k, "train_loss": loss0, "train_acc": acc0})
        del trained, model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    written = []
    for group, panel in grids.items():
        ds, arch = group
        stem = _stem(group)
        seeds = sorted({p.seed for p in picks if p.figure and (str(p.row["dataset"]), str(p.row["model"])) == group})
        subtitle = (f"{ds} / {arch}: train loss on {n_images[group]} images, "
                    f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}")
        written += save_figure(LP.contour_panels(panel, title=subtitle), out / f"contour_{stem}")
        colors = {p.label: method_colors([p.row["method"]])[p.row["method"]] for p in picks}
        written += save_figure(LP.curves_1d(curves[group], colors=colors, title=subtitle), out / f"curves_{stem}")
        if args.surface:
            written += save_figure(LP.surface_3d(panel, title=subtitle), out / f"surface_{stem}")
    progress.close()
    write_csv(out / "sharpness.csv", SHARPNESS_COLUMNS, [[r[c] for c in SHARPNESS_COLUMNS] for r in rows])
    text = sharpness_markdown(rows, trials=read_trials(results), radius=args.radius, k=args.k)
    atomic_write_text(out / "sharpness.md", text)
    print(text, end="", flush=True)
    print(f"wrote {len(written)} figures, sharpness.csv and sharpness.md to {out} "
          f"in {fmt_duration(time.perf_counter() - t_start)}", flush=True)
    return 0


def sharpness_markdown(rows: Sequence[dict[str, Any]], *, trials: pd.DataFrame, radius: float, k: int) -> str:
    """sharpness.md: the summary's sharpness table (harness.results.tables, mean +- sample std over seeds, n)
    under a line saying what was measured."""
    from harness.results.aggregate import aggregate_sharpness
    from harness.results.tables import sharpness_table, to_markdown

    groups = aggregate_sharpness(pd.DataFrame(list(rows), columns=SHARPNESS_COLUMNS), trials)
    head = (f"Sharpness: mean loss increase at radius {radius} (filter-normalised) over {k} random directions, "
            f"mean +- std over seeds\n\n")
    return head + to_markdown(sharpness_table(groups), level=2)
