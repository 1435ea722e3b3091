"""The summary of a results folder (or of several pooled): reads its trials, aggregates them, and renders
the tables of harness/results/tables.py under a header that states the trials counted, the protocol, the
epoch selection and how to read the verdicts; writes summary.md, summary.tex and summary.csv atomically.
The tables know nothing of folders; this module is where files are read and written."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config.schema import DEFAULT_PRIMARY, PRIMARY_METRICS
from harness.errors import UserError
from harness.folders import read_bounded
from harness.io import atomic_write_text
from harness.outputs import OutputFolder, source_of
from harness.results import records
from harness.results.across import across_section, add_across_columns
from harness.results.aggregate import (
    METRICS,
    TABLE_METRICS,
    aggregate,
    aggregate_sharpness,
    load_sharpness,
    load_trials,
    unfinished_trials,
)
from harness.results.costs import cost_lines
from harness.results.render import frame_csv, to_latex, to_markdown
from harness.results.stats import DEFAULT_ALPHA
from harness.results.tables import (
    SELECT_TEXT,
    details_table,
    protocol_line,
    protocols_of,
    reading_guide,
    summary_tables,
)


def _failed_lines(trials: pd.DataFrame) -> list[str]:
    lines = []
    for _, t in unfinished_trials(trials).iterrows():
        err = str(t["error"]) if "error" in t and isinstance(t["error"], str) else "no error recorded"
        first = (err.strip().splitlines() or ["no error recorded"])[0][:200]
        lines.append(f"- `{t['key']}` ({t['method']}, {t['dataset']} / {t['model']}, seed {t['seed']}, "
                     f"status {t['status']}): {first}")
    return lines


def _summarised_configurations(results_dir: Path) -> int:
    """Rows of the summary.csv already in the folder (0 when there is none or it cannot be read; a named pipe
    or a huge file is not read)."""
    data = read_bounded(results_dir / "summary.csv", records.MAX_TRIALS_CSV)
    try:
        return len(pd.read_csv(io.BytesIO(data))) if data else 0
    except ValueError:
        return 0


def _one_setting(folders: Sequence[Path], read: Any, what: str) -> Any:
    """The sweeps' common value of a setting (primary metric, alpha); pooled folders must agree."""
    values = {str(f): read(f) for f in folders}
    if len(set(values.values())) > 1:
        raise UserError(f"the results folders disagree on {what} ({'; '.join(f'{f}: {v}' for f, v in values.items())}); "
                        f"give --{what.split()[0]} to compare them on one")
    return next(iter(values.values()))


def predictions_reader(folders: Sequence[Path]):
    """trial key -> its predictions (or None), looked up in each folder's trials/<key>/."""
    from harness.results.bootstrap import read_predictions

    def read(key: str) -> dict | None:
        for f in folders:
            found = read_predictions(f / "trials" / key)
            if found is not None:
                return found
        return None
    return read


def pooled_trials(folders: Sequence[Path], *, warn: records.Warn = records.warn_stderr) -> pd.DataFrame:
    """The trials of several results folders as one table (ranked across all their data sets). A trial key
    found in two folders is one trial copied twice: it is counted once, with one warning."""
    frames = [load_trials(f, warn=warn, write=False) for f in folders]
    trials = pd.concat(frames, ignore_index=True)
    dup = trials["key"].duplicated()
    if dup.any():
        warn(f"{int(dup.sum())} trial key(s) appear in more than one of the folders (e.g. "
             f"{trials.loc[dup, 'key'].iloc[0]}); each is counted once")
        trials = trials[~dup].reset_index(drop=True)
    trials.attrs["stale_left_out"] = sum(int(f.attrs.get("stale_left_out", 0)) for f in frames)
    return trials


def render_summary(results_dir: str | Path | Sequence[str | Path], *, metric: str | None = None,
                   alpha: float | None = None, effect: float | None = None,
                   warn: records.Warn = records.warn_stderr, write: bool = True,
                   into: str | Path | None = None, all_pairs: bool | None = None) -> dict[str, str]:
    """{'md', 'tex', 'csv'} texts of a results folder's summary (reads only; a damaged trials.csv is
    rebuilt from the trial records). Several folders are pooled (`pooled_trials`): their data sets are
    compared side by side and ranked across. `metric`: None is the sweep's primary metric (sweep.yaml's
    `primary_metric`, else selected_top1); any other makes the tables secondary (exploratory). `alpha`:
    None reads the sweep's own, else 0.05. `effect`: the difference the power columns are for, in display
    units (None: the metric's default). `write=False` never writes into the folders (a damaged trials.csv
    is then rebuilt in memory only).

    Refuses (UserError) to produce a summary without a finished trial over an existing one that has
    some: an empty table must never replace good numbers. `into`: where the summary goes (default: the
    results folder, when it is one), whose summary.csv is the one kept. `all_pairs`: the across-data-set
    section's every-pair table too; None reads the sweep's `all_pairs:` (pooled: every folder's)."""
    folders = [Path(results_dir)] if isinstance(results_dir, (str, Path)) else [Path(f) for f in results_dir]
    try:
        primary = _one_setting(folders, lambda f: records.sweep_primary(f, DEFAULT_PRIMARY, PRIMARY_METRICS),
                               "metric (primary_metric)")
    except UserError:
        if metric is None:
            raise
        primary = metric  # pooled sweeps with different primaries: the metric asked for is the one judged
    metric = primary if metric is None else metric
    if metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    if alpha is None:
        alpha = _one_setting(folders, lambda f: records.sweep_alpha(f, DEFAULT_ALPHA), "alpha")
    elif not 0 < alpha < 1:
        raise UserError(f"alpha {alpha:g} is out of range; allowed: a number in (0, 1), e.g. 0.05")
    results_dir = folders[0]
    name = results_dir.name if len(folders) == 1 else "pooled " + ", ".join(f.name for f in folders)
    trials = (load_trials(results_dir, warn=warn, write=write) if len(folders) == 1
              else pooled_trials(folders, warn=warn))
    status = trials["status"].astype(str)
    n_ok, n_failed = int((status == "finished").sum()), int((status == "failed").sum())
    into = Path(into) if into is not None else (results_dir if len(folders) == 1 else None)
    kept = _summarised_configurations(into) if into is not None else 0
    if n_ok == 0 and kept:
        kept_in = "summary.csv" if into == results_dir else str(into / "summary.csv")
        raise UserError(f"{results_dir}: no finished trial in trials.csv ({len(trials)} rows), but {kept_in} "
                        f"holds {kept} configurations; the existing summary is kept (check trials/ and rerun "
                        f"`tfbench run` on the sweep file)")
    rope = _one_setting(folders, records.sweep_rope, "rope")
    groups = aggregate(trials, metric=metric, alpha=alpha, effect=effect, rope=rope if metric == primary else None,
                       predictions=predictions_reader(folders))
    groups["split_per_seed"] = all(records.split_per_seed(f) for f in folders)
    if len(folders) == 1:  # a sequential sweep's marks are its boundaries', never plain Holm's at the last look
        from harness.results.sequential import apply_sequential

        apply_sequential(groups, trials, results_dir, metric=metric, primary=primary, alpha=alpha)
    add_across_columns(groups, metric=metric)  # summary.csv's across_* columns: the across section's intervals
    if all_pairs is None:
        all_pairs = all(records.sweep_all_pairs(f) for f in folders)
    sharp = load_sharpness(results_dir) if len(folders) == 1 else None
    if sharp is not None:
        missing = [c for c in ("method", "dataset", "model", "sharpness") if c not in sharp.columns]
        if missing:
            raise UserError(f"{results_dir / 'landscape' / 'sharpness.csv'} lacks the column(s) "
                            f"{', '.join(missing)}")
    sharp_groups = aggregate_sharpness(sharp, trials) if sharp is not None and not sharp.empty else None
    across, unranked = (across_section(groups, metric=metric, alpha=alpha, all_pairs=all_pairs) if not groups.empty
                        else ([], ""))
    sections = summary_tables(groups, metric=metric, alpha=alpha, sharp_groups=sharp_groups, primary=primary,
                              across=across)

    n_pending = len(trials) - n_ok - n_failed
    stale = int(trials.attrs.get("stale_left_out", 0))
    head = (f"Trials: {len(trials)} ({n_ok} finished, {n_failed} failed"
            + (f", {n_pending} pending" if n_pending else "")
            + f") in {len(groups)} configurations."
            + (f" Left out: {stale} stale trial(s), finished under a spec the sweep no longer means." if stale
               else ""))
    verdicts = (f"Verdicts on the primary metric, {METRICS[primary].label}." if metric == primary else
                f"Tables on {METRICS[metric].label}: a secondary metric (exploratory); the sweep's verdicts are "
                f"made on its primary metric, {METRICS[primary].label} (`tfbench table` without --metric).")
    from harness.results.search_tables import search_section  # tuned sweeps only (docs/tuning.md)

    tuned, search_md, search_tex = (search_section(results_dir, set(trials["key"].astype(str))) if len(folders) == 1
                                    else ("", [], []))
    head += f" {tuned}" if tuned else ""
    if tuned and sections.get("Comparison"):  # the comparison table itself states the tuning budget
        sections["Comparison"][0].note += f" {tuned}"
    proto = protocol_line(protocols_of(groups)) if not groups.empty else "protocol: no trials"
    rules = sorted({str(r) for r in groups.get("select", pd.Series(dtype=str)).dropna()})
    chosen = "; ".join(f"{r}: {SELECT_TEXT.get(r, r)}" for r in rules)
    selection = f"Epoch selection (train.select) {chosen}." if chosen else ""
    eff = float(groups["effect"].iloc[0]) * METRICS[metric].scale if "effect" in groups.columns and len(groups) \
        else METRICS[metric].effect
    guide = reading_guide(metric=metric, alpha=alpha, effect=eff,
                          rope=float(groups["rope"].iloc[0]) * METRICS[metric].scale if len(groups) else None)
    head += f" {unranked}" if unranked else ""
    costs = " ".join(cost_lines(groups))
    md = [f"# Results: {name}\n", f"{head}\n", f"{verdicts} {proto[0].upper()}{proto[1:]}. {selection}\n",
          *([f"{costs}\n"] if costs else []), "How to read the tables:\n\n" + "\n".join(guide) + "\n"]
    tex = [f"% tfbench summary of {name}: needs \\usepackage{{booktabs}} and \\usepackage{{amssymb}}.\n",
           f"% {head}\n", f"% {verdicts} {proto}. {selection}\n", *([f"% {costs}\n"] if costs else []),
           "% How to read the tables:\n" + "\n".join(f"% {line}" for line in guide) + "\n"]
    for tables in sections.values():
        md.extend(to_markdown(t) for t in tables)
        tex.extend(to_latex(t) for t in tables)
    if not groups.empty:
        md.append(to_markdown(details_table(groups)))
        md.extend(beyond_table(groups))
    md.extend(search_md)
    tex.extend(search_tex)
    # the figures of plots/ beside this summary, drawn on the primary metric
    if len(folders) == 1 and metric == primary and into is not None and into.resolve() == results_dir.resolve():
        from harness.results.captions import figures_markdown

        md.extend(filter(None, [figures_markdown(results_dir)]))
    failed = _failed_lines(trials)
    if failed:
        md.append("## Failed and pending trials\n")
        md.append("\n".join(failed) + "\n")
    # paired_diffs holds an array per row (the across bootstrap's input): no CSV cell
    return {"md": "\n".join(md), "tex": "\n".join(tex), "csv": frame_csv(groups.drop(columns="paired_diffs",
                                                                                      errors="ignore"))}


BEYOND = ("selected_ece", "selected_ece_ts", "temperature", "selected_aece", "selected_cwece", "selected_brier",
          "selected_nll_ts", "selected_aurc", "selected_eaurc", "corrupt_top1", "mce", "ood_auroc",
          "ood_auroc_energy", "ood_fpr95", "repr_within_ratio", "repr_class_cosine")


def beyond_table(groups: pd.DataFrame) -> list[str]:
    """Calibration, selective prediction, robustness, OOD and representations per configuration (mean over
    seeds; docs/results.md), with mCE: the corruption errors relative to CE's in the same data set / model."""
    from harness.metrics import CORRUPTIONS
    from harness.results.beyond import mce

    shown = [m for m in BEYOND if m == "mce" or (f"{m}_mean" in groups and groups[f"{m}_mean"].notna().any())]
    if len(shown) <= 1:
        return []
    rows = []
    for _, g in groups.iterrows():
        base = groups[(groups["dataset"] == g["dataset"]) & (groups["model"] == g["model"])
                      & (groups["method"].astype(str) == "ce")]

        def errors(row: pd.Series) -> dict[str, float]:
            return {c: 1 - float(row[f"corrupt_{c}_top1_mean"]) for c in CORRUPTIONS
                    if f"corrupt_{c}_top1_mean" in row and pd.notna(row[f"corrupt_{c}_top1_mean"])}

        cellv = [str(g["label"]), f"{g['dataset']} / {g['model']}"]
        for m in shown:
            if m == "mce":
                v = mce(errors(g), errors(base.iloc[0])) if len(base) else float("nan")
                cellv.append("" if pd.isna(v) else f"{v:.1f}")
            else:
                v, metric = g[f"{m}_mean"], METRICS[m]
                cellv.append("" if pd.isna(v) else f"{v * metric.scale:.{metric.decimals}f}")
        if any(cellv[2:]):  # a configuration without one evaluated trial has no row
            rows.append(cellv)
    heads = ["configuration", "data set / model",
             *("mCE (CE = 100)" if m == "mce" else METRICS[m].short for m in shown)]
    text = ["## Beyond top-1\n", "Means over seeds at the selected epoch on the test split (docs/results.md has "
            "each metric's definition; mCE: corruption error summed over severities, relative to CE's, averaged "
            "over corruptions, lower is better).\n", "| " + " | ".join(heads) + " |",
            "|" + "|".join("---" for _ in heads) + "|", *("| " + " | ".join(r) + " |" for r in rows)]
    return ["\n".join(text) + "\n"]


SUMMARY_KINDS = (r"summary(-[A-Za-z0-9_]+)?\.(md|tex|csv)",)  # summary.md, summary-selected_nll.csv, ...


def summary_target(into: str | Path, source: str | Path | Sequence[str | Path], *, flag: str = "--out") -> OutputFolder:
    """Where a summary goes, checked before any work (harness/outputs.py): the results folder itself (its own
    place: its summary files are its own) or another folder (`--out`: only the summaries it recorded)."""
    own = isinstance(source, (str, Path)) and os.path.abspath(into) == os.path.abspath(source)
    return OutputFolder(into, source=source_of(source), own=own, kinds=SUMMARY_KINDS, flag=flag).open()


def write_outputs(target: OutputFolder, outputs: dict[str, str], *, stem: str = "summary") -> list[Path]:
    """summary.{md,tex,csv} (or `stem`.*) into `target`, none of them replacing a file tfbench did not write."""
    names = [f"{stem}.{fmt}" for fmt in ("md", "tex", "csv")]
    target.claim(names)
    for name, fmt in zip(names, ("md", "tex", "csv"), strict=True):
        atomic_write_text(target / name, outputs[fmt])
    return [target / name for name in names]


def write_summary(results_dir: str | Path, metric: str | None = None, alpha: float | None = None) -> str:
    """Write summary.md, summary.tex and summary.csv of a results folder; return the markdown."""
    target = summary_target(results_dir, results_dir, flag="--results")
    outputs = render_summary(results_dir, metric=metric, alpha=alpha)
    write_outputs(target, outputs)
    return outputs["md"]
