"""scripts/card_sections.py: each script rewrites its own section of the model card and keeps the others."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from card_sections import marked_sections, update_section  # noqa: E402

A = ("<!-- BEGIN forecasters: written by x -->", "<!-- END forecasters -->")
B = ("<!-- BEGIN imagenet-encoder: written by y -->", "<!-- END imagenet-encoder -->")


def test_sections_are_appended_replaced_and_kept(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Card\n\nsegmentation text\n", encoding="utf-8")
    update_section(card, *A, f"{A[0]}\nforecasters v1\n{A[1]}")
    update_section(card, *B, f"{B[0]}\nimagenet\n{B[1]}")
    update_section(card, *A, f"{A[0]}\nforecasters v2\n{A[1]}")  # replaced in place, not appended
    text = card.read_text(encoding="utf-8")
    assert text.count("BEGIN forecasters") == 1 and "forecasters v1" not in text
    assert text.index("forecasters v2") < text.index("imagenet") and text.startswith("# Card\n\nsegmentation text")
    # what make_models keeps when it rewrites the card: both marked sections, in order, markers included
    assert marked_sections(card) == [f"{A[0]}\nforecasters v2\n{A[1]}", f"{B[0]}\nimagenet\n{B[1]}"]
    assert marked_sections(tmp_path / "missing.md") == []
    update_section(tmp_path / "new.md", *A, f"{A[0]}\nx\n{A[1]}")  # no card yet: one is started
    assert (tmp_path / "new.md").read_text(encoding="utf-8").startswith("# SAR Seg bundled models\n\n<!-- BEGIN")
