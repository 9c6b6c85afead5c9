"""sarseg:multitemporal_speckle_filter — co-registered dates filtered together (Quegan & Yu), one output per date."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsRasterLayer,
)

from ..core import timeseries
from ..core.multitemporal import DEFAULT_WINDOW, multitemporal_filter_rasters
from .base import INPUT_SCALE_HELP, SarSegAlgorithm, layer_path
from .import_sentinel1 import AcquisitionDayStyle, keep_alive
from .styling import GrayStretchStyle


class MultitemporalFilterAlgorithm(SarSegAlgorithm):
    INPUTS = "INPUTS"
    WINDOW = "WINDOW"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"

    NAME = "multitemporal_speckle_filter"
    DISPLAY_NAME = "Multi-temporal speckle filter"
    GROUP_ID = "preprocessing"
    HELP = (
        "Filters the speckle of several dates of the same area together (Quegan & Yu 2001): each date keeps its "
        "own local level and takes its texture from all dates,\n"
        "J_k = E[I_k] / N x sum_i I_i / E[I_i]   (E: the mean in a window, N: the number of dates),\n"
        "so on a homogeneous area the equivalent number of looks grows up to N times, without the loss of detail "
        "of a spatial filter that strong. Changes between dates are kept: a field flooded on one date stays "
        "flooded on that date only.\n\n"
        "<b>Rasters</b>: two or more dates of the same area with the same bands (e.g. VV and VH from 'Import "
        "Sentinel-1 GRD product'); rasters on other grids are aligned to the first.\n"
        "<b>Window</b>: the window of the local means (odd, default 7).\n"
        + INPUT_SCALE_HELP
        + "\nOne output per input, named after it with '_mtf' (its date stays in the name), in the output "
        "folder; filtering is done in linear power, dB bands come back in dB."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.INPUTS, self.tr("Rasters of the same area (one per date)"), QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WINDOW, self.tr("Window (pixels, odd)"), QgsProcessingParameterNumber.Integer, DEFAULT_WINDOW,
                False, 3, 51,
            )
        )  # fmt: skip
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Filtered rasters")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                raise QgsProcessingException(
                    self.tr("'{}' is not a file raster layer. Give GeoTIFF (GDAL) rasters only.").format(layer.name())
                )
        paths = [layer_path(layer) for layer in layers]
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        Path(folder).mkdir(parents=True, exist_ok=True)
        outs = self.run_core(
            lambda: multitemporal_filter_rasters(
                paths,
                folder,
                self.parameterAsInt(parameters, self.WINDOW, context),
                input_scale=self.input_scale(parameters, context),
                log=feedback.pushInfo,  # core messages are not translatable
                warn=feedback.pushWarning,
                **self.callbacks(feedback),
            )
        )
        for path in outs:
            date = timeseries.date_from_name(path)
            details = QgsProcessingContext.LayerDetails(Path(path).stem, context.project(), self.OUTPUT_LAYERS)
            details.setPostProcessor(keep_alive(path, AcquisitionDayStyle(date) if date else GrayStretchStyle()))
            context.addLayerToLoadOnCompletion(path, details)
        return {self.OUTPUT_LAYERS: outs, self.OUTPUT_FOLDER: folder}
