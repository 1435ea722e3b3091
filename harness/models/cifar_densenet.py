"""The CIFAR DenseNet-121 of the official Zipf's LS / CS-KD code, registered into timm."""
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from harness.models.base import StagedNet, build_registered_model, default_cfg

__all__ = ["CifarDenseNet", "DenseLayer", "Transition"]

# timm's register_model reads `default_cfgs` from the module that registers a model
default_cfgs = generate_default_cfgs({"cifar_densenet121": default_cfg(first_conv="stem")})


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bn_size * growth) - BN-ReLU-conv3x3 (growth); the new maps are prepended to the input."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4):
        super().__init__()
        mid = bn_size * growth_rate
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([new, x], dim=1)  # (B, growth + C_in, H, W)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then 2x2 average pooling."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class CifarDenseNet(StagedNet):
    """DenseNet-BC for small images: conv3x3 stem (2 x growth channels, no norm, no pooling); stages 1-3 are a
    dense block plus its transition (halving channels and size), stage 4 a dense block; final BN + ReLU.

    Taps: stem, the transition outputs (the previous-stage map is the last dense block's input, as in the
    official Zipf's LS code's extra dense layer), and the final BN + ReLU output.
    """

    def __init__(self, block_counts: Sequence[int] = (6, 12, 24, 16), growth_rate: int = 32,
                 reduction: float = 0.5, bn_size: int = 4, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        chs = 2 * growth_rate
        stem_chs = chs
        stages, stage_chs, reductions = [], [], []
        for i, count in enumerate(block_counts):
            layers: list[nn.Module] = []
            for _ in range(count):
                layers.append(DenseLayer(chs, growth_rate, bn_size))
                chs += growth_rate
            if i < len(block_counts) - 1:
                out_chs = int(math.floor(chs * reduction))
                layers.append(Transition(chs, out_chs))
                chs = out_chs
            stages.append(nn.Sequential(*layers))
            stage_chs.append(chs)
            reductions.append(2 ** min(i + 1, len(block_counts) - 1))
        super().__init__(stem=nn.Conv2d(in_chans, stem_chs, 3, padding=1, bias=False), stem_chs=stem_chs,
                         stages=stages, stage_chs=stage_chs, stage_reductions=reductions,
                         final_norm=BatchNormAct2d(chs, act_layer=nn.ReLU), tap_final_norm=True,
                         num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


@register_model
def cifar_densenet121(pretrained: bool = False, **kwargs: Any) -> CifarDenseNet:
    """CIFAR DenseNet-121 (growth 32) of the official Zipf's LS / CS-KD code."""
    block_counts = (6, 12, 24, 16)  # taps: the stem, the three transitions, the final norm
    return build_registered_model(CifarDenseNet, "cifar_densenet121", pretrained, levels=1 + len(block_counts),
                                  block_counts=block_counts, growth_rate=32, **kwargs)
