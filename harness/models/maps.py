"""The one uniform call that returns logits together with the final and previous-stage feature maps, for
our models and timm's CNNs alike, and the helpers around it (classifier, feature_channels, MapsForward)."""
import weakref

import torch
from timm.layers import NormMlpClassifierHead
from torch import Tensor, nn

from harness.errors import UserError

__all__ = ["MapsForward", "StagesForward", "classifier", "feature_channels", "forward_plain", "forward_with_maps",
           "forward_with_stages", "stage_info"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The model behind torch.compile's wrapper (its forward_intermediates is the eager one)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError("forward_with_maps on a DistributedDataParallel model would bypass its gradient "
                        "synchronisation: wrap the model in MapsForward before DistributedDataParallel")
    return getattr(model, "_orig_mod", model)


def _returns_maps(model: nn.Module) -> bool:
    """Whether `model(x)` already is forward_with_maps: a MapsForward, compiled or not, or a module declaring
    `returns_maps` (a data-parallel trial's container of MapsForward) inside DistributedDataParallel."""
    core = getattr(model, "_orig_mod", model)
    if isinstance(core, nn.parallel.DistributedDataParallel):
        core = core.module
    return getattr(core, "returns_maps", False) is True


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
    if _returns_maps(model):  # MapsForward, compiled (train.compile: one graph, maps included) or in DDP
        return model(x)
    model = _unwrap(model)
    if not hasattr(model, "forward_intermediates"):
        raise UserError(f"model {type(model).__name__} has no forward_intermediates; methods that need feature "
                        f"maps work with our models and timm's CNNs (resnet, densenet, convnext, efficientnet...)")
    native, taps = model.forward_intermediates(x, indices=2)
    return _assemble(model, _head_kind(model, native), native, taps)


def _assemble(model: nn.Module, kind: str, native: Tensor, taps: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
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
    """`forward(x)` = `forward_with_maps(model, x)` as a module: what torch.compile compiles for methods that
    need maps (`train.compile`), and what to wrap before DistributedDataParallel so the maps forward goes
    through DDP's own forward. The head kind is probed once, outside any graph, then is a constant: the
    compiled forward is one graph (after one recompilation for the constant)."""

    returns_maps = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head_kind: str | None = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not hasattr(self.model, "forward_intermediates"):
            return forward_with_maps(self.model, x)  # the one-line refusal
        if self.head_kind is None:
            self.head_kind = _probe_head_kind(self.model, x)
        native, taps = self.model.forward_intermediates(x, indices=2)
        return _assemble(self.model, self.head_kind, native, taps)


@torch.compiler.disable
def _probe_head_kind(model: nn.Module, x: Tensor) -> str:
    """`_head_kind` on this batch's map, computed in eval mode without gradients: no batch-norm statistic moves,
    so a compiled run trains on exactly the numbers an eager one does."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            native, _ = model.forward_intermediates(x, indices=2)
    finally:
        for m, training in modes:
            m.training = training
    return _head_kind(model, native)


def stage_info(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """(channels, reduction) of every feature tap, stem first, the final map last (`feature_info`)."""
    info = _unwrap(model).feature_info
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    return tuple((int(d["num_chs"]), int(d["reduction"])) for d in info)


def forward_with_stages(model: nn.Module, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """`(logits (B, C), stage maps)`: the model's own logits and every feature tap between the stem and the final
    map, in order (`stage_info(model)[1:-1]`), each (B, D_s, H_s, W_s). One `forward_intermediates` call."""
    if getattr(getattr(model, "_orig_mod", model), "returns_stages", False) is True:
        return model(x)
    model = _unwrap(model)
    if not hasattr(model, "forward_intermediates"):
        raise UserError(f"model {type(model).__name__} has no forward_intermediates; methods that need stage maps "
                        f"work with our models and timm's CNNs")
    native, taps = model.forward_intermediates(x)
    return model.forward_head(native), tuple(taps[1:-1])


class StagesForward(nn.Module):
    """`forward(x)` = `forward_with_stages(model, x)` as a module: what train.compile compiles for a method that
    needs stage maps, so that the maps come out of the one compiled forward."""

    returns_stages = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        native, taps = self.model.forward_intermediates(x)
        return self.model.forward_head(native), tuple(taps[1:-1])
