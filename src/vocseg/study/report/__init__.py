"""Reports on a list of run folders: ``OUT/report.md`` (images under ``OUT/figures/``) and a
self-contained ``OUT/report.html`` (images embedded as base64 data URIs, inline CSS, nothing external).

``vocseg reproduce`` builds the list from the paper's experiments, ``vocseg compare`` from any run
folders. A report holds:

* one results table (loss, mIoU, pixel accuracy, mean accuracy, fw IoU), beside the paper's reported
  loss / IoU / pixel accuracy for the paper's experiments, with an all-background predictor row
  computed from the test split; runs that are seeds of one recipe are one row, mean ± std;
* statistics: the seed groups, and paired-bootstrap confidence intervals of differences in mIoU;
* each run's train/val loss curves (the paper's Figures 2-8);
* one test image with the ground truth and every model's mask and overlay (Figures 9-11);
* per-class IoU of every model (table and bars); a row-normalised confusion matrix of the best model;
* seconds per epoch and parameters; the recipe each run actually used (quick overrides included);
* the data (root, images per split, synthetic or not), seeds and versions.

Modules: :mod:`.runs` (what a report is built from), :mod:`.data` (the test data's facts),
:mod:`.example` (the example image and its predictions), :mod:`.sections` (the sections),
:mod:`.render` (Markdown and HTML), :mod:`.write` (:func:`write_report`).
"""

from .data import DataInfo, all_background_metrics, data_info
from .render import Doc
from .runs import ReportContext, ReportRun, RunGroup, group_runs
from .sections import SYNTHETIC_DISCLAIMER
from .write import REPORT_HTML, REPORT_MD, write_report

__all__ = [
    "DataInfo",
    "Doc",
    "REPORT_HTML",
    "REPORT_MD",
    "ReportContext",
    "ReportRun",
    "RunGroup",
    "SYNTHETIC_DISCLAIMER",
    "all_background_metrics",
    "data_info",
    "group_runs",
    "write_report",
]
