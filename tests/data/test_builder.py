"""vocseg.data.builder: the train/val/test split of a run (the validation holdout)."""

from __future__ import annotations

from vocseg.config import Config
from vocseg.data.builder import split_ids
from vocseg.data.voc import VOCSegmentation


def test_holdout_split_is_disjoint_and_fixed(tiny_voc):
    cfg = Config(data_root=str(tiny_voc), val_holdout=0.25, seed=1)
    a = split_ids(VOCSegmentation(tiny_voc, "train").voc_root, cfg)
    b = split_ids(
        VOCSegmentation(tiny_voc, "train").voc_root, Config(data_root=str(tiny_voc), val_holdout=0.25, seed=9)
    )
    assert not set(a.train) & set(a.val) and len(a.val) == 3 and len(a.train) == 9
    assert a.val == b.val  # the holdout does not depend on the training seed
    assert a.test == VOCSegmentation(tiny_voc, "val").ids and a.test_name == "val"
