"""Tune, then confirm: a hyper-parameter search per method on the validation split, then the best
configuration of each method rerun with the sweep's seeds as ordinary trials (docs/tuning.md).

The flow, for each group (one method entry x dataset x model of the sweep):
1. search: `budget` configurations of the method's `search.space`, each an ordinary trial folder keyed by
   its resolved spec (seed: the sweep's first seed), run by Ray Tune with ASHA (`val_top1` each epoch,
   the held-out split) or FIFO. Random search samples on the driver from a seeded generator, so a rerun
   proposes the same configurations; TPE (Optuna) is given the finished ones back as evaluated points.
2. select: the finished search trial with the best `val_selected_top1` (the validation split: the test
   split is never read here). Early-stopped trials are recorded as `stopped`, never as failed.
3. confirm: the selected configuration with every seed of the sweep, through the grid runner; under
   `seeds: {sequential: ...}` the design's rounds instead (harness/sweep/sequential.py `run_confirm`): the
   start seeds, then seeds only for the comparisons still open at the planned looks.

Why tfbench's own record, not Ray's restore: the trial folders already survive any kill; a finished or
stopped search trial that is proposed again replays its recorded epochs to the scheduler instead of
training, so ASHA sees the same history, and a rerun of a finished search+confirm trains nothing.

Why one module of over 400 lines: the space, the Ray trainable, the selection and the records share the
one notion of a search trial (`search_trial`, its key and status), and read best side by side.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.config.resolve import request_hash, with_seed
from harness.config.search import SearchSpec
from harness.config.selection import DEFAULT_RULE, selection_rule
from harness.config.spec import TrialSpec
from harness.config.sweep_file import SweepSpec
from harness.errors import UserError
from harness.folders import ResultsFolder, TrialFolder
from harness.io import atomic_write_json, atomic_write_text, csv_text
from harness.progress import Progress
from harness.results import records
from harness.sweep.sequential import run_confirm
from harness.sweep.session import TuneSession, pause_for_tests
from harness.sweep.trainables import run_one

METRIC, TIME_ATTR = "val_top1", "epoch"


def scheduler_metric(rule: str) -> tuple[str, str]:
    """What ASHA's rungs and TPE compare each epoch: the selection rule's first key (`nll`: validation NLL,
    lower is better; otherwise validation top-1). Why only the first key: a scheduler compares one number;
    the tie-break applies when the finished trials are selected (`select_best`)."""
    return selection_rule(rule).scheduler
SEARCH_JSON, SEARCH_CSV = "search.json", "search.csv"
SIGNIFICANT = 4  # sampled floats are rounded to 4 significant digits: readable keys and tables


@dataclass
class Group:
    """One method entry x dataset x model of the sweep: what its search trials share."""

    base: TrialSpec                               # the sweep's trial at its first seed (fixed params)
    space: dict[str, tuple[str, tuple[Any, ...]]]  # parameter -> (kind, values)
    seeds: list[int]                              # the sweep's seeds: the confirm trials

    @property
    def name(self) -> str:
        return f"{self.base.method} on {self.base.dataset} / {self.base.model}"


def groups_of(sweep: SweepSpec) -> list[Group]:
    assert sweep.search is not None
    seeds = list(dict.fromkeys(t.seed for t in sweep.trials))
    return [Group(base=t, space=dict(sweep.search.space.get(t.method, {})), seeds=seeds)
            for t in sweep.trials if t.seed == seeds[0]]


# --- the search space (pure) ---------------------------------------------------------------------

def ray_space(space: dict[str, tuple[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """{p: tune.uniform / tune.loguniform / tune.choice} for Ray Tune's searchers."""
    from ray import tune

    make = {"uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
            "choice": lambda v: tune.choice(list(v))}
    return {p: make[kind](values) for p, (kind, values) in sorted(space.items())}


def rounded(value: Any) -> Any:
    return float(f"{value:.{SIGNIFICANT}g}") if isinstance(value, float) else value


def sample_configs(space: dict[str, tuple[str, tuple[Any, ...]]], budget: int, seed: int) -> list[dict[str, Any]]:
    """`budget` distinct configurations drawn from `space` with a generator seeded by `seed`, in a fixed
    order (the same on every rerun). Fewer when the space has fewer distinct points (choices only);
    one (the defaults) when there is nothing to tune."""
    if not space:
        return [{}]
    rng = np.random.default_rng(seed)
    domains = ray_space(space)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(budget * 50):  # choices only: stop once the distinct points are exhausted
        config = {p: rounded(_plain(domains[p].sample(random_state=rng))) for p in sorted(domains)}
        ident = json.dumps(config, sort_keys=True, default=str)
        if ident not in seen:
            seen.add(ident)
            out.append(config)
            if len(out) == budget:
                break
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def search_trial(base: TrialSpec, params: dict[str, Any]) -> TrialSpec:
    """The base trial with the sampled parameters: a search point is resolved here, so the method's range
    checks run on it here (the workers trust it). Its request names the search point, so no search trial
    is ever taken for a stale copy of another."""
    from harness.data import DATASETS
    from methods import METHODS

    method_params = {**base.method_params, **params}
    cls, data_cls = METHODS.get(base.method), DATASETS.get(base.dataset)
    cls.check(cls.Params(**method_params), num_classes=data_cls.class_count(data_cls.Params(**base.dataset_params)))
    return dataclasses.replace(base, method_params=method_params,
                               request=request_hash(search_of=base.request, params=params))


def select_best(rows: list[dict[str, Any]], rule: str) -> dict[str, Any] | None:
    """The finished row that `train.select`'s order puts first: the highest validation top-1 at the selected
    epoch (`val`), ties to the lower validation NLL (`val_nll`); under `nll` the NLL first. Equal rows keep
    the first. Rows carry no test-split number: selection cannot see it."""
    from harness.config.selection import config_order

    finished = [r for r in rows if r["status"] == "finished" and r.get("val") is not None]
    return min(finished, key=lambda r: config_order(rule, top1=r["val"], nll=r.get("val_nll")), default=None)


# --- trial records -------------------------------------------------------------------------------

def search_status(trial: TrialFolder) -> str:
    """finished | stopped | failed | pending: `stopped` is an early stop by the scheduler, never a failure."""
    status = trial.status()
    if status == "finished":
        return status
    return "stopped" if (trial / trial.STOPPED).exists() else status


def history(trial: TrialFolder) -> list[dict[str, Any]]:
    return records.read_jsonl_records(trial / trial.METRICS)


def search_row(folder: ResultsFolder, spec: TrialSpec, params: dict[str, Any]) -> dict[str, Any]:
    """One search trial: status, epochs trained, and its validation top-1 (the selected epoch's when
    finished, the best so far when stopped). Nothing from the test split."""
    trial = folder.trial(spec.key())
    status = search_status(trial)
    epochs = history(trial)
    if status == "finished":
        result = trial.result() or {}
        val, val_nll = result.get("val_selected_top1"), result.get("val_selected_nll")
    else:  # the epoch train.select would have picked so far
        from harness.config.selection import select_epoch

        usable = [e for e in epochs if isinstance(e.get("val_top1"), (int, float))]
        chosen = select_epoch(spec.train.select, usable)
        best = next((e for e in usable if e.get("epoch") == chosen), None)
        val, val_nll = (best["val_top1"], best.get("val_nll")) if best else (None, None)
    return {"key": spec.key(), "status": status, "method": spec.method, "dataset": spec.dataset,
            "model": spec.model, "seed": spec.seed, "epochs": spec.train.epochs, "epochs_trained": len(epochs),
            "val": val, "val_nll": val_nll, "params": params}


def members(folder: ResultsFolder, base: TrialSpec) -> list[tuple[TrialSpec, dict[str, Any]]]:
    """The search trials of `base` already in the folder (TPE: its proposals are not known in advance).
    A member is the base spec with other method parameters and a search request."""
    out = []
    want = {k: v for k, v in base.key_dict().items() if k != "method_params"}
    for trial in folder.trial_folders():
        try:
            spec = TrialSpec.from_dict(trial.spec())
        except (KeyError, TypeError, ValueError):
            continue
        params = {k: v for k, v in spec.method_params.items() if v != base.method_params.get(k)}
        if {k: v for k, v in spec.key_dict().items() if k != "method_params"} == want and \
                search_trial(base, params).key() == spec.key():
            out.append((spec, params))
    return out


# --- the Ray side --------------------------------------------------------------------------------

def search_trainable(config: dict[str, Any], base: dict[str, Any], folder: str, threads: int) -> None:
    """One search trial. A finished or stopped trial replays its epochs (ASHA sees the same history); a
    started one replays the epochs before its checkpoint, then trains on; a lock keeps two proposals of
    the same configuration (TPE may repeat one) from training the same folder at once."""
    from ray import tune

    from methods import load_user_module

    params = dict(config.get("params", config))
    base_spec = TrialSpec.from_dict(base)
    for ref in base_spec.imports:  # a user's method or data set registers on import: before it is looked up
        load_user_module(ref)
    spec = search_trial(base_spec, params)
    key = spec.key()
    trial = ResultsFolder(folder).trial(key)
    trial.path.mkdir(parents=True, exist_ok=True)
    with open(trial / trial.SEARCH_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if search_status(trial) in ("finished", "stopped"):
            for row in history(trial):
                tune.report({**row, "key": key, "replayed": True})
            return
        replayed = False

        def report(metrics: dict[str, Any]) -> None:
            nonlocal replayed
            if not replayed:  # a resumed trial: the scheduler has not seen the epochs before its checkpoint
                replayed = True
                for row in history(trial):
                    if row.get("epoch", 0) < metrics["epoch"]:
                        tune.report({**row, "key": key, "replayed": True})
            tune.report({**metrics, "key": key})

        (trial / trial.STOPPED).unlink(missing_ok=True)
        run_one(spec.to_dict(), str(trial.path), threads, report=report)


def make_scheduler(search: SearchSpec, folder: ResultsFolder, epochs: int, rule: str = DEFAULT_RULE) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if search.scheduler == "fifo":
        return FIFOScheduler()
    metric, mode = scheduler_metric(rule)

    class RecordingASHA(ASHAScheduler):
        """ASHA that writes `stopped.json` into the trial folder when it stops a trial early. The last
        epoch is never stopped: the trial still has to evaluate the test split and write result.json."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision != TrialScheduler.STOP:
                return decision
            epoch = int(result.get(TIME_ATTR, 0))
            if epoch >= epochs:
                return TrialScheduler.CONTINUE
            if result.get("key"):
                folder_trial = folder.trial(str(result["key"]))
                if folder_trial.status() != "finished":
                    atomic_write_json(folder_trial / folder_trial.STOPPED,
                                      {"status": "stopped", "by": "asha", "epoch": epoch,
                                       metric: result.get(metric), "time": time.time()})
            return decision

    return RecordingASHA(time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=epochs,
                         grace_period=search.grace_period, reduction_factor=search.reduction_factor)


def _tpe(space: dict[str, Any], search: SearchSpec, done: list[dict[str, Any]], rule: str = DEFAULT_RULE) -> Any:
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise UserError("search.algorithm is tpe but optuna is not installed; pip install -e '.[tune]' in the "
                        "tfbench checkout (.venv/bin/pip with make's .venv), or use algorithm: random") from None
    metric, mode = scheduler_metric(rule)
    key = "val_nll" if metric == "val_nll" else "val"
    evaluated = [r for r in done if r[key] is not None]
    return OptunaSearch(space=space, metric=metric, mode=mode, seed=search.seed,
                        points_to_evaluate=[r["params"] for r in evaluated] or None,
                        evaluated_rewards=[r[key] for r in evaluated] or None)


def run_group(session: TuneSession, group: Group, configs: list[dict] | None, n_new: int,
              progress: Progress) -> Any:
    """One Tune experiment over one group's search trials (ASHA compares the trials of one method only)."""
    from ray import tune

    sweep, folder = session.sweep, session.folder
    search = sweep.search
    assert search is not None
    rule = group.base.train.select
    trainable = tune.with_parameters(search_trainable, base=group.base.to_dict(), folder=str(folder.path),
                                     threads=max(1, int(sweep.resources.cpus_per_trial)))
    if configs is not None:  # random: the configurations are fixed in advance
        param_space, search_alg, samples = {"params": tune.grid_search(configs)}, None, 1
    else:
        done = [search_row(folder, s, p) for s, p in members(folder, group.base)]
        done = [d for d in done if d["status"] in ("finished", "stopped")]
        param_space, search_alg, samples = {}, _tpe(ray_space(group.space), search, done, rule), n_new

    def key_of(trial: Any) -> str:
        return search_trial(group.base, dict(trial.config.get("params", trial.config))).key()

    return session.fit(trainable, name="search", param_space=param_space, progress=progress, key_of=key_of,
                       epochs_of=lambda key: group.base.train.epochs,
                       scheduler=make_scheduler(search, folder, group.base.train.epochs, rule),
                       search_alg=search_alg, num_samples=samples)


# --- search, select, confirm ---------------------------------------------------------------------

def group_trials(group: Group, search: SearchSpec, folder: ResultsFolder) -> list[tuple[TrialSpec, dict[str, Any]]]:
    """The group's search trials known now: all of them for random search, those on record for TPE."""
    if search.algorithm == "random" or not group.space:
        return [(search_trial(group.base, c), c) for c in sample_configs(group.space, search.budget, search.seed)]
    return members(folder, group.base)


def budget_of(group: Group, search: SearchSpec) -> int:
    """Trials this group is given: the budget, or fewer where the space has fewer distinct points."""
    if not group.space:
        return 1
    if all(kind == "choice" for kind, _ in group.space.values()):
        return min(search.budget, int(np.prod([len(v) for _, v in group.space.values()])))
    return search.budget


@dataclass
class Outcome:
    """What the runner needs back from a searched sweep: the confirm trials it summarises, whether Ctrl-C
    stopped it (and in which phase), and whether every group found and confirmed a configuration."""

    confirm: list[TrialSpec]
    interrupted: bool
    phase: str
    ok: bool


def run_search(sweep: SweepSpec, folder: ResultsFolder, *, sets: list[str], address: str | None,
               mode: str = "auto") -> Outcome:
    """Search every group, select on validation, confirm with the sweep's seeds (all in one Tune session);
    write search.json, search.csv and the confirm trials' sweep record. Stopped trials are not failures."""
    from harness.results.sequential import plan_of

    search = sweep.search
    assert search is not None
    groups = groups_of(sweep)
    todo = []
    for g in groups:
        known = group_trials(g, search, folder)
        statuses = [search_status(folder.trial(s.key())) for s, _ in known]
        open_ = sum(st not in ("finished", "stopped") for st in statuses)
        missing = budget_of(g, search) - len(known) if search.algorithm == "tpe" and g.space else 0
        if open_ or missing > 0:
            todo.append((g, known, max(missing, 0)))
    total = sum(budget_of(g, search) for g in groups)
    done_search = sum(search_status(folder.trial(s.key())) in ("finished", "stopped")
                      for g in groups for s, _ in group_trials(g, search, folder))
    # one status line and one estimate for both phases: the search trials, then each group's confirm trials
    progress = Progress(sweep.name, total + len(groups) * len(groups[0].seeds), done_before=done_search,
                        tty=False if mode == "plain" else None)
    print(f"sweep {sweep.name}: search of {len(groups)} method(s), budget {search.budget} per method "
          f"({search.algorithm}, {search.scheduler}); {len(todo)} with trials to run", flush=True)
    interrupted, phase, confirm = False, "search", []
    try:
        with TuneSession(sweep, folder, address=address, show=mode != "off") as session:
            if todo:
                progress.phase(f"sweep {sweep.name}: search ({total - done_search} of {total} search trials to run)")
                interrupted = search_groups(session, todo, progress)
            if not interrupted:
                record = write_search_record(folder, sweep, groups)
                phase = "confirm trials"
                confirm = [TrialSpec.from_dict(d) for g in record["groups"] for d in g["confirm_specs"]]
                folder.write_sweep_record(dataclasses.replace(sweep, trials=confirm).record(sets))
                finished = sum(folder.trial(t.key()).status() == "finished" for t in confirm)
                sequential = plan_of(sweep.raw.get("seeds")) is not None
                print(f"sweep {sweep.name}: confirm: {'up to ' if sequential else ''}{len(confirm)} trials (best of "
                      f"each method x {len(groups[0].seeds)} seeds{', seeds until decided' if sequential else ''}), "
                      f"{finished} already finished", flush=True)
                # a group with no finished search trial confirms nothing; a sequential round adds what it runs
                progress.total = total + (finished if sequential else len(confirm))
                progress.done_before += finished  # confirm trials finished by an earlier run

                def run(pending: list[TrialSpec]) -> bool:
                    progress.total += len(pending) if sequential else 0
                    progress.phase(f"sweep {sweep.name}: confirm ({len(pending)} trials)")
                    session.run_trials(pending, progress)
                    return session.interrupted

                confirm, interrupted = run_confirm(sweep, folder, confirm, run)
    except KeyboardInterrupt:  # Ctrl-C outside Tune's loop (starting Ray), or a second Ctrl-C
        interrupted = True
    finally:
        progress.close()
    if interrupted:
        if phase == "search":
            write_search_record(folder, sweep, groups)
            print(f"tfbench: sweep {sweep.name} interrupted during the search; finished and stopped search "
                  f"trials are kept; rerun the same command to continue; {folder / SEARCH_CSV}", file=sys.stderr,
                  flush=True)
        return Outcome(confirm, True, phase, False)
    failed_search = [r for g in record["groups"] for r in g["rows"] if r["status"] == "failed"]
    failed = [t for t in confirm if folder.trial(t.key()).status() != "finished"]
    unselected = [g for g in record["groups"] if g["best"] is None]
    stopped = sum(r["status"] == "stopped" for g in record["groups"] for r in g["rows"])
    print(f"sweep {sweep.name}: search {sum(len(g['rows']) for g in record['groups'])} trials ({stopped} stopped "
          f"early, {len(failed_search)} failed); confirm {len(confirm) - len(failed)} finished, {len(failed)} "
          f"failed; {folder / 'summary.md'}", flush=True)
    for g in unselected:
        print(f"  no finished search trial for {g['method']} on {g['dataset']} / {g['model']}: nothing to "
              f"confirm (see {folder / SEARCH_CSV})", flush=True)
    for r in failed_search:
        print(f"  failed search trial: {r['key']}: {folder.trial(r['key']).error()}", flush=True)
    return Outcome(confirm, False, phase, not (failed_search or unselected))


def search_groups(session: TuneSession, todo: list, progress: Progress) -> bool:
    """Run the groups that have search trials left, one Tune experiment each, on the sweep's one status line
    (the caller closes it). True when Ctrl-C stopped it."""
    sweep, folder = session.sweep, session.folder
    for g, known, n_new in todo:
        if session.interrupted:
            break
        if sweep.search.algorithm == "random" or not g.space:
            run_group(session, g, [p for _, p in known], 0, progress)
            pause_for_tests("TFBENCH_TEST_PAUSE_AFTER_SEARCH_GROUP")  # tests: a kill between groups
            continue
        # TPE: trials it proposed before a kill are finished first (as fixed points), then it proposes
        # the rest of the budget knowing every result on record
        started = [p for s, p in known if search_status(folder.trial(s.key())) not in ("finished", "stopped")]
        if started:
            run_group(session, g, started, 0, progress)
        if n_new and not session.interrupted:
            run_group(session, g, None, n_new, progress)
        pause_for_tests("TFBENCH_TEST_PAUSE_AFTER_SEARCH_GROUP")
    return session.interrupted


def write_search_record(folder: ResultsFolder, sweep: SweepSpec, groups: list[Group]) -> dict[str, Any]:
    """search.json (per group: budget, trials, the selected one, its confirm trials) and search.csv (one
    row per search trial). Selection reads validation numbers only."""
    search = sweep.search
    assert search is not None
    out_groups, csv_rows = [], []
    for g in groups:
        rows = [search_row(folder, s, p) for s, p in group_trials(g, search, folder)]
        best = select_best(rows, g.base.train.select)
        for r in rows:
            r["selected"] = best is not None and r["key"] == best["key"]
        confirm = [with_seed(search_trial(g.base, best["params"]), s) for s in g.seeds] if best else []
        out_groups.append({"method": g.base.method, "dataset": g.base.dataset, "model": g.base.model,
                           "budget": budget_of(g, search), "epochs": g.base.train.epochs, "rows": rows,
                           "best": best["key"] if best else None, "best_params": best["params"] if best else None,
                           "best_val_top1": best["val"] if best else None,
                           "confirm": [t.key() for t in confirm], "confirm_specs": [t.to_dict() for t in confirm]})
        csv_rows.extend(rows)
    rule = groups[0].base.train.select if groups else DEFAULT_RULE
    record = {"metric": METRIC, "selected_on": f"validation split (train.select {rule}: val_selected_top1, "
                                               f"val_selected_nll)", **search.to_dict(),
              "groups": out_groups}
    atomic_write_json(folder / SEARCH_JSON, record)
    atomic_write_text(folder / SEARCH_CSV, search_csv_text(csv_rows))
    return record


def search_csv_text(rows: list[dict[str, Any]]) -> str:
    names = sorted({p for r in rows for p in r["params"]})
    header = ["key", "status", "selected", "method", "dataset", "model", "seed", "epochs", "epochs_trained",
              "val_top1", *[f"p.{n}" for n in names]]
    return csv_text(header, ([r["key"], r["status"], r["selected"], r["method"], r["dataset"], r["model"], r["seed"],
                              r["epochs"], r["epochs_trained"], "" if r["val"] is None else r["val"],
                              *[r["params"].get(n, "") for n in names]] for r in rows))
