"""A `Table` (display strings plus a mark per cell) and its renderers: GitHub markdown and LaTeX booktabs
(tabulate), CSV (harness.io.csv_text, also for a DataFrame: summary.csv), with the cell formatters every
table shares. The renderers only decorate: which cell is marked and what a cell says is decided by
harness/results/tables.py.

Marks: `better` renders bold with a ▲ (LaTeX: bold with a black triangle), `worse` with a ▼ (LaTeX: a
black down-triangle); both LaTeX symbols come from amssymb. CSV spells the mark out after the cell text."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tabulate import tabulate

from harness.io import csv_text

MARKS = ("better", "worse")
MD_MARKS = {"better": " ▲", "worse": " ▼"}
TEX_MARKS = {"better": r"$^{\blacktriangle}$", "worse": r"$^{\blacktriangledown}$"}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    marks: list[list[str]] = field(default_factory=list)  # per cell: '', 'better' or 'worse'
    note: str = ""

    def __post_init__(self) -> None:
        if not self.marks:
            self.marks = [[""] * len(r) for r in self.rows]


# --- cell formatting ----------------------------------------------------------------------------------

def is_finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_mean_std(mean: float, std: float, *, decimals: int = 2) -> str:
    """`77.38 +- 0.32`; a missing std (one seed) reads `n/a`, never 0; a missing mean reads `n/a`."""
    if not is_finite(mean):
        return "n/a"
    s = f"{std:.{decimals}f}" if is_finite(std) else "n/a"
    return f"{mean:.{decimals}f} +- {s}"


def format_p(p: float) -> str:
    if not is_finite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_ratio(x: float) -> str:
    return f"{x:.2f}x" if is_finite(x) else "n/a"


def human_bytes(n: float) -> str:
    """Binary units (KiB = 1024 B), one decimal: 19.1 MiB."""
    if not is_finite(n):
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
    v = np.abs(np.asarray([x for x in values if is_finite(x)], dtype=float))
    if v.size == 0 or v.max() == 0:
        return 3
    return int(np.clip(significant - 1 - math.floor(math.log10(v.max())), 0, 6))


# --- rendering ----------------------------------------------------------------------------------------

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "<": r"\textless{}",
                  ">": r"\textgreater{}"}
# what a cell's text may say that LaTeX shows as a symbol: replaced after the rest is escaped, never before
_TEX_SYMBOLS = {"+-": r"$\pm$", "▲": TEX_MARKS["better"], "▼": TEX_MARKS["worse"]}
_TEX_SPLIT = re.compile("(" + "|".join(map(re.escape, _TEX_SYMBOLS)) + ")")


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def latex_text(text: str) -> str:
    """`text` as LaTeX: every character escaped, then `+-` and the marks as their symbols. Why in one pass
    over the split text: a placeholder substituted after escaping would turn a user's text that spells it
    into raw LaTeX (an unclosed `\\textbf{`); here no text of the user's is ever read as markup."""
    return "".join(_TEX_SYMBOLS.get(part, latex_escape(part)) for part in _TEX_SPLIT.split(str(text)))


def _align(table: Table) -> tuple[str, ...]:
    return ("left",) + ("right",) * (len(table.headers) - 1)


def to_markdown(table: Table, *, level: int = 2) -> str:
    def md(text: str, mark: str) -> str:
        text = " ".join(text.splitlines()).replace("|", r"\|")  # a cell is one line, and a pipe not a column
        if not text or not mark:
            return text
        return (f"**{text}**" if mark == "better" else text) + MD_MARKS[mark]

    body = [[md(c, m) for c, m in zip(row, mrow, strict=True)] for row, mrow in zip(table.rows, table.marks, strict=True)]
    grid = tabulate(body, headers=[md(h, "") for h in table.headers], tablefmt="github",
                    disable_numparse=True, colalign=_align(table))
    return f"{'#' * level} {table.title}\n\n{table.note}\n\n{grid}\n"


def to_latex(table: Table) -> str:
    """A `table` float holding a booktabs tabular; needs \\usepackage{booktabs} (and amssymb for marks). Every
    cell is escaped (`latex_text`) before the markup of its mark is put around it."""
    def tex(text: str, mark: str) -> str:
        body = latex_text(" ".join(text.splitlines()))  # a cell is one line: an empty line would end the table
        if not text or not mark:
            return body
        return (rf"\textbf{{{body}}}" if mark == "better" else body) + TEX_MARKS[mark]

    body = [[tex(c, m) for c, m in zip(row, mrow, strict=True)] for row, mrow in zip(table.rows, table.marks, strict=True)]
    grid = _booktabs([tex(h, "") for h in table.headers], body, _align(table))
    caption = latex_text(f"{table.title}. {table.note}")
    return f"\\begin{{table}}[ht]\n\\centering\n\\caption{{{caption}}}\n{grid}\n\\end{{table}}\n"


def _booktabs(headers: list[str], rows: list[list[str]], align: Sequence[str]) -> str:
    """A booktabs tabular of cells that are LaTeX already (tabulate would escape them a second time)."""
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return " & ".join(c.ljust(w) if a == "left" else c.rjust(w)
                          for c, w, a in zip(cells, widths, align, strict=True)) + r" \\"

    spec = "".join("l" if a == "left" else "r" for a in align)
    return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(headers), r"\midrule",
                      *(line(r) for r in rows), r"\bottomrule", r"\end{tabular}"])


def to_csv(table: Table) -> str:
    return csv_text(table.headers, [[f"{c} ({m})" if m and c else c for c, m in zip(row, mrow, strict=True)]
                                    for row, mrow in zip(table.rows, table.marks, strict=True)])


def frame_rows(frame: Any) -> list[list]:
    """A frame's rows for `csv_text`, cell for cell what `DataFrame.to_csv` wrote: a missing value (NaN, None,
    NA) is None, an empty cell. Why numpy columns keep their own scalars: a float32 then writes its own
    shortest digits, not those of the float64 it would become; extension columns (Int64, strings) give Python
    values, so an Int64 stays an integer."""
    columns = []
    for name in frame.columns:
        col = frame[name]
        values = col.to_numpy() if isinstance(col.dtype, np.dtype) else col.to_numpy(dtype=object)
        columns.append([None if missing else v for v, missing in zip(values, col.isna().to_numpy(), strict=True)])
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(len(frame))]


def frame_csv(frame: Any) -> str:
    """A DataFrame as CSV text through the one writer (`harness.io.csv_text`): columns, then `frame_rows`."""
    return csv_text(list(frame.columns), frame_rows(frame))
