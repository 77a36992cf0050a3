"""ConfusionMatrix: hand-computed cases, torchmetrics agreement, ignore/void handling, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vocseg.data.classes import VOC_CLASSES
from vocseg.errors import VocsegError
from vocseg.metrics import ConfusionMatrix, per_image_counts

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")


def _random_batches(n_batches: int, num_classes: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Noisy predictions of a random target with ~10% void pixels, as (preds, target) pairs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        target = torch.randint(0, num_classes, (2, 17, 23), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        preds = torch.where(
            torch.rand(target.shape, generator=g) < 0.6,
            target.clamp(max=num_classes - 1),
            torch.randint(0, num_classes, target.shape, generator=g),
        )
        out.append((preds, target))
    return out


def _numpy_confusion(batches, num_classes: int) -> np.ndarray:
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    for preds, target in batches:
        p, t = preds.numpy().ravel(), target.numpy().ravel()
        keep = t != 255
        np.add.at(m, (t[keep], p[keep]), 1)
    return m


def test_hand_computed_2x3_with_ignore_pixel() -> None:
    # 4 classes; class 3 appears in neither tensor. The bottom-right pixel is void and
    # its prediction (0) must not count anywhere.
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    preds = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(num_classes=4, class_names=["a", "b", "c", "d"])
    cm.update(preds, target)
    # [true, pred]: (0,0) (0,1) (1,1) (1,1) (2,2)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    assert cm.matrix.dtype == torch.int64

    r = cm.compute()
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)
    # accuracies: a 1/2, b 2/2, c 1/1, d undefined
    assert r["per_class_accuracy"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 1.0, "d": None})
    assert r["mean_accuracy"] == pytest.approx(2.5 / 3)
    # IoU: a 1/(2+1-1), b 2/(2+3-2), c 1/1, d undefined (union 0)
    assert r["per_class_iou"] == pytest.approx({"a": 1 / 2, "b": 2 / 3, "c": 1.0, "d": None})
    assert r["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # fw IoU: true frequencies 2/5, 2/5, 1/5
    assert r["fw_iou"] == pytest.approx((2 * 1 / 2 + 2 * 2 / 3 + 1 * 1) / 5)


def test_predicted_but_absent_class_counts_as_zero_iou() -> None:
    cm = ConfusionMatrix(num_classes=3, class_names=["a", "b", "c"])
    cm.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
    r = cm.compute()
    assert r["per_class_accuracy"] == pytest.approx({"a": 0.75, "b": None, "c": None})
    assert r["per_class_iou"] == pytest.approx({"a": 0.75, "b": 0.0, "c": None})
    assert r["mean_accuracy"] == pytest.approx(0.75)
    assert r["mean_iou"] == pytest.approx(0.375)
    assert r["fw_iou"] == pytest.approx(0.75)


def test_all_background_predictor_on_voc_like_target() -> None:
    # 1000 labelled pixels: 70% background, 100 each of classes 5, 9, 15 (k = 4 present classes),
    # plus 50 void pixels that must not change anything.
    target = torch.cat(
        [
            torch.zeros(700, dtype=torch.long),
            torch.full((100,), 5),
            torch.full((100,), 9),
            torch.full((100,), 15),
            torch.full((50,), 255),
        ]
    )
    target = target[torch.randperm(target.numel(), generator=torch.Generator().manual_seed(0))].view(21, 50)
    cm = ConfusionMatrix()
    cm.update(torch.zeros_like(target), target)
    r = cm.compute()
    k = 4
    assert r["pixel_accuracy"] == pytest.approx(0.7)
    assert r["mean_accuracy"] == pytest.approx(1 / k)  # background 1.0, the others 0.0
    assert r["mean_iou"] == pytest.approx(0.7 / k)  # background IoU = 700 / 1000
    assert r["fw_iou"] == pytest.approx(0.7 * 0.7)
    assert r["per_class_iou"]["background"] == pytest.approx(0.7)
    assert r["per_class_iou"]["person"] == 0.0 and r["per_class_iou"]["aeroplane"] is None
    assert list(r["per_class_iou"]) == list(VOC_CLASSES)


def test_matches_torchmetrics_and_numpy_over_accumulated_batches() -> None:
    n = 6
    batches = _random_batches(5, n)
    cm = ConfusionMatrix(num_classes=n)
    iou_none = MulticlassJaccardIndex(n, ignore_index=255, average=None)
    iou_macro = MulticlassJaccardIndex(n, ignore_index=255, average="macro")
    acc_micro = MulticlassAccuracy(n, average="micro", ignore_index=255)
    acc_macro = MulticlassAccuracy(n, average="macro", ignore_index=255)
    acc_none = MulticlassAccuracy(n, average=None, ignore_index=255)
    for preds, target in batches:
        cm.update(preds, target)
        for metric in (iou_none, iou_macro, acc_micro, acc_macro, acc_none):
            metric.update(preds, target)
    r = cm.compute()

    assert np.array_equal(cm.matrix.numpy(), _numpy_confusion(batches, n))
    assert list(r["per_class_iou"].values()) == pytest.approx(iou_none.compute().tolist(), abs=1e-6)
    assert list(r["per_class_accuracy"].values()) == pytest.approx(acc_none.compute().tolist(), abs=1e-6)
    # Every class is present here, so the macro means must agree too.
    assert r["mean_iou"] == pytest.approx(iou_macro.compute().item(), abs=1e-6)
    assert r["mean_accuracy"] == pytest.approx(acc_macro.compute().item(), abs=1e-6)
    assert r["pixel_accuracy"] == pytest.approx(acc_micro.compute().item(), abs=1e-6)

    # fw IoU from an independent numpy computation of Long et al.'s formula.
    m = _numpy_confusion(batches, n).astype(np.float64)
    t = m.sum(1)
    iou = np.diag(m) / (t + m.sum(0) - np.diag(m))
    assert r["fw_iou"] == pytest.approx(float((t * iou).sum() / t.sum()))


def test_matches_torchmetrics_where_defined_with_absent_classes() -> None:
    # Classes 4..7 never appear in target or preds; torchmetrics scores them its own way,
    # so compare per-class values where ours are defined, and our means over present classes.
    n = 8
    batches = _random_batches(3, 4, seed=1)
    cm = ConfusionMatrix(num_classes=n)
    iou_none = MulticlassJaccardIndex(n, ignore_index=255, average=None)
    acc_none = MulticlassAccuracy(n, average=None, ignore_index=255)
    for preds, target in batches:
        cm.update(preds, target)
        iou_none.update(preds, target)
        acc_none.update(preds, target)
    r = cm.compute()
    tm_iou, tm_acc = iou_none.compute().tolist(), acc_none.compute().tolist()
    ours_iou, ours_acc = list(r["per_class_iou"].values()), list(r["per_class_accuracy"].values())
    assert ours_iou[4:] == [None] * 4 and ours_acc[4:] == [None] * 4
    assert ours_iou[:4] == pytest.approx(tm_iou[:4], abs=1e-6)
    assert ours_acc[:4] == pytest.approx(tm_acc[:4], abs=1e-6)
    assert r["mean_iou"] == pytest.approx(float(np.mean(tm_iou[:4])), abs=1e-6)
    assert r["mean_accuracy"] == pytest.approx(float(np.mean(tm_acc[:4])), abs=1e-6)


def test_accumulation_equals_single_update_on_concatenation() -> None:
    batches = _random_batches(4, 21, seed=2)
    stepwise, at_once = ConfusionMatrix(), ConfusionMatrix()
    for preds, target in batches:
        stepwise.update(preds, target)
    at_once.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    assert torch.equal(stepwise.matrix, at_once.matrix)
    assert stepwise.compute() == at_once.compute()


def test_uint8_inputs_do_not_overflow() -> None:
    # 20 * 21 + 20 would wrap around in uint8 arithmetic.
    preds, target = _random_batches(1, 21, seed=3)[0]
    a, b = ConfusionMatrix(), ConfusionMatrix()
    a.update(preds, target)
    b.update(preds.to(torch.uint8), target.to(torch.uint8))
    assert torch.equal(a.matrix, b.matrix)


def test_ignore_index_pixels_are_skipped_whatever_the_prediction() -> None:
    cm = ConfusionMatrix(num_classes=3)
    target = torch.full((4, 4), 255)
    cm.update(torch.full((4, 4), 99), target)  # out-of-range preds under void are not an error
    assert cm.matrix.sum().item() == 0
    target[0, 0] = 2
    cm.update(torch.full((4, 4), 1), target)
    assert cm.matrix.sum().item() == 1 and cm.matrix[2, 1].item() == 1


def test_custom_ignore_index() -> None:
    cm = ConfusionMatrix(num_classes=3, ignore_index=-1)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, -1, 2]))
    assert cm.matrix.sum().item() == 2
    with pytest.raises(VocsegError, match="255"):
        cm.update(torch.tensor([0]), torch.tensor([255]))


def test_out_of_range_values_raise() -> None:
    cm = ConfusionMatrix()
    with pytest.raises(VocsegError, match=r"target.*\[21, 40\]"):
        cm.update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 21, 40, 255]))
    with pytest.raises(VocsegError, match=r"target.*\[-3\]"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([-3, 1]))
    with pytest.raises(VocsegError, match=r"preds.*\[21\]"):
        cm.update(torch.tensor([0, 21]), torch.tensor([0, 1]))
    with pytest.raises(VocsegError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(VocsegError, match="argmax"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    assert cm.matrix.sum().item() == 0  # failed updates leave no partial counts


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(VocsegError):
        ConfusionMatrix(num_classes=3, ignore_index=1)
    with pytest.raises(VocsegError):
        ConfusionMatrix(num_classes=3, class_names=["a", "b"])


def test_empty_matrix_gives_none_not_nan() -> None:
    r = ConfusionMatrix().compute()
    assert all(r[k] is None for k in METRIC_KEYS)
    assert set(r["per_class_iou"].values()) == {None}
    assert set(r["per_class_accuracy"].values()) == {None}
    json.dumps(r, allow_nan=False)


def test_compute_is_json_serialisable_plain_floats() -> None:
    cm = ConfusionMatrix()
    for preds, target in _random_batches(2, 21):
        cm.update(preds, target)
    r = cm.compute()
    assert all(type(r[k]) is float for k in METRIC_KEYS)
    assert all(type(v) is float for v in r["per_class_iou"].values())
    json.dumps(r, allow_nan=False)


def test_reset_and_state_dict_round_trip() -> None:
    cm = ConfusionMatrix()
    for preds, target in _random_batches(2, 21):
        cm.update(preds, target)
    state = cm.state_dict()
    restored = ConfusionMatrix()
    restored.load_state_dict(state)
    assert torch.equal(restored.matrix, cm.matrix)
    assert restored.compute() == cm.compute()
    # The saved state is a copy: later updates do not leak into it.
    cm.reset()
    assert cm.matrix.sum().item() == 0 and state["matrix"].sum().item() > 0
    # torch.save/load friendly
    restored.load_state_dict({k: (v.tolist() if torch.is_tensor(v) else v) for k, v in state.items()})
    assert torch.equal(restored.matrix, state["matrix"])
    with pytest.raises(VocsegError, match="shape"):
        ConfusionMatrix(num_classes=3).load_state_dict(state)


def test_all_reduce_is_noop_without_distributed_and_sums_with_it(tmp_path) -> None:
    cm = ConfusionMatrix(num_classes=3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    before = cm.matrix.clone()
    cm.all_reduce()
    assert torch.equal(cm.matrix, before)

    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("gloo backend unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.all_reduce()  # one rank: the sum is the matrix itself
        assert torch.equal(cm.matrix, before)
    finally:
        dist.destroy_process_group()


def test_per_image_counts_match_a_numpy_reference():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (3, 9, 7), generator=g)
    masks = torch.randint(0, 4, (3, 9, 7), generator=g)
    masks[0, :2] = 255
    inter, union = per_image_counts(preds, masks, 4)
    for b in range(3):
        p, m = preds[b].numpy(), masks[b].numpy()
        valid = m != 255
        for c in range(4):
            tp = np.sum((p == c) & (m == c) & valid)
            un = np.sum(((p == c) | (m == c)) & valid)
            assert inter[b, c] == tp and union[b, c] == un, (b, c)
