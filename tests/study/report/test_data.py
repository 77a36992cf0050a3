"""vocseg.study.report.data: the all-background baseline's metrics, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vocseg.study.report import all_background_metrics


def test_all_background_metrics_hand_computed():
    # 60 background, 30 class 1, 10 class 3; classes 2, 4.. absent
    bg = all_background_metrics(np.array([60, 30, 0, 10, 0]))
    assert bg["pixel_accuracy"] == pytest.approx(0.6)
    assert bg["mean_iou"] == pytest.approx(0.6 / 3)
    assert bg["mean_accuracy"] == pytest.approx(1 / 3)
    assert bg["fw_iou"] == pytest.approx(0.36)
