"""The registry: duplicates, unknown names, parameters, user methods from files, and every built-in."""
import re
from pathlib import Path

import pytest
import torch

from methods import (
    METHODS,
    MethodParamError,
    StepContext,
    build_method,
    describe_methods,
    load_user_module,
    make_params,
)
from methods.registry import Registry, RegistryError

BUILTINS = ["ce", "cskd", "ls", "ols", "pskd", "tfkd", "zipf"]

# The README's example of a user's own method (.agents/README_methods.md; keep the two identical).
EXAMPLE = '''\
"""my_methods.py: a confidence penalty (Pereyra et al., 2017) as a tfbench method."""
from dataclasses import dataclass

import torch.nn.functional as F

from methods import Method, register


@register("confidence_penalty")
class ConfidencePenalty(Method):
    """L = CE - beta * entropy(softmax(z)): penalises over-confident predictions."""

    @dataclass(frozen=True)
    class Params:
        beta: float = 0.1

    def validate(self):
        if self.params.beta < 0:
            self.fail("beta", f"must be >= 0, got {self.params.beta}")

    def loss(self, logits, targets, ctx):
        logp = F.log_softmax(logits.float(), dim=1)
        ce = F.nll_loss(logp, targets)
        entropy = -(logp.exp() * logp).sum(1).mean()
        return {"loss": ce - self.params.beta * entropy, "ce": ce.detach(), "entropy": entropy.detach()}
'''


def test_all_builtins_are_registered_and_described():
    assert set(BUILTINS) <= set(METHODS.names())  # other tests may have registered user methods
    described = dict(describe_methods())
    assert set(BUILTINS) <= set(described)
    assert ("epsilon", "float", 0.1) in described["ls"]
    assert ("distribution", "{zipf,constant,random_uniform,random_pareto,linear_decay,exponential_decay}", "zipf") \
        in described["zipf"]


def test_duplicate_name_raises():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(RegistryError, match="'a' is already registered"):
        @reg.register("a")
        class B:
            pass


def test_duplicate_builtin_name_raises():
    with pytest.raises(RegistryError, match="'zipf' is already registered"):
        @METHODS.register("zipf")
        class Impostor:
            pass
    assert METHODS.get("zipf").__module__ == "methods.zipf"


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(RegistryError) as e:
        build_method("zipff", num_classes=3)
    msg = str(e.value)
    assert "did you mean 'zipf'" in msg and all(n in msg for n in BUILTINS)


def test_unknown_and_mistyped_parameters():
    with pytest.raises(MethodParamError, match=r"method 'zipf': unknown parameter 'lamda' \(did you mean 'lam'\?\)"):
        make_params(METHODS.get("zipf"), {"lamda": 0.1})
    with pytest.raises(MethodParamError, match=r"method 'ls': parameter 'epsilon' is 'x'; allowed: a number"):
        make_params(METHODS.get("ls"), {"epsilon": "x"})
    assert make_params(METHODS.get("ls"), {"epsilon": 0}).epsilon == 0.0  # YAML's 0 for 0.0


def test_choices_are_checked_even_for_hand_built_params():
    cls = METHODS.get("zipf")
    with pytest.raises(MethodParamError, match=r"method 'zipf': parameter 'distribution' is 'gauss'"):
        cls(cls.Params(distribution="gauss"), num_classes=4)


def test_user_method_from_a_temporary_file(tmp_path: Path):
    path = tmp_path / "my_methods.py"
    path.write_text(EXAMPLE)
    try:
        load_user_module(str(path))
        load_user_module(str(path))  # importing twice is a no-op, not a duplicate registration
        assert "confidence_penalty" in METHODS
        m = build_method("confidence_penalty", {"beta": 0.5}, num_classes=3)
        z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
        out = m.loss(z, torch.tensor([0, 1]), StepContext())
        p = torch.softmax(z.detach(), 1)
        ce = -(torch.log(p[0, 0]) + torch.log(p[1, 1])) / 2
        ent = -(p * p.log()).sum(1).mean()
        assert abs(out["loss"].item() - (ce - 0.5 * ent).item()) < 1e-6
        out["loss"].backward()
        with pytest.raises(MethodParamError, match=r"method 'confidence_penalty'.*'beta'"):
            build_method("confidence_penalty", {"beta": -1}, num_classes=3)
    finally:
        METHODS.unregister("confidence_penalty")


def test_readme_example_is_this_one():
    # once the README carries the example, it must stay the one tested here
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if '@register("confidence_penalty")' not in text:
        pytest.skip("README has no user-method example yet")
    block = re.search(r"```python\n(\"\"\"my_methods\.py.*?)```", text, re.S)
    assert block and block.group(1) == EXAMPLE


def test_user_file_errors_are_one_line(tmp_path: Path):
    from methods import UserImportError

    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserImportError, match="raised RuntimeError: boom"):
        load_user_module(str(bad))
    with pytest.raises(UserImportError, match="no such file"):
        load_user_module(str(tmp_path / "missing.py"))


def _context(name, b, c):
    gen = torch.Generator().manual_seed(0)
    ctx = StepContext(epoch=1, num_epochs=3, indices=torch.arange(b), generator=gen)
    ctx.partner_logits = torch.randn(b, c, generator=gen)
    ctx.final_map = torch.randn(b, 8, 2, 2, generator=gen)
    ctx.prev_map = torch.randn(b, 4, 4, 4, generator=gen)
    ctx.classifier = torch.nn.Linear(8, c)
    return ctx


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_runs_a_step_and_round_trips_its_state(name):
    b, c = 6, 5
    m = build_method(name, num_classes=c, num_train=10, feature_channels=(8, 4))
    z = torch.randn(b, c, requires_grad=True)
    y = torch.arange(b) % c
    ctx = _context(name, b, c)
    m.on_epoch_start(1, 3)
    out = m.loss(z, y, ctx)
    assert out["loss"].requires_grad and out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert len(out) >= 2 and all(not v.requires_grad for k, v in out.items() if k != "loss")
    out["loss"].backward()
    assert z.grad is not None
    m.on_step_end()
    m.on_epoch_end(1)
    again = build_method(name, num_classes=c, num_train=10, feature_channels=(8, 4))
    again.load_state_dict(m.state_dict())
    a = m.loss(z, y, ctx)["loss"].item()
    assert again.loss(z, y, ctx)["loss"].item() == pytest.approx(a, abs=1e-6)


def test_declared_state_is_saved_restored_checked_and_moved():
    """A user method declares its per-data tensors in `state`; the base class saves them by name, restores
    copies in the current tensor's dtype, refuses another shape in one line, and `to` moves them together
    with `extra_modules()`."""
    from methods.base import Method

    class Counting(Method):
        name = "counting_test"
        state = ("seen", "last")

        def __init__(self, params=None, **context):
            super().__init__(params, **context)
            self.seen = torch.zeros(self.num_classes)   # (C,) float32
            self.last = None                              # (B,) long, after the first step
            self.head = torch.nn.Linear(2, 2)

        def extra_modules(self):
            return self.head

    m = Counting(num_classes=3)
    assert m.state_dict().keys() == {"seen"}  # None is not saved
    m.seen += torch.tensor([1.0, 2.0, 3.0])
    m.last = torch.tensor([2, 0])
    saved = {"seen": torch.tensor([4, 5, 6], dtype=torch.float64), "last": m.last}
    fresh = Counting(num_classes=3)
    fresh.load_state_dict(saved)
    assert fresh.seen.dtype == torch.float32 and fresh.seen.tolist() == [4.0, 5.0, 6.0]
    assert fresh.last.tolist() == [2, 0] and fresh.last is not m.last  # a copy, not the caller's tensor
    with pytest.raises(ValueError, match=r"checkpoint seen has shape \(4,\), expected \(3,\)"):
        Counting(num_classes=3).load_state_dict({"seen": torch.zeros(4)})
    moved = fresh.to("meta")
    assert moved is fresh and fresh.device == torch.device("meta")
    assert fresh.seen.device.type == fresh.last.device.type == fresh.head.weight.device.type == "meta"
