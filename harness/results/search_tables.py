"""The search section of a summary: what each method's tuning cost and which configuration it chose.

Reads `search.json` (written by harness/sweep/search.py after the search). The comparison tables are built
from `trials.csv`, which in a searched sweep holds the confirm trials only; this section lists the search
trials apart, with each method's budget, so a reader sees that every method was tuned alike.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.results.aggregate import method_label
from harness.results.render import Table, to_latex, to_markdown


def read_search(results_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(results_dir) / "search.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("groups"), list) else None


def budget_line(record: dict[str, Any]) -> str:
    """One sentence for the head of the summary: the tuning budget of every method."""
    # one entry per method (and budget): a sweep over several data sets has a group per data set
    parts = list(dict.fromkeys(f"{method_label(g['method'])} {g['budget']}" for g in record["groups"]))
    return (f"Tuned: each method's configuration was chosen on the validation split ({record.get('metric')}) "
            f"among its search trials, then rerun with the sweep's seeds (under seeds until decided, those the "
            f"design asked for); every table but the search ones is built "
            f"from those confirm trials only. Search trials per method: {', '.join(parts)} "
            f"({record.get('algorithm')} search, {record.get('scheduler')} scheduler).")


def epochs_saved(group: dict[str, Any]) -> tuple[int, int]:
    """(epochs trained by the group's search trials, epochs the same trials would train without early
    stopping)."""
    rows = group["rows"]
    return sum(int(r["epochs_trained"]) for r in rows), sum(int(r["epochs"]) for r in rows)


def budget_table(record: dict[str, Any], run: set[str] | None = None) -> Table:
    """`run`: the keys of the comparison's trials (trials.csv); a sequential sweep confirms only the seeds its
    design asked for, so the confirm trials counted are those among them (None: every confirm trial)."""
    rows = []
    for g in record["groups"]:
        statuses = [r["status"] for r in g["rows"]]
        trained, full = epochs_saved(g)
        params = ", ".join(f"{k}={v}" for k, v in sorted((g.get("best_params") or {}).items())) or "defaults"
        val = g.get("best_val_top1")
        rows.append([method_label(g["method"]), f"{g['dataset']} / {g['model']}", str(g["budget"]),
                     str(statuses.count("finished")), str(statuses.count("stopped")), str(statuses.count("failed")),
                     f"{trained} of {full}", params if g.get("best") else "none finished",
                     f"{100 * val:.2f}" if isinstance(val, (int, float)) else "n/a",
                     str(sum(run is None or k in run for k in g.get("confirm") or []))])
    headers = ["method", "dataset / model", "budget", "finished", "stopped early", "failed", "epochs trained",
               "selected configuration", "its val top-1 (%)", "confirm trials"]
    return Table(title="Search budget", note="Search trials per method (budget), how many the scheduler "
                 "stopped early, epochs trained against the same trials trained to the end, and the "
                 "configuration selected on the validation split (its confirm trials are the rows above).",
                 headers=headers, rows=rows)


def trials_table(record: dict[str, Any]) -> Table:
    rows = []
    for g in record["groups"]:
        for r in g["rows"]:
            params = ", ".join(f"{k}={v}" for k, v in sorted(r["params"].items())) or "defaults"
            val = r.get("val")
            rows.append([f"`{r['key']}`", method_label(r["method"]), params, r["status"] + (" (selected)" if
                         r.get("selected") else ""), f"{r['epochs_trained']}/{r['epochs']}",
                         f"{100 * val:.2f}" if isinstance(val, (int, float)) else "n/a"])
    headers = ["search trial", "method", "parameters", "status", "epochs", "val top-1 (%)"]
    return Table(title="Search trials", note="Every search trial (validation split only; a stopped trial "
                 "shows its best epoch so far). Stopped trials were early-stopped by the scheduler, not failed.",
                 headers=headers, rows=rows)


def search_section(results_dir: Path, run: set[str] | None = None) -> tuple[str, list[str], list[str]]:
    """(the head's budget sentence, markdown parts, LaTeX parts), or ('', [], []) without a search. `run`: as
    `budget_table`'s."""
    record = read_search(results_dir)
    if record is None:
        return "", [], []
    tables = [budget_table(record, run), trials_table(record)]
    return (budget_line(record), [to_markdown(t) for t in tables],
            [to_latex(tables[0])])
