"""vocseg.data.prefetch: the same batches as finishing each inline, in the same order; on CUDA each batch is
finished on a side stream one step ahead, and the training stream waits for it before using it.

The stream order is checked on CPU with recording stand-ins for torch.cuda's streams (CI has no GPU); on a
machine with CUDA the real streams are checked against the inline path too."""

from __future__ import annotations

import pytest
import torch

from vocseg.config import Config
from vocseg.data.builder import build_datasets
from vocseg.data.device_augment import DeviceAugment
from vocseg.data.loaders import train_loader
from vocseg.data.prefetch import DevicePrefetch


def test_on_cpu_the_batches_are_finished_inline_in_order():
    seen = []

    def prepare(batch):
        seen.append(batch)
        return torch.full((1,), float(batch)), torch.full((1,), batch)

    batches = DevicePrefetch([3, 1, 2], prepare, torch.device("cpu"))
    assert len(batches) == 3
    out = iter(batches)
    assert float(next(out)[0]) == 3.0 and seen == [3]  # nothing prepared ahead of the step that asks for it
    assert [int(m) for _, m in out] == [1, 2] and seen == [3, 1, 2]


class Recorder:
    """Stand-ins for torch.cuda's streams and a prepared batch's tensors; every call lands in ``log``."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.current = "main"

    def stream_of(self, name):
        log = self.log

        class Stream:
            def wait_stream(self, other) -> None:
                log.append(("wait", name, other.name))

        s = Stream()
        s.name = name
        return s

    def context(self, stream):
        recorder = self

        class Context:
            def __enter__(self):
                recorder.current = stream.name

            def __exit__(self, *exc):
                recorder.current = "main"

        return Context()

    def tensor(self, batch):
        log = self.log

        class Tensor:
            def record_stream(self, stream) -> None:
                log.append(("record", batch, stream.name))

        return Tensor()


def test_on_cuda_each_batch_is_prepared_a_step_ahead_on_a_side_stream(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: rec.stream_of("main"))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: rec.stream_of("side"))
    monkeypatch.setattr(torch.cuda, "stream", rec.context)

    def prepare(batch):
        rec.log.append(("prepare", batch, rec.current))
        return rec.tensor(batch), rec.tensor(batch)

    out = iter(DevicePrefetch(["a", "b", "c"], prepare, torch.device("cuda")))
    first = next(out)
    assert first is not None
    assert rec.log == [
        ("wait", "side", "main"),  # the side stream starts after what the main stream queued before
        ("prepare", "a", "side"),
        ("wait", "main", "side"),  # the step using "a" waits for its work, queued before "b"'s
        ("prepare", "b", "side"),
        ("record", "a", "main"),
        ("record", "a", "main"),
    ]
    rec.log.clear()
    rest = list(out)
    assert len(rest) == 2
    assert rec.log == [
        ("wait", "main", "side"),
        ("prepare", "c", "side"),
        ("record", "b", "main"),
        ("record", "b", "main"),
        ("wait", "main", "side"),
        ("record", "c", "main"),
        ("record", "c", "main"),
    ]


def test_an_empty_loader_yields_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Recorder().stream_of("main"))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Recorder().stream_of("side"))
    assert list(DevicePrefetch([], lambda b: b, torch.device("cuda"))) == []
    assert list(DevicePrefetch([], lambda b: b, torch.device("cpu"))) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_side_stream_gives_the_inline_batches(tiny_voc, vocseg_cache, torch_global_state):
    cuda = torch.device("cuda")
    cfg = Config(
        data_root=str(tiny_voc), num_workers=0, image_size=32, cache="none", batch_size=4,
        augment_on="device", photometric=True, copy_paste=0.5, seed=3,
    ).validate()  # fmt: skip
    data = build_datasets(cfg, None)
    augment = DeviceAugment(data.mean, data.std, cuda)
    torch.manual_seed(7)
    inline = [augment(batch) for batch in train_loader(data, cfg, 1, cuda, 0, 1)]
    torch.manual_seed(7)
    ahead = list(DevicePrefetch(train_loader(data, cfg, 1, cuda, 0, 1), augment, cuda))
    assert len(ahead) == len(inline) > 1
    for (a_images, a_masks), (b_images, b_masks) in zip(ahead, inline):
        assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)
