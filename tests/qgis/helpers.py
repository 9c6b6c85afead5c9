"""Small helpers for the QGIS-tier tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files a failed run might leave behind."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial" in p.name)
