"""The supplement's analyses that need a trained model (torch): the moments of the sorted softmax over a
loader (for Table 1 and Fig. 2 on a trial) and the data of Fig. 4's soft-label examples (a Zipf model's
soft label top-5 against a CE model's top-5). Pure functions over models and tensors: no files, no printing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.zipf import RankMoments

CATEGORY_COLORS: dict[str, str] = {"gt": "darkgreen", "similar": "lightgreen", "unrelated": "red"}


# ----------------------------------------------------------------------------------------------------
# Evaluating a model (torch): sorted-probability moments over a loader
# ----------------------------------------------------------------------------------------------------

def iter_images(batch: Any) -> tuple[Any, Any]:
    """(images, labels) from a loader batch of (img, label[, idx])."""
    return batch[0], batch[1]


def sorted_prob_moments(model: Any, loader: Iterable, *, device: str = "cpu", limit: int = 0) -> RankMoments:
    """Per-rank mean and spread of the model's sorted softmax over the loader's images (at most `limit`
    images when limit > 0). The model must be in eval mode."""
    import torch

    moments = RankMoments(n=0, mean=np.zeros(0), m2=np.zeros(0))
    seen = 0
    with torch.no_grad():
        for batch in loader:
            x, _ = iter_images(batch)
            if limit and seen >= limit:
                break
            if limit:
                x = x[: limit - seen]
            probs = torch.softmax(model(x.to(device)).float(), dim=1)          # (B, C)
            sorted_ = torch.sort(probs, dim=1, descending=True).values
            moments = moments.merge(RankMoments.of(sorted_.cpu().double().numpy()))
            seen += x.shape[0]
    if moments.n == 0:
        raise ValueError("the loader yielded no images")
    return moments


# ----------------------------------------------------------------------------------------------------
# Fig. 4 data: Zipf soft labels against a CE model's predictions
# ----------------------------------------------------------------------------------------------------

def class_category(cls: int, *, label: int, superclasses: Sequence[int] | None) -> str:
    """'gt' for the label, 'similar' for a class of the label's super-class (when the dataset has
    super-classes), else 'unrelated'."""
    if cls == label:
        return "gt"
    if superclasses is not None and superclasses[cls] == superclasses[label]:
        return "similar"
    return "unrelated"


@dataclass(frozen=True)
class Example:
    index: int                      # position in the val dataset
    image: np.ndarray               # (H, W, 3) or (H, W) in [0, 1] for display
    label: int
    zipf_top: list[tuple[int, float]]   # the Zipf soft label's top non-target classes and their weights
    ce_top: list[tuple[int, float]]     # the CE model's top predictions and their probabilities
    zipf_categories: list[str]
    ce_categories: list[str]


def top_classes(values: np.ndarray, *, k: int, label: int, superclasses: Sequence[int] | None,
                exclude_label: bool = False, tiebreak: np.ndarray | None = None
                ) -> tuple[list[tuple[int, float]], list[str]]:
    """The k classes with the largest values and their categories. Ties are ordered by the larger
    `tiebreak` value when given, then by the lower class index."""
    values = np.asarray(values, dtype=np.float64)
    second = np.zeros_like(values) if tiebreak is None else -np.asarray(tiebreak, dtype=np.float64)
    order = np.lexsort((np.arange(len(values)), second, -values))
    if exclude_label:
        order = order[order != label]
    top = [(int(c), float(values[c])) for c in order[:k]]
    return top, [class_category(c, label=label, superclasses=superclasses) for c, _ in top]


def display_image(x: np.ndarray, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the dataset's normalisation: (C, H, W) -> (H, W, 3) or (H, W) for one channel, in [0, 1]."""
    x = np.asarray(x, dtype=np.float64) * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    x = np.clip(x, 0.0, 1.0)
    return x[0] if x.shape[0] == 1 else np.transpose(x[:3], (1, 2, 0))


def zipf_soft_labels(model: Any, x: Any, targets: Any, *, alpha: float = 1.0, upsample: str = "none",
                     extra: Any = None, dense: bool = True) -> tuple[Any, Any]:
    """The Zipf soft labels that `model` would train on for images x: (pdf (B, C) with 0 on the target,
    logits (B, C)), from the methods package's own functions (votes -> counts -> ranks -> weights -> pdf).

    dense: one vote per location of the final feature map (the model's classifier applied there), plus
    `extra` (the extra dense classifier, an nn.Linear) voting on the previous-stage map; dense=False ranks
    the logits themselves. Always the Zipf distribution (1/r)^alpha, as in the paper's Fig. 4."""
    import torch

    from harness.models import classifier, forward_with_maps
    from methods.functional import (
        dense_votes,
        nontarget_pdf,
        rank_weights,
        ranks_from_logits,
        vote_counts,
        zipf_ranks_from_counts,
    )

    with torch.no_grad():
        logits, final_map, prev_map = forward_with_maps(model, x)
        logits = logits.float()
        c = logits.shape[1]
        if dense:
            fc = classifier(model)
            votes = dense_votes(final_map=final_map, weight=fc.weight, bias=fc.bias, upsample=upsample)  # (B, V)
            if extra is not None:
                votes = torch.cat([votes, dense_votes(final_map=prev_map, weight=extra.weight, bias=extra.bias,
                                                      upsample=upsample)], dim=1)
            counts = vote_counts(votes=votes, num_classes=c)                          # (B, C)
            ranks = zipf_ranks_from_counts(counts=counts, max_count=votes.shape[1])  # (B, C)
        else:
            ranks = ranks_from_logits(logits=logits)
        weights = rank_weights(ranks=ranks, distribution="zipf", alpha=alpha)      # (B, C)
        return nontarget_pdf(weights=weights, targets=targets), logits


def pick_indices(n_items: int, *, n: int, seed: int) -> list[int]:
    """n distinct dataset positions drawn with a Generator seeded by `seed`, in drawn order."""
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(n_items)[: min(n, n_items)]]


def build_examples(*, zipf_model: Any, ce_model: Any, dataset: Any, indices: Sequence[int],
                   superclasses: Sequence[int] | None, mean: Sequence[float], std: Sequence[float],
                   alpha: float = 1.0, upsample: str = "none", extra: Any = None, dense: bool = True,
                   k: int = 5, device: str = "cpu") -> list[Example]:
    """Fig. 4 data for the dataset items at `indices` ((img, label[, idx]) each): the Zipf soft label's
    top-k non-target classes (from zipf_model's own votes) and ce_model's top-k softmax predictions."""
    import torch

    items = [dataset[i] for i in indices]
    x = torch.stack([it[0] for it in items]).to(device)                 # (B, C, H, W)
    y = torch.as_tensor([int(it[1]) for it in items], device=device)    # (B,)
    pdf, zipf_logits = zipf_soft_labels(zipf_model, x, y, alpha=alpha, upsample=upsample, extra=extra, dense=dense)
    with torch.no_grad():
        ce_probs = torch.softmax(ce_model(x).float(), dim=1)
    pdf, ce_probs = pdf.cpu().double().numpy(), ce_probs.cpu().double().numpy()
    zipf_logits = zipf_logits.cpu().double().numpy()
    out = []
    for row, (i, item) in enumerate(zip(indices, items, strict=True)):
        label = int(item[1])
        # every unvoted class shares one weight: order those ties by the Zipf model's own logits
        z_top, z_cat = top_classes(pdf[row], k=k, label=label, superclasses=superclasses, exclude_label=True,
                                   tiebreak=zipf_logits[row])
        c_top, c_cat = top_classes(ce_probs[row], k=k, label=label, superclasses=superclasses)
        out.append(Example(index=int(i), image=display_image(item[0].cpu().numpy(), mean=mean, std=std), label=label,
                           zipf_top=z_top, ce_top=c_top, zipf_categories=z_cat, ce_categories=c_cat))
    return out
