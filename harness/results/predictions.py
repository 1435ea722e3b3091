"""The per-image predictions of a trial (`trials/<key>/predictions.npz`): the one reader, and the views of one
split that the metrics take. The format is documented in docs/results.md ("Per-image predictions"); the file
is written by harness/train/evaluation.py.

Why a split's view carries `msp` and `pred` beside the logits: the logits are kept in float16 (bounded size),
while the loop's own top-1 and ECE are computed from float32 logits; the float32 maximum softmax probability
and arg-max kept per image let every number of result.json be recomputed from the file exactly.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import UserError

FILE = "predictions.npz"
# the splits a file may hold: the selected epoch's test and selection split, and the last epoch's
PREFIXES = ("test", "val", "last_test", "last_val")


def read_predictions(trial_dir: str | Path) -> dict[str, np.ndarray] | None:
    """Every array of `trial_dir`/predictions.npz (None when there is none); a damaged file is a UserError."""
    path = Path(trial_dir) / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); delete it and run `tfbench evaluate` on "
                        f"its results folder to write it again") from None


@dataclass(frozen=True)
class Split:
    """One split's predictions. `probs` (N, C) float64 when the file holds full logits (C <= 1000), else None."""

    targets: np.ndarray            # (N,) int64
    pred: np.ndarray               # (N,) arg-max of the float32 logits
    msp: np.ndarray                # (N,) float32 maximum softmax probability
    logsumexp: np.ndarray          # (N,) float32 log-sum-exp of the logits (minus the energy score)
    logits: np.ndarray | None      # (N, C) float64 from the stored float16, or None (top form)
    target_logit: np.ndarray       # (N,) float64 the true class's logit

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.targets

    @property
    def probs(self) -> np.ndarray | None:
        return None if self.logits is None else softmax(self.logits)

    @property
    def nll(self) -> np.ndarray:
        """(N,) per-image negative log-likelihood of the true class."""
        return self.logsumexp.astype(np.float64) - self.target_logit


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)                  # (N, C)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)                           # (N, 1)
    return (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]


def split(pred: dict[str, np.ndarray], prefix: str) -> Split | None:
    """The view of one split (`test`, `val`, `last_test`, `last_val`), or None when the file lacks it."""
    base = prefix.removeprefix("last_")
    if f"{base}_targets" not in pred or f"{prefix}_msp" not in pred:
        return None
    targets = pred[f"{base}_targets"].astype(np.int64)
    full = pred.get(f"{prefix}_logits")
    logits = None if full is None else full.astype(np.float64)
    if logits is not None:
        target_logit = logits[np.arange(len(targets)), targets]
    else:
        target_logit = pred[f"{prefix}_target_logits"].astype(np.float64)
    return Split(targets=targets, pred=pred[f"{prefix}_pred"].astype(np.int64), msp=pred[f"{prefix}_msp"],
                 logsumexp=pred[f"{prefix}_logsumexp"], logits=logits, target_logit=target_logit)
