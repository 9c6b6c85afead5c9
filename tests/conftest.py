"""Shared fixtures: the synthetic sample series (ground truth included) for unit and QGIS tests."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from training import synthetic  # noqa: E402


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
