"""The plugin zip follows the plugins.qgis.org rules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_zip_is_clean_and_small(tmp_path):
    # A stray cache must not end up in the zip.
    cache = ROOT / "sar_seg_plugin" / "core" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "stray.pyc").write_bytes(b"x")
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py"), "--out", str(tmp_path)],
                              capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        (cache / "stray.pyc").unlink()
    archive = next(tmp_path.glob("sar_seg_plugin-*.zip"))
    names = zipfile.ZipFile(archive).namelist()
    assert "sar_seg_plugin/metadata.txt" in names
    assert "sar_seg_plugin/LICENSE" in names
    assert "sar_seg_plugin/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert all(n.startswith("sar_seg_plugin/") for n in names)
    assert archive.stat().st_size < 25 * 1024 * 1024
    assert "MB" in proc.stdout
