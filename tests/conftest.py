"""Shared fixtures: the synthetic sample series (ground truth included) and Processing with the sarseg provider."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from training import synthetic  # noqa: E402

PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
if PROCESSING_PLUGINS not in sys.path:
    sys.path.append(PROCESSING_PLUGINS)


def pytest_ignore_collect(collection_path, config):  # noqa: ANN001, ANN201
    """tests/gui needs QGIS with its GUI (run under Xvfb with -o qgis_gui_enabled=true, see the Makefile)."""
    if collection_path.name == "gui" and str(config.getini("qgis_gui_enabled")).lower() in ("false", "0", "no"):
        return True
    return None


@pytest.fixture(scope="session")
def sample_series() -> synthetic.SyntheticSeries:
    """A small synthetic Sentinel-1-like series: 160 x 160 px, 4 days, L = 4.4, with a nodata corner."""
    return synthetic.generate_series(size=160, days=4, seed=7, n_communes=4)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory, sample_series: synthetic.SyntheticSeries):
    """The sample series written as GeoTIFFs + communes.gpkg + manifest.json."""
    out = tmp_path_factory.mktemp("sample")
    synthetic.write_series(sample_series, out)
    return out


@pytest.fixture(scope="session", autouse=True)
def free_gdal_objects_before_qgis_exits(qgis_app):  # noqa: ANN001
    """GDAL datasets kept in reference cycles (e.g. by a caught exception's traceback) must be freed while
    GDAL is alive: freed after QGIS has shut down, they crash the interpreter on exit."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def sarseg(qgis_app, qgis_processing) -> Iterator[object]:  # noqa: ANN001
    """Processing initialised with the sarseg provider; yields the ``processing`` module."""
    from qgis.core import QgsApplication

    from sar_seg_plugin.processing.provider import SarSegProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("sarseg")
    if provider is None:
        provider = SarSegProvider()  # keep a Python reference: the registry does not own the wrapper
        registry.addProvider(provider)
    import processing

    yield processing
    if registry.providerById("sarseg") is not None:
        registry.removeProvider(registry.providerById("sarseg"))


def _mount_tmpfs(path, options: str) -> bool:
    """Mount a tmpfs at ``path`` (root only); False when this machine does not allow it."""
    import subprocess

    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def _unmount(path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder no run may write in: a read-only tmpfs for root (chmod does not stop root), else mode 0555."""
    folder = tmp_path / "readonly"
    if os.geteuid() == 0:
        if not _mount_tmpfs(folder, "ro,size=64k"):
            pytest.skip("cannot mount a read-only tmpfs on this machine")
        yield folder
        _unmount(folder)
    else:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB disk (a tmpfs, root only): what does not fit fails with ENOSPC ("No space left on device")."""
    folder = tmp_path / "small_disk"
    if not _mount_tmpfs(folder, "size=512k"):
        pytest.skip("cannot mount a small tmpfs on this machine (needs root)")
    yield folder
    _unmount(folder)
