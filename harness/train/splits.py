"""The three splits of a trial under each protocol, and the held-out validation split carved for `clean`.

- `paper`: fit on the whole training split; select the epoch on the evaluation split and report it (the
  official code's behaviour; optimistic, since the reported split also picks the epoch).
- `clean`: fit on the training split minus a stratified held-out part; select on that part; evaluate the
  evaluation split ("test") only at the end.

The split depends on the labels, `holdout` and `holdout_seed` only (never on the trial seed or the method),
so every method and every seed of a sweep sees the same three splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness.errors import UserError

PROTOCOLS = ("clean", "paper")


@dataclass(frozen=True)
class Splits:
    """Positions into the dataset's training split; `select` is None under `paper` (select on the test split)."""

    protocol: str
    fit: Tensor            # (N_fit,) int64, ascending: the samples trained on
    select: Tensor | None  # (N_val,) int64, ascending: the held-out validation samples (clean)


def per_class_holdout(counts: Tensor, holdout: float) -> Tensor:
    """How many images of each class to hold out. counts (K,) -> (K,) int64.

    A fraction in (0, 1) takes round(holdout * n_c) of class c; a whole number H >= 1 takes
    round(H * n_c / N) (stratified, so the total is H up to rounding). Every class of two or more images
    gives at least one (why: on tiny sets a share that rounds to 0 everywhere would leave nothing to select
    on) and keeps at least one training image.
    """
    n = counts.double()
    share = holdout * n if holdout < 1 else holdout * n / n.sum()
    take = torch.round(share).long().clamp_min(1)  # round half to even, as Python's round: 12.5 -> 12
    return torch.minimum(take, (counts - 1).clamp_min(0))


def holdout_split(labels: Tensor, *, holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit positions, held-out positions), both ascending, stratified per class. labels (N,) int64.

    One seeded permutation of all N positions; each class's held-out images are its first k_c in that order.
    """
    labels = labels.cpu().long()
    counts = torch.bincount(labels)                                      # (K,)
    take = per_class_holdout(counts, holdout)                            # (K,)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen)                    # (N,)
    y = labels[perm]
    # rank of each permuted position among the positions of its class: stable sort groups the classes in
    # permutation order, so rank = position in the sorted order - start of the class's block
    order = torch.sort(y, stable=True).indices                           # (N,)
    starts = torch.cumsum(counts, 0) - counts                            # (K,)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(y)) - starts[y[order]]
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[perm[rank < take[y]]] = True
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


def make_splits(labels: Tensor, *, protocol: str, holdout: float, holdout_seed: int) -> Splits:
    if protocol == "paper":
        return Splits(protocol, fit=torch.arange(len(labels)), select=None)
    if protocol != "clean":
        raise UserError(f"train.protocol is {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    if holdout >= len(labels):  # else every class would silently keep one training image
        raise UserError(f"train.holdout is {holdout:g} images, but the training split has {len(labels):,}; allowed: "
                        f"fewer images than that, or a fraction in (0, 1)")
    fit, select = holdout_split(labels, holdout=holdout, seed=holdout_seed)
    if len(select) == 0:
        raise UserError(f"train.holdout is {holdout!r}: that holds out no image of the {len(labels)} training "
                        f"images; allowed: a fraction in (0, 1) or a whole number of images >= 1")
    return Splits(protocol, fit=fit, select=select)
