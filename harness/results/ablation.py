"""Ablations in aggregated results: which parameter of a method was swept, and the rows of its table (the
seed's Table 3) and figure, each a slice of one data set / model in which only that parameter moves."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.results.aggregate import (
    method_sort_key,
    nunique,
    param_columns,
    setting_columns,
    value_sort_key,
)


@dataclass(frozen=True)
class AblationRow:
    dataset: str
    model: str
    context: tuple[tuple[str, Any], ...]   # the other swept parameters, fixed in this row
    groups: pd.DataFrame                    # one row per value of the parameter, in value order


def swept_parameters(groups: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, p.<param>) for every parameter that takes more than one value within a dataset/model."""
    out = []
    for method in sorted(groups["method"].astype(str).unique(), key=method_sort_key):
        g = groups[groups["method"] == method]
        for c in param_columns(groups):
            vals = [cell[c].dropna() for _, cell in g.groupby(["dataset", "model"], sort=False)]
            if any(v.nunique() > 1 for v in vals):
                out.append((method, c))
    return out


def ablation_rows(groups: pd.DataFrame, *, method: str, param: str) -> list[AblationRow]:
    """The rows of the ablation table of `param`: per dataset/model, each slice in which only `param` moves.

    A one-at-a-time sweep (the seed's Table 3: alpha at the default lambda, lambda at the default alpha)
    gives one row per dataset; a full grid gives one row per combination of the other swept parameters.
    """
    g = groups[groups["method"] == method]
    rows = []
    for (dataset, model), cell in g.groupby(["dataset", "model"], sort=False):
        others = [c for c in [*param_columns(g), *setting_columns(g)]
                  if c != param and nunique(cell[c]) > 1]
        parts = [((), cell)] if not others else [
            (k if isinstance(k, tuple) else (k,), part)
            for k, part in cell.groupby(others, dropna=False, sort=False)]
        for k, part in parts:
            part = part[part[param].notna()]
            if part[param].nunique() < 2:
                continue
            order = sorted(range(len(part)), key=lambda i: value_sort_key(part[param].iloc[i]))
            context = tuple((c[2:] if c.startswith("p.") else c, v) for c, v in zip(others, k, strict=True))
            rows.append(AblationRow(str(dataset), str(model), context, part.iloc[order]))
    return rows


def ordered_values(values: Iterable[Any]) -> list[Any]:
    """Distinct values: numeric order when all are numbers, else the order they come in."""
    distinct = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and math.isnan(v))))
    if all(value_sort_key(v)[0] == 0 for v in distinct):
        return sorted(distinct, key=float)
    return distinct
