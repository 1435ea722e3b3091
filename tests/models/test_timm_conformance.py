"""timm's model conventions, checked for every model tfbench registers into timm.

The models come from timm's own registry (`registered_models()`: entrypoints defined under harness.models),
so a model registered the same way is checked here without editing this file; the last test shows that with a
throw-away model module. What each test checks follows timm's model test suite (features_only with default and
explicit out_indices, the getter and FX feature wrappers, TorchScript, FX, FX then TorchScript, torch.export,
forward_intermediates against forward_features, the default config); the reference maps are read by forward
hooks on the modules that `feature_info` names, during the eager `model(x)`, so they do not come from the code
paths under test. Inputs are one or two images of the model's `min_input_size` (8x8), on CPU; the default-config
test uses the default `input_size`, where timm's `pool_size` applies.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from timm.models import _features_fx
from torch import nn

from harness.models import OUR_MODELS, registered_models

NAMES = registered_models()
# compiling DenseNet-121's 58 dense layers (script, export) takes 9-19 s each on a shared 2-core machine
_SLOW_TO_COMPILE = {"cifar_densenet121"}
COMPILE_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_TO_COMPILE else n for n in NAMES]
_NO_JIT_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
FEATURE_CLASSES = ["list", "getter", "fx"]  # timm's default (module walk), forward_intermediates, FX graph


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)  # same seed, same arguments: same weights, so separately built wrappers compare exactly
    return timm.create_model(name, **kwargs).eval()


def _small_input(name: str, batch: int = 1) -> torch.Tensor:
    cfg = timm.get_pretrained_cfg(name)
    size = cfg.min_input_size or cfg.input_size  # (C, H, W)
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(1))


def _hooked_taps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, [output of each module feature_info names]) from one eager forward."""
    taps: dict[int, torch.Tensor] = {}
    handles = [model.get_submodule(info["module"]).register_forward_hook(
        lambda _m, _i, out, k=k: taps.setdefault(k, out)) for k, info in enumerate(model.feature_info)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, [taps[k] for k in range(len(model.feature_info))]


def _equal_lists(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_discovery_finds_exactly_our_models():
    assert NAMES == sorted(OUR_MODELS)  # every registered model is described for `tfbench models`, and only ours
    assert "resnet18" in timm.list_models() and "resnet18" not in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_default_config(name):
    model = _build(name)
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        assert model(x).shape == (1, cfg["num_classes"])
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        assert _build(name, num_classes=0, global_pool="")(x).shape == feats.shape
    state = _build(name).state_dict()
    assert f"{cfg['classifier']}.weight" in state and f"{cfg['first_conv']}.weight" in state


@pytest.mark.parametrize("name", NAMES)
def test_feature_info_describes_the_maps(name):
    model = _build(name)
    x = _small_input(name)
    _, taps = _hooked_taps(model, x)
    assert len(taps) >= 3
    for tap, info in zip(taps, model.feature_info, strict=True):
        side = x.shape[-1] // info["reduction"]
        assert tap.shape == (1, info["num_chs"], side, side), info["module"]


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_agree_with_forward_features(name):
    model = _build(name)
    x = _small_input(name)
    logits, taps = _hooked_taps(model, x)
    n = len(taps)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        _equal_lists(inter, taps)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(model.forward_head(final), logits, rtol=0, atol=0)
        _equal_lists(model.forward_intermediates(x, indices=2, intermediates_only=True), taps[-2:])
        _equal_lists(model.forward_intermediates(x, indices=[0, -1], intermediates_only=True), [taps[0], taps[-1]])
        final_early, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        _equal_lists(early, [taps[1]])
        if n > 2:  # stopping early means the returned features are the map at the last tap taken
            torch.testing.assert_close(final_early, taps[1], rtol=0, atol=0)


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
@pytest.mark.parametrize("name", NAMES)
def test_features_only_defaults(name, feature_cls):
    ref = _build(name)
    x = _small_input(name)
    _, taps = _hooked_taps(ref, x)
    feats = _build(name, features_only=True, **({} if feature_cls == "list" else {"feature_cls": feature_cls}))
    assert feats.feature_info.channels() == [t.shape[1] for t in taps]  # every level, as timm's default means
    assert feats.feature_info.reduction() == [info["reduction"] for info in ref.feature_info]
    with torch.no_grad():
        _equal_lists(feats(x), taps)


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
@pytest.mark.parametrize("name", NAMES)
def test_features_only_explicit_out_indices(name, feature_cls):
    ref = _build(name)
    x = _small_input(name)
    _, taps = _hooked_taps(ref, x)
    wanted = tuple(sorted({1, len(taps) - 2}))  # a level in the middle: the getter prunes the stages after it
    feats = _build(name, features_only=True, out_indices=wanted,
                   **({} if feature_cls == "list" else {"feature_cls": feature_cls}))
    assert feats.feature_info.channels() == [taps[i].shape[1] for i in wanted]
    with torch.no_grad():
        _equal_lists(feats(x), [taps[i] for i in wanted])


@_NO_JIT_WARNING
@pytest.mark.parametrize("name", COMPILE_NAMES)
def test_torchscript(name):
    model = _build(name)
    x = _small_input(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x))
        pooled = scripted.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (1, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_fx_trace_forward_and_backward(name):
    model = _build(name)
    x = _small_input(name, batch=2)  # two samples: batch norm in train mode needs more than one value
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    traced.train()
    traced(x).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]  # the graph shares the parameters
    assert not missing


@_NO_JIT_WARNING
@pytest.mark.parametrize("name", COMPILE_NAMES)
def test_fx_then_torchscript(name):
    model = _build(name)
    x = _small_input(name)
    _, eval_nodes = _features_fx.get_graph_node_names(model)
    extractor = _features_fx.create_feature_extractor(model, return_nodes=[eval_nodes[-1]]).eval()
    scripted = torch.jit.script(extractor)
    with torch.no_grad():
        (out,) = scripted(x).values()
        torch.testing.assert_close(out, model(x))


@pytest.mark.parametrize("name", COMPILE_NAMES)
def test_export(name):
    model = _build(name)
    x = _small_input(name)
    exported = torch.export.export(model, (x,))
    other = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), model(other))


# --- a model registered the same way is picked up -----------------------------------------------------

_PROBE_SOURCE = '''
"""A throw-away model, registered into timm as docs/models.md says."""
from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import nn

from harness.models.base import StagedNet, build_registered_model, default_cfg


class ProbeNet(StagedNet):
    def __init__(self, num_classes=10, in_chans=3, drop_rate=0.0, global_pool="avg"):
        super().__init__(stem=ConvNormAct(in_chans, 4, 3, act_layer=nn.ReLU), stem_chs=4,
                         stages=[ConvNormAct(4, 8, 3, stride=2, act_layer=nn.ReLU),
                                 ConvNormAct(8, 8, 3, stride=2, act_layer=nn.ReLU)],
                         stage_chs=[8, 8], stage_reductions=[2, 4], final_norm=None, tap_final_norm=False,
                         num_classes=num_classes, drop_rate=drop_rate, global_pool=global_pool)


default_cfgs = generate_default_cfgs({"zz_probe_net": default_cfg(input_size=(3, 16, 16))})


@register_model
def zz_probe_net(pretrained=False, **kwargs):
    return build_registered_model(ProbeNet, "zz_probe_net", pretrained, levels=3, **kwargs)
'''

_PLUGIN_SOURCE = '''
"""pytest plugin: imports the probe module as if it were a file under harness/models/."""
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("harness.models.zz_probe",
                                              Path(__file__).with_name("zz_probe.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # timm's register_model reads default_cfgs from sys.modules[fn.__module__]
spec.loader.exec_module(module)
'''


def _conformance_tests() -> list[str]:
    """This file's tests parametrised over the discovered model names."""
    return [key for key, fn in globals().items() if key.startswith("test_")
            and any(m.name == "parametrize" and m.args[0] == "name" for m in getattr(fn, "pytestmark", []))]


@pytest.mark.slow
def test_a_model_registered_the_same_way_is_picked_up(tmp_path):
    (tmp_path / "zz_probe.py").write_text(textwrap.dedent(_PROBE_SOURCE))
    (tmp_path / "zz_probe_plugin.py").write_text(textwrap.dedent(_PLUGIN_SOURCE))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-rA", "-p", "no:cacheprovider",
                           "-p", "zz_probe_plugin", "-k", "zz_probe_net"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    # discovery itself fails there (the probe is not one of OUR_MODELS), which is deselected by -k
    assert proc.returncode == 0, out
    passed = [line for line in out.splitlines() if line.startswith("PASSED") and "[zz_probe_net" in line]
    expected = _conformance_tests()
    assert len(expected) >= 9
    for test in expected:
        assert any(f"::{test}[" in line for line in passed), (test, out[-3000:])
    n_feature_tests = sum(t.startswith("test_features_only") for t in expected)
    assert len(passed) == len(expected) + (len(FEATURE_CLASSES) - 1) * n_feature_tests
