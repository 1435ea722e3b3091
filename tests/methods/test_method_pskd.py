"""PS-KD: alpha_t schedule, epoch-0 one-hot rule, table update after the step, state round-trip."""
import numpy as np
import pytest
import torch
from helpers import np_softmax

from methods import MethodParamError, StepContext, build_method
from methods.functional import pskd_alpha

N, C = 6, 4
Z = np.array([[2.0, 0.0, 0.0, 1.0], [0.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
Y = np.array([0, 2, 3])
IDX = np.array([4, 0, 2])


def make(**params):
    return build_method("pskd", params, num_classes=C, num_train=N)


def ctx(epoch, num_epochs=4, idx=IDX):
    return StepContext(epoch=epoch, num_epochs=num_epochs, indices=torch.tensor(idx))


def test_alpha_schedule():
    assert [pskd_alpha(alpha_T=0.8, epoch=e, num_epochs=4) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_epoch_zero_is_plain_ce_and_table_gets_the_prediction():
    m = make()
    z = torch.tensor(Z, requires_grad=True)
    out = m.loss(z, torch.tensor(Y), ctx(0))
    logp = np.log(np_softmax(Z))
    assert abs(out["loss"].item() - (-logp[np.arange(3), Y].mean())) < 1e-6
    out["loss"].backward()
    m.on_step_end()
    table = m.state_dict()["table"].numpy()
    np.testing.assert_allclose(table[IDX], np_softmax(Z), atol=1e-6)  # written after the step
    untouched = np.setdiff1d(np.arange(N), IDX)
    assert (table[untouched] == 0).all()


def test_later_epoch_target_uses_the_table():
    m = make(alpha_T=0.8)
    prev = np_softmax(np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    m.apply_update(torch.tensor(IDX), torch.tensor(prev, dtype=torch.float32))
    out = m.loss(torch.tensor(Z), torch.tensor(Y), ctx(2, 4))  # alpha_t = 0.8 * 3 / 4 = 0.6
    onehot = np.eye(C)[Y]
    t = 0.4 * onehot + 0.6 * prev
    expected = -(t * np.log(np_softmax(Z))).sum(1).mean()
    assert abs(out["loss"].item() - expected) < 1e-5
    assert abs(0.4 * out["ce"].item() + 0.6 * out["kd"].item() - expected) < 1e-5


def test_rows_never_written_count_as_one_hot():
    m = make()
    out = m.loss(torch.tensor(Z), torch.tensor(Y), ctx(3))  # empty table, epoch 3
    expected = -np.log(np_softmax(Z))[np.arange(3), Y].mean()
    assert abs(out["loss"].item() - expected) < 1e-6


def test_no_gradient_into_the_table_and_prediction_is_pre_step():
    m = make()
    z = torch.tensor(Z, requires_grad=True)
    m.loss(z, torch.tensor(Y), ctx(0))["loss"].backward()
    with torch.no_grad():
        z -= 10.0 * z.grad  # an "optimiser step" before on_step_end
    m.on_step_end()
    np.testing.assert_allclose(m.state_dict()["table"].numpy()[IDX], np_softmax(Z), atol=1e-6)


def test_pending_update_for_data_parallel():
    # two workers: each hands over its update, the harness gathers both and applies them everywhere
    workers = [make(), make()]
    batches = [(np.array([0, 1]), Z[:2], Y[:2]), (np.array([5, 3]), Z[1:], Y[1:])]
    for w, (idx, z, y) in zip(workers, batches, strict=True):
        w.loss(torch.tensor(z), torch.tensor(y), ctx(0, idx=idx))
    pend = [w.pending_update() for w in workers]
    assert workers[0].pending_update() is None  # handed over once
    idx = torch.cat([p[0] for p in pend])
    probs = torch.cat([p[1] for p in pend])
    for w in workers:
        w.apply_update(idx, probs)
        w.on_step_end()  # nothing left to apply
    t0, t1 = (w.state_dict()["table"] for w in workers)
    assert torch.equal(t0, t1)
    np.testing.assert_allclose(t0[[5, 3]].numpy(), np_softmax(Z[1:]), atol=1e-6)


@pytest.mark.parametrize("dtype,size", [("float32", 4), ("float16", 2)])
def test_state_round_trip_and_size(dtype, size):
    m = make(table_dtype=dtype)
    m.loss(torch.tensor(Z), torch.tensor(Y), ctx(0))
    m.on_step_end()
    assert m.state_nbytes() == N * C * size
    state = m.state_dict()
    assert state["table"].dtype == {"float32": torch.float32, "float16": torch.float16}[dtype]
    resumed = make(table_dtype=dtype)
    resumed.load_state_dict({k: v.clone() for k, v in state.items()})
    a = m.loss(torch.tensor(Z), torch.tensor(Y), ctx(2))["loss"]
    b = resumed.loss(torch.tensor(Z), torch.tensor(Y), ctx(2))["loss"]
    assert a.item() == b.item()
    fresh = make(table_dtype=dtype).loss(torch.tensor(Z), torch.tensor(Y), ctx(2))["loss"]
    assert fresh.item() != a.item()  # the table matters


def test_missing_indices_and_bad_alpha():
    with pytest.raises(ValueError, match="indices"):
        make().loss(torch.tensor(Z), torch.tensor(Y), StepContext(epoch=1, num_epochs=2))
    with pytest.raises(MethodParamError, match=r"method 'pskd'.*'alpha_T'"):
        make(alpha_T=1.5)
    with pytest.raises(MethodParamError, match=r"'table_dtype'"):
        make(table_dtype="bfloat16")


def test_two_classes():
    m = build_method("pskd", num_classes=2, num_train=2)
    m.apply_update(torch.tensor([0]), torch.tensor([[0.25, 0.75]]))
    out = m.loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), StepContext(epoch=1, num_epochs=2, indices=torch.tensor([0])))
    lp = np.log(np_softmax(np.array([[1.0, 0.0]])))[0]
    t = 0.2 * np.array([1.0, 0.0]) + 0.8 * np.array([0.25, 0.75])  # alpha_t = 0.8 * 2 / 2
    assert abs(out["loss"].item() - -(t * lp).sum()) < 1e-6
