"""One document, two renderings: :class:`Doc` collects headings, paragraphs, lists, tables and images,
and writes them as Markdown (images as files beside it) and as one self-contained HTML page (images
embedded as base64 data URIs, inline CSS, nothing external). Both come from the same blocks, so they
always say the same thing."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Doc", "fmt"]


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` decimals, ``None`` as ``–``."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+%?( ± [\d,]*\.?\d+)?$")
_FRACTION = re.compile(r"^\d+/\d+$")


def _numeric_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[bool]:
    """A column is right-aligned when every filled cell of it is a number (``–`` counts as empty)."""
    flags = []
    for j in range(len(header)):
        cells = [str(r[j]).strip() for r in rows if j < len(r) and str(r[j]).strip() not in ("", "–")]
        flags.append(bool(cells) and all(_NUMBER.match(c) or _FRACTION.match(c) for c in cells))
    return flags


def _inline_md_to_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return out


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #bbb;padding-bottom:.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f0f0f0}.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.note{border-left:5px solid #d9822b;background:#fff6ea;padding:.6em 1em;margin:1em 0}
.info{border-left:5px solid #3b82c4;background:#eef5fc;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0;display:inline-block;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd}.grid figure{width:32%;margin-right:1%}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
"""


class Doc:
    """Blocks rendered to both Markdown and HTML. Text is Markdown-lite: `code` and **bold** only."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, kind: str = "") -> None:
        """A paragraph; ``kind`` ``"note"`` (a warning box) or ``"info"`` (an aside box)."""
        self.blocks.append(("p", text, kind))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def images(self, items: Sequence[tuple[str, str]], grid: bool = False) -> None:
        """PNG files (paths relative to the report's folder) with captions; ``grid``: three per row."""
        self.blocks.append(("img", list(items), grid))

    # ----------------------------------------------------------------- Markdown
    def markdown(self) -> str:
        return "\n\n".join(_md_block(b) for b in self.blocks) + "\n"

    # ----------------------------------------------------------------- HTML
    def html(self, base: Path, title: str) -> str:
        """The page; images are read from ``base / <relative path>`` and embedded."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
        ]
        parts += [_html_block(b, base) for b in self.blocks]
        parts += ["</body>", "</html>"]
        return "\n".join(parts) + "\n"


def _md_block(b: tuple) -> str:
    kind = b[0]
    if kind == "h":
        return f"{'#' * b[1]} {b[2]}"
    if kind == "p":
        if b[2] in ("note", "info"):
            prefix = "**Note.** " if b[2] == "note" else ""
            return "> " + prefix + b[1].strip().replace("\n", "  \n> ")
        return b[1]
    if kind == "ul":
        return "\n".join(f"- {item}" for item in b[1])
    if kind == "table":
        header, rows = b[1], b[2]
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        num = _numeric_columns(header, rows)
        lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---:" if n else "---" for n in num) + "|"]
        lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
        return "\n".join(lines)
    return "\n\n".join(f"![{cap}]({rel})\n\n*{cap}*" for rel, cap in b[1])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    num = _numeric_columns(header, rows)
    cls = lambda j: ' class="l"' if not num[j] else ""  # noqa: E731
    head = "".join(f"<th{cls(j)}>{_inline_md_to_html(str(c))}</th>" for j, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(j)}>{_inline_md_to_html(str(c))}</td>" for j, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_images(items: list[tuple[str, str]], grid: bool, base: Path) -> str:
    figs = []
    for rel, cap in items:
        data = base64.b64encode((base / rel).read_bytes()).decode("ascii")
        figs.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(cap)}">'
            f"<figcaption>{_inline_md_to_html(cap)}</figcaption></figure>"
        )
    return f'<div class="{"grid" if grid else "figs"}">' + "".join(figs) + "</div>"


def _html_block(b: tuple, base: Path) -> str:
    kind = b[0]
    if kind == "h":
        return f"<h{b[1]}>{_inline_md_to_html(b[2])}</h{b[1]}>"
    if kind == "p":
        cls = f' class="{b[2]}"' if b[2] else ""
        prefix = "<strong>Note.</strong> " if b[2] == "note" else ""
        body = _inline_md_to_html(b[1].strip()).replace("\n", "<br>\n")
        return f"<p{cls}>{prefix}{body}</p>"
    if kind == "ul":
        return "<ul>" + "".join(f"<li>{_inline_md_to_html(i)}</li>" for i in b[1]) + "</ul>"
    if kind == "table":
        return _html_table(b[1], b[2])
    return _html_images(b[1], b[2], base)
