"""sarseg:stack_time_series — dated rasters aligned to one grid and stacked in date order."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core import timeseries
from .base import INPUT_SCALE_HELP, SarSegAlgorithm
from .dated_inputs import DATES_HELP, DatedRastersMixin
from .styling import GrayStretchStyle, style_on_load

RESAMPLINGS = ("auto", "nearest", "bilinear", "cubic", "average")


class StackTimeSeriesAlgorithm(DatedRastersMixin, SarSegAlgorithm):
    REFERENCE = "REFERENCE"
    RESAMPLING = "RESAMPLING"
    OUTPUT = "OUTPUT"
    DATES_OUT = "DATES_OUT"

    NAME = "stack_time_series"
    DISPLAY_NAME = "Stack time series"
    GROUP_ID = "preprocessing"
    HELP = (
        "Aligns several dated rasters to one grid and stacks them, in date order, into one multi-band "
        "GeoTIFF (band descriptions 'YYYY-MM-DD VV', ...; dates in the SARSEG_DATES metadata).\n\n"
        + DATES_HELP
        + "<b>Reference grid</b>: the rasters are resampled onto this raster's grid (CRS, extent, pixel size); "
        "by default the earliest raster.\n"
        "<b>Resampling</b>: auto uses nearest neighbour for integer rasters (class maps) and bilinear "
        "otherwise.\n\n"
        "Integer rasters (class maps) of one data type stay integer, with one nodata value on every band (the "
        "earliest raster's, else the largest value of the data type); a class map keeps its colour table and "
        "category names.\n\n"
        "Backscatter rasters (bands in dB or linear power, or named VV, VH, ...) are stacked in one scale: a raster "
        "in dB among rasters in linear power (or the other way) is converted to the earliest raster's scale, the "
        "log says so, and the band units say the scale.\n"
        + INPUT_SCALE_HELP
        + "\nRasters in another order are sorted; duplicated dates, rasters with different band counts, without "
        "CRS, or not overlapping the reference are refused. Missing days are reported in the log."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.add_dated_raster_parameters("Dated rasters")
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid"), optional=True))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.RESAMPLING,
                self.tr("Resampling"),
                options=[
                    self.tr("Auto"),
                    self.tr("Nearest"),
                    self.tr("Bilinear"),
                    self.tr("Cubic"),
                    self.tr("Average"),
                ],
                defaultValue=0,
            )
        )
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Stacked time series")))
        self.addOutput(QgsProcessingOutputString(self.DATES_OUT, self.tr("Dates, in band order")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        items = self.dated_rasters(parameters, context, "stack into a time series")
        reference = self.raster_path(parameters, self.REFERENCE, context) if parameters.get(self.REFERENCE) else None
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        resampling = RESAMPLINGS[self.parameterAsEnum(parameters, self.RESAMPLING, context)]
        scale = self.input_scale(parameters, context)
        result = self.run_core(
            lambda: timeseries.stack_rasters(
                items, dst, reference, resampling, input_scale=scale, **self.callbacks(feedback)
            )
        )
        for note in result["notes"]:
            feedback.pushWarning(note)  # core messages are built with their values: not translatable
        feedback.pushInfo(self.tr("Dates in band order: {}").format(", ".join(result["dates"])))
        if not result["paletted"]:  # a class map keeps its colour table; a grey stretch would hide it
            style_on_load(context, dst, GrayStretchStyle())
        return {self.OUTPUT: dst, self.DATES_OUT: ",".join(result["dates"])}
