"""Dated raster inputs shared by ``sarseg:stack_time_series`` and ``sarseg:forecast``: the layers, where their
dates come from (a parameter, file names, layer temporal properties) and the checks on them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from ..core import timeseries
from ..core.timeseries import DatedRaster
from .base import layer_path

DATE_SOURCES = ("auto", "parameter", "filename", "temporal")
DATES_HELP = (
    "<b>Dates from</b>: auto (the Dates parameter if given, else each file name, else each layer's "
    "temporal properties), or only one of them. File names may hold YYYYMMDD, YYYY-MM-DD or YYYY_MM_DD "
    "(e.g. S1A_IW_GRDH_1SDV_20260301T054512).\n"
    "<b>Dates</b>: one date per raster, in the order of the inputs, e.g. 2026-03-01, 2026-03-02.\n"
)


def layer_date(layer: QgsRasterLayer) -> dt.date | None:
    """The start day of a layer's fixed temporal range, when its temporal properties are active."""
    props = layer.temporalProperties()
    if props is None or not props.isActive():
        return None
    begin = props.fixedTemporalRange().begin()
    return begin.date().toPyDate() if begin.isValid() else None


class DatedRastersMixin:
    """Parameters INPUTS, DATE_SOURCE and DATES, and :meth:`dated_rasters` reading them (for SarSegAlgorithm)."""

    INPUTS = "INPUTS"
    DATES = "DATES"
    DATE_SOURCE = "DATE_SOURCE"

    def add_dated_raster_parameters(self, description: str) -> None:
        self.addParameter(
            QgsProcessingParameterMultipleLayers(self.INPUTS, self.tr(description), QgsProcessing.TypeRaster)
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

    def dated_rasters(self, parameters: dict, context: QgsProcessingContext, what: str) -> list[DatedRaster]:
        """The input rasters with their dates, from the chosen source, in input order (at least two)."""
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        if len(layers) < 2:
            raise QgsProcessingException(self.tr("Give at least two rasters to {}.").format(what))
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                raise QgsProcessingException(
                    self.tr("'{}' is not a file raster layer. Give GeoTIFF (GDAL) rasters only.").format(layer.name())
                )
        source = DATE_SOURCES[self.parameterAsEnum(parameters, self.DATE_SOURCE, context)]
        text = self.parameterAsString(parameters, self.DATES, context)
        paths = [layer_path(layer) for layer in layers]
        if source == "parameter" or (source == "auto" and text.strip()):
            dates = self.run_core(lambda: timeseries.parse_dates(text))
            if len(dates) != len(layers):
                raise QgsProcessingException(
                    self.tr(
                        "{} date(s) given for {} rasters. Give one date per raster, in the order of the inputs."
                    ).format(len(dates), len(layers))
                )
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
                    self.tr("No date found for '{}'. Put the date in the file name (YYYYMMDD), set the layer's "
                            "temporal properties, or list the dates in the Dates parameter.").format(Path(path).name)
                )  # fmt: skip
            items.append(DatedRaster(path, date, layer.name()))
        return items
