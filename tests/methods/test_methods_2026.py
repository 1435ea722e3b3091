"""USKD, DLB, MaxSup, BYOT and BAKE against independent numpy re-derivations of their official code (quirks
included), their batch composition rules, and what they declare to the harness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods import build_method
from methods.bake import bake_parts, class_groups
from methods.base import StepContext
from methods.byot import byot_parts
from methods.dlb import dlb_parts, last_batch_overlap
from methods.maxsup import maxsup_parts
from methods.uskd import uskd_parts

RNG = np.random.default_rng(7)


def log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def logits(b: int = 9, c: int = 7, scale: float = 3.0) -> np.ndarray:
    return (RNG.standard_normal((b, c)) * scale).astype(np.float64)


def test_maxsup_penalises_the_top_logit_against_the_mean_with_the_epoch_schedule():
    z, y = logits(), RNG.integers(0, 7, 9)
    ce = -log_softmax(z)[np.arange(9), y].mean()
    reg = np.mean([row.max() - row.sum() / len(row) for row in z])
    total, got_ce, got_reg = maxsup_parts(logits=t(z), targets=torch.tensor(y), lam=0.15)
    assert (got_ce.item(), got_reg.item(), total.item()) == pytest.approx((ce, reg, ce + 0.15 * reg), abs=1e-5)
    m = build_method("maxsup", num_classes=7)
    # the official ImageNet form: begin + (end - begin) * epoch / E, epoch 0-based (E = 10: 0.1 ... 0.19)
    assert [m.lam(e, 10) for e in (0, 5, 9)] == pytest.approx([0.1, 0.15, 0.19])
    out = m.loss(t(z), torch.tensor(y), StepContext(epoch=9, num_epochs=10))
    assert out["loss"].item() == pytest.approx(ce + 0.19 * reg, abs=1e-5)


def uskd_reference(z: np.ndarray, w: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Row by row, as cls_KD's USKDLoss computes it (the log-probabilities in the rank score included)."""
    b, c = z.shape
    logp, logw = log_softmax(z), log_softmax(w)
    p_t = np.exp(logp[np.arange(b), y])
    soft = p_t ** 2 + 1 - np.mean(p_t ** 2)
    loss_t = -np.mean(soft * logp[np.arange(b), y])
    ce = -np.mean(logp[np.arange(b), y])
    weak, non = [], []
    for i in range(b):
        target = np.full(c, 0.1 / c)
        target[y[i]] += 0.9
        weak.append(-(target * logw[i]).sum())
        pw = np.exp(logw[i])
        score = pw / (1 - pw[y[i]] + 1e-6) + logp[i] / (1 - logp[i, y[i]] + 1e-6)
        ranked = sorted(range(c), key=lambda k: -score[k])
        zipf = np.array([1.0 / (ranked.index(k) + 1) for k in range(c)])
        others = [k for k in range(c) if k != y[i]]
        nz = zipf[others] / zipf[others].sum()
        non.append(-(nz * log_softmax(z[i:i + 1, others])[0]).sum())
    return ce, loss_t, float(np.mean(non)), float(np.mean(weak))


def test_uskd_parts_equal_the_official_loss_rederived():
    z, w, y = logits(), logits(), RNG.integers(0, 7, 9)
    got = uskd_parts(logits=t(z), weak_logits=t(w), targets=torch.tensor(y))
    assert [g.item() for g in got] == pytest.approx(uskd_reference(z, w, y), abs=1e-5)


def test_uskd_weak_classifier_reads_the_pooled_previous_map_and_weights_its_parts():
    m = build_method("uskd", {"alpha": 0.3, "beta": 0.2, "mu": 0.1}, num_classes=7, feature_channels=(6, 4))
    prev = torch.randn(9, 4, 3, 3)
    z, y = logits(), RNG.integers(0, 7, 9)
    with torch.no_grad():
        w = (prev.mean(dim=(2, 3)) @ m.weak.weight.T + m.weak.bias).double().numpy()
    ce, lt, ln, lw = uskd_reference(z, w, y)
    out = m.loss(t(z), torch.tensor(y), StepContext(prev_map=prev))
    assert out["loss"].item() == pytest.approx(ce + 0.3 * lt + 0.2 * ln + 0.1 * lw, abs=1e-5)


def kl_sum(q: np.ndarray, logp: np.ndarray) -> float:
    return float(np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - logp), 0.0)))


def test_dlb_ce_covers_both_parts_and_the_kl_is_batchmean_times_t_squared():
    z, zo, teacher = logits(6), logits(6), logits(6)
    y, yo = RNG.integers(0, 7, 6), RNG.integers(0, 7, 6)
    both = np.concatenate([zo, z])
    ce = -log_softmax(both)[np.arange(12), np.concatenate([yo, y])].mean()
    q = np.exp(log_softmax(teacher / 3.0))
    kd = kl_sum(q, log_softmax(zo / 3.0)) / 6 * 9.0
    got = dlb_parts(logits=t(z), targets=torch.tensor(y), overlap_logits=t(zo), overlap_targets=torch.tensor(yo),
                    teacher=t(teacher), temperature=3.0)
    assert [g.item() for g in got] == pytest.approx([ce, kd], abs=1e-5)


def test_dlb_keeps_the_last_logits_as_the_next_teacher_and_starts_with_plain_ce():
    m = build_method("dlb", {"alpha": 0.5}, num_classes=7)
    z1, z2, zo = logits(6), logits(6), logits(6)
    y1, y2 = RNG.integers(0, 7, 6), RNG.integers(0, 7, 6)
    first = m.loss(t(z1), torch.tensor(y1), StepContext())
    assert first["loss"].item() == pytest.approx(-log_softmax(z1)[np.arange(6), y1].mean(), abs=1e-5)
    ctx = StepContext(overlap_logits=t(zo), overlap_targets=torch.tensor(y1))
    second = m.loss(t(z2), torch.tensor(y2), ctx)
    ce = -log_softmax(np.concatenate([zo, z2]))[np.arange(12), np.concatenate([y1, y2])].mean()
    kd = kl_sum(np.exp(log_softmax(z1 / 3.0)), log_softmax(zo / 3.0)) / 6 * 9.0
    assert second["loss"].item() == pytest.approx(ce + 0.5 * kd, abs=1e-5)
    assert torch.equal(m.state_dict()["prev_logits"], t(z2))


def test_dlb_batches_repeat_the_previous_batch_across_epochs():
    g = torch.Generator().manual_seed(0)
    m = build_method("dlb", num_classes=3)
    labels = torch.arange(10) % 3
    e1 = list(m.compose_batches(labels, 4, g))
    e2 = list(m.compose_batches(labels, 4, g))
    assert [len(a) for a, _ in e1] == [4, 4] and e1[0][1] is None  # 10 // 4 full batches; nothing before the first
    assert torch.equal(e1[1][1], e1[0][0]) and torch.equal(e2[0][1], e1[1][0]) and torch.equal(e2[1][1], e2[0][0])
    seen = torch.cat([a for a, _ in e1])
    assert len(set(seen.tolist())) == 8  # a permutation cut into batches: no sample twice as 'this batch'
    # pulling only the first batch leaves it as the one the next epoch repeats (the harness stops at its last step)
    one = next(iter(last_batch_overlap(num_samples=10, batch_size=4, generator=g, previous=None)))
    assert one[1] is None


def test_byot_heads_are_distilled_by_the_final_logits_with_a_soft_ce_without_t_squared():
    z, a1, a2, y = logits(), logits(), logits(), RNG.integers(0, 7, 9)
    ce = -log_softmax(z)[np.arange(9), y].mean()
    teacher = np.exp(log_softmax(z / 3.0))
    soft = sum(-np.mean((teacher * log_softmax(a / 3.0)).sum(1)) for a in (a1, a2))
    aux = sum(-log_softmax(a)[np.arange(9), y].mean() for a in (a1, a2))
    got = byot_parts(logits=t(z), aux_logits=[t(a1), t(a2)], targets=torch.tensor(y), temperature=3.0,
                     coefficient=0.3)
    assert [g.item() for g in got] == pytest.approx([ce + 0.3 * soft + 0.7 * aux, ce, aux, soft], abs=1e-5)


def test_byot_builds_one_head_per_intermediate_stage_that_reaches_the_final_map():
    m = build_method("byot", num_classes=5, stages=((16, 1), (32, 1), (48, 2), (64, 4)))
    assert len(m.heads) == 2
    maps = (torch.randn(2, 32, 8, 8), torch.randn(2, 48, 4, 4))
    assert [tuple(h(x).shape) for h, x in zip(m.heads, maps, strict=True)] == [(2, 5), (2, 5)]
    # the SepConvs halve where the model's stages halve: 8x8 -> 4x4 -> 2x2 for the first head
    assert [s[0].stride for s in m.heads[0].convs] == [(2, 2), (2, 2)]
    with pytest.raises(ValueError, match="byot"):
        build_method("byot", num_classes=5, stages=((16, 1), (64, 4)))


def bake_reference(f: np.ndarray, z: np.ndarray, y: np.ndarray, temp: float, omega: float) -> tuple[float, float]:
    b = len(z)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    a = np.zeros((b, b))
    for i in range(b):  # softmax over the others (the official -1e9 on the diagonal)
        e = np.array([np.exp(sim[i, j]) if j != i else 0.0 for j in range(b)])
        a[i] = e / e.sum()
    p = np.exp(log_softmax(z / temp))
    q = (1 - omega) * np.linalg.inv(np.eye(b) - omega * a) @ p
    ce = -log_softmax(z)[np.arange(b), y].mean()
    return ce, kl_sum(q, log_softmax(z / temp)) * temp ** 2 / b


def test_bake_propagated_targets_and_loss_equal_the_official_closed_form():
    f, z, y = RNG.standard_normal((8, 5)), logits(8), RNG.integers(0, 7, 8)
    got = bake_parts(logits=t(z), targets=torch.tensor(y), features=t(f), temperature=4.0, omega=0.5)
    assert [g.item() for g in got] == pytest.approx(bake_reference(f, z, y, 4.0, 0.5), abs=1e-5)


def test_bake_batches_are_anchors_with_distinct_same_class_partners():
    labels = torch.tensor([0] * 6 + [1] * 5 + [2] * 2 + [3])  # class 2 has one other, class 3 none
    g = torch.Generator().manual_seed(3)
    batches = list(class_groups(labels=labels, anchors_per_batch=2, others=3, generator=g))
    assert len(batches) == 14 // 2
    anchors = torch.cat([b[:2] for b in batches])
    assert sorted(anchors.tolist()) == list(range(14))  # every sample an anchor once
    for b in batches:
        for k, a in enumerate(b[:2].tolist()):
            partners = b[2 + 3 * k: 5 + 3 * k].tolist()
            assert all(labels[p] == labels[a] for p in partners)
            if labels[a] in (0, 1):  # enough others: distinct, never the anchor
                assert len(set(partners)) == 3 and a not in partners
            elif labels[a] == 2:  # one other: drawn with replacement
                assert partners == [23 - a] * 3  # the class is {11, 12}
            else:  # alone in its class: itself
                assert partners == [a] * 3
    m = build_method("bake", {"intra_imgs": 3}, num_classes=4)
    assert m.steps_per_epoch(14, 8) == 7 and m.anchors_per_batch(8) == 2


@pytest.mark.parametrize("name", ["dlb", "byot", "bake"])
def test_methods_without_data_parallel_support_refuse_it_in_one_line(name):
    from helpers import quick_trial

    from harness.errors import UserError
    from harness.models import create_model, stage_info
    from harness.train.loop import build_step_rig

    model = create_model("tiny_cnn", num_classes=4, in_chans=3, input_size=(3, 8, 8))
    m = build_method(name, num_classes=4, feature_channels=(64, 48), stages=stage_info(model))
    t_ = quick_trial(name, epochs=1).train
    with pytest.raises(UserError, match=f"method '{name}' cannot run data-parallel: .+"):
        build_step_rig(t_, model, m, torch.device("cpu"), world=2)
