"""make package: the plugin zip for plugins.qgis.org (no caches, LICENSE inside, < 25 MB)."""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "sar_seg_plugin"
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".aux.xml"}
MAX_BYTES = 25 * 1024 * 1024


def plugin_files() -> list[Path]:
    return sorted(
        p
        for p in PLUGIN.rglob("*")
        if p.is_file() and not SKIP_PARTS & set(p.parts) and not any(p.name.endswith(s) for s in SKIP_SUFFIXES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="dist")
    args = parser.parse_args()
    meta = configparser.ConfigParser()
    meta.read(PLUGIN / "metadata.txt")
    version = meta["general"]["version"]
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"sar_seg_plugin-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files():
            archive.write(path, path.relative_to(ROOT).as_posix())
    size = target.stat().st_size
    print(f"{target} ({size / 1e6:.2f} MB, {len(plugin_files())} files)")
    if size > MAX_BYTES:
        print("The plugin zip exceeds the 25 MB limit of plugins.qgis.org", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
