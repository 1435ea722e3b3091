"""Our models (registered into timm), the factory, and the feature-map contract of forward_with_maps.

Expected shapes and parameter counts are derived here from the architectures (strides, widths, the layer
formulas), and two counts are compared with the widely quoted ones of the kuangliu/pytorch-cifar models the
official code builds on; logits are checked against the classifier applied to the test's own pooling.
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import harness.models as hm
from harness.errors import UserError
from harness.models import classifier, create_model, feature_channels, forward_plain, forward_with_maps

# name -> (in_chans, side, final (D, H), previous (D', H')) at the model's typical input
TYPICAL = {
    "cifar_preact_resnet18": (3, 32, (512, 4), (256, 8)),  # strides 1, 1, 2, 2, 2: 32 -> 4; layer3 at 8
    "cifar_resnet18": (3, 32, (512, 4), (256, 8)),
    "cifar_densenet121": (3, 32, (1024, 4), (512, 4)),  # 3 transitions: 32 -> 4; the last dense block's input
    "tiny_cnn": (1, 8, (64, 2), (48, 4)),  # digits: strides 1, 1, 2, 2
    "tiny_resnet": (1, 8, (64, 2), (32, 4)),
}
SMALL = ["tiny_cnn", "tiny_resnet"]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _bn(c: int) -> int:
    return 2 * c  # weight and bias


def _preact_resnet_count(blocks, widths, in_chans, num_classes):
    n = in_chans * widths[0] * 9 + _bn(widths[0])  # stem conv3x3 + BN
    cin = widths[0]
    for i, (count, w) in enumerate(zip(blocks, widths, strict=True)):
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            n += _bn(cin) + cin * w * 9 + _bn(w) + w * w * 9
            n += cin * w if (stride != 1 or cin != w) else 0  # 1x1 projection, no BN
            cin = w
    return n + widths[-1] * num_classes + num_classes


def _postact_resnet_count(blocks, widths, in_chans, num_classes):
    n = in_chans * widths[0] * 9 + _bn(widths[0])
    cin = widths[0]
    for i, (count, w) in enumerate(zip(blocks, widths, strict=True)):
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            n += cin * w * 9 + _bn(w) + w * w * 9 + _bn(w)
            n += cin * w + _bn(w) if (stride != 1 or cin != w) else 0  # 1x1 projection + BN
            cin = w
    return n + widths[-1] * num_classes + num_classes


def _densenet_count(blocks, growth, in_chans, num_classes):
    c = 2 * growth
    n = in_chans * c * 9
    for i, count in enumerate(blocks):
        for _ in range(count):
            n += _bn(c) + c * 4 * growth + _bn(4 * growth) + 4 * growth * growth * 9
            c += growth
        if i < len(blocks) - 1:
            n += _bn(c) + c * (c // 2)
            c //= 2
    return n + _bn(c) + c * num_classes + num_classes


@pytest.fixture(scope="module")
def built():
    """Each of our models once, in eval mode, with its typical input (the DenseNet costs the most)."""
    torch.manual_seed(0)
    out = {}
    for name, (chans, side, _, _) in TYPICAL.items():
        model = create_model(name, num_classes=10, in_chans=chans, input_size=side).eval()
        out[name] = (model, torch.randn(2, chans, side, side))
    return out


@pytest.mark.parametrize("name", list(TYPICAL))
def test_maps_shapes_and_logits(built, name):
    model, x = built[name]
    _, side, (d, h), (dp, hp) = TYPICAL[name]
    with torch.no_grad():
        logits, final, prev = forward_with_maps(model, x)
        plain = forward_plain(model, x)
    assert logits.shape == (2, 10)
    assert final.shape == (2, d, h, h)
    assert prev.shape == (2, dp, hp, hp)
    assert feature_channels(model) == (d, dp)
    info = model.feature_info
    assert info[-1]["num_chs"] == d and info[-1]["reduction"] == side // h
    assert model.num_features == d
    # the dense-vote identity: the classifier on the test's own global mean of the final map
    fc = classifier(model)
    assert isinstance(fc, nn.Linear)
    assert torch.allclose(fc(final.mean(dim=(2, 3))), logits, atol=1e-5)
    assert torch.allclose(plain, logits, atol=1e-5)
    # per-location logits average to the logits (the votes and the logits come from one linear map)
    per_location = torch.einsum("bdhw,cd->bchw", final, fc.weight) + fc.bias[None, :, None, None]
    assert torch.allclose(per_location.mean(dim=(2, 3)), logits, atol=1e-5)


@pytest.mark.parametrize("name", list(TYPICAL))
def test_intermediates_follow_timm_contract(built, name):
    model, x = built[name]
    info = model.feature_info
    side = x.shape[-1]
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
    assert len(taps) == len(info)
    for tap, fi in zip(taps, info, strict=True):
        assert tap.shape == (2, fi["num_chs"], side // fi["reduction"], side // fi["reduction"])
    assert torch.equal(final, taps[-1])  # the last tap is the map global pooling reads
    assert torch.allclose(final, model.forward_features(x))
    assert len(only) == 2 and torch.equal(only[0], taps[-2]) and torch.equal(last[0], taps[-1])
    with pytest.raises(ValueError):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_preact_resnet18_matches_official_structure(built):
    model, x = built["cifar_preact_resnet18"]
    # independent forward: stem conv3x3-BN-ReLU (stride 1, no max-pool), four stages, layer4 pooled as is
    with torch.no_grad():
        h = model.stem(x)
        stages = []
        for stage in model.stages:
            h = stage(h)
            stages.append(h)
        _, final, prev = forward_with_maps(model, x)
    assert torch.equal(final, stages[3]) and torch.equal(prev, stages[2])
    assert model.stem.conv.stride == (1, 1) and model.stem.conv.kernel_size == (3, 3)
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]


def test_densenet_prev_map_is_last_block_input(built):
    model, x = built["cifar_densenet121"]
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages[:3]:
            h = stage(h)
        _, final, prev = forward_with_maps(model, x)
    assert torch.equal(prev, h)
    assert (final >= 0).all()  # the final BN + ReLU precedes pooling
    assert [sum(isinstance(m, hm.DenseLayer) for m in s) for s in model.stages] == [6, 12, 24, 16]


def test_parameter_counts():
    # formulas at CIFAR-100
    m = timm.create_model("cifar_preact_resnet18", num_classes=100)
    n = _preact_resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 3, 100)
    assert _params(m) == n and abs(n - 11.2e6) < 0.05e6
    m = timm.create_model("cifar_densenet121", num_classes=100)
    n = _densenet_count((6, 12, 24, 16), 32, 3, 100)
    assert _params(m) == n and abs(n - 7.0e6) < 0.1e6
    m = timm.create_model("tiny_resnet", num_classes=10)
    assert _params(m) == _preact_resnet_count((1, 1, 1), (16, 32, 64), 3, 10)
    m = timm.create_model("tiny_cnn", num_classes=10, in_chans=1)
    convs = [(1, 16), (16, 32), (32, 48), (48, 64)]
    assert _params(m) == sum(i * o * 9 + _bn(o) for i, o in convs) + 64 * 10 + 10
    assert 40_000 < _params(m) < 60_000
    # the kuangliu/pytorch-cifar counts at CIFAR-10: ResNet18 11,173,962 and DenseNet121 6,956,298
    m = timm.create_model("cifar_resnet18", num_classes=10)
    assert _params(m) == _postact_resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 3, 10) == 11_173_962
    assert _densenet_count((6, 12, 24, 16), 32, 3, 10) == 6_956_298


@pytest.mark.parametrize("name", list(TYPICAL))
def test_gradient_reaches_every_parameter(name):
    chans, side, _, _ = TYPICAL[name]
    side = 8 if name == "cifar_densenet121" else side  # a cheap size: only the flow matters here
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=chans).train()
    x = torch.randn(2, chans, side, side)
    logits, final, prev = forward_with_maps(model, x)
    (F.cross_entropy(logits, torch.tensor([0, 3])) + prev.square().mean()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", SMALL)
def test_small_models_accept_any_size_and_channels(name):
    for chans, side, final_side in [(3, 16, 4), (3, 32, 8), (1, 9, 3)]:
        model = create_model(name, num_classes=7, in_chans=chans).eval()
        with torch.no_grad():
            logits, final, _ = forward_with_maps(model, torch.randn(2, chans, side, side))
        assert logits.shape == (2, 7) and final.shape[-2:] == (final_side, final_side)


def test_registered_in_timm():
    names = timm.list_models()
    assert set(hm.OUR_MODELS) <= set(names)
    m = timm.create_model("cifar_preact_resnet18")
    assert m.get_classifier().out_features == 10  # the default config: CIFAR-10
    assert m.pretrained_cfg["input_size"] == (3, 32, 32)
    m = timm.create_model("cifar_preact_resnet18", num_classes=100, drop_rate=0.2)
    assert m.get_classifier().out_features == 100 and m.drop_rate == 0.2
    feats = timm.create_model("tiny_resnet", features_only=True, out_indices=(2, 3))
    outs = feats(torch.randn(1, 3, 16, 16))
    assert [o.shape[1:] for o in outs] == [(32, 8, 8), (64, 4, 4)]
    m.reset_classifier(20)
    assert m.get_classifier().out_features == 20


def test_no_weights_and_bad_arguments():
    with pytest.raises(UserError, match="no pretrained weights"):
        timm.create_model("cifar_resnet18", pretrained=True)
    with pytest.raises(UserError, match="pretrained"):
        create_model("resnet18", num_classes=10, pretrained=True)
    with pytest.raises(UserError, match="too small"):
        create_model("tiny_cnn", num_classes=10, input_size=(1, 4, 4))
    with pytest.raises(UserError, match="drop_path_rate"):
        create_model("tiny_cnn", num_classes=10, drop_path_rate=0.1)
    with pytest.raises(UserError, match="bad model argument"):
        create_model("tiny_cnn", num_classes=10, no_such_argument=1)


def test_unknown_model_is_one_line_user_error():
    with pytest.raises(UserError) as e:
        create_model("cifar_resnet19", num_classes=10)
    msg = str(e.value)
    assert "\n" not in msg and "cifar_resnet19" in msg and "timm.list_models" in msg
    assert all(name in msg for name in hm.OUR_MODELS)


def test_describe_models():
    rows = hm.describe_models()
    assert [name for name, _ in rows] == list(hm.OUR_MODELS)
    assert all(isinstance(desc, str) and desc for _, desc in rows)


def test_stock_timm_resnet18_maps():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, final, prev = forward_with_maps(model, x)
        # independent forward through timm's modules: stem (stride 2 conv + stride 2 max-pool), four layers
        h = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        l3 = model.layer3(model.layer2(model.layer1(h)))
        l4 = model.layer4(l3)
        ref = model(x)
    assert final.shape == (2, 512, 2, 2) and prev.shape == (2, 256, 4, 4)
    assert torch.allclose(final, l4) and torch.allclose(prev, l3)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(model.fc(final.mean(dim=(2, 3))), logits, atol=1e-5)
    assert feature_channels(model) == (512, 256)


def test_convnext_pooled_norm_head_keeps_the_vote_identity():
    # ConvNeXt pools, then LayerNorms, then the Linear: the returned map must still average into the fc input
    torch.manual_seed(0)
    model = create_model("test_convnext", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, final, prev = forward_with_maps(model, x)
        ref = model(x)
        raw = model.forward_features(x)
        pooled = raw.mean(dim=(2, 3))
        want_input = F.layer_norm(pooled, (pooled.shape[1],), model.head.norm.weight, model.head.norm.bias,
                                  model.head.norm.eps)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(final.mean(dim=(2, 3)), want_input, atol=1e-5)
    assert torch.allclose(classifier(model)(final.mean(dim=(2, 3))), logits, atol=1e-5)
    assert final.shape[1:] == raw.shape[1:] and prev.shape[1] == feature_channels(model)[1]


def test_efficientnet_final_map_is_after_the_head_conv():
    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, final, prev = forward_with_maps(model, x)
        ref = model(x)
    d, dp = feature_channels(model)
    assert final.shape[1] == d == model.num_features != model.feature_info[-1]["num_chs"]
    assert prev.shape[1] == dp == model.feature_info[-1]["num_chs"]
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(model.classifier(final.mean(dim=(2, 3))), logits, atol=1e-5)


@pytest.mark.parametrize("name,size,match", [
    ("mobilenetv3_small_050", 32, "not global average pooling"),  # conv_head after pooling
    ("test_vit", None, "not a \\(B, C, H, W\\) map"),
])
def test_models_without_dense_votes_are_refused(name, size, match):
    model = create_model(name, num_classes=10, input_size=size).eval()
    side = size or model.pretrained_cfg["input_size"][-1]
    with pytest.raises(UserError, match=match):
        forward_with_maps(model, torch.randn(2, 3, side, side))
    assert forward_plain(model, torch.randn(2, 3, side, side)).shape == (2, 10)


def test_head_probe_leaves_training_mode_and_dropout_alone():
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=10, drop_rate=0.5).train()
    model.stem.eval()  # a mixed state must survive the probe too
    before = {n: m.training for n, m in model.named_modules()}
    logits, final, _ = forward_with_maps(model, torch.randn(4, 3, 16, 16))
    assert {n: m.training for n, m in model.named_modules()} == before
    # dropout (train mode) acts on the pooled vector: the logits differ from the dropout-free identity
    assert not torch.allclose(model.fc(final.mean(dim=(2, 3))), logits, atol=1e-4)


def test_wrappers_and_autocast():
    torch.manual_seed(0)
    model = create_model("tiny_resnet", num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = forward_with_maps(model, x)
        got_wrapped = hm.MapsForward(model)(x)
        got_compiled = forward_with_maps(torch.compile(model), x)  # the eager model behind the wrapper
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits16, final16, _ = forward_with_maps(model, x)
    for a, b in zip(want, got_wrapped, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(want, got_compiled, strict=True):
        assert torch.equal(a, b)
    assert final16.dtype == torch.bfloat16
    assert torch.allclose(logits16.float(), want[0], atol=0.1, rtol=0.05)


def test_prune_intermediate_layers():
    torch.manual_seed(0)
    model = create_model("tiny_resnet", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        stage0 = model.stages[0](model.stem(x))  # tap 1: the first stage's output, 16 channels at 8x8
        kept = model.prune_intermediate_layers([0, 1])
        assert kept == [0, 1] and len(model.stages) == 1 and isinstance(model.final_norm, nn.Identity)
        assert model.num_features == 16 and model.num_classes == 0
        assert torch.equal(model(x), stage0)  # no pooling, no classifier left: the map itself
        assert torch.equal(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], stage0)
        with pytest.raises(ValueError, match="pruned"):
            model.forward_intermediates(x, indices=[-1])  # negative indices count from the full set, as timm's
    # DenseNet: the final BN + ReLU is itself the last tap, so keeping that tap keeps it (and every stage)
    dense = create_model("cifar_densenet121", num_classes=10)
    assert dense.prune_intermediate_layers(1) == [4]
    assert len(dense.stages) == 4 and not isinstance(dense.final_norm, nn.Identity)
    assert dense.num_features == 1024 and isinstance(dense.fc, nn.Identity)
