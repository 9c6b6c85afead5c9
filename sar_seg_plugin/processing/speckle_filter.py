"""sarseg:speckle_filter — speckle filtering of every band, streamed by blocks."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core import speckle
from ..core.preprocess import SpeckleSettings, speckle_filter_raster
from .base import INPUT_SCALE, INPUT_SCALE_HELP, SarSegAlgorithm
from .styling import GrayStretchStyle, style_on_load


class SpeckleFilterAlgorithm(SarSegAlgorithm):
    INPUT = "INPUT"
    FILTER = "FILTER"
    WINDOW = "WINDOW"
    LOOKS = "LOOKS"
    ESTIMATE_LOOKS = "ESTIMATE_LOOKS"
    DAMPING = "DAMPING"
    SIGMA = "SIGMA"
    INPUT_SCALE = INPUT_SCALE
    OUTPUT = "OUTPUT"
    LOOKS_USED = "LOOKS_USED"

    NAME = "speckle_filter"
    DISPLAY_NAME = "Speckle filter"
    GROUP_ID = "preprocessing"
    HELP = (
        "Reduces speckle in SAR intensity images with the filters ESA SNAP offers, on every band.\n\n"
        "<b>SAR raster</b>: intensity (linear power) or dB bands, e.g. Sentinel-1 VV and VH.\n"
        "<b>Filter</b>: Lee, Refined Lee (edge-aligned windows), Lee Sigma (improved sigma filter of Lee et al. "
        "2009, keeps point targets), Frost, Gamma-MAP, Kuan, Boxcar (mean) or Median. Before sarseg:segment, "
        "prefer Lee or Refined Lee: a median removes the bright points and texture of built-up land, and "
        "sarseg:segment warns on median-filtered input.\n"
        "<b>Window size</b>: odd size of the moving window in pixels (7 is a good start; Refined Lee needs "
        "at least 5).\n"
        "<b>Number of looks</b>: the equivalent number of looks (ENL) of the image, e.g. about 4.4 for "
        "Sentinel-1 IW GRD and 1 for SLC. Used by Lee, Refined Lee, Lee Sigma, Gamma-MAP and Kuan.\n"
        "<b>Estimate the number of looks</b>: measure the ENL on the most homogeneous parts of the image "
        "instead (reported in the log and as the LOOKS_USED output).\n"
        "<b>Frost damping factor</b>: how fast Frost weights fall with distance (larger keeps edges better).\n"
        "<b>Lee Sigma sigma</b>: the fraction of speckle kept in the sigma range (0.5-0.99, default 0.9).\n"
        "Speckle is multiplicative in linear power: a band in dB is converted to linear power, filtered, and "
        "converted back to dB; the output bands' units say which.\n"
        + INPUT_SCALE_HELP
        + "\n"
        + "Nodata pixels stay nodata and are ignored by the local statistics. The raster is processed block "
        "by block with a halo of half a window, so the result is identical to filtering the whole image "
        "at once and memory stays small for any raster size."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("SAR raster (intensity)")))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FILTER,
                self.tr("Filter"),
                options=[self.tr(speckle.FILTER_LABELS[f]) for f in speckle.FILTERS],
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WINDOW,
                self.tr("Window size (odd, pixels)"),
                QgsProcessingParameterNumber.Integer,
                7,
                False,
                3,
                51,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.LOOKS,
                self.tr("Number of looks (ENL)"),
                QgsProcessingParameterNumber.Double,
                4.4,
                False,
                0.1,
                1000,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.ESTIMATE_LOOKS, self.tr("Estimate the number of looks from the image"), False
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.DAMPING,
                self.tr("Frost damping factor"),
                QgsProcessingParameterNumber.Double,
                2.0,
                False,
                0.0,
                100,
            ),
            QgsProcessingParameterNumber(
                self.SIGMA,
                self.tr("Lee Sigma: sigma"),
                QgsProcessingParameterNumber.Double,
                0.9,
                False,
                0.5,
                0.99,
            ),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.add_input_scale_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Filtered raster")))
        self.addOutput(QgsProcessingOutputNumber(self.LOOKS_USED, self.tr("Number of looks used (band 1)")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        src = self.raster_path(parameters, self.INPUT, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        window = self.parameterAsInt(parameters, self.WINDOW, context)
        estimate = self.parameterAsBoolean(parameters, self.ESTIMATE_LOOKS, context)
        settings = SpeckleSettings(
            filter_name=speckle.FILTERS[self.parameterAsEnum(parameters, self.FILTER, context)],
            window=window,
            looks=None if estimate else self.parameterAsDouble(parameters, self.LOOKS, context),
            damping=self.parameterAsDouble(parameters, self.DAMPING, context),
            sigma=self.parameterAsDouble(parameters, self.SIGMA, context),
            input_scale=self.input_scale(parameters, context),
        )
        feedback.pushInfo(
            self.tr("{} filter, {}x{} window").format(speckle.FILTER_LABELS[settings.filter_name], window, window)
        )
        result = self.run_core(
            lambda: speckle_filter_raster(
                src, dst, settings, log=feedback.pushInfo, warn=feedback.pushWarning, **self.callbacks(feedback)
            )
        )
        style_on_load(context, dst, GrayStretchStyle())
        return {self.OUTPUT: dst, self.LOOKS_USED: result["looks"][0]}
