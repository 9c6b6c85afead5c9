"""Run SAR Seg algorithms through ``qgis_process``, the headless QGIS command line, as users script it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def qgis_process_env(profile_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment in which ``qgis_process`` finds the plugin (from this checkout) and the venv's packages."""
    env = dict(os.environ)
    profile = Path(profile_dir or tempfile.mkdtemp(prefix="sarseg-qgis-profile-"))
    site = ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(ROOT),
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        PYTHONPATH=os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p),
    )
    proc = subprocess.run(
        ["qgis_process", "plugins", "enable", "sar_seg_plugin"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0 and "already enabled" not in proc.stdout + proc.stderr:  # exit 1 when already on
        raise RuntimeError(f"qgis_process could not enable the plugin:\n{proc.stdout}\n{proc.stderr}")
    return env


def run_algorithm(algorithm: str, params: dict[str, object], env: dict[str, str]) -> dict[str, object]:
    """``qgis_process --json run <algorithm> -- KEY=VALUE ...``; returns the parsed JSON, raises on failure."""
    args = ["qgis_process", "--json", "run", algorithm, "--"]
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        args += [f"{key}={v}" for v in values]
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{algorithm} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    start = proc.stdout.index("{")
    return json.loads(proc.stdout[start:])
