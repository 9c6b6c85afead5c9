"""sarseg:stack_time_series — dated rasters aligned to one grid and stacked in date order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from ..core import timeseries
from ..core.timeseries import DatedRaster
from .base import SarSegAlgorithm
from .styling import GrayStretchStyle, style_on_load

DATE_SOURCES = ("auto", "parameter", "filename", "temporal")
RESAMPLINGS = ("auto", "nearest", "bilinear", "cubic", "average")


def layer_date(layer: QgsRasterLayer) -> dt.date | None:
    """The start day of a layer's fixed temporal range, when its temporal properties are active."""
    props = layer.temporalProperties()
    if props is None or not props.isActive():
        return None
    begin = props.fixedTemporalRange().begin()
    return begin.date().toPyDate() if begin.isValid() else None


class StackTimeSeriesAlgorithm(SarSegAlgorithm):
    INPUTS = "INPUTS"
    DATES = "DATES"
    DATE_SOURCE = "DATE_SOURCE"
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
        "<b>Dates from</b>: auto (the Dates parameter if given, else each file name, else each layer's "
        "temporal properties), or only one of them. File names may hold YYYYMMDD, YYYY-MM-DD or YYYY_MM_DD "
        "(e.g. S1A_IW_GRDH_1SDV_20260301T054512).\n"
        "<b>Dates</b>: one date per raster, in the order of the inputs, e.g. 2026-03-01, 2026-03-02.\n"
        "<b>Reference grid</b>: the rasters are resampled onto this raster's grid (CRS, extent, pixel size); "
        "by default the earliest raster.\n"
        "<b>Resampling</b>: auto uses nearest neighbour for integer rasters (class maps) and bilinear "
        "otherwise.\n\n"
        "Integer rasters (class maps) of one data type stay integer, with one nodata value on every band (the "
        "earliest raster's, else the largest value of the data type); a class map keeps its colour table and "
        "category names.\n\n"
        "Rasters in another order are sorted; duplicated dates, rasters with different band counts, without "
        "CRS, or not overlapping the reference are refused. Missing days are reported in the log."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(
            QgsProcessingParameterMultipleLayers(self.INPUTS, self.tr("Dated rasters"), QgsProcessing.TypeRaster)
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.DATE_SOURCE,
                self.tr("Dates from"),
                options=[
                    self.tr("Auto (parameter, file name, temporal properties)"),
                    self.tr("Dates parameter"),
                    self.tr("File names"),
                    self.tr("Layer temporal properties"),
                ],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.DATES, self.tr("Dates (YYYY-MM-DD, one per raster)"), optional=True)
        )
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
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Stacked time series")))
        self.addOutput(QgsProcessingOutputString(self.DATES_OUT, self.tr("Dates, in band order")))

    def dated_rasters(self, parameters: dict, context: QgsProcessingContext) -> list[DatedRaster]:
        """The input rasters with their dates, from the chosen source."""
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        if len(layers) < 2:
            raise QgsProcessingException(self.tr("Give at least two rasters to stack into a time series."))
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                raise QgsProcessingException(
                    self.tr(f"'{layer.name()}' is not a file raster layer. Give GeoTIFF (GDAL) rasters only.")
                )
        source = DATE_SOURCES[self.parameterAsEnum(parameters, self.DATE_SOURCE, context)]
        text = self.parameterAsString(parameters, self.DATES, context)
        paths = [layer.source().split("|")[0] for layer in layers]
        if source == "parameter" or (source == "auto" and text.strip()):
            dates = self.run_core(lambda: timeseries.parse_dates(text))
            if len(dates) != len(layers):
                raise QgsProcessingException(
                    self.tr(f"{len(dates)} date(s) given for {len(layers)} rasters. Give one date per raster, "
                            "in the order of the inputs.")
                )  # fmt: skip
            return [DatedRaster(p, d, lyr.name()) for p, d, lyr in zip(paths, dates, layers)]
        items = []
        for path, layer in zip(paths, layers):
            date = None
            if source in ("auto", "filename"):
                date = timeseries.date_from_name(path) or timeseries.date_from_name(layer.name())
            if date is None and source in ("auto", "temporal"):
                date = layer_date(layer)
            if date is None:
                raise QgsProcessingException(
                    self.tr(f"No date found for '{Path(path).name}'. Put the date in the file name (YYYYMMDD), "
                            "set the layer's temporal properties, or list the dates in the Dates parameter.")
                )  # fmt: skip
            items.append(DatedRaster(path, date, layer.name()))
        return items

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        items = self.dated_rasters(parameters, context)
        reference = self.raster_path(parameters, self.REFERENCE, context) if parameters.get(self.REFERENCE) else None
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        resampling = RESAMPLINGS[self.parameterAsEnum(parameters, self.RESAMPLING, context)]
        result = self.run_core(
            lambda: timeseries.stack_rasters(items, dst, reference, resampling, **self.callbacks(feedback))
        )
        for note in result["notes"]:
            feedback.pushWarning(self.tr(note))
        feedback.pushInfo(self.tr(f"Dates in band order: {', '.join(result['dates'])}"))
        if not result["paletted"]:  # a class map keeps its colour table; a grey stretch would hide it
            style_on_load(context, dst, GrayStretchStyle())
        return {self.OUTPUT: dst, self.DATES_OUT: ",".join(result["dates"])}
