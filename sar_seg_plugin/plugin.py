"""The plugin object QGIS loads: registers the ``sarseg`` Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication

from .processing.provider import SarSegProvider


class SarSegPlugin:
    """Registers the Processing provider in ``initProcessing`` (so ``qgis_process`` sees it too)."""

    def __init__(self, iface: object) -> None:
        self.iface = iface
        self.provider: SarSegProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        if self.provider is None:
            self.provider = SarSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
