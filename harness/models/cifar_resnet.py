"""The CIFAR ResNets of the official Zipf's LS / CS-KD code, registered into timm: pre-activation and
post-activation ResNet-18 (3x3 stride-1 stem, no max-pool); `tiny_resnet` (tiny.py) reuses PreActResNet."""
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from harness.models.base import StagedNet, build_registered_model, default_cfg

__all__ = ["BasicBlock", "CifarResNet", "PreActBlock", "PreActResNet"]

# timm's register_model reads `default_cfgs` from the module that registers a model
default_cfgs = generate_default_cfgs({
    "cifar_preact_resnet18": default_cfg(),
    "cifar_resnet18": default_cfg(),
})


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; the 1x1 projection shortcut (no BN) reads the pre-activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
                         if stride != 1 or in_chs != out_chs else None)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return self.conv2(F.relu(self.bn2(self.conv1(pre)))) + skip


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_chs))
                         if stride != 1 or in_chs != out_chs else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def _resnet_stages(block: type[nn.Module], block_counts: Sequence[int], widths: Sequence[int]) -> list[nn.Module]:
    """CIFAR ResNet stages: the first block of every stage after the first strides 2."""
    stages, in_chs = [], widths[0]
    for i, (count, width) in enumerate(zip(block_counts, widths, strict=True)):
        stages.append(nn.Sequential(*[block(in_chs if j == 0 else width, width, stride=2 if (i > 0 and j == 0) else 1)
                                      for j in range(count)]))
        in_chs = width
    return stages


class PreActResNet(StagedNet):
    """Pre-activation ResNet for small images: conv3x3(stride 1)-BN-ReLU stem, no max-pool, PreAct stages
    (the first of each stage after the first strides 2); the last stage's output is pooled as it is."""

    def __init__(self, block_counts: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=_resnet_stages(PreActBlock, block_counts, widths), stage_chs=list(widths),
                         stage_reductions=[2 ** i for i in range(len(widths))], final_norm=None,
                         tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


class CifarResNet(StagedNet):
    """Post-activation ResNet for small images: conv3x3(stride 1)-BN-ReLU stem, no max-pool, basic blocks."""

    def __init__(self, block_counts: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=_resnet_stages(BasicBlock, block_counts, widths), stage_chs=list(widths),
                         stage_reductions=[2 ** i for i in range(len(widths))], final_norm=None,
                         tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


@register_model
def cifar_preact_resnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 of the official Zipf's LS / CS-KD CIFAR code."""
    block_counts = (2, 2, 2, 2)
    return build_registered_model(PreActResNet, "cifar_preact_resnet18", pretrained, levels=1 + len(block_counts),
                                  block_counts=block_counts, widths=(64, 128, 256, 512), **kwargs)


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Post-activation CIFAR ResNet-18 (3x3 stem, no max-pool)."""
    block_counts = (2, 2, 2, 2)
    return build_registered_model(CifarResNet, "cifar_resnet18", pretrained, levels=1 + len(block_counts),
                                  block_counts=block_counts, widths=(64, 128, 256, 512), **kwargs)
