"""Sections of ``MODEL_CARD.md`` owned by one script each, between ``<!-- BEGIN name ... -->`` and
``<!-- END name -->`` markers, so that rebuilding one family of models rewrites its own section and keeps the
others."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- BEGIN (?P<name>[\w-]+)[^>]*-->.*?<!-- END (?P=name) -->", re.DOTALL)


def update_section(card: Path, begin: str, end: str, section: str) -> None:
    """Replace the section between ``begin`` and ``end`` in ``card``, or append it (a card without it, or none)."""
    text = card.read_text(encoding="utf-8") if card.is_file() else "# SAR Seg bundled models\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def marked_sections(card: Path) -> list[str]:
    """Every marked section of ``card`` (empty when there is no card), in order, markers included."""
    if not card.is_file():
        return []
    return [m.group(0) for m in _SECTION.finditer(card.read_text(encoding="utf-8"))]
