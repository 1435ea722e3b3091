"""Tables of a results folder: comparison, ablation (the seed's Table 3 layout), cost and significance,
sharpness and per-configuration details, rendered as GitHub markdown, LaTeX booktabs or CSV (tabulate).

A `Table` holds display strings plus a bold mask; the renderers only decorate. Bold marks the best
displayed mean of a column (comparison) or row (ablation), compared after rounding to the displayed
decimals, so cells that read the same are all bold.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.errors import UserError
from harness.io import atomic_write_text
from harness.results.aggregate import (
    BASELINE,
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


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.bold:
            self.bold = [[False] * len(r) for r in self.rows]


# --- cell formatting ----------------------------------------------------------------------------------

def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_mean_std(mean: float, std: float, *, decimals: int = 2) -> str:
    """`77.38 +- 0.32`; a missing std (one seed) reads `n/a`, never 0; a missing mean reads `n/a`."""
    if not _finite(mean):
        return "n/a"
    s = f"{std:.{decimals}f}" if _finite(std) else "n/a"
    return f"{mean:.{decimals}f} +- {s}"


def format_p(p: float) -> str:
    if not _finite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_ratio(x: float) -> str:
    return f"{x:.2f}x" if _finite(x) else "n/a"


def human_bytes(n: float) -> str:
    """Binary units (KiB = 1024 B), one decimal: 19.1 MiB."""
    if not _finite(n):
        return "n/a"
    n = float(n)
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024.0
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def auto_decimals(values: Sequence[float], significant: int = 3) -> int:
    """Decimals that give the largest |value| `significant` digits (for metrics of unknown scale)."""
    v = np.abs(np.asarray([x for x in values if _finite(x)], dtype=float))
    if v.size == 0 or v.max() == 0:
        return 3
    return int(np.clip(significant - 1 - math.floor(math.log10(v.max())), 0, 6))


def best_mask(means: Sequence[float], *, decimals: int, higher_is_better: bool) -> list[bool]:
    """True at every cell whose displayed (rounded) mean is the best; NaN cells never win."""
    rounded = [round(float(m), decimals) if _finite(m) else None for m in means]
    present = [r for r in rounded if r is not None]
    if not present:
        return [False] * len(rounded)
    best = max(present) if higher_is_better else min(present)
    return [r is not None and r == best for r in rounded]


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

def comparison_table(groups: pd.DataFrame, *, metric: str = "best_top1", spec: MetricSpec | None = None,
                     title: str = "Comparison", decimals: int | None = None) -> Table:
    """Methods (one row per configuration label) x dataset / model; best displayed mean per column bold."""
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
        means = [r[f"{metric}_mean"] * spec.scale if r is not None else math.nan for r in col_rows]
        mask = best_mask(means, decimals=decimals, higher_is_better=spec.higher_is_better)
        for i, r in enumerate(col_rows):
            rows[i].append("" if r is None else metric_cell(r, metric=metric, spec=spec, decimals=decimals,
                                                             typical=n))
            bold[i].append(mask[i])
    direction = "higher" if spec.higher_is_better else "lower"
    note = (f"{spec.label}: mean +- sample std (ddof=1) over seeds; {_n_note(n)}; n/a = unavailable "
            f"(a single seed); best per column in bold ({direction} is better; ties all bold); "
            f"an empty cell is not in the sweep.")
    return Table(title, ["method", *[f"{ds} / {m}" for ds, m in cols]], rows, bold, note)


def ablation_tables(groups: pd.DataFrame, *, metric: str = "best_top1") -> list[Table]:
    """One table per swept parameter (seed Table 3): a row per dataset, a column per value, best per row bold."""
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
        n = typical_n(pd.concat([r.groups for r in arows]), metric)
        rows, bold = [], []
        for r in arows:
            by_value = {fmt_value(g[param]): g for _, g in r.groups.iterrows()}
            head = [f"{r.dataset} / {r.model}" if multi_model else r.dataset]
            if has_context:
                head.append(", ".join(f"{k}={fmt_value(v)}" for k, v in r.context))
            found = [by_value.get(k) for k in keys]
            means = [g[f"{metric}_mean"] * spec.scale if g is not None else math.nan for g in found]
            mask = best_mask(means, decimals=spec.decimals, higher_is_better=spec.higher_is_better)
            rows.append(head + ["" if g is None else metric_cell(g, metric=metric, spec=spec,
                                                                   decimals=spec.decimals, typical=n)
                                for g in found])
            bold.append([False] * len(head) + mask)
        note = (f"{spec.label} of {method_label(method)} against {name}: mean +- sample std over seeds; "
                f"{_n_note(n)}; best per row in bold"
                + ("; 'fixed' lists the other swept parameters of the row." if has_context else "."))
        headers = [name, *(["fixed"] if has_context else []), *keys]
        tables.append(Table(f"Ablation: {name} ({method_label(method)})", headers, rows, bold, note))
    return tables


def cost_tables(groups: pd.DataFrame, *, metric: str = "best_top1", baseline: str = BASELINE) -> list[Table]:
    """Per dataset / model, the paper's overview layout: gain over CE, Welch p, time x, memory x, state."""
    spec = METRICS[metric]
    base = method_label(baseline)
    tables = []
    for ds, model in cells(groups):
        g = groups[(groups["dataset"].astype(str) == ds) & (groups["model"].astype(str) == model)]
        n = typical_n(g, metric)
        rows = []
        for _, r in g.iterrows():
            is_base = r["method"] == baseline
            gain = "ref" if is_base else (f"{r['gain'] * spec.scale:+.{spec.decimals}f}"
                                          if _finite(r["gain"]) else "n/a")
            rows.append([r["label"],
                         metric_cell(r, metric=metric, spec=spec, decimals=spec.decimals, typical=n),
                         gain,
                         "ref" if is_base else format_p(r["p_value"]),
                         format_ratio(r["time_x"]),
                         format_ratio(r["mem_x"]),
                         human_bytes(r["extra_state_bytes"])])
        note = (f"Gain: difference of mean {spec.label} to {base}; p: two-sided Welch t-test "
                f"(unequal variances) of the per-seed values against {base}'s, n/a when either side has fewer "
                f"than 2 seeds; time x: mean train step time over {base}'s; memory x: peak memory over "
                f"{base}'s; extra state: the method's own state kept across steps (e.g. the PS-KD table); "
                f"{_n_note(n)}.")
        headers = ["method", spec.short, f"gain over {base}", f"p vs {base}", "time x", "memory x", "extra state"]
        tables.append(Table(f"Cost and significance: {ds} / {model}", headers, rows, note=note))
    return tables


def details_table(groups: pd.DataFrame) -> Table:
    """Every configuration with every aggregated metric (mean +- std) and its n and failures."""
    shown = ["best_top1", "last_top1", "best_top5", "last_top5", "last_nll", "last_ece", "train_val_gap",
             "step_time_s"]
    rows = []
    for _, r in groups.iterrows():
        row = [r["label"], f"{r['dataset']} / {r['model']}", str(int(r["n"])), str(int(r["n_failed"])),
               str(int(r["n_pending"]))]
        for m in shown:
            s = METRICS[m]
            row.append(format_mean_std(r[f"{m}_mean"] * s.scale, r[f"{m}_std"] * s.scale, decimals=s.decimals))
        row.append(human_bytes(r["peak_mem_bytes_mean"]))
        rows.append(row)
    headers = ["method", "dataset / model", "n", "failed", "pending", *[METRICS[m].short for m in shown], "peak mem"]
    return Table("All configurations", headers, rows,
                 note="Mean +- sample std over the finished seeds (n); n/a = unavailable.")


def sharpness_table(sharp_groups: pd.DataFrame) -> Table:
    # Sharpness has no fixed scale: give its largest mean three significant digits.
    t = comparison_table(sharp_groups, metric="sharpness", spec=SHARPNESS, title="Sharpness",
                         decimals=auto_decimals(sharp_groups["sharpness_mean"]))
    t.note = t.note.replace("sharpness:", "sharpness (results/<sweep>/landscape/sharpness.csv):", 1)
    return t


# --- rendering ----------------------------------------------------------------------------------------

# Letters only, so that tabulate's LaTeX escaping leaves them alone; replaced by raw LaTeX afterwards.
_TEX_PM, _TEX_BOLD_OPEN, _TEX_BOLD_CLOSE = "TFBSENTPM", "TFBSENTBOLDOPEN", "TFBSENTBOLDCLOSE"
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _align(table: Table) -> tuple[str, ...]:
    return ("left",) + ("right",) * (len(table.headers) - 1)


def to_markdown(table: Table, *, level: int = 2) -> str:
    def md(text: str, bold: bool) -> str:
        text = text.replace("|", r"\|")
        return f"**{text}**" if bold and text else text

    body = [[md(c, b) for c, b in zip(row, brow, strict=True)] for row, brow in zip(table.rows, table.bold, strict=True)]
    grid = tabulate(body, headers=[md(h, False) for h in table.headers], tablefmt="github",
                    disable_numparse=True, colalign=_align(table))
    return f"{'#' * level} {table.title}\n\n{table.note}\n\n{grid}\n"


def to_latex(table: Table) -> str:
    """A `table` float holding a booktabs tabular; needs \\usepackage{booktabs}."""
    def tex(text: str, bold: bool) -> str:
        text = text.replace("+-", _TEX_PM)
        return f"{_TEX_BOLD_OPEN}{text}{_TEX_BOLD_CLOSE}" if bold and text else text

    body = [[tex(c, b) for c, b in zip(row, brow, strict=True)] for row, brow in zip(table.rows, table.bold, strict=True)]
    grid = tabulate(body, headers=[tex(h, False) for h in table.headers], tablefmt="latex_booktabs",
                    disable_numparse=True, colalign=_align(table))
    grid = (grid.replace(_TEX_PM, r"$\pm$").replace(_TEX_BOLD_OPEN, r"\textbf{")
            .replace(_TEX_BOLD_CLOSE, "}"))
    caption = latex_escape(f"{table.title}. {table.note}".replace("+-", "PLUSMINUS")).replace(
        "PLUSMINUS", r"$\pm$")
    return f"\\begin{{table}}[ht]\n\\centering\n\\caption{{{caption}}}\n{grid}\n\\end{{table}}\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.headers)
    w.writerows(table.rows)
    return buf.getvalue()


# --- the summary of a results folder ------------------------------------------------------------------

def summary_tables(groups: pd.DataFrame, *, metric: str = "best_top1",
                   sharp_groups: pd.DataFrame | None = None) -> dict[str, list[Table]]:
    """Section title -> tables, in the order the summary shows them."""
    if groups.empty:
        return {}
    out = {"Comparison": [comparison_table(groups, metric=metric)],
           "Cost and significance against CE": cost_tables(groups, metric=metric),
           "Ablations": ablation_tables(groups, metric=metric)}
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


def render_summary(results_dir: str | Path, *, metric: str = "best_top1") -> dict[str, str]:
    """{'md', 'tex', 'csv'} texts of a results folder's summary (reads only)."""
    if metric not in TABLE_METRICS:
        raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(TABLE_METRICS)}")
    results_dir = Path(results_dir)
    trials = load_trials(results_dir)
    groups = aggregate(trials, metric=metric)
    sharp = load_sharpness(results_dir)
    if sharp is not None:
        missing = [c for c in ("method", "dataset", "model", "sharpness") if c not in sharp.columns]
        if missing:
            raise UserError(f"{results_dir / 'landscape' / 'sharpness.csv'} lacks the column(s) "
                            f"{', '.join(missing)}")
    sharp_groups = aggregate_sharpness(sharp, trials) if sharp is not None and not sharp.empty else None
    sections = summary_tables(groups, metric=metric, sharp_groups=sharp_groups)

    status = trials["status"].astype(str)
    n_ok, n_failed = int((status == "finished").sum()), int((status == "failed").sum())
    n_pending = len(trials) - n_ok - n_failed
    head = (f"Trials: {len(trials)} ({n_ok} finished, {n_failed} failed"
            + (f", {n_pending} pending" if n_pending else "")
            + f") in {len(groups)} configurations. Ranked by {METRICS[metric].label}. Accuracies in percent.")
    md = [f"# Results: {results_dir.name}\n", f"{head}\n"]
    tex = [f"% tfbench summary of {results_dir.name}: needs \\usepackage{{booktabs}}.\n",
           f"% {head}\n"]
    for tables in sections.values():
        md.extend(to_markdown(t) for t in tables)
        tex.extend(to_latex(t) for t in tables)
    if not groups.empty:
        md.append(to_markdown(details_table(groups)))
    failed = _failed_lines(trials)
    if failed:
        md.append("## Failed and pending trials\n")
        md.append("\n".join(failed) + "\n")
    return {"md": "\n".join(md), "tex": "\n".join(tex), "csv": groups.to_csv(index=False)}


def write_outputs(results_dir: str | Path, outputs: dict[str, str]) -> list[Path]:
    paths = []
    for fmt in ("md", "tex", "csv"):
        path = Path(results_dir) / f"summary.{fmt}"
        atomic_write_text(path, outputs[fmt])
        paths.append(path)
    return paths


def write_summary(results_dir: str | Path, metric: str = "best_top1") -> str:
    """Write summary.md, summary.tex and summary.csv of a results folder; return the markdown."""
    outputs = render_summary(results_dir, metric=metric)
    write_outputs(results_dir, outputs)
    return outputs["md"]
