"""Self-contained HTML pages for the reports (segmentation accuracy, commune clustering): one style sheet, one
table writer, one number format. No script, no remote resource: a report opens anywhere, offline."""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .outputs import OutputSet, write_text

#: A table cell: HTML (escape text first with :func:`html.escape`), or (HTML, CSS class of the cell).
Cell = str | tuple[str, str]

CSS = (
    "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:8px 0 18px}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
    "td.name,th.name,table.left td,table.left th{text-align:left}td.diag{background:#d8f0d8;font-weight:bold}"
    "table.wide{font-size:12px}.sw{display:inline-block;width:10px;height:10px;margin-right:5px}"
)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; an en dash for a missing or non-finite one."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(tag: str, cell: Cell) -> str:
    if isinstance(cell, tuple):
        content, cls = cell
        return f"<{tag} class='{cls}'>{content}</{tag}>"
    return f"<{tag}>{cell}</{tag}>"


def table(header: Sequence[Cell], rows: Sequence[Sequence[Cell]], cls: str = "", row_heads: bool = False) -> str:
    """An HTML table (no heading row when ``header`` is empty). ``row_heads``: the first cell of each row is a
    row heading (``<th>``)."""
    head = f"<thead><tr>{''.join(_cell('th', h) for h in header)}</tr></thead>" if header else ""
    body = "".join(
        "<tr>" + "".join(_cell("th" if row_heads and i == 0 else "td", c) for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}>{head}<tbody>{body}</tbody></table>"


def page(title: str, parts: Sequence[str]) -> str:
    """A whole HTML document: ``title`` as its title and first heading, then ``parts`` (HTML)."""
    t = html.escape(title)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>{CSS}</style>'
        f"</head><body><h1>{t}</h1>{''.join(parts)}</body></html>\n"
    )


def write_page(path: str | os.PathLike, title: str, parts: Sequence[str], outputs: OutputSet | None = None) -> Path:
    """Write :func:`page` whole (see :func:`.outputs.write_text`): as one of ``outputs`` or on its own."""
    return write_text(path, page(title, parts), outputs)


def svg_histogram(
    counts: Sequence[float], edges: Sequence[float], marks: Sequence[tuple[float, str]] = (), label: str = ""
) -> str:
    """An inline SVG bar chart of a histogram (``edges``: one more than ``counts``) with vertical ``marks``
    (value, caption), e.g. thresholds."""
    if len(counts) == 0:
        return "<p>(no data)</p>"
    w, h, pad = 640, 180, 30
    lo, hi = float(edges[0]), float(edges[-1])
    top = max(float(max(counts)), 1.0)

    def x(v: float) -> float:
        return pad + (v - lo) / (hi - lo or 1.0) * (w - 2 * pad)

    bars = "".join(
        f"<rect x='{x(edges[i]):.1f}' y='{h - pad - c / top * (h - 2 * pad):.1f}' "
        f"width='{max(x(edges[i + 1]) - x(edges[i]) - 0.5, 0.5):.1f}' height='{c / top * (h - 2 * pad):.1f}' "
        "fill='#7a9cc6'/>"
        for i, c in enumerate(counts)
    )
    lines = "".join(
        f"<line x1='{x(v):.1f}' x2='{x(v):.1f}' y1='{pad / 2}' y2='{h - pad}' stroke='#c00' stroke-width='2'/>"
        f"<text x='{x(v) + 4:.1f}' y='{pad / 2 + 10}' font-size='11' fill='#c00'>{html.escape(text)}</text>"
        for v, text in marks
        if lo <= v <= hi
    )
    axis = (
        f"<text x='{pad}' y='{h - 8}' font-size='11'>{lo:.1f}</text>"
        f"<text x='{w - pad}' y='{h - 8}' font-size='11' text-anchor='end'>{hi:.1f}</text>"
        f"<text x='{w / 2}' y='{h - 8}' font-size='11' text-anchor='middle'>{html.escape(label)}</text>"
    )
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'>{bars}{lines}{axis}</svg>"
