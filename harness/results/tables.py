"""Tables of a results folder: comparison, ablation (the seed's Table 3 layout), paired comparison with
the baseline (difference, CI, p, Holm-adjusted p, cost), sharpness and per-configuration details,
rendered as GitHub markdown, LaTeX booktabs or CSV (tabulate).

A `Table` holds display strings plus a bold mask; the renderers only decorate. Bold marks a
configuration that is better than the baseline with a Holm-adjusted paired p below the sweep's alpha
(harness/results/stats.py), never merely the largest mean: at a few seeds the largest mean is often noise.
Every table names the protocol its numbers come from.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.config.selection import SELECTION_RULES
from harness.metrics import RATIOS, Metric, details
from harness.results import records
from harness.results.ablation import ablation_rows, ordered_values, swept_parameters
from harness.results.aggregate import (
    BASELINE,
    DEFAULT_METRIC,
    LEGACY,
    METRICS,
    SHARPNESS,
    cells,
    companion,
    fmt_value,
    method_label,
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
from harness.results.stats import DEFAULT_ALPHA


def marks_of(groups: Sequence[pd.Series | None]) -> list[str]:
    """'better' / 'worse' / '' per configuration, from aggregate's verdict (significant on the metric after
    Holm and confirmed at the other epoch); a group without a comparison (the baseline, sharpness) is ''."""
    return [str(g.get("verdict", "")) if g is not None and g.get("verdict") in ("better", "worse") else ""
            for g in groups]


PROTOCOL_TEXT = {
    "clean": "protocol: clean (epoch selected on a held-out validation split; test evaluated once)",
    "paper": "protocol: paper (best epoch on the evaluation split, as the official code; optimistic)",
    LEGACY: "protocol: paper (recorded before protocols existed: best epoch on the evaluation split, as the "
            "official code; optimistic)",
}
SELECT_TEXT = {**{name: rule.text for name, rule in SELECTION_RULES.items()},
               records.LEGACY_SELECT: "the first epoch of the highest top-1 (recorded before train.select)"}


def protocol_line(protocols: Sequence[str]) -> str:
    """One line naming the protocol(s) of the numbers in a table."""
    found = list(dict.fromkeys(str(p) for p in protocols))
    if not found:
        return "protocol: none recorded"
    texts = [PROTOCOL_TEXT.get(p, f"protocol: {p}") for p in found]
    if len(texts) == 1:
        return texts[0]
    return "mixed protocols, never compared with each other: " + "; ".join(texts)


def selection_line(groups: pd.DataFrame) -> str:
    """One sentence when some trial's selection split could not discriminate between epochs, else ''."""
    if "n_select_weak" not in groups.columns:
        return ""
    weak = int(groups["n_select_weak"].sum())
    if not weak:
        return ""
    total = int(groups["n"].sum())
    why = next((w for w in groups["select_why"] if w), "")
    return (f"Selection: in {weak} of {total} trials the selection split could not discriminate between epochs "
            f"(e.g. {why}); judge those by the last epoch's numbers too.")


def metric_role(metric: str, primary: str) -> str:
    """'' for the primary metric, else the sentence that makes a table on `metric` exploratory."""
    if metric == primary:
        return ""
    return (f"Secondary metric (exploratory): this sweep's verdicts are made on {METRICS[primary].label}; "
            f"marks on {METRICS[metric].short} are not corrected across metrics.")


def marks_legend(metric: str, alpha: float, base: str) -> str:
    spec = METRICS[metric]
    direction = ("higher", "lower") if spec.higher_is_better else ("lower", "higher")
    return (f"▲ / ▼: significantly {direction[0]} / {direction[1]} than {base} (Holm-adjusted paired t-test "
            f"p < alpha = {alpha:g} over the table's comparisons)")


def typical_n(groups: pd.DataFrame, metric: str) -> int | None:
    """The most common n > 0 of the groups (the larger on a tie); None when no group has a finished seed."""
    ns = groups[f"{metric}_n"].astype(int)
    ns = ns[ns > 0]
    if ns.empty:
        return None
    counts = ns.value_counts()
    return int(max(counts[counts == counts.max()].index))


def metric_cell(row: pd.Series, *, metric: str, spec: Metric, decimals: int, typical: int | None) -> str:
    """`77.38 +- 0.32`, plus `(n=2, 1 failed)` where n differs from the table's typical n or trials failed,
    and `seeds 0,2` where the finished seeds are not the baseline's (the means then cover other seeds)."""
    text = format_mean_std(row[f"{metric}_mean"] * spec.scale, row[f"{metric}_std"] * spec.scale,
                           decimals=decimals)
    n = int(row[f"{metric}_n"])
    extras = [f"n={n}"] if n != typical else []
    for col, word in (("n_failed", "failed"), ("n_pending", "pending")):
        if int(row.get(col, 0)):
            extras.append(f"{int(row[col])} {word}")
    if bool(row.get("seeds_differ", False)) and n:
        extras.append(f"seeds {row['seeds']}")
    return f"{text} ({', '.join(extras)})" if extras else text


def _n_note(n: int | None) -> str:
    counted = "failed and pending trials are counted in their cell"
    return f"n = {n} seeds per cell unless marked (n=k); {counted}" if n else f"n per cell; {counted}"


def test_split_line(groups: pd.DataFrame, metric: str, baseline: str = BASELINE) -> str:
    """The test split's size and the binomial standard error of one trial's accuracy at the baseline's mean,
    per dataset / model: differences smaller than it are within one test set's sampling noise."""
    spec = METRICS[metric]
    if spec.scale != 100.0 or "test_images" not in groups.columns or "top" not in metric:
        return ""
    parts = []
    for ds, model in cells(groups):
        g = groups[(groups["dataset"].astype(str) == ds) & (groups["model"].astype(str) == model)]
        n = pd.to_numeric(g["test_images"], errors="coerce").dropna()
        base = g[g["method"] == baseline]
        acc = float(base[f"{metric}_mean"].iloc[0]) if len(base) else math.nan
        if n.empty or not is_finite(acc):
            continue
        images = int(n.max())
        parts.append(f"{ds} / {model}: {images:,} images, binomial SE {100 * math.sqrt(acc * (1 - acc) / images):.2f} "
                     f"points at {method_label(baseline)}'s {100 * acc:.2f}%")
    if not parts:
        return ""
    return "Reported split: " + "; ".join(parts) + "."


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


# --- the tables ---------------------------------------------------------------------------------------

def protocols_of(groups: pd.DataFrame) -> list[str]:
    if "protocol" not in groups.columns:
        return []
    return list(groups.loc[groups["n"].astype(int) > 0, "protocol"].astype(str)) or list(groups["protocol"].astype(str))


def comparison_table(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, spec: Metric | None = None,
                     title: str = "Comparison", decimals: int | None = None, alpha: float = DEFAULT_ALPHA,
                     baseline: str = BASELINE, primary: str | None = None) -> Table:
    """Methods (one row per configuration label) x dataset / model; ▲ / ▼ where significantly better /
    worse than the baseline (aggregate's verdict)."""
    spec = spec or METRICS[metric]
    decimals = spec.decimals if decimals is None else decimals
    cols = cells(groups)
    labels = list(dict.fromkeys(groups["label"]))
    n = typical_n(groups, metric)
    by_cell = {(r["label"], str(r["dataset"]), str(r["model"])): r for _, r in groups.iterrows()}
    rows = [[label] for label in labels]
    marks = [[""] for _ in labels]
    for ds, model in cols:
        col_rows = [by_cell.get((label, ds, model)) for label in labels]
        for i, (r, mark) in enumerate(zip(col_rows, marks_of(col_rows), strict=True)):
            rows[i].append("" if r is None else metric_cell(r, metric=metric, spec=spec, decimals=decimals,
                                                             typical=n))
            marks[i].append(mark)
    has_tests = "verdict" in groups.columns
    note = f"{spec.label}: mean +- sample std (ddof=1) over seeds; {_n_note(n)}; an empty cell is not in the sweep."
    if has_tests:
        note = _join(metric_role(metric, primary or metric), f"{protocol_line(protocols_of(groups))}.", note,
                     f"{marks_legend(metric, alpha, method_label(baseline))}.",
                     selection_line(groups) if metric.startswith(("selected_", "val_")) else "")
    return Table(title, ["method", *[f"{ds} / {m}" for ds, m in cols]], rows, marks, note)


def ablation_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, alpha: float = DEFAULT_ALPHA,
                    baseline: str = BASELINE, primary: str | None = None) -> list[Table]:
    """One table per swept parameter (seed Table 3): a row per dataset, a column per value; ▲ / ▼ where
    that configuration is significantly better / worse than the baseline."""
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
        rows, marks = [], []
        for r in arows:
            by_value = {fmt_value(g[param]): g for _, g in r.groups.iterrows()}
            head = [f"{r.dataset} / {r.model}" if multi_model else r.dataset]
            if has_context:
                head.append(", ".join(f"{k}={fmt_value(v)}" for k, v in r.context))
            found = [by_value.get(k) for k in keys]
            rows.append(head + ["" if g is None else metric_cell(g, metric=metric, spec=spec,
                                                                   decimals=spec.decimals, typical=n)
                                for g in found])
            marks.append([""] * len(head) + marks_of(found))
        note = _join(metric_role(metric, primary or metric), f"{protocol_line(protocols_of(in_table))}.",
                     f"{spec.label} of {method_label(method)} against {name}: mean +- sample std over seeds; "
                     f"{_n_note(n)}.", f"{marks_legend(metric, alpha, method_label(baseline))}."
                     + (" 'fixed' lists the other swept parameters of the row." if has_context else ""))
        headers = [name, *(["fixed"] if has_context else []), *keys]
        tables.append(Table(f"Ablation: {name} ({method_label(method)})", headers, rows, marks, note))
    return tables


def format_diff(row: pd.Series, spec: Metric, prefix: str = "") -> str:
    """`+1.23 [+0.40, +2.06]` in display units; `+1.23 [n/a]` with one pair; `n/a` without any."""
    if not is_finite(row[f"{prefix}diff_mean"]):
        return "n/a"
    d = spec.decimals
    mean = f"{row[f'{prefix}diff_mean'] * spec.scale:+.{d}f}"
    if not is_finite(row[f"{prefix}diff_ci_low"]):
        return f"{mean} [n/a]"
    return (f"{mean} [{row[f'{prefix}diff_ci_low'] * spec.scale:+.{d}f}, "
            f"{row[f'{prefix}diff_ci_high'] * spec.scale:+.{d}f}]")


VERDICT_TEXT = {"better": "better", "worse": "worse", "identical": "identical", "none": ""}


def _power_cells(row: pd.Series, spec: Metric) -> list[str]:
    """At the marks' own level (Holm's first step, alpha / k): the smallest difference these seeds detect
    (80% power), the power at the stated effect and the seeds that effect needs."""
    if row.get("verdict") == "identical":
        return ["identical"] * 3
    mdd, pw = row.get("mdd", math.nan), row.get("power_at_effect", math.nan)
    need = row.get("seeds_for_effect", math.nan)
    return [f"{mdd * spec.scale:.{spec.decimals}f}" if is_finite(mdd) else "n/a",
            f"{pw:.2f}" if is_finite(pw) else "n/a",
            str(int(need)) if is_finite(need) else ("n/a" if int(row.get("n_paired", 0)) < 2 else "> 10000")]


def _interval(low: float, high: float, spec: Metric) -> str:
    d = spec.decimals
    return f"[{low * spec.scale:+.{d}f}, {high * spec.scale:+.{d}f}]" if is_finite(low) and is_finite(high) else "n/a"


def _estimate_cells(row: pd.Series, spec: Metric) -> list[str]:
    """The simultaneous CI, the two-level (seeds and test images) bootstrap CI with the test set's share of
    its variance, P(worse) / P(equivalent) / P(better) and the seeds won."""
    boot = row.get("boot_note", "") or ""
    if not boot and is_finite(row.get("boot_ci_low", math.nan)):
        boot = (f"{_interval(row['boot_ci_low'], row['boot_ci_high'], spec)} "
                f"({100 * row['test_var_share']:.0f}% test set)")
    probs = [row.get(f"prob_{w}", math.nan) for w in ("worse", "equivalent", "better")]
    post = " / ".join(f"{p:.2f}" for p in probs) if all(is_finite(p) for p in probs) else "n/a"
    return [_interval(row.get("sim_ci_low", math.nan), row.get("sim_ci_high", math.nan), spec),
            boot or "n/a", post, str(row.get("seeds_won", "")) or "n/a"]


def _verdict_cell(row: pd.Series) -> str:
    text = VERDICT_TEXT.get(str(row["verdict"]), str(row["verdict"]))
    stop = row.get("stopped", "") or ""
    return " ".join(t for t in (text, stop) if t)


def paired_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, baseline: str = BASELINE,
                  alpha: float = DEFAULT_ALPHA, primary: str | None = None) -> list[Table]:
    """Per dataset / model: the metric and its companion (the other epoch), the paired difference with the
    baseline and its 95% CI, n pairs, p and Holm-adjusted p, the verdict and whether the other epoch confirms
    it, the estimates beside it (simultaneous CI, two-level bootstrap CI, posterior against the ROPE, seeds
    won), what the rule detects (at alpha / k), and the cost (time x, memory x, extra state)."""
    spec = METRICS[metric]
    other = companion(metric)
    second = METRICS[other] if other else None
    base = method_label(baseline)
    unit = "points" if spec.scale == 100.0 else "units"
    effect = float(groups["effect"].iloc[0]) * spec.scale if "effect" in groups.columns and len(groups) else spec.effect
    rope = float(groups["rope"].iloc[0]) * spec.scale if "rope" in groups.columns and len(groups) else spec.effect / 2
    tables = []
    for ds, model in cells(groups):
        g = groups[(groups["dataset"].astype(str) == ds) & (groups["model"].astype(str) == model)]
        n = typical_n(g, metric)
        rows, marks = [], []
        for _, r in g.iterrows():
            is_base = r["method"] == baseline
            row = [r["label"], metric_cell(r, metric=metric, spec=spec, decimals=spec.decimals, typical=n)]
            if second is not None:
                row.append(metric_cell(r, metric=other, spec=second, decimals=second.decimals,
                                       typical=typical_n(g, other)))
            if is_base:
                row += ["ref"] * (13 if second is not None else 12)
            else:
                row += [format_diff(r, spec), str(int(r["n_paired"])), format_p(r["p_value"]), format_p(r["p_holm"]),
                        _verdict_cell(r), *([str(r.get("confirmed", "")) or "-"] if second is not None else []),
                        *_estimate_cells(r, spec), *_power_cells(r, spec)]
            row += [format_ratio(r["time_x"]), format_ratio(r["mem_x"]), human_bytes(r["extra_state_bytes"])]
            rows.append(row)
            marks.append([""] + [marks_of([r])[0]] + [""] * (len(row) - 2))
        k = int(g["family_size"].dropna().max()) if "family_size" in g.columns and g["family_size"].notna().any() else 1
        headers = ["method", spec.short, *([second.short] if second else []), f"difference vs {base} [95% CI]",
                   "n pairs", "p", "Holm p", "verdict", *([f"confirmed at {second.short}"] if second else []),
                   f"simultaneous {100 * (1 - alpha):g}% CI", "seeds + test images CI",
                   f"P(worse / within {rope:g} / better)", "seeds won",
                   f"detectable ({unit}, 80%)", f"power at {_amount(effect, unit)}",
                   f"seeds for {_amount(effect, unit)}", RATIOS["time_x"].short, RATIOS["mem_x"].short, "extra state"]
        note = _join(metric_role(metric, primary or metric), f"{protocol_line(protocols_of(g))}.",
                     f"Paired by seed over the {int((g['method'] != baseline).sum())} configurations of this table "
                     f"(the Holm family, k = {k}); {_n_note(n)}.", test_split_line(g, metric, baseline),
                     split_line(g), selection_line(g) if metric.startswith(("selected_", "val_")) else "")
        tables.append(Table(f"Against {base}: {ds} / {model}", headers, rows, marks, note=note))
    return tables


def split_line(groups: pd.DataFrame) -> str:
    """Where the seeds share one validation split, say that resampling it per seed is recommended."""
    if "split_per_seed" not in groups.columns:
        return ""
    per_seed = groups["split_per_seed"].astype(str).str.lower().isin(("true", "1"))
    if per_seed.all():
        return "Validation split drawn per seed (train.split_per_seed): its noise is in the seed-to-seed spread."
    return ("Validation split shared by every seed: its noise is not in the seed-only intervals; "
            "train.split_per_seed: true is recommended where the data allow.")


def _amount(value: float, unit: str) -> str:
    """'1 point', '0.5 points', '0.01 units'."""
    return f"{value:g} {unit[:-1] if value == 1 and unit.endswith('s') else unit}"


def reading_guide(*, metric: str, alpha: float, effect: float, baseline: str = BASELINE,
                  rope: float | None = None) -> list[str]:
    """How to read the tables, said once per summary (the tables' own notes say only what is theirs)."""
    spec, base = METRICS[metric], method_label(baseline)
    other = companion(metric)
    unit = "points" if spec.scale == 100.0 else "units"
    rope = spec.effect / 2 if rope is None else rope
    confirm = (f" *confirmed at {METRICS[other].short}*: the same comparison at the other epoch agrees (same "
               f"sign, its Holm p < alpha); a sensitivity check, not part of the rule." if other else "")
    return [
        f"- Cells: mean +- sample std (ddof=1) over seeds, in percent for accuracies; `(n=k)` where a cell has "
        f"another number of seeds than its table, `seeds a,b` where its seeds are not {base}'s.",
        f"- ▲ / ▼ (bold and ▲ for better): significantly better / worse than {base} on the primary metric: the "
        f"Holm-adjusted two-sided paired t-test p is below alpha = {alpha:g} (the one decision rule)."
        f"{confirm} *identical*: equal to {base} on every paired seed (p = 1).",
        f"- Against {base}: difference = per-seed value minus {base}'s on the same seed, mean [95% t confidence "
        f"interval] over the seeds both finished; Holm adjusts over every configuration compared with {base} in "
        f"one table (k; identical and untestable comparisons stay in the family with p = 1). The simultaneous "
        f"interval is at 1 - alpha/k: it excludes 0 only where Holm rejects. seeds + test images: a paired "
        f"bootstrap over seeds and test images (predictions.npz), with the share of its variance from the test "
        f"set.",
        f"- P(worse / within / better): the Bayesian paired posterior of the true difference (Student t, "
        f"Benavoli et al. 2017) against a region of practical equivalence of +-{rope:g} {unit} (`rope:`); "
        f"seeds won: seeds on which the method beat {base}.",
        f"- detectable, power, seeds: at the marks' own level (Holm's first step, alpha/k): the smallest true "
        f"difference the paired seeds detect with 80% power (from the sd of their differences), the power at "
        f"{_amount(effect, unit)} and the seeds it needs (`tfbench seeds --effect`). None uses the observed "
        f"difference.",
        f"- time x, memory x: the configuration's train step time and peak memory over {base}'s in the same "
        f"settings, from the controlled measurement (Costs, above; n/a where there is none); extra state: the "
        f"method's own state kept across steps (e.g. the PS-KD table).",
    ]


def details_table(groups: pd.DataFrame) -> Table:
    """Every configuration with every aggregated metric (mean +- std) and its n and failures."""
    shown = details()
    rows = []
    for _, r in groups.iterrows():
        row = [r["label"], f"{r['dataset']} / {r['model']}", str(r.get("protocol", "")), str(r.get("select", "")),
               str(int(r["n"])), str(int(r["n_failed"])), str(int(r["n_pending"]))]
        for m in shown:
            s = METRICS[m]
            row.append(format_mean_std(r[f"{m}_mean"] * s.scale, r[f"{m}_std"] * s.scale, decimals=s.decimals))
        row += [human_bytes(r["peak_mem_bytes_mean"]), format_ratio(r.get("time_x_observed", math.nan))]
        rows.append(row)
    headers = ["method", "dataset / model", "protocol", "select", "n", "failed", "pending",
               *[METRICS[m].short for m in shown], "peak mem", RATIOS["time_x_observed"].short]
    return Table("All configurations", headers, rows,
                 note="Mean +- sample std over the finished seeds (n); n/a = unavailable; best val top-1 is the "
                      "per-epoch maximum on the selection split (clean: validation; paper: the evaluation split); "
                      "sel. epoch: the epoch train.select chose. step (ms), peak mem and time x observed (the mean "
                      f"step time over {method_label(BASELINE)}'s) are observed in this sweep, on a shared machine "
                      "beside other trials: not a comparison of methods (the controlled time x is in the tables "
                      "against the baseline).")


def sharpness_table(sharp_groups: pd.DataFrame) -> Table:
    # Sharpness has no fixed scale: give its largest mean three significant digits.
    t = comparison_table(sharp_groups, metric="sharpness", spec=SHARPNESS, title="Sharpness",
                         decimals=auto_decimals(sharp_groups["sharpness_mean"]))
    t.note = t.note.replace("sharpness:", "sharpness (results/<sweep>/landscape/sharpness.csv):", 1)
    return t


# --- the summary of a results folder ------------------------------------------------------------------

def summary_tables(groups: pd.DataFrame, *, metric: str = DEFAULT_METRIC, alpha: float = DEFAULT_ALPHA,
                   sharp_groups: pd.DataFrame | None = None, primary: str | None = None,
                   across: list[Table] | None = None) -> dict[str, list[Table]]:
    """Section title -> tables, in the order the summary shows them; `across`: the across-data-set section's
    tables (harness/results/across.py `across_section`, computed once by the caller, which also states its line)."""

    if groups.empty:
        return {}
    kw = dict(metric=metric, alpha=alpha, primary=primary or metric)
    out = {"Comparison": [comparison_table(groups, **kw)],
           f"Against {method_label(BASELINE)}": paired_tables(groups, **kw),
           "Across data sets": across or [],
           "Ablations": ablation_tables(groups, **kw)}
    if sharp_groups is not None and not sharp_groups.empty:
        out["Sharpness"] = [sharpness_table(sharp_groups)]
    return out
