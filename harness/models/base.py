"""The skeleton tfbench's models share, with timm's model API, and the one builder their timm entrypoints call.

A model is stem -> stages (an nn.Sequential) -> final_norm -> global pool -> dropout -> fc. `forward_features`
calls the stem, the stages and the final norm in turn (no Python list of modules), so the model scripts,
traces with FX and exports; no annotation here is a string (no `from __future__ import annotations`), because
FX copies the forward's annotations into the code it generates and TorchScript must then resolve them.
"""
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from harness.errors import UserError

__all__ = ["MIN_INPUT_SIZE", "StagedNet", "build_registered_model", "default_cfg"]

# the smallest input side every model here accepts (each stride-2 step still leaves at least one location)
MIN_INPUT_SIZE = 8

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)


def default_cfg(**kwargs: Any) -> dict[str, Any]:
    """timm's per-model config (`default_cfgs[name]` in the registering module) with CIFAR-10 defaults."""
    # no url / hf_hub_id: these models have no pretrained weights, so timm can never download anything for them
    return {"num_classes": 10, "input_size": (3, 32, 32), "min_input_size": (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
            "pool_size": (4, 4), "crop_pct": 1.0, "interpolation": "bilinear", "mean": _CIFAR_MEAN,
            "std": _CIFAR_STD, "first_conv": "stem.conv", "classifier": "fc", **kwargs}


class StagedNet(nn.Module):
    """stem -> stages -> final_norm -> global pool -> dropout -> fc, with timm's model API.

    `tap_final_norm`: whether the last feature tap is final_norm's output (DenseNet, like timm's densenet
    `norm5`) instead of the last stage's (ResNets). `feature_info` lists the stem, each tapped stage and
    that last tap, as timm does; the last tap is always the map that global pooling turns into the head input.
    """

    def __init__(self, *, stem: nn.Module, stem_chs: int, stages: Sequence[nn.Module],
                 stage_chs: Sequence[int], stage_reductions: Sequence[int], final_norm: nn.Module | None,
                 tap_final_norm: bool, num_classes: int, drop_rate: float, global_pool: str):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = float(drop_rate)  # a float attribute, so TorchScript types it as F.dropout's p
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.num_features = self.head_hidden_size = stage_chs[-1]
        # positions in the sequence [stem, *stages, final_norm] whose outputs are feature taps
        n = len(stages)
        self._taps = [0, *range(1, n + 1 - tap_final_norm), *([n + 1] if tap_final_norm else [])]
        self._kept_taps = len(self._taps)  # fewer after prune_intermediate_layers
        names = ["stem", *[f"stages.{i}" for i in range(n)], "final_norm"]
        chs = [stem_chs, *stage_chs, stage_chs[-1]]
        reds = [1, *stage_reductions, stage_reductions[-1]]
        self.feature_info = [dict(num_chs=chs[p], reduction=reds[p], module=names[p]) for p in self._taps]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    # timm's head API
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = global_pool if global_pool is not None else self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.final_norm(x)
        return x  # (B, num_features, H', W')

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)  # (B, num_features)
        if self.drop_rate != 0.0:  # skipped at 0 so no random numbers are drawn (seeded runs stay as they were)
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's contract: `indices` None = all taps, int n = the last n, a list = those (negative from the
        end); returns `(final_features, [taps])`, or `[taps]` with `intermediates_only`. `norm` has nothing
        to apply (the last tap already is the normalised map where the model has a final norm)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self._taps), indices)
        if max_index >= self._kept_taps:
            raise ValueError(f"feature index {max_index} was pruned (prune_intermediate_layers kept "
                             f"0..{self._kept_taps - 1})")
        wanted = {self._taps[i] for i in take}
        n = len(self.stages)
        # the last position of [stem, *stages, final_norm] to run
        end = self._taps[max_index] if stop_early or intermediates_only else n + 1
        intermediates = []
        x = self.stem(x)
        if 0 in wanted:
            intermediates.append(x)
        for pos, stage in enumerate(self.stages[:end], start=1):
            x = stage(x)
            if pos in wanted:
                intermediates.append(x)
        if end == n + 1:
            x = self.final_norm(x)
            if end in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's contract: drop the layers the taps `indices` do not need (timm's getter feature wrapper calls
        this); returns those taps as indices from the start. A final norm that is itself the last tap kept
        stays (DenseNet, as timm's densenet); one after the last tap goes with `prune_norm`."""
        take, max_index = feature_take_indices(len(self._taps), indices)
        last = self._taps[max_index]
        n = len(self.stages)
        prune_end = max_index < len(self._taps) - 1
        self.stages = self.stages[:last]  # stage i sits at position i + 1
        if last <= n and (prune_norm or prune_end):
            self.final_norm = nn.Identity()
        if prune_end:  # the features now end at the last kept tap; the head was sized for the final ones
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        self._kept_taps = max_index + 1
        return take


def build_registered_model(cls: type[nn.Module], variant: str, pretrained: bool, *, levels: int,
                           **kwargs: Any) -> nn.Module:
    """What a tfbench timm entrypoint returns: `cls(**kwargs)` through timm's builder, with `features_only`
    defaulting to all `levels` feature taps (timm's own default asks for five) and no pretrained weights."""
    if pretrained:
        raise UserError(f"model {variant}: there are no pretrained weights for it (it is trained from scratch)")
    for key in ("drop_path_rate", "drop_block_rate"):  # timm's generic kwargs; these networks have neither
        if kwargs.pop(key, None):
            raise UserError(f"model {variant}: {key} is not supported (no stochastic depth or drop block)")
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(levels)))
    return build_model_with_cfg(cls, variant, pretrained=False, feature_cfg=feature_cfg, **kwargs)
