"""`tfbench zipf {toy,fit,snr,examples}`: the supplement's analyses of Zipf's label smoothing.

  toy       Algorithm 1 (softmax of sorted Gaussian logits, averaged) and Fig. 1 (top-32, log-log, Zipf fit)
  fit       Table 1: Zipf's law, exponential and log-normal fitted to the top-K averaged sorted probabilities
            of the toy (--toy) or of a trained trial on its val set; R^2, KL, JS, chi-square, KS
  snr       Fig. 2: signal-to-noise ratio of each rank of a trained trial's sorted predictions (or --toy)
  examples  Fig. 4: val images, the trial's Zipf soft labels (top-5 non-target) and a CE trial's top-5

Outputs go to results/<name>/zipf/<trial key>/ for a trial at results/<name>/trials/<key>/ (a trial folder
elsewhere: <trial dir>/zipf/), to results/toy/zipf/ for the toy, or to --out.

About 400 lines on purpose: the four subcommands share their flags, the trial lookup and the output
folders; the math lives in harness/analysis/zipf*.py, so what is here is argument handling and printing.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.cli.common import DEVICE_HELP, resolved_device
from harness.errors import UserError
from harness.folders import TrialFolder
from harness.io import atomic_write_json, atomic_write_text, csv_text, git_revision, write_csv

FORMATS = {"md": "github", "tex": "latex_booktabs", "csv": "csv"}
TOY_OUT = Path("results") / "toy" / "zipf"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="zipf_command", metavar="ANALYSIS", required=True)

    def toy_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--samples", type=int, default=1000, help="toy: samples (rows of logits; default 1000)")
        sp.add_argument("--classes", type=int, default=1000, help="toy: classes (default 1000)")

    def trial_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", default="auto", help=DEVICE_HELP)
        sp.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
        sp.add_argument("--limit", type=int, default=0, help="use at most this many val images (default 0: all)")

    def source_args(sp: argparse.ArgumentParser) -> None:
        """A trained trial folder or --toy, with the options of both."""
        sp.add_argument("trial_dir", nargs="?", type=Path, default=None, help="a trained trial folder (or use --toy)")
        sp.add_argument("--toy", action="store_true", help="the toy of Algorithm 1 instead of a trial")
        toy_args(sp)
        trial_args(sp)

    sp = sub.add_parser("toy", help="Algorithm 1 and Fig. 1: softmax of sorted Gaussian logits",
                        description="Algorithm 1 and Fig. 1: softmax of sorted Gaussian logits, averaged; "
                                    "the top ranks in log-log space with the fitted Zipf line.")
    toy_args(sp)
    sp.add_argument("--seed", type=int, default=0, help="seed of the Gaussian logits (default 0)")
    sp.add_argument("--top", type=int, default=32, help="ranks plotted and fitted (default 32, as Fig. 1)")
    sp.add_argument("--out", type=Path, default=None, help=f"output folder (default {TOY_OUT})")

    sp = sub.add_parser("fit", help="Table 1: fit Zipf's law, exponential, log-normal; goodness-of-fit metrics",
                        description="Table 1: maximum-likelihood fits of Zipf's law, the exponential and the "
                                    "log-normal to the top-K averaged sorted probabilities, with R^2, KL, JS, "
                                    "chi-square and Kolmogorov-Smirnov (the last two on --n-samples ranks drawn "
                                    "from the empirical distribution).")
    source_args(sp)
    sp.add_argument("--k", type=int, default=50, help="top ranks fitted (default 50, as Table 1)")
    sp.add_argument("--n-samples", type=int, default=100_000,
                    help="ranks drawn for chi-square and KS (default 100000, as Table 1)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the toy and of the drawn ranks (default 0)")
    sp.add_argument("--format", choices=list(FORMATS), default="md", help="printed table format (all are written)")
    sp.add_argument("--out", type=Path, default=None, help="output folder")

    sp = sub.add_parser("snr", help="Fig. 2: signal-to-noise ratio of each rank",
                        description="Fig. 2: SNR of each rank (mean over val images of the r-th largest "
                                    "probability / its std), over all ranks and the top 40, with the last "
                                    "rank whose SNR exceeds 1.")
    source_args(sp)
    sp.add_argument("--seed", type=int, default=0, help="seed of the toy (default 0)")
    sp.add_argument("--top", type=int, default=40, help="ranks in the zoomed panel (default 40)")
    sp.add_argument("--out", type=Path, default=None, help="output folder")

    sp = sub.add_parser("examples", help="Fig. 4: Zipf soft labels vs a CE model's top-5 on val images",
                        description="Fig. 4: for val images, the trial's Zipf soft label (top-5 non-target "
                                    "classes, from its own dense votes) and a CE model's top-5 predictions; "
                                    "dark green = ground truth, light green = same super-class, red = another "
                                    "super-class; on a data set without super-classes, grey = another class.")
    sp.add_argument("trial_dir", type=Path, help="a trained trial folder (its model makes the soft labels)")
    sp.add_argument("--ce-trial", type=Path, default=None,
                    help="the CE trial (default: a finished CE trial of the same dataset and model in the same "
                         "results folder, same seed preferred)")
    sp.add_argument("--n", type=int, default=6, help="number of val images (default 6)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")
    sp.add_argument("--pick", choices=["random", "ce-wrong"], default="random",
                    help="random val images, or (as the supplement) ones the CE model misclassifies")
    sp.add_argument("--device", default="auto", help=DEVICE_HELP)
    sp.add_argument("--out", type=Path, default=None, help="output folder")


# --- helpers ------------------------------------------------------------------------------------

def out_dir_for(trial_dir: Path, out: Path | None) -> Path:
    """--out, else results/<name>/zipf/<key>/ for results/<name>/trials/<key>/, else <trial_dir>/zipf/."""
    if out is not None:
        return out
    trial_dir = Path(trial_dir)
    if trial_dir.resolve().parent.name == "trials":
        return trial_dir.parent.parent / "zipf" / trial_dir.name
    return trial_dir / "zipf"


def _target(args: argparse.Namespace, stems: list[str], files: list[str]) -> Path:
    """The output folder of this analysis, checked before any work (harness/outputs.py): writable, and none
    of its files (`stems` as figures, `files`) replacing one that tfbench did not write there."""
    from harness.outputs import OutputFolder, source_of

    trial = None if getattr(args, "toy", False) else getattr(args, "trial_dir", None)
    out = (args.out or TOY_OUT) if trial is None else out_dir_for(trial, args.out)
    names = [f"{stem}.{fmt}" for stem in stems for fmt in ("png", "pdf")] + files
    folder = OutputFolder(out, source=source_of(trial) if trial is not None else "the zipf toy",
                          own=args.out is None, kinds=[re.escape(n) for n in names])
    folder.open().claim(names)
    return out


def _check_trial_dir(trial_dir: Path) -> None:
    if not trial_dir.is_dir():
        raise UserError(f"{trial_dir}: not a folder; pass a trial folder such as results/<name>/trials/<key>")
    if not (trial_dir / TrialFolder.CHECKPOINT).exists():
        raise UserError(f"{trial_dir}: no checkpoint.pt (was the trial run with train.checkpoint: true?)")


def _source(args: argparse.Namespace) -> str:
    if args.toy and args.trial_dir is not None:
        raise UserError(f"zipf {args.zipf_command}: give either --toy or a trial folder, not both")
    if not args.toy and args.trial_dir is None:
        raise UserError(f"zipf {args.zipf_command}: give a trial folder (results/<name>/trials/<key>) or --toy")
    if args.toy:
        _check_toy(args)
        return "toy"
    _check_trial_dir(args.trial_dir)
    if args.batch_size < 1 or args.limit < 0:
        raise UserError("--batch-size must be >= 1 and --limit >= 0")
    return "trial"


def _check_toy(args: argparse.Namespace) -> None:
    if args.samples < 1 or args.classes < 2:
        raise UserError(f"--samples {args.samples} --classes {args.classes}: need samples >= 1 and classes >= 2")


def val_loader(bundle: Any, *, batch_size: int, device: str) -> Any:
    """Batches (x normalised, y, idx) of the val split, without augmentation, in dataset order."""
    import torch

    mem = bundle.memory
    if mem is not None:  # the in-memory path: the whole split as one tensor, normalised on the device
        from harness.data.fast import TensorLoader

        return TensorLoader(mem.val_x, mem.val_y, batch_size=batch_size, shuffle=False, drop_last=False,
                            generator=None, device=device, mean=bundle.mean, std=bundle.std)
    return torch.utils.data.DataLoader(bundle.val, batch_size=batch_size, shuffle=False, num_workers=0)


def trial_moments(trial_dir: Path, *, device: str, batch_size: int, limit: int):
    """(RankMoments of the trial's sorted val softmax, the loaded trial)."""
    import torch

    from harness.analysis.zipf_models import sorted_prob_moments
    from harness.train.trained import load_trained

    torch.manual_seed(0)
    trained = load_trained(trial_dir, device=device)
    loader = val_loader(trained.bundle, batch_size=batch_size, device=device)
    return sorted_prob_moments(trained.model, loader, device=device, limit=limit), trained


def _env() -> dict[str, Any]:
    """The versions these analyses depend on (not harness.io.environment(), which imports Ray: seconds)."""
    import platform
    import sys

    import matplotlib
    import scipy

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__,
           "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "git": git_revision()}
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    return env


def _describe_trial(trained: Any) -> dict[str, Any]:
    s = trained.spec
    return {"trial_dir": str(trained.trial_dir), "key": s.key(), "method": s.method, "dataset": s.dataset,
            "model": s.model, "seed": s.seed}


# --- toy ----------------------------------------------------------------------------------------

def run_toy(args: argparse.Namespace) -> int:
    from harness.analysis.zipf import fit_law, r_squared, top_k_distribution, toy_mean_sorted_probs
    from harness.analysis.zipf_plots import rank_probability_figure
    from harness.results.plots import save_figure

    _check_toy(args)
    if not 2 <= args.top <= args.classes:
        raise UserError(f"--top {args.top}: must be in [2, --classes = {args.classes}]")
    out = _target(args, ["fig1_rank_probability"], ["toy_mean_sorted_probs.csv", "toy.json"])
    mean = toy_mean_sorted_probs(samples=args.samples, classes=args.classes, seed=args.seed)
    p = top_k_distribution(mean, k=args.top)
    fit = fit_law(p, "zipf")
    r2 = r_squared(observed=p, fitted=fit.pmf)
    write_csv(out / "toy_mean_sorted_probs.csv", ["rank", "mean_prob"],
               [[r + 1, f"{v:.10g}"] for r, v in enumerate(mean)])
    fig = rank_probability_figure(mean, fit, top=args.top)
    paths = save_figure(fig, out / "fig1_rank_probability")
    atomic_write_json(out / "toy.json", {"samples": args.samples, "classes": args.classes, "seed": args.seed,
                                         "top": args.top, "zipf_s": fit.params["s"], "r2": r2,
                                         "top_probs": mean[: args.top].tolist(), "env": _env()})
    print(f"toy (Algorithm 1): {args.samples} samples x {args.classes} classes, seed {args.seed}")
    print("averaged sorted probabilities, ranks 1-10: " + " ".join(f"{v:.4g}" for v in mean[:10]))
    print(f"Zipf fit to the top {args.top} ranks (maximum likelihood): s = {fit.params['s']:.4f}, R^2 = {r2:.5f}")
    print("wrote " + ", ".join(str(x) for x in [out / "toy_mean_sorted_probs.csv", out / "toy.json", *paths]))
    return 0


# --- fit ----------------------------------------------------------------------------------------

def format_table(header: list[str], rows: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        return csv_text(header, rows)
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt=FORMATS[fmt], disable_numparse=True) + "\n"


def run_fit(args: argparse.Namespace) -> int:
    from harness.analysis.zipf import table1, table1_rows, toy_mean_sorted_probs
    from harness.analysis.zipf_plots import rank_probability_figure
    from harness.results.plots import save_figure

    source = _source(args)
    if args.n_samples < 1:
        raise UserError(f"--n-samples {args.n_samples}: must be >= 1")
    out = _target(args, ["fig1_rank_probability"], [f"table1.{fmt}" for fmt in (*FORMATS, "json")])
    if source == "toy":
        mean = toy_mean_sorted_probs(samples=args.samples, classes=args.classes, seed=args.seed)
        info: dict[str, Any] = {"source": "toy", "samples": args.samples, "classes": args.classes}
        what = f"toy ({args.samples} samples x {args.classes} classes, seed {args.seed})"
    else:
        moments, trained = trial_moments(args.trial_dir, device=resolved_device(args.device), batch_size=args.batch_size,
                                         limit=args.limit)
        mean = moments.mean
        info = {"source": "trial", **_describe_trial(trained), "val_images": moments.n}
        what = f"{trained.spec.method} on {trained.spec.dataset} with {trained.spec.model} ({moments.n} val images)"
    k = args.k
    if k < 2:
        raise UserError(f"--k {k}: must be >= 2")
    if k > len(mean):
        print(f"note: --k {k} exceeds the {len(mean)} classes; fitting all {len(mean)} ranks")
        k = len(mean)
    t = table1(mean, k=k, n_samples=args.n_samples, seed=args.seed)
    header, rows = table1_rows(t)
    for fmt in FORMATS:
        atomic_write_text(out / f"table1.{fmt}", format_table(header, rows, fmt))
    atomic_write_json(out / "table1.json", {**info, **t.to_dict(), "mean_sorted_probs": mean.tolist(),
                                            "env": _env()})
    save_figure(rank_probability_figure(mean, t.fits["zipf"], top=min(32, k),
                                        title=f"top-{min(32, k)} averaged sorted probabilities"),
                out / "fig1_rank_probability")
    print(f"Table 1 for {what}: top {k} ranks, {args.n_samples} drawn ranks, seed {args.seed}")
    print("R^2 on the linear probability scale; KL(empirical || fit) and the JS divergence (distance squared) in"
          " nats; chi-square with K-1-(fitted parameters) dof; KS: two-sample test against ranks drawn from the fit")
    print(format_table(header, rows, args.format), end="")
    for law, f in t.fits.items():
        if f.note or not f.converged:
            print(f"note: {law}: {f.note or 'the optimiser did not report convergence'}")
    print(f"wrote {out}/table1.{{md,tex,csv,json}}, {out}/fig1_rank_probability.{{png,pdf}}")
    return 0


# --- snr ----------------------------------------------------------------------------------------

def run_snr(args: argparse.Namespace) -> int:
    from harness.analysis.zipf import RankMoments, rank_snr, snr_summary, toy_sorted_probs
    from harness.analysis.zipf_plots import snr_figure
    from harness.results.plots import save_figure

    source = _source(args)
    out = _target(args, ["fig2_snr"], ["snr.csv", "snr.json"])
    if source == "toy":
        moments = RankMoments.of(toy_sorted_probs(samples=args.samples, classes=args.classes, seed=args.seed))
        info: dict[str, Any] = {"source": "toy", "samples": args.samples, "classes": args.classes, "seed": args.seed}
        what = f"toy ({args.samples} samples x {args.classes} classes, seed {args.seed})"
    else:
        moments, trained = trial_moments(args.trial_dir, device=resolved_device(args.device), batch_size=args.batch_size,
                                         limit=args.limit)
        info = {"source": "trial", **_describe_trial(trained)}
        what = f"{trained.spec.method} on {trained.spec.dataset} with {trained.spec.model}"
    snr = rank_snr(mean=moments.mean, std=moments.std)
    summary = snr_summary(snr)
    write_csv(out / "snr.csv", ["rank", "mean_prob", "std_prob", "snr"],
               [[r + 1, f"{m:.10g}", f"{s:.10g}", f"{v:.6g}"]
                for r, (m, s, v) in enumerate(zip(moments.mean, moments.std, snr, strict=True))])
    atomic_write_json(out / "snr.json", {**info, "images": moments.n, **summary, "env": _env()})
    paths = save_figure(snr_figure(snr, top=args.top, title=what), out / "fig2_snr")
    print(f"rank SNR for {what}: {moments.n} images, {summary['num_ranks']} ranks")
    print(f"last rank with SNR > 1: {summary['last_rank_above']}; ranks 1..{summary['leading_ranks_above']} "
          f"all have SNR > 1")
    shown = min(10, len(snr))
    print(f"SNR of ranks 1-{shown}: " + " ".join(f"{v:.3g}" for v in snr[:shown]))
    print("wrote " + ", ".join(str(x) for x in [out / "snr.csv", out / "snr.json", *paths]))
    return 0


# --- examples -----------------------------------------------------------------------------------

def find_ce_trial(trial_dir: Path, spec: Any) -> Path:
    """A finished CE trial of the same dataset and model in the trial's results folder (same seed first)."""
    trials = Path(trial_dir).resolve().parent
    if trials.name != "trials":
        raise UserError(f"{trial_dir}: not inside a results/<name>/trials/ folder, so no CE trial can be found "
                        f"next to it; pass --ce-trial")
    found = []
    for d in sorted(trials.iterdir()):
        s = TrialFolder(d).spec()  # bounded and validated, as every reader of a trial's records
        if not isinstance(s, dict) or not (d / TrialFolder.CHECKPOINT).exists():
            continue
        if s.get("method") == "ce" and s.get("dataset") == spec.dataset and s.get("model") == spec.model:
            found.append((s.get("seed") != spec.seed, d))
    if not found:
        raise UserError(f"{trials}: no CE trial of dataset {spec.dataset!r} and model {spec.model!r} with a "
                        f"checkpoint; pass --ce-trial")
    return min(found)[1]


def run_examples(args: argparse.Namespace) -> int:
    import torch

    from harness.analysis.zipf_models import build_examples, pick_indices
    from harness.analysis.zipf_plots import examples_figure
    from harness.results.aggregate import method_label
    from harness.results.plots import save_figure
    from harness.train.trained import load_trained

    _check_trial_dir(args.trial_dir)
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be >= 1")
    out = _target(args, ["fig4_examples"], ["examples.json"])
    device = resolved_device(args.device)
    zt = load_trained(args.trial_dir, device=device)
    ce_dir = args.ce_trial or find_ce_trial(args.trial_dir, zt.spec)
    _check_trial_dir(ce_dir)
    ct = load_trained(ce_dir, device=device)
    if ct.bundle.num_classes != zt.bundle.num_classes or ct.spec.dataset != zt.spec.dataset:
        raise UserError(f"{ce_dir}: dataset {ct.spec.dataset} ({ct.bundle.num_classes} classes) differs from "
                        f"{args.trial_dir}'s {zt.spec.dataset} ({zt.bundle.num_classes} classes)")
    b = zt.bundle
    zp = zt.method.params if zt.spec.method == "zipf" else None
    extra = zt.method.extra_modules() if zp is not None else None
    kw = dict(alpha=zp.alpha if zp else 1.0, upsample=zp.upsample if zp else "none", extra=extra,
              dense=zp.dense if zp else True)
    indices = pick_indices(len(b.val), n=len(b.val) if args.pick == "ce-wrong" else args.n, seed=args.seed)
    if args.pick == "ce-wrong":
        indices = _ce_wrong(ct.model, b.val, indices, n=args.n, device=device)
    torch.manual_seed(args.seed)
    examples = build_examples(zipf_model=zt.model, ce_model=ct.model, dataset=b.val, indices=indices,
                              superclasses=b.superclasses, mean=b.mean, std=b.std, device=device, **kw)
    supers = b.superclasses is not None
    # ce-wrong tops up with correct images when CE misses fewer than --n: the title counts, never assumes
    wrong = sum(e.ce_top[0][0] != e.label for e in examples)
    picked = f"{wrong} misclassified by CE" if args.pick == "ce-wrong" else f"random, seed {args.seed}"
    fig = examples_figure(examples, b.classes, has_superclasses=supers, dataset=zt.spec.dataset,
                          zipf_title=f"Zipf's soft label ({method_label(zt.spec.method)} model, seed "
                                     f"{zt.spec.seed}): top-5 non-target",
                          ce_title=f"CE model's prediction (seed {ct.spec.seed}): top-5",
                          title=f"{zt.spec.dataset} / {zt.spec.model}: {len(examples)} val images ({picked})")
    paths = save_figure(fig, out / "fig4_examples")

    def top5(top: list, cats: list[str]) -> list:  # without super-classes 'unrelated' claims an unchecked relation
        return [[b.classes[c], v, cat if supers or cat == "gt" else "other"] for (c, v), cat in zip(top, cats, strict=True)]

    record = {"trial": _describe_trial(zt), "ce_trial": _describe_trial(ct), "seed": args.seed, "pick": args.pick,
              "superclasses": supers,
              "soft_label": {k: v for k, v in kw.items() if k != "extra"} | {"extra_dense_layer": extra is not None},
              "examples": [{"index": e.index, "label": b.classes[e.label], "zipf_top5": top5(e.zipf_top, e.zipf_categories),
                            "ce_top5": top5(e.ce_top, e.ce_categories)} for e in examples]}
    atomic_write_json(out / "examples.json", record)
    print(f"soft-label examples: {len(examples)} val images of {zt.spec.dataset}; soft labels from {zt.trial_dir} "
          f"({zt.spec.method}), CE predictions from {ct.trial_dir}"
          + ("" if supers else "; no super-classes: non-target classes are 'other', neither similar nor unrelated"))
    for e in record["examples"]:
        z = ", ".join(f"{n} {v:.3f} ({c})" for n, v, c in e["zipf_top5"])
        c = ", ".join(f"{n} {v:.3f} ({k})" for n, v, k in e["ce_top5"])
        print(f"  #{e['index']} GT {e['label']}\n    zipf: {z}\n    ce:   {c}")
    print("wrote " + ", ".join(str(x) for x in [out / "examples.json", *paths]))
    return 0


def _ce_wrong(model: Any, dataset: Any, order: list[int], *, n: int, device: str, batch: int = 256) -> list[int]:
    """The first n positions of `order` that the CE model misclassifies (then correct ones if too few)."""
    import torch

    wrong, right = [], []
    with torch.no_grad():
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            items = [dataset[i] for i in idx]
            x = torch.stack([it[0] for it in items]).to(device)
            pred = model(x).argmax(1).cpu().tolist()
            for i, it, p in zip(idx, items, pred, strict=True):
                (wrong if p != int(it[1]) else right).append(i)
            if len(wrong) >= n:
                break
    return (wrong + right)[:n]


def run(args: argparse.Namespace) -> int:
    return {"toy": run_toy, "fit": run_fit, "snr": run_snr, "examples": run_examples}[args.zipf_command](args)
