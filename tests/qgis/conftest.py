"""QGIS tier: a real QGIS (pytest-qgis) with Processing and the sarseg provider registered."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
if PROCESSING_PLUGINS not in sys.path:
    sys.path.append(PROCESSING_PLUGINS)


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
