"""Backend switches of a trial (train.deterministic against the CUDA defaults), set both ways so that a
worker process that runs trial after trial never carries one trial's settings into the next."""
from __future__ import annotations

import pytest
import torch

from harness.train.device import configure_backends


@pytest.fixture
def restore_backends():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled())
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32) = saved[:3]
    torch.set_float32_matmul_precision(saved[3])
    torch.use_deterministic_algorithms(saved[4])


def test_cuda_defaults_autotune_and_tf32_deterministic_turns_both_off(restore_backends):
    # setting the switches needs no GPU: they are process flags read when a kernel is chosen
    cuda = torch.device("cuda")
    assert configure_backends(cuda, deterministic=False) == {"deterministic": False, "cudnn_benchmark": True,
                                                             "tf32": True}
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high" and not torch.are_deterministic_algorithms_enabled()

    assert configure_backends(cuda, deterministic=True)["tf32"] is False
    assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.deterministic and torch.get_float32_matmul_precision() == "highest"
    assert torch.are_deterministic_algorithms_enabled()

    configure_backends(cuda, deterministic=False)  # the next trial in the same worker is fast again
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_cpu_touches_only_determinism(restore_backends):
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = False
    assert configure_backends(torch.device("cpu"), deterministic=True) == {"deterministic": True}
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.benchmark
    configure_backends(torch.device("cpu"), deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
