"""vocseg.runtime.prefetch on CPU: the batches finished ahead on a thread equal those finished inline, in order;
an error in the thread is raised at its batch; leaving early stops the thread without drawing the source dry."""

from __future__ import annotations

import threading
from contextlib import closing

import pytest
import torch

from vocseg.runtime.prefetch import AHEAD, finished_batches

CPU = torch.device("cpu")


def _source(n: int, drawn: list[int] | None = None):
    for i in range(n):
        if drawn is not None:
            drawn.append(i)
        yield torch.full((2, 3), float(i)), torch.tensor([i])


def _prepare(batch):
    images, labels = batch
    return images * 2 + 1, labels + 100


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vocseg-prefetch"]


@pytest.mark.parametrize("ahead", [False, True])
def test_batches_in_order_equal_to_prepare(ahead):
    got = list(finished_batches(_source(7), _prepare, CPU, ahead))
    expected = [_prepare(b) for b in _source(7)]
    assert len(got) == 7
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert not _prefetch_threads()


def test_without_prepare_the_batches_pass_through():
    batches = list(_source(3))
    assert list(finished_batches(batches, None, CPU, ahead=True)) == batches


def test_ahead_runs_prepare_on_another_thread_without_grad():
    seen = []

    def prepare(batch):
        seen.append((threading.get_ident(), torch.is_grad_enabled()))
        return _prepare(batch)

    assert len(list(finished_batches(_source(3), prepare, CPU, ahead=True))) == 3
    assert len(seen) == 3 and all(ident != threading.get_ident() and not grad for ident, grad in seen)


def test_an_error_in_the_thread_is_raised_at_its_batch():
    def prepare(batch):
        if int(batch[1]) == 2:
            raise ValueError("bad window in batch 2")
        return _prepare(batch)

    got = []
    with pytest.raises(ValueError, match="bad window in batch 2"):
        for item in finished_batches(_source(5), prepare, CPU, ahead=True):
            got.append(int(item[1]))
    assert got == [100, 101]
    assert not _prefetch_threads()


def test_leaving_early_stops_the_thread():
    drawn: list[int] = []
    with closing(finished_batches(_source(1000, drawn), _prepare, CPU, ahead=True)) as batches:
        for i, _ in enumerate(batches):
            if i == 1:
                break
    assert not _prefetch_threads()  # closing joined it
    # two taken, at most AHEAD finished or being finished, and one more drawn before the stop was seen
    assert 2 <= len(drawn) <= 2 + AHEAD + 1
