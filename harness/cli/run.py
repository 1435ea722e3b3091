"""`tfbench run SWEEP.yaml`: run a sweep file on Ray Tune (local, or an existing cluster with --address)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, help="a sweep definition file (see sweeps/ and the README)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every trial: method.<param>, dataset.<param>, model.<param>, train.<field>")
    p.add_argument("--dry-run", action="store_true", help="print the resolved trial list and exit; writes nothing")
    p.add_argument("--address", default=None,
                   help="attach to an existing Ray cluster (default: $RAY_ADDRESS, else start a local one)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="results root (default: ./results under the current folder); the sweep writes <root>/<name>/")
    p.add_argument("--progress", choices=("auto", "plain", "off"), default="auto",
                   help="the status line: auto (rewritten in place on a terminal, timestamped lines in a log; "
                        "default), plain (timestamped lines even on a terminal), off (only the start and end lines)")
    p.add_argument("--no-progress", action="store_true", help="the same as --progress off")
    p.add_argument("--tensorboard", action="store_true",
                   help="print the command that shows every trial's live curves (trials/<key>/tb/) in TensorBoard")
    p.add_argument("--mlflow", type=Path, default=None, metavar="DIR",
                   help="also log each trial's params and metrics to an MLflow SQLite store, DIR/mlflow.db "
                        "(needs mlflow: pip install -e '.[mlflow]' in the tfbench checkout)")
    p.add_argument("--rerun-stale", action="store_true",
                   help="retrain trials whose finished results were computed under settings the sweep no longer "
                        "means (their old folders move to <results>/<name>/stale/)")


def run(args: argparse.Namespace) -> int:
    from harness.config.sweep_file import load_sweep

    sweep = load_sweep(args.sweep, args.sets)
    if args.tensorboard:  # before the run, so the viewer can be started while it trains
        from harness.sweep.live import tensorboard_command

        print(f"live curves: {tensorboard_command(args.results.resolve() / sweep.name)}  "
              f"(TensorBoard comes with tfbench)", flush=True)
    if args.dry_run:
        print_trials(sweep)
        return 0
    from harness.sweep.live import MLFLOW_ENV, check_mlflow
    from harness.sweep.runner import run_sweep

    if args.mlflow is not None:
        # the trials run in Ray workers, which inherit the driver's environment
        os.environ[MLFLOW_ENV] = check_mlflow(args.mlflow)

    return run_sweep(sweep, args.results.resolve(), sets=args.sets, address=args.address,
                     progress="off" if args.no_progress else args.progress, rerun_stale=args.rerun_stale,
                     costs=measure_costs(sweep))


def measure_costs(sweep):
    """The cost step of a run (harness/bench/costs.py: the summary's time x and memory x), or None where the
    sweep file says `costs: {measure: false}`."""
    if (sweep.raw.get("costs") or {}).get("measure", True) is False:
        return None

    def measure(folder, trials) -> None:
        from harness.bench.costs import measure_sweep

        r = sweep.resources
        measure_sweep(trials, cpus_per_trial=r.cpus_per_trial, gpus_per_trial=r.gpus_per_trial,
                      results_dir=folder.path, log=lambda line: print(line, flush=True))
    return measure


def print_trials(sweep) -> None:
    from tabulate import tabulate

    rows = []
    for t in sweep.trials:
        params = ", ".join(f"{k}={v}" for k, v in sorted(t.method_params.items()))
        rows.append([t.key(), t.method, t.dataset, t.model, t.seed, t.train.epochs, params])
    print(tabulate(rows, headers=["key", "method", "dataset", "model", "seed", "epochs", "method params"],
                   tablefmt="simple"))
    r = sweep.resources
    if sweep.search is not None:
        from harness.results.sequential import plan_of

        s, plan = sweep.search, plan_of(sweep.raw.get("seeds"))
        seeds = (f"seeds until decided ({plan.start} to {plan.max}, docs/results.md)" if plan is not None else
                 f"{len({t.seed for t in sweep.trials})} seed(s)")
        print(f"\nsearch: the rows above are the base configurations; each method tries up to {s.budget} "
              f"configurations of search.space ({s.algorithm}, {s.scheduler}, seed {s.seed}) at seed "
              f"{sweep.trials[0].seed}, selects on the validation split, then confirms the best with "
              f"{seeds} (docs/tuning.md)")
    print(f"\n{len(sweep.trials)} trials; per trial {r.cpus_per_trial:g} CPU, {r.gpus_per_trial:g} GPU, "
          f"{r.workers_per_trial} worker(s); max concurrent {r.max_concurrent or 'unlimited'}; retries {sweep.retries}")
