"""`train.compile` compiles the whole step for every method: the forward (with the maps a method declared, as
one `MapsForward` module) and the loss (`Method.compiled_loss`), and trains to the eager numbers.

torch.compile runs with backend="eager" here: Dynamo captures the graphs (what compiling applies to) without
generating C++, which would take minutes per method on a 2-core CPU. Inductor itself is checked on the Zipf
loss in tests/methods/test_zipf_compiled.py."""
import pytest
import torch
from helpers import read_metrics

from harness.config.resolve import resolve_trial
from harness.models import MapsForward, StagesForward
from harness.train.loop import train_trial
from methods.compiled import reset

pytestmark = pytest.mark.slow

METHODS = ["ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf", "maxsup", "uskd", "dlb", "byot", "bake"]
REGIONS = {"zipf": "zipf_loss_dense", "maxsup": "maxsup_parts", "dlb": "dlb_parts"}  # a region, not `loss`


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile, recorded and forced to Dynamo's eager backend."""
    real, calls = torch.compile, []

    def recording(fn=None, **kwargs):
        calls.append(fn)
        kwargs["backend"] = "eager"
        kwargs.pop("mode", None)
        return real(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    reset()
    yield calls
    reset()
    torch._dynamo.reset()


def run(tmp_path, method, compile_):
    spec = resolve_trial(method=method, dataset="digits", seed=0,
                         train=dict(epochs=2, batch_size=32, max_steps_per_epoch=3, checkpoint=False, compile=compile_))
    out = tmp_path / f"{method}-{compile_}"
    train_trial(spec, out, log=lambda s: None)
    return read_metrics(out)


@pytest.mark.parametrize("method", METHODS)
def test_compile_applies_to_every_method_and_trains_to_the_eager_numbers(tmp_path, compile_calls, method):
    eager = run(tmp_path, method, False)
    assert compile_calls == []
    compiled = run(tmp_path, method, True)
    forwards = [f for f in compile_calls if isinstance(f, torch.nn.Module)]
    losses = [f for f in compile_calls if not isinstance(f, torch.nn.Module)]
    # PS-KD's loss is eager by design (alpha_t changes every epoch; its table is state): its forward compiles
    assert len(forwards) == 1 and len(losses) == (0 if method == "pskd" else 1), compile_calls
    needs_maps = method in ("zipf", "uskd", "bake")  # zipf's digits preset: dense votes and the extra layer
    assert isinstance(forwards[0], MapsForward) == needs_maps
    assert isinstance(forwards[0], StagesForward) == (method == "byot")
    if method in REGIONS:  # a compiled region of the loss's math, not the eager loss
        assert losses[0].__name__ == REGIONS[method]
    elif method != "pskd":
        assert getattr(losses[0], "__name__", "") == "loss"
    for a, b in zip(eager, compiled, strict=True):
        for key in ("train_loss", "train_top1", "val_top1", "val_nll"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, a[key], b[key])
