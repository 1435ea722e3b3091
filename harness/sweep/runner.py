"""Run a sweep: the checks before anything is written, the results folder's lock and record, the trials on
Ray Tune (harness/sweep/session.py; a `search:` section through harness/sweep/search.py), then trials.csv,
the summary and the plots.

Why the trial folders, not Ray's experiment state, are the source of truth: every trial checkpoints into
results/<sweep>/trials/<key>/ each epoch, and a finished trial has a result.json. A rerun of the same file
(after Ctrl-C, a kill, a reboot, or with more seeds) starts a fresh Tune experiment over the trials that
have no finished record, and each of those resumes from its own checkpoint. Nothing depends on the driver
surviving.
"""
from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from harness.config.spec import TrialSpec
from harness.config.sweep_file import SweepSpec
from harness.errors import UserError
from harness.folders import ResultsFolder, describe_stale
from harness.io import atomic_write_text
from harness.outputs import check_links
from harness.progress import Progress
from harness.results import records
from harness.sweep import cluster
from harness.sweep.session import TuneSession, pause_for_tests


def write_trials_csv(folder: ResultsFolder, trials: list[TrialSpec]) -> Path:
    """One flat row per trial of the sweep, in the sweep's order: the source of every table."""
    return records.write_trials_csv(folder.path, [(t.key(), t.to_dict()) for t in trials])


def run_sweep(sweep: SweepSpec, results_root: Path, *, sets: list[str] = (), address: str | None = None,
              progress: bool | str = True, rerun_stale: bool = False,
              costs: Callable[[ResultsFolder, list[TrialSpec]], None] | None = None) -> int:
    """Run what is missing of `sweep`, then write trials.csv, the summary tables and the plots.

    `costs(folder, trials)`: called after the trials, before the summary (the controlled cost measurement of
    harness/bench/costs.py, which the CLI passes in: the runner never imports the benchmarks); a failure in it
    is a warning, never a lost sweep.

    `progress`: "auto" (or True), "plain" (timestamped lines even on a terminal) or "off" (or False).
    Returns 0 when every trial finished, 1 when some failed, 130 when interrupted. Before anything is
    written or Ray starts: resources against this machine (without a cluster), data roots, and stale trials
    (finished under settings the sweep no longer means: refused unless `rerun_stale`, which moves them to
    stale/).
    """
    folder = ResultsFolder((results_root / sweep.name).resolve())
    mode = {True: "auto", False: "off"}.get(progress, progress)  # type: ignore[call-overload]
    on_cluster = address or cluster.resolve_address(None)
    address = cluster.preflight(sweep.resources, address, sweep)  # reachable, and a trial fits: before any write
    if not on_cluster:  # on a cluster the data lives on the workers
        check_data_roots([t for t in sweep.trials if folder.trial(t.key()).status() != "finished"])
    stale = folder.find_stale({t.key(): t.to_dict() for t in sweep.trials})
    if stale and not rerun_stale:
        raise UserError("\n".join([f"{folder.path}: " + line for line in describe_stale(stale)] + [
            f"{folder.path}: {len(stale)} stale trial(s) in all; rerun with --rerun-stale to train the current "
            f"settings (the old folders move to {folder / folder.STALE}/, nothing is deleted)"]))
    check_links(folder)
    folder.write_probe()
    with folder.lock():
        folder.mark()
        if stale:
            moved = folder.move_aside(set(stale))
            print(f"sweep {sweep.name}: moved {len(moved)} stale trial folder(s) to {folder / folder.STALE}/", flush=True)
        # half-written files of a killed run never become results; the lock is held: no live writer owns them
        folder.remove_temporaries(lock_held=True)
        previous = (folder.sweep_record() or {}).get("source")
        if isinstance(previous, str) and Path(previous).resolve() != Path(sweep.source).resolve():
            print(f"tfbench: warning: {folder.path} was last written by {previous}; this run of {sweep.source} "
                  f"replaces its summary and plots (both sweeps' trials stay under trials/; another `name:` "
                  f"keeps them apart)", file=sys.stderr, flush=True)
        folder.write_sweep_record(sweep.record(sets))
        if sweep.search is not None:  # tune, then confirm
            from harness.sweep.search import run_search

            outcome = run_search(sweep, folder, sets=list(sets), address=address, mode=mode)
            trials, interrupted, phase = outcome.confirm, outcome.interrupted, outcome.phase
        elif (plan := _sequential_plan(sweep)) is not None:  # seeds until decided
            from harness.sweep.sequential import run_sequential

            trials, interrupted = run_sequential(sweep, folder, plan, lambda s: run_grid(s, folder, address, mode))
            phase = ""
        else:
            trials, interrupted, phase = sweep.trials, run_grid(sweep, folder, address, mode), ""
        evaluate_trials(folder, trials)
        write_trials_csv(folder, trials)
        n_done = sum(folder.trial(t.key()).status() == "finished" for t in trials)
        if interrupted:
            # the summary waits for the rerun; trials.csv already says what finished
            where = f" during the {phase}" if phase else ""
            print(f"tfbench: sweep {sweep.name} interrupted{where}: {n_done} of {len(trials)} trials finished and "
                  f"kept; rerun the same command to continue (stopped trials resume from their last checkpoint); "
                  f"{folder / folder.TRIALS_CSV}", file=sys.stderr, flush=True)
            return 130
        if costs is not None:
            try:
                costs(folder, trials)
            except Exception as e:  # the summary then says the costs were not measured
                print(f"tfbench: warning: the cost measurement failed ({type(e).__name__}: {e}); time x and "
                      f"memory x stay n/a; `tfbench table --measure-costs {folder.path}` retries",
                      file=sys.stderr, flush=True)
        pause_for_tests("TFBENCH_TEST_PAUSE_BEFORE_SUMMARY")
        summarise(folder)
    failed = [t for t in trials if folder.trial(t.key()).status() != "finished"]
    if sweep.search is None:
        print(f"sweep {sweep.name}: {n_done} finished, {len(failed)} failed; {folder / folder.TRIALS_CSV}", flush=True)
    for t in failed:
        trial = folder.trial(t.key())
        why = trial.error() if trial.status() == "failed" else "did not finish"
        print(f"  failed: {t.key()}: {why} (full log: {trial / trial.LOG})", flush=True)
    return 1 if failed or (sweep.search is not None and not outcome.ok) else 0


def _sequential_plan(sweep: SweepSpec):
    from harness.results.sequential import plan_of

    return plan_of(sweep.raw.get("seeds"))


def run_grid(sweep: SweepSpec, folder: ResultsFolder, address: str | None, mode: str) -> bool:
    """The sweep's trials that have no finished record, on Ray Tune; True when Ctrl-C stopped it."""
    pending = [t for t in sweep.trials if folder.trial(t.key()).status() != "finished"]
    done_before = len(sweep.trials) - len(pending)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials, {done_before} already finished, "
          f"{len(pending)} to run -> {folder.path}", flush=True)
    if not pending:
        return False
    progress = Progress(sweep.name, len(sweep.trials), done_before=done_before, tty=False if mode == "plain" else None)
    try:
        with TuneSession(sweep, folder, address=address, show=mode != "off") as session:
            try:
                session.run_trials(pending, progress)
            finally:
                progress.close()
        return session.interrupted
    except KeyboardInterrupt:  # Ctrl-C outside Tune's loop (starting Ray), or a second Ctrl-C
        return True


def evaluate_trials(folder: ResultsFolder, trials: list[TrialSpec]) -> None:
    """Beyond top-1 for the finished trials (harness/sweep/evaluate.py): what their predictions lack (the
    sweep's corruptions and OOD set, or everything for a trial trained before predictions were kept), and
    the metrics into result.json, before trials.csv is written."""
    from harness.sweep.evaluate import evaluate_folder

    done = evaluate_folder(folder.path, keys=[t.key() for t in trials], device="auto",
                           log=lambda s: print(f"evaluate: {s}", flush=True))
    if done["updated"]:
        print(f"evaluate: beyond-top-1 metrics of {done['updated']} trial(s) written", flush=True)


def check_data_roots(trials: list[TrialSpec]) -> None:
    """Refuse a sweep whose data is missing or laid out wrongly, before anything is written or Ray starts:
    the cheap checks only (the root exists, its top-level layout); a trial still reports deeper problems."""
    from harness.data import check_dataset

    seen: set[tuple[str, str]] = set()
    for t in trials:
        ident = (t.dataset, json.dumps(t.dataset_params, sort_keys=True, default=str))
        if ident not in seen:
            seen.add(ident)
            check_dataset(t.dataset, dict(t.dataset_params))


def summarise(folder: ResultsFolder) -> None:
    """Tables and plots, when the results code is installed; a failure here never loses trial records."""
    try:
        from harness.results.summary import write_summary
    except ImportError:
        return
    failed = []
    for step in ("plots", "summary"):  # plots first: the summary lists the figures with their captions
        try:
            if step == "plots":
                from harness.results.plots import write_plots

                write_plots(folder.path)
            else:
                write_summary(folder.path)
        except Exception as e:  # e.g. a damaged metrics file: trials.csv is already complete
            failed.append((step, f"{type(e).__name__}: {e}", traceback.format_exc()))
    if failed:
        log = folder / "summary-error.log"
        atomic_write_text(log, "\n".join(trace for _, _, trace in failed))
        what = " and ".join(f"the {step} ({error})" for step, error, _ in failed)
        retry = f"tfbench table {folder.path}" if failed[-1][0] == "summary" else f"tfbench plot {folder.path}"
        print(f"tfbench: warning: could not write {what}; trials.csv is complete; details in {log}; `{retry}` "
              f"retries", file=sys.stderr, flush=True)
