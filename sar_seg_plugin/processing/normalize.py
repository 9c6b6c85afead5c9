"""sarseg:normalize — per-band standardisation with reusable statistics."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core import radiometry
from ..core.errors import SarSegError
from ..core.preprocess import normalize_raster
from .base import SarSegAlgorithm
from .styling import GrayStretchStyle, style_on_load

METHODS = (radiometry.ZSCORE, radiometry.PERCENTILE)


class NormalizeAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    METHOD = "METHOD"
    LOW_PERCENTILE = "LOW_PERCENTILE"
    HIGH_PERCENTILE = "HIGH_PERCENTILE"
    STATS_FILE = "STATS_FILE"
    OUTPUT = "OUTPUT"
    OUTPUT_STATS = "OUTPUT_STATS"

    NAME = "normalize"
    DISPLAY_NAME = "Normalize bands"
    GROUP_ID = "preprocessing"
    HELP = (
        "Standardises every band, e.g. before training or running a model.\n\n"
        "<b>Method</b>: z-score ((x - mean) / std), or percentile clip then min-max to [0, 1].\n"
        "<b>Low percentile / high percentile</b>: the clip limits of the percentile method (default 2 and 98).\n"
        "<b>Statistics file</b> (optional): reuse the statistics of an earlier run (the JSON this tool "
        "writes), e.g. those of the training scenes, instead of computing them on this raster.\n\n"
        "Statistics are computed over the whole raster (a regular sample of 4 million pixels per band for "
        "larger rasters), ignoring nodata. They are written to the output's metadata "
        "(SARSEG_NORMALIZATION) and, if asked, to a JSON file; the raster and the file appear together or not at "
        "all. The output bands' unit is 'z-score' or 'normalised', so the other SAR Seg tools do not take them "
        "as backscatter (give those tools the raster before normalisation: models normalise their input "
        "themselves)."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Raster")))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHOD,
                self.tr("Method"),
                options=[
                    self.tr("z-score (mean / standard deviation)"),
                    self.tr("Percentile clip + min-max"),
                ],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.LOW_PERCENTILE,
                self.tr("Low percentile"),
                QgsProcessingParameterNumber.Double,
                2.0,
                False,
                0,
                100,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.HIGH_PERCENTILE,
                self.tr("High percentile"),
                QgsProcessingParameterNumber.Double,
                98.0,
                False,
                0,
                100,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.STATS_FILE, self.tr("Statistics file to reuse (JSON)"), extension="json", optional=True
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Normalized raster")))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_STATS,
                self.tr("Statistics (JSON)"),
                "JSON files (*.json)",
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        src = self.raster_path(parameters, self.INPUT, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        method = METHODS[self.parameterAsEnum(parameters, self.METHOD, context)]
        low = self.parameterAsDouble(parameters, self.LOW_PERCENTILE, context)
        high = self.parameterAsDouble(parameters, self.HIGH_PERCENTILE, context)
        stats_in = self.parameterAsFile(parameters, self.STATS_FILE, context)
        stats_out = self.parameterAsFileOutput(parameters, self.OUTPUT_STATS, context) or None

        def run() -> radiometry.NormalizationStats:
            stats = None
            if stats_in:
                try:
                    stats = radiometry.NormalizationStats.from_json(Path(stats_in).read_text(encoding="utf-8"))
                except OSError as exc:
                    raise SarSegError(f"Cannot read the statistics file '{stats_in}': {exc}") from exc
            return normalize_raster(src, dst, method, low, high, stats, stats_out, **self.callbacks(feedback))

        stats = self.run_core(run)
        for band in stats.bands:
            feedback.pushInfo(
                self.tr("{}: mean {:.4g}, std {:.4g}, p{:g} {:.4g}, p{:g} {:.4g}").format(
                    band.name, band.mean, band.std, band.low_percentile, band.low, band.high_percentile, band.high
                )
            )
        style_on_load(context, dst, GrayStretchStyle())
        return {self.OUTPUT: dst, self.OUTPUT_STATS: stats_out}
