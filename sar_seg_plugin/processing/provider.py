"""The ``sarseg`` Processing provider: an explicit list of algorithms, a stable id."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON
from .cluster_communes import ClusterCommunesAlgorithm
from .convert_db import ConvertDbAlgorithm
from .evaluate_segmentation import EvaluateSegmentationAlgorithm
from .extract_patches import ExtractPatchesAlgorithm
from .forecast import ForecastAlgorithm
from .import_sentinel1 import ImportSentinel1Algorithm
from .normalize import NormalizeAlgorithm
from .segment import SegmentAlgorithm
from .speckle_filter import SpeckleFilterAlgorithm
from .stack_time_series import StackTimeSeriesAlgorithm


class SarSegProvider(QgsProcessingProvider):
    """SAR Seg algorithms in the Processing toolbox, the modeler, batch mode and qgis_process."""

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        for algorithm in (
            ImportSentinel1Algorithm(),
            SpeckleFilterAlgorithm(),
            ConvertDbAlgorithm(),
            NormalizeAlgorithm(),
            ExtractPatchesAlgorithm(),
            StackTimeSeriesAlgorithm(),
            SegmentAlgorithm(),
            EvaluateSegmentationAlgorithm(),
            ForecastAlgorithm(),
            ClusterCommunesAlgorithm(),
        ):
            self.addAlgorithm(algorithm)

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
