"""sarseg:convert_db — linear power <-> decibels."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.preprocess import TO_DB, TO_LINEAR, convert_db_raster
from .base import INPUT_SCALE_HELP, SarSegAlgorithm
from .styling import GrayStretchStyle, style_on_load

DIRECTIONS = (TO_DB, TO_LINEAR, "auto")


class ConvertDbAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    DIRECTION = "DIRECTION"
    FLOOR_DB = "FLOOR_DB"
    NONPOSITIVE = "NONPOSITIVE"
    OUTPUT = "OUTPUT"

    NAME = "convert_db"
    DISPLAY_NAME = "Convert linear power / dB"
    GROUP_ID = "preprocessing"
    HELP = (
        "Converts every band between linear power (sigma0, gamma0) and decibels: dB = 10 log10(linear).\n\n"
        "<b>Raster</b>: any raster of backscatter values, one or more bands.\n"
        "<b>Direction</b>: linear to dB, dB to linear, or auto (each band the other way from its scale). A band "
        "already in the scale asked for (e.g. 'Linear power to dB' on a band in dB) is refused, not converted "
        "twice.\n"
        "<b>Floor (dB)</b>: zeros and negative values have no logarithm; values at or below the floor "
        "become the floor (default -50 dB)...\n"
        "<b>Zeros and negatives</b>: ...or nodata, if you prefer them masked.\n"
        + INPUT_SCALE_HELP
        + "\nThe output band units are set to 'dB' or 'linear' so later tools know the scale. Nodata stays "
        "nodata."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Raster")))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.DIRECTION,
                self.tr("Direction"),
                options=[
                    self.tr("Linear power to dB"),
                    self.tr("dB to linear power"),
                    self.tr("Auto-detect"),
                ],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.FLOOR_DB,
                self.tr("Floor (dB)"),
                QgsProcessingParameterNumber.Double,
                -50.0,
                False,
                -200,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.NONPOSITIVE,
                self.tr("Zeros and negative values (linear to dB)"),
                options=[self.tr("Clamp to the floor"), self.tr("Set to nodata")],
                defaultValue=0,
            )
        )
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Converted raster")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        src = self.raster_path(parameters, self.INPUT, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        direction = DIRECTIONS[self.parameterAsEnum(parameters, self.DIRECTION, context)]
        floor_db = self.parameterAsDouble(parameters, self.FLOOR_DB, context)
        to_nodata = self.parameterAsEnum(parameters, self.NONPOSITIVE, context) == 1
        scale = self.input_scale(parameters, context)
        result = self.run_core(
            lambda: convert_db_raster(
                src,
                dst,
                direction,
                floor_db,
                to_nodata,
                input_scale=scale,
                log=feedback.pushInfo,
                warn=feedback.pushWarning,
                **self.callbacks(feedback),
            )
        )
        feedback.pushInfo(self.tr("Conversion per band: {}").format(", ".join(result["directions"])))
        style_on_load(context, dst, GrayStretchStyle())
        return {self.OUTPUT: dst}
