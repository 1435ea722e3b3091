"""Models: our CIFAR / small networks registered into timm's own registry, one factory, and the one uniform
call that returns logits together with the final and previous-stage feature maps.

Importing this module registers five models with timm, so `timm.create_model(name, num_classes=...)` builds
them like any timm model:

  cifar_preact_resnet18  the pre-activation ResNet-18 of the official Zipf's LS and CS-KD code (3x3 stride-1
                         stem conv + BN + ReLU, no max-pool, PreAct blocks [2, 2, 2, 2], widths 64..512,
                         the layer4 output pooled directly: that code has no final BN + ReLU); 4x4 final map
                         at 32x32 input
  cifar_resnet18         the post-activation CIFAR ResNet-18 (3x3 stem, no max-pool, basic blocks)
  cifar_densenet121      the CIFAR DenseNet-121 of the same code (growth 32, blocks 6-12-24-16, bottleneck 4x
                         growth, reduction 0.5, 3x3 stem conv with 2x growth channels, final BN + ReLU)
  tiny_cnn               3 conv stages, ~47k parameters: trains in seconds on CPU (digits, synthetic)
  tiny_resnet            a pre-activation ResNet with one block per stage, widths 16-32-64 (~78k parameters)

All five follow timm's model API: `num_features`, `get_classifier()`, `reset_classifier()`,
`forward_features()` (the final map, before pooling), `forward_head(x, pre_logits=False)`, `feature_info`
and `forward_intermediates(...)` with timm's signature and return convention; `features_only=True` works.
Initialisation is PyTorch's default, as in the official code.

The maps contract (`forward_with_maps`) is described on that function.
"""
from __future__ import annotations

import itertools
import math
import operator
import weakref
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ConvNormAct, NormMlpClassifierHead, create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from harness.errors import UserError

__all__ = [
    "OUR_MODELS", "MapsForward", "classifier", "create_model", "describe_models", "feature_channels",
    "forward_plain", "forward_with_maps",
]

# the smallest input side every model here accepts (each stride-2 step still leaves at least one location)
MIN_INPUT_SIZE = 8

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # no url / hf_hub_id: these models have no pretrained weights, so timm can never download anything for them
    return {"num_classes": 10, "input_size": (3, 32, 32), "min_input_size": (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
            "pool_size": (4, 4), "crop_pct": 1.0, "interpolation": "bilinear", "mean": _CIFAR_MEAN,
            "std": _CIFAR_STD, "first_conv": "stem.conv", "classifier": "fc", **kwargs}


# timm's register_model reads `default_cfgs` from this module when a model is registered
default_cfgs = generate_default_cfgs({
    "cifar_preact_resnet18": _cfg(),
    "cifar_resnet18": _cfg(),
    "cifar_densenet121": _cfg(first_conv="stem"),
    "tiny_cnn": _cfg(input_size=(3, 16, 16)),
    "tiny_resnet": _cfg(input_size=(3, 16, 16)),
})

OUR_MODELS: dict[str, str] = {
    "cifar_preact_resnet18": "pre-activation ResNet-18 of the official Zipf's LS / CS-KD code (~11.2M params, 32x32)",
    "cifar_resnet18": "post-activation CIFAR ResNet-18, 3x3 stem, no max-pool (~11.2M params, 32x32)",
    "cifar_densenet121": "CIFAR DenseNet-121, growth 32, blocks 6-12-24-16 (~7.0M params, 32x32)",
    "tiny_cnn": "3 conv stages (~47k params): seconds per epoch on CPU, any input >= 8x8",
    "tiny_resnet": "pre-activation ResNet, one block per stage, widths 16-32-64 (~78k params), any input >= 8x8",
}


# --- building blocks ------------------------------------------------------------------------------

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


# --- the shared timm-style skeleton ---------------------------------------------------------------

class _StagedNet(nn.Module):
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
        self.drop_rate = drop_rate
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.num_features = self.head_hidden_size = stage_chs[-1]
        # positions in the sequence [stem, *stages, final_norm] whose outputs are feature taps
        n = len(stages)
        self._taps = [0, *range(1, n + 1 - tap_final_norm), *([n + 1] if tap_final_norm else [])]
        names = ["stem", *[f"stages.{i}" for i in range(n)], "final_norm"]
        chs = [stem_chs, *stage_chs, stage_chs[-1]]
        reds = [1, *stage_reductions, stage_reductions[-1]]
        self.feature_info = [dict(num_chs=chs[p], reduction=reds[p], module=names[p]) for p in self._taps]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def _sequence(self) -> list[nn.Module]:
        return [self.stem, *self.stages, self.final_norm]

    # timm's head API
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = global_pool if global_pool is not None else self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_features(self, x: Tensor) -> Tensor:
        for module in self._sequence():
            x = module(x)
        return x  # (B, num_features, H', W')

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)  # (B, num_features)
        if self.drop_rate:
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
        wanted = {self._taps[i] for i in take}
        sequence = self._sequence()
        if stop_early or intermediates_only:
            sequence = sequence[:self._taps[max_index] + 1]
        intermediates = []
        for pos, module in enumerate(sequence):
            x = module(x)
            if pos in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates


def _resnet_stages(block: type[nn.Module], block_counts: Sequence[int], widths: Sequence[int]) -> list[nn.Module]:
    """CIFAR ResNet stages: the first block of every stage after the first strides 2."""
    stages, in_chs = [], widths[0]
    for i, (count, width) in enumerate(zip(block_counts, widths, strict=True)):
        stages.append(nn.Sequential(*[block(in_chs if j == 0 else width, width, stride=2 if (i > 0 and j == 0) else 1)
                                      for j in range(count)]))
        in_chs = width
    return stages


class PreActResNet(_StagedNet):
    """Pre-activation ResNet for small images: conv3x3(stride 1)-BN-ReLU stem, no max-pool, PreAct stages
    (the first of each stage after the first strides 2); the last stage's output is pooled as it is."""

    def __init__(self, block_counts: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=_resnet_stages(PreActBlock, block_counts, widths), stage_chs=list(widths), stage_reductions=[2 ** i for i in range(len(widths))],
                         final_norm=None, tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate,
                         global_pool=global_pool)


class CifarResNet(_StagedNet):
    """Post-activation ResNet for small images: conv3x3(stride 1)-BN-ReLU stem, no max-pool, basic blocks."""

    def __init__(self, block_counts: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=_resnet_stages(BasicBlock, block_counts, widths), stage_chs=list(widths), stage_reductions=[2 ** i for i in range(len(widths))],
                         final_norm=None, tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate,
                         global_pool=global_pool)


class CifarDenseNet(_StagedNet):
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


class TinyCNN(_StagedNet):
    """conv3x3-BN-ReLU stem and three conv3x3-BN-ReLU stages (strides 1, 2, 2): 2x2 final map at 8x8 input."""

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 64), strides: Sequence[int] = (1, 2, 2),
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        stages = [ConvNormAct(widths[i], widths[i + 1], 3, stride=s, act_layer=nn.ReLU) for i, s in enumerate(strides)]
        super().__init__(stem=ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU), stem_chs=widths[0],
                         stages=stages, stage_chs=list(widths[1:]),
                         stage_reductions=list(itertools.accumulate(strides, operator.mul)), final_norm=None,
                         tap_final_norm=False, num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


# --- timm registration --------------------------------------------------------------------------

def _build(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise UserError(f"model {variant}: there are no pretrained weights for it (it is trained from scratch)")
    for key in ("drop_path_rate", "drop_block_rate"):  # timm's generic kwargs; these networks have neither
        if kwargs.pop(key, None):
            raise UserError(f"model {variant}: {key} is not supported (no stochastic depth or drop block)")
    return build_model_with_cfg(cls, variant, pretrained=False, feature_cfg=dict(flatten_sequential=True), **kwargs)


@register_model
def cifar_preact_resnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 of the official Zipf's LS / CS-KD CIFAR code."""
    return _build(PreActResNet, "cifar_preact_resnet18", pretrained, block_counts=(2, 2, 2, 2),
                  widths=(64, 128, 256, 512), **kwargs)


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Post-activation CIFAR ResNet-18 (3x3 stem, no max-pool)."""
    return _build(CifarResNet, "cifar_resnet18", pretrained, block_counts=(2, 2, 2, 2),
                  widths=(64, 128, 256, 512), **kwargs)


@register_model
def cifar_densenet121(pretrained: bool = False, **kwargs: Any) -> CifarDenseNet:
    """CIFAR DenseNet-121 (growth 32) of the official Zipf's LS / CS-KD code."""
    return _build(CifarDenseNet, "cifar_densenet121", pretrained, block_counts=(6, 12, 24, 16), growth_rate=32,
                  **kwargs)


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> TinyCNN:
    """Three conv stages, ~47k parameters."""
    return _build(TinyCNN, "tiny_cnn", pretrained, **kwargs)


@register_model
def tiny_resnet(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet with one block per stage, widths 16-32-64."""
    return _build(PreActResNet, "tiny_resnet", pretrained, block_counts=(1, 1, 1), widths=(16, 32, 64), **kwargs)


# --- the factory ----------------------------------------------------------------------------------

def _side(input_size: int | Sequence[int] | None) -> int | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return input_size
    return min(int(s) for s in tuple(input_size)[-2:])  # (H, W) or (C, H, W)


def create_model(name: str, *, num_classes: int, in_chans: int = 3,
                 input_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """The one model factory: `timm.create_model(name, pretrained=False, ...)`; never downloads weights.

    `name` is one of ours (OUR_MODELS) or any timm model name (`timm.list_models()`). `input_size` (side,
    (H, W) or (C, H, W)) is checked against our models' minimum and passed as `img_size` to timm models
    whose input size is fixed (ViTs). Other keyword arguments go to the model (drop_rate, global_pool...).
    """
    if not timm.is_model(name):
        raise UserError(f"unknown model {name!r}: ours are {', '.join(OUR_MODELS)}; any timm model name also "
                        f"works (see timm.list_models())")
    if kwargs.get("pretrained") or kwargs.get("checkpoint_path"):
        raise UserError(f"model {name}: pretrained weights are not supported here (every trial trains from scratch)")
    kwargs.pop("pretrained", None)
    side = _side(input_size)
    if side is not None and name in OUR_MODELS and side < MIN_INPUT_SIZE:
        raise UserError(f"model {name}: input size {side} is too small (at least {MIN_INPUT_SIZE})")
    cfg = timm.get_pretrained_cfg(name)
    if side is not None and cfg is not None and cfg.fixed_input_size and "img_size" not in kwargs:
        size = tuple(input_size)[-2:] if not isinstance(input_size, int) else input_size
        kwargs["img_size"] = size
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:  # an argument the model does not take
        raise UserError(f"model {name}: bad model argument ({e})") from e


def describe_models() -> list[tuple[str, str]]:
    """[(name, description), ...] of our models, for listings; any timm name works as well."""
    return list(OUR_MODELS.items())


# --- the forward calls the harness uses -------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    """The model behind torch.compile's wrapper (its forward_intermediates is the eager one)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError("forward_with_maps on a DistributedDataParallel model would bypass its gradient "
                        "synchronisation: wrap the model in MapsForward before DistributedDataParallel")
    return getattr(model, "_orig_mod", model)


def classifier(model: nn.Module) -> nn.Linear:
    """The model's final classifier (timm's get_classifier()); it must be one nn.Linear."""
    fc = _unwrap(model).get_classifier()
    if not isinstance(fc, nn.Linear):
        raise UserError(f"model {type(_unwrap(model)).__name__}: its classifier is {type(fc).__name__}, not one "
                        f"nn.Linear, so dense votes from its feature map are not defined")
    return fc


def _prev_tap(model: nn.Module) -> int:
    """Index (from the end) among the last two feature taps of the previous-stage map: where the last tap is
    the final map itself (same channels), the one before it; where a head conv follows the last tap
    (EfficientNet's conv_head), the last tap."""
    info = model.feature_info
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    return -2 if info[-1]["num_chs"] == model.num_features else -1


def feature_channels(model: nn.Module) -> tuple[int, int]:
    """(D, D'): channels of the final map and of the previous-stage map that forward_with_maps returns."""
    model = _unwrap(model)
    info = model.feature_info
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    return int(model.num_features), int(info[_prev_tap(model)]["num_chs"])


# head kind per model instance, found once by a numeric probe (see _head_kind)
_HEAD_KINDS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _to_nchw(model: nn.Module, x: Tensor) -> Tensor:
    if x.ndim != 4:
        raise UserError(f"model {type(model).__name__}: its final features have shape {tuple(x.shape)}, not a "
                        f"(B, C, H, W) map (a transformer?); methods that need feature maps cannot use it")
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    return x


def _pooled_norm_map(final: Tensor, norm: nn.LayerNorm) -> Tensor:
    """ConvNeXt-style heads normalise the pooled vector: LN(mean_hw F). Normalising every location with the
    pooled vector's own mean and variance is affine, so its spatial mean is exactly LN(mean_hw F): the map
    whose global pool is the classifier input."""
    pooled = final.mean(dim=(2, 3))  # (B, D)
    var, mu = torch.var_mean(pooled, dim=1, unbiased=False, keepdim=True)  # (B, 1) each
    scale = torch.rsqrt(var + norm.eps)  # (B, 1)
    if norm.weight is not None:
        scale = scale * norm.weight  # (B, D)
    out = (final - mu[:, :, None, None]) * scale[:, :, None, None]
    if norm.bias is not None:
        out = out + norm.bias[None, :, None, None]
    return out  # (B, D, H, W)


def _dense_map(model: nn.Module, kind: str, native: Tensor) -> Tensor:
    final = _to_nchw(model, native)
    if kind == "pooled_norm":
        final = _pooled_norm_map(final, model.head.norm)
    return final


def _head_kind(model: nn.Module, native: Tensor) -> str:
    """'linear' where forward_head is global average pooling then the Linear classifier, 'pooled_norm' for a
    ConvNeXt-style pool-norm-Linear head; anything else is refused. Checked numerically once per model, in
    float32 and eval mode (dropout off), on the first batch's real map."""
    if model in _HEAD_KINDS:
        return _HEAD_KINDS[model]
    fc = classifier(model)
    head = getattr(model, "head", None)
    candidates = ["linear"]
    if (isinstance(head, NormMlpClassifierHead) and isinstance(head.norm, nn.LayerNorm)
            and isinstance(head.pre_logits, nn.Identity)):
        candidates.append("pooled_norm")
    probe = native.detach()[:2].float()
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(probe.device.type, enabled=False):
            want = model.forward_head(probe).float()
            for kind in candidates:
                pooled = _dense_map(model, kind, probe).mean(dim=(2, 3))  # (B, D)
                if pooled.shape[1] != fc.in_features:  # something (a conv, an MLP) sits between pool and fc
                    continue
                got = fc(pooled)
                if torch.allclose(got, want, rtol=1e-4, atol=1e-4 * (1.0 + want.abs().max().item())):
                    _HEAD_KINDS[model] = kind
                    return kind
    finally:
        for m, training in modes:
            m.training = training
    raise UserError(f"model {type(model).__name__}: its head is not global average pooling followed by the "
                    f"Linear classifier (e.g. a conv or MLP after pooling), so dense votes from its feature map "
                    f"are not defined; use it with methods that need no feature maps")


def forward_with_maps(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass returning `(logits (B, C), final_map (B, D, H, W), prev_map (B, D', H', W'))`.

    The contract, for our models and for timm CNNs alike (one `forward_intermediates` call):
    - `final_map` is the map that global average pooling turns into the classifier's input: the output of
      `forward_features` (timm ResNet: layer4; DenseNet / EfficientNet: after the final norm / head conv).
      Hence `classifier(model)(final_map.mean((2, 3)))` equals `logits` (exactly up to float rounding, with
      the head's dropout inactive: eval mode or drop_rate 0, the default), and applying the classifier at
      every location of `final_map` gives dense votes consistent with the logits. For ConvNeXt-style heads
      (pool, LayerNorm, Linear) `final_map` is the feature map normalised with its pooled vector's
      statistics, which keeps that identity (see `_pooled_norm_map`).
    - `prev_map` is the previous feature tap in `feature_info` (ResNet: layer3; our DenseNet: the last
      transition's output; timm DenseNet: denseblock3; EfficientNet: the last block stage, before conv_head),
      with `feature_channels(model)[1]` channels.
    - `logits` is the model's own `forward_head` on the native final features: the same numbers, dropout
      included, as `model(x)`.
    Maps are NCHW (NHWC models are permuted). Models whose final features are not a map (ViTs), or whose head
    is not average pooling plus one Linear (up to the LayerNorm case), raise UserError.
    """
    model = _unwrap(model)
    if not hasattr(model, "forward_intermediates"):
        raise UserError(f"model {type(model).__name__} has no forward_intermediates; methods that need feature "
                        f"maps work with our models and timm's CNNs (resnet, densenet, convnext, efficientnet...)")
    native, taps = model.forward_intermediates(x, indices=2)
    kind = _head_kind(model, native)
    logits = model.forward_head(native)  # (B, C)
    final = _dense_map(model, kind, native)  # (B, D, H, W)
    prev = taps[_prev_tap(model)]  # timm returns intermediates in NCHW (output_fmt's default)
    if prev.ndim != 4:
        raise UserError(f"model {type(model).__name__}: its previous-stage features have shape {tuple(prev.shape)}, "
                        f"not a (B, C, H, W) map")
    return logits, final, prev


def forward_plain(model: nn.Module, x: Tensor) -> Tensor:
    """Logits only, for methods that need no feature maps: `model(x)`."""
    return model(x)


class MapsForward(nn.Module):
    """`forward(x)` = `forward_with_maps(model, x)`: wrap the model in this before DistributedDataParallel, so
    the maps forward goes through DDP's own forward (its gradient synchronisation)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return forward_with_maps(self.model, x)
