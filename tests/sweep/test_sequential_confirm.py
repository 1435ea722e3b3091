"""Seeds until decided after a search: the confirm trials of each method's selected configuration (and CE's)
follow the sequential design's rounds, as an unsearched sequential sweep's trials do, and a rerun after an
interruption continues where the design stopped. Fast: the trials are records written by a stand-in runner
(no training, no Ray); the decisions are checked against scipy's paired t-test and the spending formula."""
from __future__ import annotations

import dataclasses
import math

from helpers import write_sweep_file
from scipy import stats

from harness.config.resolve import with_seed
from harness.config.sweep_file import load_sweep
from harness.folders import ResultsFolder
from harness.io import atomic_write_json
from harness.sweep.search import groups_of, search_trial
from harness.sweep.sequential import run_confirm

# top-1 per seed: LS (its selected epsilon) clearly worse than CE; OLS noisy around CE: open until max
CE = [0.900, 0.910, 0.905, 0.895, 0.902]
LS = [c - 0.100 + d for c, d in zip(CE, [0.0, 0.0002, -0.0001, 0.0001, 0.0], strict=True)]
OLS = [c + d for c, d in zip(CE, [0.02, -0.03, 0.015, -0.01, 0.025], strict=True)]
TOP1 = {"ce": CE, "ls": LS, "ols": OLS}
SELECTED = {"ce": {}, "ls": {"epsilon": 0.2}, "ols": {}}


def sweep_file(tmp_path, seeds: str):
    return load_sweep(write_sweep_file(tmp_path, f"""\
schema_version: 1
name: seqsearch
methods: [ce, ls, ols]
datasets: [digits]
models: [tiny_cnn]
seeds: {seeds}
train: {{epochs: 1, holdout: 0.2}}
search: {{budget: 2, space: {{ls: {{epsilon: {{uniform: [0.0, 0.5]}}}}}}}}
"""))


def confirm_specs(sweep):
    """As harness/sweep/search.py's write_search_record: each group's selected configuration x every seed."""
    return [with_seed(search_trial(g.base, SELECTED[g.base.method]), s) for g in groups_of(sweep) for s in g.seeds]


class Runner:
    """Writes a finished record for each trial it is given; `stop_after` trials into a call, it reports an
    interruption (Ctrl-C) with the rest of that call unrun."""

    def __init__(self, folder: ResultsFolder, stop_after: int | None = None):
        self.folder, self.stop_after, self.calls = folder, stop_after, []

    def __call__(self, pending) -> bool:
        self.calls.append(sorted((t.method, t.seed) for t in pending))
        for i, t in enumerate(pending):
            if self.stop_after is not None and i == self.stop_after:
                return True
            trial = self.folder.trial(t.key())
            atomic_write_json(trial / trial.RESULT, {"key": t.key(), "status": "finished",
                                                      "selected_top1": TOP1[t.method][t.seed]})
        return False


def ran(folder: ResultsFolder, confirm) -> list[tuple[str, int]]:
    return sorted((t.method, t.seed) for t in confirm if folder.trial(t.key()).status() == "finished")


def test_the_design_by_hand():
    """What the rounds below must do, from scipy and the spending function: at look 1 (3 of max 5 seeds)
    O'Brien-Fleming spends 2 - 2 Phi(z_0.975 / sqrt 0.6); Holm over the k = 2 comparisons marks LS
    (p below half of it) and leaves OLS open (its p above), and OLS stays unmarked at looks 2 and 3."""
    level1 = 2 - 2 * stats.norm.cdf(stats.norm.ppf(0.975) / math.sqrt(3 / 5))
    p_ls = stats.ttest_rel(LS[:3], CE[:3]).pvalue
    p_ols = [stats.ttest_rel(OLS[:n], CE[:n]).pvalue for n in (3, 4, 5)]
    assert p_ls < level1 / 2 and min(p_ols) > 0.05


def test_confirm_trials_after_a_search_follow_the_sequential_design(tmp_path):
    sweep = sweep_file(tmp_path, "{sequential: {start: 3, max: 5}}")
    folder = ResultsFolder(tmp_path / "results" / "seqsearch")
    confirm = confirm_specs(sweep)
    assert len(confirm) == 15  # 3 methods x seeds 0..4: the most the design may run
    runner = Runner(folder)
    trials, interrupted = run_confirm(sweep, folder, confirm, runner)
    assert not interrupted
    # round 1: every selected configuration's start seeds; LS is decided (worse) at look 1, so rounds 2 and
    # 3 add a seed only to OLS and to CE in its table
    assert runner.calls == [[(m, s) for m in ("ce", "ls", "ols") for s in range(3)],
                            [("ce", 3), ("ols", 3)], [("ce", 4), ("ols", 4)]]
    assert sorted((t.method, t.seed) for t in trials) == ran(folder, confirm)
    assert ran(folder, confirm).count(("ls", 3)) == 0 and len(trials) == 13
    # the confirm trials are the search's selected configurations: LS with its epsilon
    assert {t.method_params.get("epsilon") for t in trials if t.method == "ls"} == {0.2}
    # a rerun of the finished design runs nothing
    again = Runner(folder)
    assert run_confirm(sweep, folder, confirm, again) == (trials, False) and again.calls == []


def test_an_interrupted_sequential_confirm_continues_where_it_stopped(tmp_path):
    sweep = sweep_file(tmp_path, "{sequential: {start: 3, max: 5}}")
    folder = ResultsFolder(tmp_path / "results" / "seqsearch")
    confirm = confirm_specs(sweep)
    first = Runner(folder, stop_after=4)  # Ctrl-C during round 1, after 4 of its 9 trials
    _, interrupted = run_confirm(sweep, folder, confirm, first)
    assert interrupted and len(first.calls) == 1 and len(ran(folder, confirm)) == 4
    second = Runner(folder)
    trials, interrupted = run_confirm(sweep, folder, confirm, second)
    assert not interrupted
    # the rerun trains only what is missing: the 5 left of round 1, then the design's rounds as before
    assert len(second.calls[0]) == 5 and not set(second.calls[0]) & set(first.calls[0][:4])
    assert second.calls[1:] == [[("ce", 3), ("ols", 3)], [("ce", 4), ("ols", 4)]]
    assert len(trials) == 13


def test_fixed_seeds_confirm_every_seed_at_once(tmp_path):
    sweep = sweep_file(tmp_path, "[0, 1, 2]")
    folder = ResultsFolder(tmp_path / "results" / "seqsearch")
    runner = Runner(folder)
    trials, interrupted = run_confirm(sweep, folder, confirm_specs(sweep), runner)
    assert not interrupted and len(runner.calls) == 1 and len(runner.calls[0]) == len(trials) == 9


def test_the_search_sweep_summary_says_where_each_comparison_stopped(tmp_path):
    """The summary of such a folder: the design's marks and the look each stopped at (trials.csv as the
    runner writes it, from the trials of the comparison)."""
    from harness.results.summary import render_summary
    from harness.sweep.runner import write_trials_csv

    sweep = sweep_file(tmp_path, "{sequential: {start: 3, max: 5}}")
    folder = ResultsFolder(tmp_path / "results" / "seqsearch")
    folder.path.mkdir(parents=True)
    confirm = confirm_specs(sweep)
    folder.write_sweep_record(dataclasses.replace(sweep, trials=confirm).record())  # as run_search does
    trials, _ = run_confirm(sweep, folder, confirm, Runner(folder))
    write_trials_csv(folder, trials)
    md = render_summary(folder.path, write=False)["md"]
    ls = next(line for line in md.splitlines() if line.startswith("| LS ") and "stopped" in line)
    assert "worse stopped at 3 seeds (look 1 of 3)" in ls and "▼" in ls
    ols = next(line for line in md.splitlines() if line.startswith("| OLS ") and "seeds (look" in line)
    assert "undecided at 5 seeds (look 3 of 3)" in ols
