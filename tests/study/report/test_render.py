"""vocseg.study.report.render: one document rendered to Markdown and to HTML with the same blocks."""

from __future__ import annotations

from helpers import HTMLReport
from vocseg.plots import per_class_iou_figure
from vocseg.study.report import Doc


def test_doc_renders_the_same_blocks_to_markdown_and_html(tmp_path):
    (tmp_path / "figures").mkdir()
    per_class_iou_figure(
        {"a": {"background": 0.9, "cat": None}, "b": {"background": 0.8, "cat": 0.3}},
        tmp_path / "figures" / "bars.png",
        title="bars",
    )
    doc = Doc()
    doc.h(1, "Title")
    doc.p("plain `code` and **bold**")
    doc.p("careful", "note")
    doc.ul(["one", "two"])
    doc.table(["name", "mIoU", "runs"], [["a|b", "0.5000 ± 0.0100", "2/3"], ["c", "–", "1/3"]])
    doc.images([("figures/bars.png", "per-class bars")])
    md = doc.markdown()
    assert "# Title" in md and "> **Note.** careful" in md and "- two" in md
    assert "| a\\|b | 0.5000 ± 0.0100 | 2/3 |" in md and "|---|---:|---:|" in md  # numbers right-aligned
    page = HTMLReport()
    page.feed(doc.html(tmp_path, "Title"))
    assert page.rows[1] == ["a|b", "0.5000 ± 0.0100", "2/3"]
    assert "<code>code</code>" in doc.html(tmp_path, "Title") and len(page.imgs) == 1
