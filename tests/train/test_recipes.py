"""Recipes and transfer against independent oracles: the cosine/warm-up formula, timm's mixing against the
hand-mixed batch, CE under mixup against the mixed-target cross-entropy in numpy, EMA against a hand update,
AdamW's decoupled decay by hand, and the loaded backbone against the source's tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.config.resolve import resolve_train
from harness.errors import UserError
from harness.train.metrics import lr_at
from harness.train.optim import make_optimizer
from harness.train.recipes import Mixer, make_ema, mixed_loss
from harness.train.transfer import freeze_backbone, load_backbone
from methods import StepContext, build_method


def test_cosine_with_warmup_matches_the_formula():
    spe, epochs, warm, lr = 4, 5, 1, 0.3
    total = spe * epochs
    for step in range(total):
        got = lr_at(step, steps_per_epoch=spe, lr=lr, milestones=(), gamma=0.1, warmup_epochs=warm,
                    schedule="cosine", total_steps=total)
        if step < 4:
            want = lr * (step + 1) / 4
        else:
            want = lr * 0.5 * (1 + math.cos(math.pi * (step - 4) / 16))
        assert got == pytest.approx(want, rel=1e-12)
    assert lr_at(4, steps_per_epoch=spe, lr=lr, milestones=(), gamma=0.1, warmup_epochs=warm,
                 schedule="cosine", total_steps=total) == pytest.approx(lr)


def mixer(**kw):
    return Mixer(resolve_train(2, **kw), num_classes=3)


def test_mixup_mixes_the_batch_with_its_flip():
    x = torch.arange(4 * 2 * 2 * 2, dtype=torch.float32).view(4, 2, 2, 2)
    y = torch.tensor([0, 1, 2, 1])
    np.random.seed(5)
    np.random.rand()  # timm's draws: rand() < prob, then lam ~ beta(alpha, alpha)
    lam_np = np.random.beta(0.4, 0.4)
    np.random.seed(5)
    xm, yb, lam = mixer(mixup=0.4)(x.clone(), y)
    assert float(lam) == pytest.approx(lam_np)
    np.testing.assert_allclose(xm.numpy(), lam_np * x.numpy() + (1 - lam_np) * x.numpy()[::-1], rtol=1e-5)
    assert yb.tolist() == [1, 2, 1, 0]


def test_cutmix_pastes_a_box_and_corrects_lam():
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 1.0
    np.random.seed(0)
    xm, yb, lam = mixer(cutmix=1.0)(x.clone(), torch.tensor([0, 2]))
    pasted = xm[0, 0].numpy()  # sample 0 got sample 1's box (ones)
    area = pasted.sum() / 64
    assert float(lam) == pytest.approx(1 - area)  # lam = the share of the image left as it was
    rows, cols = np.nonzero(pasted)
    assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
    assert yb.tolist() == [2, 0]


def test_ce_under_mixup_is_the_mixed_target_cross_entropy():
    torch.manual_seed(0)
    logits, ya, yb = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 2, 1, 0, 1, 0])
    lam = 0.3
    ce = build_method("ce", num_classes=4)
    ctx = StepContext(targets_b=yb, lam=torch.tensor(lam))
    got = mixed_loss(ce.loss, ce, logits, ya, ctx)["loss"]
    z = logits.numpy().astype(np.float64)
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    target = lam * np.eye(4)[ya.numpy()] + (1 - lam) * np.eye(4)[yb.numpy()]  # the mixed soft target
    assert float(got) == pytest.approx(-(target * logp).sum(1).mean(), rel=1e-5)


def test_ema_is_the_hand_update():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    ema = make_ema(model, 0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    np.testing.assert_allclose(ema.module.weight.detach().numpy(), 0.9 * w0.numpy() + 0.1 * (w0.numpy() + 1), rtol=1e-6)
    assert make_ema(model, 0.0) is None


def test_adamw_decays_decoupled():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    t = resolve_train(2).replace(optimizer="adamw", lr=0.1, weight_decay=0.5)
    opt = make_optimizer([p], t)
    p.grad = torch.tensor([0.0])  # zero gradient: Adam's step is 0, only the decoupled decay acts
    opt.step()
    assert float(p.detach()) == pytest.approx(2.0 * (1 - 0.1 * 0.5))


def test_backbone_loads_and_classifier_is_replaced():
    import timm

    import harness.models  # noqa: F401

    torch.manual_seed(0)
    src = timm.create_model("tiny_cnn", num_classes=10, in_chans=1)
    torch.manual_seed(1)
    dst = timm.create_model("tiny_cnn", num_classes=4, in_chans=1)
    fresh_fc = dst.get_classifier().weight.detach().clone()
    info = load_backbone(dst, src.state_dict())
    s, d = src.state_dict(), dst.state_dict()
    head = {"fc.weight", "fc.bias"} & set(d)
    assert set(info["replaced"]) == head and info["loaded"] == len(d) - len(head)
    for k in d:
        if k not in head:
            assert torch.equal(d[k], s[k]), k
    assert torch.equal(dst.get_classifier().weight, fresh_fc)
    trainable = freeze_backbone(dst)
    assert trainable == sum(p.numel() for p in dst.get_classifier().parameters())
    with pytest.raises(UserError, match="does not fit"):
        load_backbone(timm.create_model("tiny_cnn", num_classes=4, in_chans=3), src.state_dict())


def test_recipe_settings_stay_out_of_the_key_when_off():
    from harness.config.resolve import resolve_trial

    base = resolve_trial(method="ce", dataset="digits", seed=0)
    assert "optimizer" not in base.key_dict()["train"] and "ema" not in base.key_dict()["train"]
    ema = resolve_trial(method="ce", dataset="digits", seed=0, train={"ema": 0.99})
    assert ema.key() != base.key()
    adamw = resolve_trial(method="ce", dataset="digits", seed=0, train={"optimizer": "adamw"})
    assert (adamw.train.lr, adamw.train.weight_decay) == (1e-3, 0.01)  # torch.optim.AdamW's defaults
