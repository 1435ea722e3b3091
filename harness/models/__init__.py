"""Models: our CIFAR / small networks registered into timm's own registry, one factory, and the one uniform
call that returns logits together with the final and previous-stage feature maps.

Importing this package registers five models with timm, so `timm.create_model(name, num_classes=...)` builds
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

All five follow timm's model API and pass its model conventions (tests/models/test_timm_conformance.py):
`num_features`, `get_classifier()`, `reset_classifier()`, `forward_features()` (the final map, before
pooling), `forward_head(x, pre_logits=False)`, `feature_info`, `forward_intermediates(...)` and
`prune_intermediate_layers(...)`; `features_only=True` (every level by default; the list, getter and FX
wrappers), TorchScript, FX, FX then TorchScript and `torch.export`. Initialisation is PyTorch's default, as
in the official code. docs/models.md says how a new model is registered.

Modules: base (the shared skeleton and builder), cifar_resnet, cifar_densenet, tiny (the models), factory
(create_model, registered_models), maps (forward_with_maps and its helpers).
"""
from harness.models.base import MIN_INPUT_SIZE, StagedNet, build_registered_model, default_cfg
from harness.models.cifar_densenet import CifarDenseNet, DenseLayer, Transition
from harness.models.cifar_resnet import BasicBlock, CifarResNet, PreActBlock, PreActResNet
from harness.models.factory import OUR_MODELS, create_model, describe_models, registered_models
from harness.models.maps import (
    MapsForward,
    StagesForward,
    classifier,
    feature_channels,
    forward_plain,
    forward_with_maps,
    forward_with_stages,
    stage_info,
)
from harness.models.tiny import TinyCNN

__all__ = [
    "MIN_INPUT_SIZE", "OUR_MODELS", "BasicBlock", "CifarDenseNet", "CifarResNet", "DenseLayer", "MapsForward",
    "PreActBlock", "PreActResNet", "StagedNet", "TinyCNN", "Transition", "build_registered_model", "classifier",
    "create_model", "default_cfg", "describe_models", "feature_channels", "forward_plain", "forward_with_maps",
    "forward_with_stages", "registered_models", "StagesForward", "stage_info",
]
