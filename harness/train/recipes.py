"""The training recipes beyond SGD with steps (docs/training.md, "Recipes"): mixup/CutMix, model EMA and the
per-sample augmentation policies, on the well-kept implementations (timm's `Mixup` and `ModelEmaV3`,
torchvision.transforms.v2's `RandAugment` and `TrivialAugmentWide`). The optimiser is `optim.make_optimizer`,
the schedule the pure `metrics.lr_at`.

Mixup/CutMix have timm's semantics (`Mixup(mode="batch")`): per batch, with probability `mixup_prob`, one
lam ~ Beta(alpha, alpha) (CutMix with probability `switch_prob` when both are on; CutMix's lam corrected to
the pasted box's area), and sample i mixed with sample B-1-i (the batch flipped). A method then gets both
target sets and lam (`StepContext.targets_b`, `lam`): one that declares `mixes_targets` uses them itself;
every other gets the standard mixed criterion lam * L(y_a) + (1 - lam) * L(y_b), part by part.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from harness.config.spec import TrainConfig
from methods import Method, StepContext


class Mixer:
    """timm's batch Mixup/CutMix on a device batch: `(x, y) -> (x mixed in place, y_b, lam)`; (x, None, None)
    when the batch is left unmixed (lam = 1). The draws are timm's, from numpy's global generator (seeded with
    the trial and kept in its checkpoint); lam reaches the device as a fill, not a copy from the host."""

    def __init__(self, t: TrainConfig, num_classes: int):
        from timm.data import Mixup

        self.mix = Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, prob=t.mixup_prob, switch_prob=t.switch_prob,
                         mode="batch", label_smoothing=0.0, num_classes=num_classes)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        # timm's batch mixing: x <- lam * x + (1 - lam) * x.flip(0), or x.flip(0)'s box pasted (CutMix)
        lam = float(self.mix._mix_batch(x))
        if lam == 1.0:
            return x, None, None
        return x, y.flip(0), torch.full((), lam, device=x.device)


def make_mixer(t: TrainConfig, num_classes: int) -> Mixer | None:
    return Mixer(t, num_classes) if (t.mixup > 0 or t.cutmix > 0) and t.mixup_prob > 0 else None


def mixed_loss(loss_fn: Callable[[Tensor, Tensor, StepContext], dict[str, Tensor]], method: Method,
               logits: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, Tensor]:
    """The method's losses for a batch that may be mixed: lam * L(y_a) + (1 - lam) * L(y_b) for each part,
    unless the method mixes the targets itself (`Method.mixes_targets`) or the batch is unmixed."""
    if ctx.targets_b is None or ctx.lam is None or method.mixes_targets:
        return loss_fn(logits, targets, ctx)
    a = loss_fn(logits, targets, ctx)
    b = loss_fn(logits, ctx.targets_b, ctx)
    return {k: ctx.lam * a[k] + (1 - ctx.lam) * b[k] for k in a}


def make_ema(model: torch.nn.Module, decay: float) -> Any:
    """timm's ModelEmaV3 of `model` (a copy: ema <- decay * ema + (1 - decay) * weights after every step, the
    buffers too), or None for decay 0."""
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)


def augment_op(name: str) -> Any:
    """The per-sample policy of `train.augment` (torchvision.transforms.v2, its default parameters), or None."""
    from torchvision.transforms import v2

    return {"none": None, "randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[name]


def with_augment(dataset: Any, name: str) -> Any:
    """A training split whose transform starts with the policy: on each uint8 image (or PIL image) before the
    crop and flip, per sample, in the loader's workers as timm does. The original split is left as it is."""
    op = augment_op(name)
    if op is None:
        return dataset
    from torchvision.transforms import v2

    out = copy.copy(dataset)  # shares the files, labels and the bad-file mask
    out.transform = v2.Compose([op(), dataset.transform])
    return out


def describe(t: TrainConfig) -> str | None:
    """One line naming the recipe settings in use beyond SGD with steps, or None."""
    parts = []
    if t.optimizer != "sgd" or t.schedule != "step":
        warm = f", warm-up {t.warmup_epochs} epoch(s)" if t.warmup_epochs else ""
        parts.append(f"{t.optimizer} lr {t.lr:g} wd {t.weight_decay:g}, {t.schedule} schedule{warm}")
    if t.mixup > 0 or t.cutmix > 0:
        parts.append(f"mixup {t.mixup:g} / cutmix {t.cutmix:g} (prob {t.mixup_prob:g}, switch {t.switch_prob:g}; "
                     f"methods get the mixed criterion unless they mix targets themselves)")
    if t.augment != "none":
        parts.append(f"{t.augment} per sample")
    if t.ema > 0:
        parts.append(f"EMA {t.ema:g} (evaluation, selection and the test use the EMA weights)")
    return "recipe: " + "; ".join(parts) if parts else None


__all__ = ["Mixer", "augment_op", "describe", "make_ema", "make_mixer", "mixed_loss", "with_augment"]
