"""A control method with a long display label, for sweeps/figures_check.yaml: cross-entropy written by hand.

Why: a paper's figures must hold a user's method whose label is a sentence, not a short registered name;
this one's label is long on purpose. Imported by the sweep file (`imports:`), like any user's method file.
"""
from __future__ import annotations

import torch.nn.functional as F

from methods import Method, register


@register("ce_long_label")
class CELongLabel(Method):
    """Plain cross-entropy on the hard labels, shown under a long label."""

    label = "Cross-entropy with a deliberately long display label (control)"

    def loss(self, logits, targets, ctx):
        ce = F.cross_entropy(logits.float(), targets)
        return {"loss": ce, "ce": ce.detach()}
