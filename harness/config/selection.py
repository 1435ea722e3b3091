"""Which epoch (and which configuration) a trial is judged at: `train.select`, one rule everywhere.

Rules, all read on the selection split (clean: the held-out validation split; paper: the evaluation split):
- `top1` (default): the highest validation top-1; ties broken by the lower validation NLL, then by the
  later epoch. Why the tie-break: on a small or easy selection split many epochs tie at the maximum (the
  quickstart's 142 images reach 100% within a few epochs), and "the first epoch that reached it" then
  judges a fast learner at its least-trained weights. NLL keeps ranking the tied epochs by how confident
  and correct they are; the later epoch is the better-trained one when even that ties.
- `nll`: the lowest validation NLL, ties to the later epoch.
- `last`: the last epoch (the selection split is then only watched, never used).

The same order ranks configurations (a search's trials, a figure's "best configuration" of a method) by
their validation top-1 and NLL at the selected epoch. Nothing here may see the test split.

A selection split that cannot discriminate is reported, never hidden: `diagnose` flags a trial where many
epochs tie at the maximum top-1, or where the split holds too few images per class for a one-image
difference to mean anything.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One selection rule: what the loop, the search's scheduler and the tables read about it."""

    name: str
    text: str                 # how the tables describe it
    reads_split: bool         # False for `last`: nothing is selected, so no best.pt is kept and no split is weak
    scheduler: tuple[str, str]  # the per-epoch record ASHA and TPE compare, and its mode: the rule's first key


SELECTION_RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("top1", "the highest validation top-1, ties to the lower validation NLL, then the later epoch", True,
         ("val_top1", "max")),
    Rule("nll", "the lowest validation NLL", True, ("val_nll", "min")),
    Rule("last", "the last epoch", False, ("val_top1", "max")),
)}
RULES = tuple(SELECTION_RULES)
DEFAULT_RULE = "top1"


def selection_rule(name: str) -> Rule:
    """The rule called `name` (train.select has been checked against RULES where it was read)."""
    if name not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {name!r}; allowed: {', '.join(RULES)}")
    return SELECTION_RULES[name]
TIE_LIMIT = 3          # this many epochs (or more) tied at the maximum top-1: the tie-break, not top-1, selects
MIN_PER_CLASS = 20     # fewer selection images in some class: one image moves that class's accuracy by > 5%


def _nll(value: Any) -> float:
    x = float(value) if value is not None else math.inf
    return x if math.isfinite(x) else math.inf  # a NaN NLL never wins a tie


def is_better(rule: str, *, top1: float, nll: float, best_top1: float, best_nll: float) -> bool:
    """True when the newer epoch (top1, nll) replaces the one selected so far. Equal keys go to the newer
    epoch, which is what 'then the later epoch' means when epochs arrive in order."""
    if rule == "last":
        return True
    new, old = _nll(nll), _nll(best_nll)
    if rule == "nll":
        return new <= old
    if rule != "top1":
        raise ValueError(f"unknown selection rule {rule!r}; allowed: {', '.join(RULES)}")
    if not math.isfinite(top1):
        return False
    return top1 > best_top1 or (top1 == best_top1 and new <= old)


def config_order(rule: str, *, top1: float | None, nll: float | None) -> tuple[float, float]:
    """Sort key of a configuration, smallest first = best: (-top1, nll) for top1 and last, (nll, -top1) for
    nll. Missing values sort last."""
    t = -float(top1) if top1 is not None and math.isfinite(float(top1)) else math.inf
    n = _nll(nll)
    return (n, t) if rule == "nll" else (t, n)


def select_epoch(rule: str, history: Sequence[dict[str, Any]]) -> int:
    """The 1-based epoch `rule` selects from per-epoch records with `val_top1` and `val_nll` (0 when empty).
    The loop selects online with `is_better`; this is the same rule over a whole record (tests, analyses)."""
    best_epoch, best_top1, best_nll = 0, -1.0, math.inf
    for row in history:
        top1, nll = float(row["val_top1"]), float(row.get("val_nll", math.nan))
        if is_better(rule, top1=top1, nll=nll, best_top1=best_top1, best_nll=best_nll):
            best_epoch, best_top1, best_nll = int(row["epoch"]), top1, nll
    return best_epoch


@dataclass(frozen=True)
class Diagnosis:
    """How well the selection split could discriminate in one trial (recorded in result.json)."""

    rule: str
    ties_at_max: int          # epochs whose validation top-1 equals the maximum over epochs
    epochs: int
    images: int               # images in the selection split
    min_per_class: int        # images of the smallest class in it
    weak: bool
    why: str                  # '' when not weak

    def record(self) -> dict[str, Any]:
        return {"select": self.rule, "select_ties": self.ties_at_max, "select_images": self.images,
                "select_min_per_class": self.min_per_class, "select_weak": self.weak, "select_why": self.why}


def diagnose(rule: str, *, val_top1: Sequence[float], class_counts: Sequence[int]) -> Diagnosis:
    """Flag a selection split that cannot discriminate: with rule `top1`, TIE_LIMIT or more epochs tied at
    the maximum top-1 (the tie-break decides); with any rule that reads the split, fewer than
    MIN_PER_CLASS images in some class. `last` reads nothing, so it is never weak."""
    finite = [float(v) for v in val_top1 if v is not None and math.isfinite(float(v))]
    top = max(finite, default=math.nan)
    ties = sum(v == top for v in finite)
    counts = [int(c) for c in class_counts if int(c) > 0]
    smallest = min(counts, default=0)
    reasons = []
    if rule == "top1" and ties >= TIE_LIMIT:
        reasons.append(f"{ties} of {len(finite)} epochs tie at its maximum top-1 ({100 * top:.2f}%), so the "
                       f"tie-break (lower validation NLL, then the later epoch) selected")
    if selection_rule(rule).reads_split and smallest < MIN_PER_CLASS:
        reasons.append(f"it holds {smallest} image(s) of its smallest class (fewer than {MIN_PER_CLASS}; "
                       f"{sum(counts)} images in all)")
    return Diagnosis(rule=rule, ties_at_max=ties, epochs=len(finite), images=sum(counts),
                     min_per_class=smallest, weak=bool(reasons), why="; ".join(reasons))
