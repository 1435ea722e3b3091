"""Small models that train in seconds on CPU (digits, synthetic data), registered into timm."""
import itertools
import operator
from collections.abc import Sequence
from typing import Any

from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import nn

from harness.models.base import StagedNet, build_registered_model, default_cfg
from harness.models.cifar_resnet import PreActResNet

__all__ = ["TinyCNN"]

# timm's register_model reads `default_cfgs` from the module that registers a model
default_cfgs = generate_default_cfgs({
    "tiny_cnn": default_cfg(input_size=(3, 16, 16)),
    "tiny_resnet": default_cfg(input_size=(3, 16, 16)),
})

_TINY_CNN_STRIDES = (1, 2, 2)


class TinyCNN(StagedNet):
    """conv3x3-BN-ReLU stem and three conv3x3-BN-ReLU stages (strides 1, 2, 2): 2x2 final map at 8x8 input."""

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 64), strides: Sequence[int] = _TINY_CNN_STRIDES,
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        stages = [ConvNormAct(widths[i], widths[i + 1], 3, stride=s, act_layer=nn.ReLU) for i, s in enumerate(strides)]
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=stages, stage_chs=list(widths[1:]),
                         stage_reductions=list(itertools.accumulate(strides, operator.mul)), final_norm=None,
                         tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> TinyCNN:
    """Three conv stages, ~47k parameters."""
    kwargs.setdefault("strides", _TINY_CNN_STRIDES)
    return build_registered_model(TinyCNN, "tiny_cnn", pretrained, levels=1 + len(kwargs["strides"]), **kwargs)


@register_model
def tiny_resnet(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet with one block per stage, widths 16-32-64."""
    block_counts = (1, 1, 1)
    return build_registered_model(PreActResNet, "tiny_resnet", pretrained, levels=1 + len(block_counts),
                                  block_counts=block_counts, widths=(16, 32, 64), **kwargs)
