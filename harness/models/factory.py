"""The one model factory (`create_model`), the names and descriptions of the models tfbench registers into
timm, and `registered_models()`, which finds them in timm's own registry."""
from collections.abc import Sequence
from typing import Any

import timm
from timm.models import model_entrypoint
from torch import nn

from harness.errors import UserError

# imported for their side effect: each registers its models into timm's registry
from harness.models import cifar_densenet, cifar_resnet, tiny  # noqa: F401
from harness.models.base import MIN_INPUT_SIZE

__all__ = ["OUR_MODELS", "create_model", "describe_models", "registered_models"]

# every model registered under harness.models, described for listings (a test checks the two agree)
OUR_MODELS: dict[str, str] = {
    "cifar_preact_resnet18": "pre-activation ResNet-18 of the official Zipf's LS / CS-KD code (~11.2M params, 32x32)",
    "cifar_resnet18": "post-activation CIFAR ResNet-18, 3x3 stem, no max-pool (~11.2M params, 32x32)",
    "cifar_densenet121": "CIFAR DenseNet-121, growth 32, blocks 6-12-24-16 (~7.0M params, 32x32)",
    "tiny_cnn": "3 conv stages (~47k params): seconds per epoch on CPU, any input >= 8x8",
    "tiny_resnet": "pre-activation ResNet, one block per stage, widths 16-32-64 (~78k params), any input >= 8x8",
}


def registered_models(package: str = "harness.models") -> list[str]:
    """Names in timm's registry whose entrypoint is defined in `package` or a module below it (sorted)."""
    def inside(module: str) -> bool:
        return module == package or module.startswith(package + ".")
    return [name for name in timm.list_models() if inside(model_entrypoint(name).__module__)]


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
