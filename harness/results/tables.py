"""Tables of a results folder: comparison, ablation (the seed's Table 3 layout), paired comparison with
the baseline (difference, CI, p, Holm-adjusted p, cost), sharpness and per-configuration details,
rendered as GitHub markdown, LaTeX booktabs or CSV (tabulate).

A `Table` holds display strings plus a bold mask; the renderers only decorate. Bold marks a
configuration that is better than the baseline with a Holm-adjusted paired p below the sweep's alpha
(harness/results/stats.py), never merely the largest mean: at a few seeds the largest mean is often noise.
Every table names the protocol its numbers come from.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.io import atomic_write_text
from harness.results import records
from harness.results.aggregate import (
    BASELINE,
    DEFAULT_METRIC,
    LEGACY,
    METRICS,
    SHARPNESS,
    TABLE_METRICS,
    MetricSpec,
    ablation_rows,
    aggregate,
    aggregate_sharpness,
    cells,
    fmt_value,
    load_sharpness,
    load_trials,
    method_label,
    ordered_values,
    swept_parameters,
    unfinished_trials,
)
from harness.results.render import (  # noqa: F401 (format_mean_std, human_bytes, to_csv: the public names)
    Table,
    auto_decimals,
    format_mean_std,
    format_p,
    format_ratio,
    frame_csv,
    human_bytes,
    is_finite,
    to_csv,
    to_latex,
    to_markdown,
)
from harness.results.stats import DEFAULT_ALPHA, DEFAULT_POWER


def significance_mask(groups: Sequence[pd.Series | None]) -> list[bool]:
    """Bold where the configuration is better than the baseline with Holm-adjusted p < alpha
    (aggregate's `better`); a group without a comparison (the baseline, sharpness) is never bold."""
    return [g is not None and bool(g.get("better", False)) for g in groups]


PROTOCOL_TEXT = {
    "clean": "protocol: clean (epoch selected on a held-out validation split; test evaluated once)",
    "paper": "protocol: paper (best epoch on the evaluation split, as the official code; optimistic)",
    LEGACY: "protocol: paper (recorded before protocols existed: best epoch on the evaluation split, as the "
            "official code; optimistic)",
}


def protocol_line(protocols: Sequence[str]) -> str:
    """One line naming the protocol(s) of the numbers in a table."""
    found = list(dict.fromkeys(str(p) for p in protocols))
    if not found:
        return "protocol: none recorded"
    texts = [PROTOCOL_TEXT.get(p, f"protocol: {p}") for p in found]
    if len(texts) == 1:
        return texts[0]
    return "mixed protocols, never compared with each other: " + "; ".join(texts)


def _significance_note(alpha: float, base: str, spec: MetricSpec) -> str:
    direction = "higher" if spec.higher_is_better else "lower"
    return (f"bold: {direction} than {base} with a Holm-adjusted paired t-test p < alpha = {alpha:g} "
            f"(pairs by seed; Holm over the configurations compared with {base} in one dataset / model)")


def underpowered_note(groups: pd.DataFrame, *, alpha: float, power: float = DEFAULT_POWER) -> str:
    """One line listing the comparisons whose seeds are too few for `power` at their observed difference."""
    if "underpowered" not in groups.columns:
        return ""
    weak = groups[groups["underpowered"].astype(bool)]
    if weak.empty:
        return ""
    parts = [f"{r['label']} (n={int(r['n_paired'])}, needs "
             + (f"{int(r['n_needed'])})" if is_finite(r["n_needed"]) else "more than any practical n)")
             for _, r in weak.iterrows()]
    return (f"Underpowered at alpha = {alpha:g} and {power:.0%} power for the observed difference "
            f"(`tfbench seeds` for details): " + ", ".join(parts) + ".")


def typical_n(groups: pd.DataFrame, metric: str) -> int | None:
    """The most common n > 0 of the groups (the larger on a tie); None when no group has a finished seed."""
    ns = groups[f"{metric}_n"].astype(int)
    ns = ns[ns > 0]
    if ns.empty:
        return None
    counts = ns.value_counts()
    return int(max(counts[counts == counts.max()].index))


def metric_cell(row: pd.Series, *, metric: str, spec: MetricSpec, decimals: int, typical: int | None) -> str:
    """`77.38 +- 0.32`, plus `(n=2, 1 failed)` where n differs from the table's typical n or trials failed."""
    text = format_mean_std(row[f"{metric}_mean"] * spec.scale, row[f"{metric}_std"] * spec.scale,
                           decimals=decimals)
    n = int(row[f"{metric}_n"])
    extras = [f"n={n}"] if n != typical else []
    for col, word in (("n_failed", "failed"), ("n_pending", "pending")):
        if int(row.get(col, 0)):
            extras.append(f"{int(row[col])} {word}")
    return f"{text} ({', '.join(extras)})" if extras else text


def _n_note(n: int | None) -> str:
    counted = "failed and pending trials are counted in their cell"
    return f"n = {n} seeds per cell unless marked (n=k); {counted}" if n else f"n per cell; {counted}"


# --- the tables ---------------------------------------------------------------------------------------

def _protocols(groups: pd.DataFrame) -> list[str]:
    if "protocol" not in groups.columns:
        return []
    return list(groups.loc[groups["n"].astype(int) > 0, "protocol"].astype(str)) or list(groups["protocol"].astype(str))


def comparison_table(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, spec: MetricSpec | None = None,
                     title: str = "Comparison", decimals: int | None = None, alpha: float = DEFAULT_ALPHA,
                     baseline: str = BASELINE) -> Table:
    """Methods (one row per configuration label) x dataset / model; bold only where significantly better
    than the baseline (Holm-adjusted paired p < alpha)."""
    spec = spec or METRICS[metric]
    decimals = spec.decimals if decimals is None else decimals
    cols = cells(groups)
    labels = list(dict.fromkeys(groups["label"]))
    n = typical_n(groups, metric)
    by_cell = {(r["label"], str(r["dataset"]), str(r["model"])): r for _, r in groups.iterrows()}
    rows = [[label] for label in labels]
    bold = [[False] for _ in labels]
    for ds, model in cols:
        col_rows = [by_cell.get((label, ds, model)) for label in labels]
        mask = significance_mask(col_rows)
        for i, r in enumerate(col_rows):
            rows[i].append("" if r is None else metric_cell(r, metric=metric, spec=spec, decimals=decimals,
                                                             typical=n))
            bold[i].append(mask[i])
    has_tests = "better" in groups.columns
    note = (f"{protocol_line(_protocols(groups))}. " if has_tests else "") + (
        f"{spec.label}: mean +- sample std (ddof=1) over seeds; {_n_note(n)}; n/a = unavailable "
        f"(a single seed); an empty cell is not in the sweep")
    if has_tests:
        note += f"; {_significance_note(alpha, method_label(baseline), spec)}."
        weak = underpowered_note(groups, alpha=alpha)
        note += f" {weak}" if weak else ""
    else:
        note += "."
    return Table(title, ["method", *[f"{ds} / {m}" for ds, m in cols]], rows, bold, note)


def ablation_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, alpha: float = DEFAULT_ALPHA,
                    baseline: str = BASELINE) -> list[Table]:
    """One table per swept parameter (seed Table 3): a row per dataset, a column per value; bold where
    that configuration is significantly better than the baseline."""
    spec = METRICS[metric]
    tables = []
    for method, param in swept_parameters(groups):
        arows = ablation_rows(groups, method=method, param=param)
        if not arows:
            continue
        name = param[2:]
        values = ordered_values(v for r in arows for v in r.groups[param])
        keys = [fmt_value(v) for v in values]
        multi_model = len({r.model for r in arows}) > 1
        has_context = any(r.context for r in arows)
        in_table = pd.concat([r.groups for r in arows])
        n = typical_n(in_table, metric)
        rows, bold = [], []
        for r in arows:
            by_value = {fmt_value(g[param]): g for _, g in r.groups.iterrows()}
            head = [f"{r.dataset} / {r.model}" if multi_model else r.dataset]
            if has_context:
                head.append(", ".join(f"{k}={fmt_value(v)}" for k, v in r.context))
            found = [by_value.get(k) for k in keys]
            rows.append(head + ["" if g is None else metric_cell(g, metric=metric, spec=spec,
                                                                   decimals=spec.decimals, typical=n)
                                for g in found])
            bold.append([False] * len(head) + significance_mask(found))
        note = (f"{protocol_line(_protocols(in_table))}. {spec.label} of {method_label(method)} against {name}: "
                f"mean +- sample std over seeds; {_n_note(n)}; {_significance_note(alpha, method_label(baseline), spec)}"
                + ("; 'fixed' lists the other swept parameters of the row." if has_context else "."))
        headers = [name, *(["fixed"] if has_context else []), *keys]
        tables.append(Table(f"Ablation: {name} ({method_label(method)})", headers, rows, bold, note))
    return tables


def format_diff(row: pd.Series, spec: MetricSpec) -> str:
    """`+1.23 [+0.40, +2.06]` in display units; `+1.23 [n/a]` with one pair; `n/a` without any."""
    if not is_finite(row["diff_mean"]):
        return "n/a"
    d = spec.decimals
    mean = f"{row['diff_mean'] * spec.scale:+.{d}f}"
    if not is_finite(row["diff_ci_low"]):
        return f"{mean} [n/a]"
    return f"{mean} [{row['diff_ci_low'] * spec.scale:+.{d}f}, {row['diff_ci_high'] * spec.scale:+.{d}f}]"


def paired_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, baseline: str = BASELINE,
                  alpha: float = DEFAULT_ALPHA) -> list[Table]:
    """Per dataset / model: the metric, last-epoch top-1, the paired difference with the baseline and its
    95% CI, n pairs, p and Holm-adjusted p, and the cost (time x, memory x, extra state)."""
    spec = METRICS[metric]
    last = METRICS["last_top1"]
    base = method_label(baseline)
    tables = []
    for ds, model in cells(groups):
        g = groups[(groups["dataset"].astype(str) == ds) & (groups["model"].astype(str) == model)]
        n = typical_n(g, metric)
        n_last = typical_n(g, "last_top1")
        rows, bold = [], []
        for _, r in g.iterrows():
            is_base = r["method"] == baseline
            rows.append([r["label"],
                         metric_cell(r, metric=metric, spec=spec, decimals=spec.decimals, typical=n),
                         metric_cell(r, metric="last_top1", spec=last, decimals=last.decimals, typical=n_last),
                         "ref" if is_base else format_diff(r, spec),
                         "ref" if is_base else str(int(r["n_paired"])),
                         "ref" if is_base else format_p(r["p_value"]),
                         "ref" if is_base else format_p(r["p_holm"]),
                         format_ratio(r["time_x"]),
                         format_ratio(r["mem_x"]),
                         human_bytes(r["extra_state_bytes"])])
            bold.append([False, bool(r.get("better", False))] + [False] * 8)
        weak = underpowered_note(g, alpha=alpha)
        note = (f"{protocol_line(_protocols(g))}. Difference: per-seed {spec.short} minus {base}'s on the same "
                f"seed, mean [95% t confidence interval], over the n seeds both finished; p: two-sided paired "
                f"t-test; Holm p: adjusted over the configurations of this table; "
                f"{_significance_note(alpha, base, spec)}; time x: mean train step time over {base}'s; "
                f"memory x: peak memory over {base}'s; extra state: the method's own state kept across steps "
                f"(e.g. the PS-KD table); {_n_note(n)}." + (f" {weak}" if weak else ""))
        headers = ["method", spec.short, last.short, f"difference vs {base} [95% CI]", "n pairs", "p",
                   "Holm p", "time x", "memory x", "extra state"]
        tables.append(Table(f"Against {base}: {ds} / {model}", headers, rows, bold, note=note))
    return tables


def details_table(groups: pd.DataFrame) -> Table:
    """Every configuration with every aggregated metric (mean +- std) and its n and failures."""
    shown = ["selected_top1", "last_top1", "best_top1", "selected_top5", "last_nll", "last_ece", "train_val_gap",
             "step_time_s"]
    rows = []
    for _, r in groups.iterrows():
        row = [r["label"], f"{r['dataset']} / {r['model']}", str(r.get("protocol", "")), str(int(r["n"])),
               str(int(r["n_failed"])), str(int(r["n_pending"]))]
        for m in shown:
            s = METRICS[m]
            row.append(format_mean_std(r[f"{m}_mean"] * s.scale, r[f"{m}_std"] * s.scale, decimals=s.decimals))
        row.append(human_bytes(r["peak_mem_bytes_mean"]))
        rows.append(row)
    headers = ["method", "dataset / model", "protocol", "n", "failed", "pending", *[METRICS[m].short for m in shown],
               "peak mem"]
    return Table("All configurations", headers, rows,
                 note="Mean +- sample std over the finished seeds (n); n/a = unavailable; best val top-1 is the "
                      "per-epoch maximum on the selection split (clean: validation; paper: the evaluation split).")


def sharpness_table(sharp_groups: pd.DataFrame) -> Table:
    # Sharpness has no fixed scale: give its largest mean three significant digits.
    t = comparison_table(sharp_groups, metric="sharpness", spec=SHARPNESS, title="Sharpness",
                         decimals=auto_decimals(sharp_groups["sharpness_mean"]))
    t.note = t.note.replace("sharpness:", "sharpness (results/<sweep>/landscape/sharpness.csv):", 1)
    return t


# --- the summary of a results folder ------------------------------------------------------------------

def summary_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, alpha: float = DEFAULT_ALPHA,
                   sharp_groups: pd.DataFrame | None = None) -> dict[str, list[Table]]:
    """Section title -> tables, in the order the summary shows them."""
    if groups.empty:
        return {}
    out = {"Comparison": [comparison_table(groups, metric=metric, alpha=alpha)],
           f"Against {method_label(BASELINE)}": paired_tables(groups, metric=metric, alpha=alpha),
           "Ablations": ablation_tables(groups, metric=metric, alpha=alpha)}
    if sharp_groups is not None and not sharp_groups.empty:
        out["Sharpness"] = [sharpness_table(sharp_groups)]
    return out


def _failed_lines(trials: pd.DataFrame) -> list[str]:
    lines = []
    for _, t in unfinished_trials(trials).iterrows():
        err = str(t["error"]) if "error" in t and isinstance(t["error"], str) else "no error recorded"
        first = (err.strip().splitlines() or ["no error recorded"])[0][:200]
        lines.append(f"- `{t['key']}` ({t['method']}, {t['dataset']} / {t['model']}, seed {t['seed']}, "
                     f"status {t['status']}): {first}")
    return lines


def _summarised_configurations(results_dir: Path) -> int:
    """Rows of the summary.csv already in the folder (0 when there is none or it cannot be read)."""
    try:
        return len(pd.read_csv(results_dir / "summary.csv"))
    except (OSError, ValueError):
        return 0


def render_summary(results_dir: str | Path, *, metric: str = DEFAULT_METRIC, alpha: float | None = None,
                   warn: records.Warn = records.warn_stderr) -> dict[str, str]:
    """{'md', 'tex', 'csv'} texts of a results folder's summary (reads only; a damaged trials.csv is
    rebuilt from the trial records). `alpha`: None reads the sweep's own (sweep.yaml), else 0.05.

    Refuses (UserError) to produce a summary without a finished trial over an existing one that has
    some: an empty table must never replace good numbers."""
    if metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    results_dir = Path(results_dir)
    if alpha is None:
        alpha = records.sweep_alpha(results_dir, DEFAULT_ALPHA)
    elif not 0 < alpha < 1:
        raise UserError(f"alpha {alpha:g} is out of range; allowed: a number in (0, 1), e.g. 0.05")
    trials = load_trials(results_dir, warn=warn)
    status = trials["status"].astype(str)
    n_ok, n_failed = int((status == "finished").sum()), int((status == "failed").sum())
    kept = _summarised_configurations(results_dir)
    if n_ok == 0 and kept:
        raise UserError(f"{results_dir}: no finished trial in trials.csv ({len(trials)} rows), but summary.csv "
                        f"holds {kept} configurations; the existing summary is kept (check trials/ and rerun "
                        f"`tfbench run` on the sweep file)")
    groups = aggregate(trials, metric=metric, alpha=alpha)
    sharp = load_sharpness(results_dir)
    if sharp is not None:
        missing = [c for c in ("method", "dataset", "model", "sharpness") if c not in sharp.columns]
        if missing:
            raise UserError(f"{results_dir / 'landscape' / 'sharpness.csv'} lacks the column(s) "
                            f"{', '.join(missing)}")
    sharp_groups = aggregate_sharpness(sharp, trials) if sharp is not None and not sharp.empty else None
    sections = summary_tables(groups, metric=metric, alpha=alpha, sharp_groups=sharp_groups)

    n_pending = len(trials) - n_ok - n_failed
    stale = int(trials.attrs.get("stale_left_out", 0))
    head = (f"Trials: {len(trials)} ({n_ok} finished, {n_failed} failed"
            + (f", {n_pending} pending" if n_pending else "")
            + f") in {len(groups)} configurations. Ranked by {METRICS[metric].label}. Accuracies in percent."
            + (f" Left out: {stale} stale trial(s), finished under a spec the sweep no longer means." if stale
               else ""))
    from harness.results.search_tables import search_section  # tuned sweeps only (docs/tuning.md)

    tuned, search_md, search_tex = search_section(results_dir)
    head += f" {tuned}" if tuned else ""
    if tuned and sections.get("Comparison"):  # the comparison table itself states the tuning budget
        sections["Comparison"][0].note += f" {tuned}"
    proto = protocol_line(_protocols(groups)) if not groups.empty else "protocol: no trials"
    md = [f"# Results: {results_dir.name}\n", f"{head}\n", f"{proto[0].upper()}{proto[1:]}.\n"]
    tex = [f"% tfbench summary of {results_dir.name}: needs \\usepackage{{booktabs}}.\n",
           f"% {head}\n", f"% {proto}.\n"]
    for tables in sections.values():
        md.extend(to_markdown(t) for t in tables)
        tex.extend(to_latex(t) for t in tables)
    if not groups.empty:
        md.append(to_markdown(details_table(groups)))
    md.extend(search_md)
    tex.extend(search_tex)
    failed = _failed_lines(trials)
    if failed:
        md.append("## Failed and pending trials\n")
        md.append("\n".join(failed) + "\n")
    return {"md": "\n".join(md), "tex": "\n".join(tex), "csv": frame_csv(groups)}


def write_outputs(results_dir: str | Path, outputs: dict[str, str]) -> list[Path]:
    paths = []
    for fmt in ("md", "tex", "csv"):
        path = Path(results_dir) / f"summary.{fmt}"
        atomic_write_text(path, outputs[fmt])
        paths.append(path)
    return paths


def write_summary(results_dir: str | Path, metric: str = DEFAULT_METRIC, alpha: float | None = None) -> str:
    """Write summary.md, summary.tex and summary.csv of a results folder; return the markdown."""
    outputs = render_summary(results_dir, metric=metric, alpha=alpha)
    write_outputs(results_dir, outputs)
    return outputs["md"]
