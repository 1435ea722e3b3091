"""A compiled sweep holds: trial after trial in one process (as a Ray worker runs them), every Zipf variant
compiles its loss once per shape whatever its alpha, lam, smallest_prob or exp_lambda, random priors
included, and nothing reaches Dynamo's recompile limit (8 graphs per code object; under fullgraph the ninth
is an error). Training batches have one static shape: the last partial batch is dropped.

Graphs are counted with a backend that records every graph Dynamo hands it and runs it through aot_eager
(autograd traced, no C++), forced in through torch.compile as tests/train/test_compile.py does; the slow
test at the end runs the real inductor path."""
from collections import Counter

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from harness.config.resolve import resolve_trial
from harness.errors import UserError
from harness.train.loop import train_trial
from methods import build_method
from methods.base import StepContext
from methods.compiled import reset

# 4 classes x 10 images = 40 training images, batch 16: two full batches and a partial one of 8 (dropped)
DATA = dict(num_classes=4, num_superclasses=2, train_per_class=10, val_per_class=4, image_size=8)


@pytest.fixture
def graphs(monkeypatch):
    """torch.compile recorded: Counter of graphs compiled per compiled function's name, each run through
    aot_eager. One backend object per name, as torch.compile's own backends compare equal from call to call
    (a new backend object would make Dynamo compile again)."""
    real, aot_eager, counts, backends = torch.compile, lookup_backend("aot_eager"), Counter(), {}

    def counting(name):
        def backend(gm, example_inputs):
            counts[name] += 1
            return aot_eager(gm, example_inputs)
        return backend

    def recording(fn=None, **kwargs):
        name = getattr(fn, "__name__", type(fn).__name__)
        kwargs["backend"] = backends.setdefault(name, counting(name))
        kwargs.pop("mode", None)
        return real(fn, **kwargs)

    torch._dynamo.reset()
    reset()
    monkeypatch.setattr(torch, "compile", recording)
    yield counts
    reset()
    torch._dynamo.reset()


def run(tmp_path, i, method, params, **train):
    spec = resolve_trial(method=method, dataset="synthetic", model="tiny_cnn", seed=0, method_params=params,
                         dataset_params=DATA, train={"epochs": 2, "batch_size": 16, "checkpoint": False,
                                                     "compile": True, "threads": 1, **train})
    return train_trial(spec, tmp_path / f"t{i}", log=lambda s: None)


def test_compiled_zipf_trials_in_one_process_compile_each_graph_once(tmp_path, graphs):
    trials = [  # new alpha, lam, mask and distributions, random priors among them
        {"alpha": 1.0, "lam": 0.1}, {"alpha": 2.0, "lam": 0.5}, {"alpha": 0.5, "lam": 1.0},
        {"distribution": "random_uniform", "lam": 0.3}, {"distribution": "random_pareto", "lam": 0.7},
        {"distribution": "linear_decay", "smallest_prob": 0.1}, {"distribution": "linear_decay", "smallest_prob": 0.2},
        {"distribution": "exponential_decay", "exp_lambda": 0.5}, {"distribution": "exponential_decay", "exp_lambda": 2.0},
        {"alpha": 3.0, "mask": True},
    ]
    forwards_after_first = None
    for i, params in enumerate(trials):
        assert run(tmp_path, i, "zipf", params)["status"] == "finished"
        forwards = graphs["MapsForward"]
        forwards_after_first = forwards if forwards_after_first is None else forwards_after_first
        # a fresh model per trial: the forward's graphs are reused, never compiled again
        assert forwards == forwards_after_first, (i, graphs)
    # one graph per (shape, distribution or mask choice): zipf, linear_decay, exponential_decay and zipf with
    # the mask; both random priors share the region fed with drawn weights
    assert graphs["zipf_loss_dense"] == 4 and graphs["zipf_loss_given_weights"] == 1, graphs


@pytest.mark.parametrize("method,params", [("ls", {"epsilon": 0.1}), ("ls", {"epsilon": 0.3}),
                                           ("tfkd", {"temperature": 10.0}), ("cskd", {"temperature": 2.0})])
def test_default_compiled_loss_reads_float_parameters_as_inputs(method, params, graphs):
    """Nine new values of a float parameter, a fresh method each (nine trials): one graph, fullgraph."""
    key = next(iter(params))
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    ctx = StepContext(partner_logits=torch.randn(16, 10, generator=g))
    for k in range(9):
        m = build_method(method, {key: params[key] * (1 + 0.1 * k)}, num_classes=10)
        got, want = m.compiled_loss()(z, y, ctx), m.loss(z, y, ctx)
        for part in want:
            torch.testing.assert_close(got[part], want[part], rtol=1e-6, atol=1e-7)
    assert graphs == {"loss": 1}, graphs


@pytest.mark.parametrize("distribution", ["random_uniform", "random_pareto"])
def test_random_priors_compiled_equal_eager_for_the_same_seed(distribution, graphs):
    """The draw happens outside the graph with the method's generator: the same numbers as eager, and the
    generator advances as in eager (the second step draws the same as eager's second step)."""
    m = build_method("zipf", {"distribution": distribution, "lam": 0.5, "dense": False}, num_classes=12)
    compiled = m.compiled_loss()
    g = torch.Generator().manual_seed(3)
    for step in range(2):
        z = (3 * torch.randn(8, 12, generator=g)).requires_grad_()
        y = torch.randint(0, 12, (8,), generator=g)
        out = {}
        for name, fn in (("eager", m.loss), ("compiled", compiled)):
            ctx = StepContext(generator=torch.Generator().manual_seed(11))
            for _ in range(step):  # the generator as it is after `step` earlier draws of this shape
                torch.rand(8, 12, generator=ctx.generator) if distribution == "random_uniform" else \
                    torch.empty(8, 12).exponential_(1.0, generator=ctx.generator)
            parts = fn(z, y, ctx)
            (grad,) = torch.autograd.grad(parts["loss"], z)
            out[name] = (parts["loss"].detach(), parts["zipf"], grad)
        for a, b in zip(out["compiled"], out["eager"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert graphs == {"zipf_loss_given_weights": 1}, graphs


def test_training_drops_the_partial_batch_and_refuses_a_split_below_one_batch(tmp_path):
    from harness.train.parts import BatchPlan

    labels = torch.arange(40) % 4
    for method in ("ce", "cskd"):
        plan = BatchPlan(labels, 16, torch.Generator().manual_seed(0), build_method(method, num_classes=4))
        batches = list(plan)
        assert len(plan) == 2 == len(batches)  # floor(40 / 16)
        per = 32 if method == "cskd" else 16  # CS-KD: anchors and their partners
        assert [len(b) for b in batches] == [per, per]
        anchors = torch.cat([b[:16] for b in batches])
        assert len(set(anchors.tolist())) == 32  # 32 distinct samples of the 40 this epoch
    with pytest.raises(UserError, match=r"train.batch_size 64 is larger than the training split \(40 images\)"):
        resolve_trial(method="ce", dataset="synthetic", model="tiny_cnn", seed=0, dataset_params=DATA,
                      train=dict(batch_size=64))


@pytest.mark.slow
def test_done_when_a_compiled_sweep_of_ce_and_nine_zipf_alphas_finishes_in_one_process(tmp_path, graphs):
    """The issue's done-when (before: the 5th Zipf trial and every later one failed with
    FailOnRecompileLimitHit). A partial last batch in the data (40 % 16 = 8)."""
    trials = [("ce", {})] + [("zipf", {"alpha": a}) for a in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)]
    for i, (method, params) in enumerate(trials):
        assert run(tmp_path, i, method, params)["status"] == "finished", (method, params)
    assert graphs["zipf_loss_dense"] == 1 and graphs["loss"] == 1, graphs  # the loss of Zipf's LS, of CE


@pytest.mark.slow
def test_inductor_compiled_zipf_trials_reuse_their_graphs(tmp_path):
    """The real path (inductor, C++ on the CPU): a second trial with new alpha and lam compiles nothing."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    reset()
    try:
        run(tmp_path, 0, "zipf", {"alpha": 1.0, "lam": 0.1}, epochs=1)
        compiled = counters["stats"]["unique_graphs"]
        assert compiled > 0
        assert run(tmp_path, 1, "zipf", {"alpha": 2.0, "lam": 0.4}, epochs=1)["status"] == "finished"
        assert counters["stats"]["unique_graphs"] == compiled
    finally:
        reset()
        torch._dynamo.reset()
