"""The ``sarseg`` Processing provider: an explicit list of algorithms, a stable id."""

from __future__ import annotations

import contextlib
from pathlib import Path

from qgis.core import QgsApplication, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON
from .batch import BatchAlgorithm
from .cluster_communes import ClusterCommunesAlgorithm
from .convert_db import ConvertDbAlgorithm
from .evaluate_segmentation import EvaluateSegmentationAlgorithm
from .extract_patches import ExtractPatchesAlgorithm
from .flood_map import FloodMapAlgorithm
from .forecast import ForecastAlgorithm
from .import_sentinel1 import ImportSentinel1Algorithm
from .multitemporal_filter import MultitemporalFilterAlgorithm
from .normalize import NormalizeAlgorithm
from .segment import SegmentAlgorithm
from .speckle_filter import SpeckleFilterAlgorithm
from .stack_time_series import StackTimeSeriesAlgorithm

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


class SarSegProvider(QgsProcessingProvider):
    """SAR Seg algorithms in the Processing toolbox, the modeler, batch mode and qgis_process."""

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        for algorithm in (
            ImportSentinel1Algorithm(),
            SpeckleFilterAlgorithm(),
            MultitemporalFilterAlgorithm(),
            ConvertDbAlgorithm(),
            NormalizeAlgorithm(),
            ExtractPatchesAlgorithm(),
            StackTimeSeriesAlgorithm(),
            SegmentAlgorithm(),
            EvaluateSegmentationAlgorithm(),
            FloodMapAlgorithm(),
            ForecastAlgorithm(),
            ClusterCommunesAlgorithm(),
            BatchAlgorithm(),
        ):
            self.addAlgorithm(algorithm)
        # The graphical models shipped with the plugin (scripts/make_workflows.py), under "Workflows". A model's
        # steps are found through the registry, where this provider is only once it has loaded: without them the
        # model would have no outputs, so models are added by the reload that follows registration.
        if QgsApplication.processingRegistry().providerById(self.id()) is self:
            for path in sorted(WORKFLOWS.glob("*.model3")):
                model = QgsProcessingModelAlgorithm()
                if model.fromFile(str(path)):
                    self.addAlgorithm(model)

    def load(self) -> bool:
        QgsApplication.processingRegistry().providerAdded.connect(self._registered)
        return super().load()

    def unload(self) -> None:
        self._disconnect()
        super().unload()

    def _registered(self, provider_id: str) -> None:
        if provider_id == self.id():
            self._disconnect()
            self.refreshAlgorithms()

    def _disconnect(self) -> None:
        with contextlib.suppress(TypeError):  # not connected
            QgsApplication.processingRegistry().providerAdded.disconnect(self._registered)

    def id(self) -> str:
        return "sarseg"

    def name(self) -> str:
        return "SAR Seg"

    def longName(self) -> str:
        return "SAR Seg — SAR segmentation, forecasting and clustering"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API name
        return str(ICON)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 - QGIS API name
        # Outputs are streamed as tiled, compressed GeoTIFF.
        return ["tif"]
