"""sarseg:forecast — land cover (or a continuous variable) at t+1, t+2, t+3 days from a daily raster sequence."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QMetaType

from ..core.forecast import change_classes, forecast_rasters
from ..core.forecast_methods import CHOICES, HIGH_CONFIDENCE
from ..core.outputs import OutputSet
from ..core.vectors import polygonize_classes
from ..models.registry import DEVICES, bundled_forecasters, load_forecaster
from .base import SarSegAlgorithm
from .dated_inputs import DATES_HELP, DatedRastersMixin
from .forecast_layers import mark_forecast_layer
from .styling import _ALIVE, ClassPaletteStyle, style_on_load

DEFAULT_FORECASTER = "sarseg_convlstm_classes"
AREA_FIELDS = (
    ("step", QMetaType.Type.Int),
    ("label", QMetaType.Type.QString),
    ("date", QMetaType.Type.QString),
    ("class", QMetaType.Type.QString),
    ("pixels", QMetaType.Type.LongLong),
    ("area_km2", QMetaType.Type.Double),
    ("fraction", QMetaType.Type.Double),
)
HINDCAST_FIELDS = (
    ("method", QMetaType.Type.QString),
    ("horizon", QMetaType.Type.Int),
    ("pairs", QMetaType.Type.Int),
    ("pixels", QMetaType.Type.LongLong),
    ("accuracy", QMetaType.Type.Double),
    ("miou", QMetaType.Type.Double),
    ("rmse", QMetaType.Type.Double),
    ("skill", QMetaType.Type.Double),
    ("origins", QMetaType.Type.QString),
    ("observed", QMetaType.Type.QString),
)


def forecaster_names() -> list[str]:
    """Bundled forecasters offered in the MODEL list, the default first."""
    return sorted(bundled_forecasters(), key=lambda n: (n != DEFAULT_FORECASTER, n))


class ForecastLayer(QgsProcessingLayerPostProcessorInterface):
    """On load: the layer's day as its fixed temporal range and its forecast description (from the file)."""

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if not mark_forecast_layer(layer):
            feedback.pushWarning(f"'{layer.name()}' carries no forecast date; its temporal properties are unchanged")


class ForecastAlgorithm(DatedRastersMixin, SarSegAlgorithm):
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    REFERENCE = "REFERENCE"
    DEVICE = "DEVICE"
    PROBABILITIES = "PROBABILITIES"
    CONFIDENCE = "CONFIDENCE"
    METHOD = "METHOD"
    HINDCAST = "HINDCAST"
    OUTPUT_HINDCAST = "OUTPUT_HINDCAST"
    PREFIX = "PREFIX"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_CHANGE = "OUTPUT_CHANGE"
    POLYGONS = "POLYGONS"
    SIMPLIFY = "SIMPLIFY"
    MIN_POLYGON_AREA = "MIN_POLYGON_AREA"
    OUTPUT_POLYGON_FILES = "OUTPUT_POLYGON_FILES"
    OUTPUT_AREAS = "OUTPUT_AREAS"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"
    GROUP = "GROUP"
    DATES_OUT = "DATES_OUT"

    NAME = "forecast"
    DISPLAY_NAME = "Forecast land cover (t+1 to t+3 days)"
    GROUP_ID = "forecasting"
    HELP = (
        "Forecasts the next days from a daily sequence of rasters with a forecasting model (ONNX): the class "
        "map (or the continuous variable) at t+1, t+2 and t+3 days after the last date (t0).\n\n"
        "<b>Dated rasters</b>: the sequence, in any order; it is sorted by date. The default forecaster takes "
        "class maps (one band, classes 0-4: water, vegetation, forest, built-up, bare soil, e.g. outputs of "
        "sarseg:segment) or class probabilities (one band per class). It uses the last 4 dates; fewer is "
        "refused, duplicated dates are refused, and days missing between the dates are reported.\n"
        + DATES_HELP
        + "<b>Bundled forecaster</b>: sarseg_convlstm_classes, a ConvLSTM trained on synthetic daily land-cover "
        "sequences of many kinds (floods from rivers, lakes and rain rising and receding at different speeds, crops "
        "harvested and replanted, no change; clean and noisy class maps); or sarseg_convlstm_db, which forecasts "
        "VV/VH backscatter in dB from calibrated backscatter rasters. The model card says how each compares with "
        "persistence; the hindcast says it for your area.\n"
        "<b>Forecaster file</b>: optional; the encoder or decoder step .onnx of another forecaster (its pair must "
        "be beside it).\n"
        "<b>Method</b>: the model, or one of two baselines to compare it with: <i>persistence</i> (tomorrow = today: "
        "the last map repeated) or <i>trend</i> (the share of each class in the 5 x 5 px neighbourhood, fitted by a "
        "line over the input dates and extended; a pixel whose neighbourhood does not change keeps its class; for "
        "backscatter, the neighbourhood mean). The forecaster still sets the dates and classes. <i>Best on the "
        "hindcast</i> replays the hindcast first (see below) and writes the model's forecast unless a baseline did "
        "clearly better on your own last dates (mean accuracy 0.02 higher, or RMSE 10 % lower): a safety net for a "
        "forecaster that is wrong for your area, not a switch on small differences (a few days of hindcast are too "
        "noisy for that). The log says which and why, and the maps' metadata record it (METHOD, "
        "METHOD_CHOSEN_BY). It needs 4 + 1 dates or more, else the model is used.\n"
        "<b>Hindcast</b>: with more dates than the forecaster takes (4 + 1 or more), the forecast is also replayed "
        "from up to 3 earlier dates and compared with what was observed after them, for the model and both "
        "baselines: the log, the hindcast table and the forecast dock say how much better than persistence the "
        "model was on this area (skill = 1 - error / error of persistence), and say so plainly when it was not.\n"
        "<b>Reference grid</b>: rasters on other grids are aligned (nearest neighbour for class maps, bilinear "
        "otherwise) to this raster's grid; by default the earliest raster used.\n"
        "<b>Device</b>: auto, CPU or CUDA (falls back to CPU).\n"
        "<b>Input units</b> (advanced, forecasters of continuous values such as backscatter): how the inputs' scale "
        "is read; auto decides by each band's unit and values, as every SAR Seg tool does.\n"
        "<b>Write class probabilities</b>: also write each step's per-class probabilities beside its class map.\n"
        "<b>Write confidence</b>: also write each horizon's confidence (the probability of the forecast class, "
        "0..1) beside its class map; the log and the dock give the share of the area that changes class from t0 "
        f"with a probability of {HIGH_CONFIDENCE:.0%} or more.\n"
        "<b>Write class polygons</b>: also write each class map's classes as polygons (fields class, name, "
        "area_km2) in a GeoPackage of the same name; <b>Polygon simplification tolerance</b> (CRS units) and "
        "<b>Smallest polygon kept</b> (m²) as in 'Segment raster' (advanced).\n"
        "<b>File name prefix</b>: output files are named <i>prefix_t+1_YYYY-MM-DD.tif</i>; the layers are "
        "loaded in a group named after the prefix and t0.\n"
        "<b>Output folder</b>: where the class maps of t0 (the last input) and of each horizon are written.\n"
        "<b>Change map</b>: what changes class between t0 and t+3 (0 = no change, else 'from -> to' categories "
        "coloured by the new class).\n"
        "<b>Class areas</b>: a table of the area (km²) and share of each class at t0 and each horizon.\n"
        "<b>Hindcast scores</b>: a table with one row per method and horizon: forecasts scored, pixels, accuracy, "
        "mIoU (class forecasts) or RMSE (values), and the skill against persistence.\n\n"
        "Each map is loaded with its day as a fixed temporal range, so QGIS's temporal controller and the SAR "
        "Seg forecast dock step through t0..t+3. The rasters are processed in blocks with a halo as wide as the "
        "forecaster's receptive field, so the result equals a forecast of the whole raster at once (no seams). "
        "Needs the Python package onnxruntime."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.add_dated_raster_parameters("Dated rasters")
        self.addParameter(
            QgsProcessingParameterEnum(
                self.MODEL, self.tr("Bundled forecaster"), options=forecaster_names(), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL_FILE,
                self.tr("Forecaster file (.onnx, overrides the bundled forecaster)"),
                extension="onnx",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Method"), options=[self.tr(m) for m in CHOICES], defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.HINDCAST, self.tr("Hindcast: score the model on the last dates of the series"), defaultValue=True
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid"), optional=True))
        device = QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), options=[self.tr("Auto"), "CPU", "CUDA"], defaultValue=0
        )
        device.setFlags(device.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(device)
        self.add_input_scale_parameter()
        self.addParameter(
            QgsProcessingParameterBoolean(self.PROBABILITIES, self.tr("Write class probabilities"), defaultValue=False)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.CONFIDENCE, self.tr("Write confidence"), defaultValue=True)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.POLYGONS, self.tr("Write class polygons (a GeoPackage beside each map)"), defaultValue=False
            )
        )
        for param in (
            QgsProcessingParameterNumber(
                self.SIMPLIFY, self.tr("Polygon simplification tolerance (CRS units; 0: none)"),
                QgsProcessingParameterNumber.Double, 0.0, False, 0.0,
            ),
            QgsProcessingParameterNumber(
                self.MIN_POLYGON_AREA, self.tr("Smallest polygon kept (m²)"), QgsProcessingParameterNumber.Double,
                0.0, False, 0.0,
            ),
        ):  # fmt: skip
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(
            QgsProcessingParameterString(self.PREFIX, self.tr("File name prefix"), defaultValue="forecast")
        )
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_CHANGE, self.tr("Change map"), optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_AREAS, self.tr("Class areas"), QgsProcessing.TypeVector, optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_HINDCAST,
                self.tr("Hindcast scores"),
                QgsProcessing.TypeVector,
                optional=True,
                createByDefault=True,
            )
        )
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Forecast maps (t0 to t+3)")))
        self.addOutput(
            QgsProcessingOutputMultipleLayers(self.OUTPUT_POLYGON_FILES, self.tr("Class polygons (one file per map)"))
        )
        self.addOutput(QgsProcessingOutputString(self.GROUP, self.tr("Layer group")))
        self.addOutput(QgsProcessingOutputString(self.DATES_OUT, self.tr("Dates of the maps")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        items = self.dated_rasters(parameters, context, "forecast from")
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        names = forecaster_names()
        model_name = model_file or names[self.parameterAsEnum(parameters, self.MODEL, context)]
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        reference = self.raster_path(parameters, self.REFERENCE, context) if parameters.get(self.REFERENCE) else None
        prefix = (
            re.sub(r"[^\w.-]+", "_", self.parameterAsString(parameters, self.PREFIX, context).strip()) or "forecast"
        )
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        change = self.parameterAsOutputLayer(parameters, self.OUTPUT_CHANGE, context) or None
        probabilities = self.parameterAsBoolean(parameters, self.PROBABILITIES, context)
        confidence = self.parameterAsBoolean(parameters, self.CONFIDENCE, context)
        polygons = self.parameterAsBoolean(parameters, self.POLYGONS, context)
        simplify = self.parameterAsDouble(parameters, self.SIMPLIFY, context)
        min_area = self.parameterAsDouble(parameters, self.MIN_POLYGON_AREA, context)
        method = CHOICES[self.parameterAsEnum(parameters, self.METHOD, context)]
        hindcast = self.parameterAsBoolean(parameters, self.HINDCAST, context)

        model = self.run_core(lambda: load_forecaster(model_name, device))
        feedback.pushInfo(self.tr("Forecaster: {} ({}, {})").format(model.name, model.encoder_path, model.decoder_path))
        if polygons and model.metadata.output_kind != "classes":
            feedback.pushWarning(self.tr("Class polygons need a class forecaster; they are not written."))
            polygons = False
        if change and model.metadata.output_kind != "classes":
            feedback.pushWarning(self.tr("The change map needs a class forecaster; it is not written."))
            change = None
        self.check_outputs(parameters, [self.OUTPUT_AREAS, self.OUTPUT_HINDCAST], context, feedback.pushInfo)
        created = not os.path.isdir(folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise QgsProcessingException(
                self.tr("Cannot create the output folder '{}': {}").format(folder, err.strerror or err)
            ) from None
        run_outputs = OutputSet()
        sink_ids: list[tuple[str, str]] = []
        hindcast_ids: list[tuple[str, str]] = []
        polygon_files: list[str] = []

        def run() -> object:  # the maps, the change map and the class-area table appear together, or none
            with run_outputs:
                result = forecast_rasters(
                    items,
                    model,
                    folder,
                    prefix=prefix,
                    reference_path=reference,
                    probabilities=probabilities,
                    confidence=confidence,
                    change_path=change,
                    method=method,
                    hindcast=hindcast,
                    log=feedback.pushInfo,
                    outputs=run_outputs,
                    input_scale=self.input_scale(parameters, context),
                    **self.callbacks(feedback),
                )
                if polygons:  # from the maps just written, moved into place with them
                    names = dict(enumerate(result.class_names))
                    for step in result.steps:
                        target = str(Path(step.path).with_suffix(".gpkg"))
                        polygonize_classes(str(run_outputs.temporary_of(step.path)), target, names,
                                           layer_name=Path(step.path).stem, simplify=simplify,
                                           min_area_m2=min_area, outputs=run_outputs,
                                           is_canceled=feedback.isCanceled)  # fmt: skip
                        polygon_files.append(target)
                if parameters.get(self.OUTPUT_AREAS) is not None:
                    sink_ids.append(self._write_areas(parameters, context, result, run_outputs))
                if parameters.get(self.OUTPUT_HINDCAST) is not None and result.hindcast is not None:
                    hindcast_ids.append(self._write_hindcast(parameters, context, result.hindcast, run_outputs))
            return result

        try:
            result = self.run_core(run)
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)  # only the folder this run made (outputs are atomic)
            raise
        self.sinks_committed(context, sink_ids + hindcast_ids)
        for note in result.notes:
            feedback.pushWarning(note)  # core messages are built with their values: not translatable

        outputs = {
            self.OUTPUT_FOLDER: folder,
            self.OUTPUT_LAYERS: [s.path for s in result.steps],
            self.GROUP: result.run,
            self.DATES_OUT: ",".join(s.date.isoformat() for s in result.steps),
        }
        self._load_in_group(context, result)
        if polygon_files:
            outputs[self.OUTPUT_POLYGON_FILES] = polygon_files
        if change:
            style_on_load(context, change, ClassPaletteStyle(change_classes(model.metadata)))
            outputs[self.OUTPUT_CHANGE] = change
        if sink_ids:
            outputs[self.OUTPUT_AREAS] = sink_ids[0][1]
        if hindcast_ids:
            outputs[self.OUTPUT_HINDCAST] = hindcast_ids[0][1]
        for s in result.steps:
            if s.class_pixels is not None:
                feedback.pushInfo(
                    self.tr("{} ({}): {}").format(
                        s.label,
                        s.date.isoformat(),
                        ", ".join(
                            f"{n} {c / max(s.class_pixels.sum(), 1):.1%}"
                            for n, c in zip(result.class_names, s.class_pixels)
                        ),
                    )
                )
        return outputs

    def _load_in_group(self, context: QgsProcessingContext, result) -> None:  # noqa: ANN001
        """Load t0..t+3 (and probabilities) in one layer-tree group, each with its day as temporal range."""
        if context.project() is None:
            return
        for k, step in enumerate(result.steps):
            paths = [(step.path, f"{step.label} {step.date.isoformat()}")]
            if step.probabilities_path:
                paths.append((step.probabilities_path, f"{step.label} {step.date.isoformat()} probabilities"))
            for j, (path, name) in enumerate(paths):
                details = QgsProcessingContext.LayerDetails(name, context.project(), self.OUTPUT_LAYERS)
                details.groupName = result.run
                details.layerSortKey = 2 * k + j
                processor = ForecastLayer()
                _ALIVE[path] = processor
                details.setPostProcessor(processor)
                context.addLayerToLoadOnCompletion(path, details)

    def _write_hindcast(self, parameters: dict, context: QgsProcessingContext, hindcast, outputs) -> tuple[str, str]:  # noqa: ANN001
        """The hindcast table (one row per method and horizon), written as one of the run's ``outputs``."""
        origins = ",".join(d.isoformat() for d in hindcast.origins)
        observed = ",".join(d.isoformat() for d in hindcast.observed)
        rows = [{**row.as_dict(), "origins": origins, "observed": observed} for row in hindcast.rows]
        return self.write_table(outputs, parameters, self.OUTPUT_HINDCAST, context, HINDCAST_FIELDS, rows)

    def _write_areas(self, parameters: dict, context: QgsProcessingContext, result, outputs) -> tuple[str, str]:  # noqa: ANN001
        """The class-area table, written as one of the run's ``outputs``; returns its ids while written and final."""
        return self.write_table(outputs, parameters, self.OUTPUT_AREAS, context, AREA_FIELDS, result.areas())
