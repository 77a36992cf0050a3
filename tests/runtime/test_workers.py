"""Machine-dependent defaults (vocseg.system): loader workers per device and core count."""

from __future__ import annotations

import pytest
import torch

from vocseg.errors import VocsegError
from vocseg.runtime import workers as system

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    "cores, cpu_workers, cuda_workers", [(1, 0, 1), (2, 0, 1), (4, 0, 3), (8, 2, 7), (16, 4, 8), (64, 4, 8)]
)
def test_auto_workers_per_device_and_cores(cores: int, cpu_workers: int, cuda_workers: int, monkeypatch) -> None:
    monkeypatch.setattr(system, "cpu_count", lambda: cores)
    assert system.resolve_workers("auto", CPU) == cpu_workers
    assert system.resolve_workers("auto", CUDA) == cuda_workers


def test_explicit_workers_are_capped_at_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(system, "cpu_count", lambda: 2)
    assert system.resolve_workers(0, CPU) == 0
    assert system.resolve_workers(1, CUDA) == 1
    assert system.resolve_workers(6, CPU) == 2
    assert system.resolve_workers("3", CPU) == 2  # from a command line or YAML string


@pytest.mark.parametrize("bad", [-1, "many", None])
def test_bad_worker_counts_are_refused(bad) -> None:
    with pytest.raises(VocsegError, match="num_workers must be 'auto' or an integer >= 0"):
        system.resolve_workers(bad, CPU)


def test_cpu_count_is_the_usable_cores() -> None:
    assert 1 <= system.cpu_count() <= (torch.multiprocessing.cpu_count() or 1)
