"""Shared plumbing of SAR Seg algorithms: naming, groups, help, input checks and error translation."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterLayer,
    QgsProperty,
    QgsRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QMetaType
from qgis.PyQt.QtGui import QIcon

from ..core import units
from ..core.errors import CancelledError, SarSegError
from ..core.outputs import OutputSet, check_destinations, removed_on_termination
from ..core.raster_io import has_georeferencing, try_open

ICON = Path(__file__).resolve().parent.parent / "icons" / "sarseg.svg"


def layer_path(layer: QgsMapLayer) -> str:
    """The file behind a GDAL layer (its source without ``|option`` suffixes)."""
    return layer.source().split("|")[0]


GROUPS = {
    "preprocessing": "Preprocessing",
    "segmentation": "Segmentation",
    "forecasting": "Forecasting",
    "clustering": "Clustering",
    "batch": "Batch",
}
T = TypeVar("T")
#: The "Input units" parameter: its options in the order of :data:`units.SCALE_CHOICES`, and its help text.
INPUT_SCALE = "INPUT_SCALE"
INPUT_SCALE_HELP = (
    "<b>Input units</b> (advanced): a band scale and offset declared in the file (e.g. dB x 100 stored as Int16 "
    "with scale 0.01) are applied first, as QGIS shows the values. Auto-detect reads each band's unit ('dB' or "
    "'linear') when its values agree, "
    "else decides by the values (negative values in the range of backscatter mean dB, small positive values linear "
    "power), and says in the log which and why; a band whose unit contradicts its values is read as its values "
    "say, with a warning; rasters that are neither (digital numbers, integers scaled without a declared scale, "
    "normalised values) are "
    "refused with what to do, and so is a VV/VH (HH/HV) pair that looks like amplitude (the square root of power: "
    "both bands too bright and too close together). Choose linear power or dB to override the detection.\n"
)
#: For the tools that give backscatter to a model.
RADIOMETRY_HELP = (
    "<b>gamma0 and beta0</b>: bands or metadata that say so (e.g. ESA SNAP's Gamma0_VV, or 'Import Sentinel-1' "
    "with radiometry gamma0) are converted to the sigma0 the models were trained on, with the incidence angle of a "
    "band of angles (e.g. SNAP's incidenceAngleFromEllipsoid), else of the metadata (INCIDENCE_ANGLE), else an "
    "assumed 37.5 deg (the middle of a Sentinel-1 IW swath), as the log says.\n"
)


class SarSegAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY_NAME, GROUP_ID and HELP and implement the rest."""

    NAME = ""
    DISPLAY_NAME = ""
    GROUP_ID = "preprocessing"
    HELP = ""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> SarSegAlgorithm:  # noqa: N802 - QGIS API name
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(GROUPS[self.GROUP_ID])

    def groupId(self) -> str:  # noqa: N802 - QGIS API name
        return self.GROUP_ID

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return self.tr(self.HELP)

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Say plainly when a raster parameter points at a file that is not a raster (e.g. a vector)."""
        for definition in self.parameterDefinitions():
            if not isinstance(definition, QgsProcessingParameterRasterLayer):
                continue
            value = parameters.get(definition.name())
            path = value.split("|")[0] if isinstance(value, str) else ""
            if path and os.path.isdir(path) and try_open(path) is None:
                return False, self.tr("'{}' is a folder, not a raster file ({}). Give a raster file inside it, such "
                                      "as a GeoTIFF.").format(path, definition.description())  # fmt: skip
            if path and os.path.isfile(path) and try_open(path) is None:
                return False, self.tr(
                    "'{}' is not a raster file ({}). Give a raster layer or a raster file such as a GeoTIFF."
                ).format(path, definition.description())
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> bool:
        """Say plainly when an input raster has no georeferencing (QGIS prints a GDAL error while loading it)."""
        for definition in self.parameterDefinitions():
            if not isinstance(definition, QgsProcessingParameterRasterLayer) or not parameters.get(definition.name()):
                continue
            layer = self.parameterAsRasterLayer(parameters, definition.name(), context)
            path = layer_path(layer) if layer is not None and layer.providerType() == "gdal" else ""
            ds = try_open(path) if path else None
            if ds is not None and not has_georeferencing(ds):
                feedback.pushWarning(
                    self.tr(
                        "'{}' has no georeferencing (no geotransform, no GCPs): it is processed in pixel coordinates "
                        "and the outputs have no georeferencing either. The 'GDAL ERROR 1: Unable to compute a "
                        "transformation' line printed while QGIS loaded it says the same and can be ignored."
                    ).format(Path(path).name)
                )
            ds = None
        return super().prepareAlgorithm(parameters, context, feedback)

    # --- helpers for subclasses ---------------------------------------------------------------------

    def raster_layer(self, parameters: dict, name: str, context: QgsProcessingContext) -> QgsRasterLayer:
        """The raster layer of a parameter, or a clear error when it is missing or not a file raster."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(
                self.invalidRasterError(parameters, name)
                + " "
                + self.tr("Give a raster layer or a raster file such as a GeoTIFF.")
            )
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                self.tr(
                    "Layer '{}' is a '{}' raster; SAR Seg reads file rasters (GDAL). Export it to GeoTIFF first "
                    "(right-click > Export > Save As)."
                ).format(layer.name(), layer.providerType())
            )
        return layer

    def check_vector_crs(self, source: QgsProcessingFeatureSource, what: str) -> None:
        """Refuse a vector layer without a usable CRS: none, GeoPackage's "Undefined" SRS, or a geographic CRS whose
        coordinates are not degrees (e.g. metres read as degrees): its polygons cannot be placed on a raster."""
        crs = source.sourceCrs()
        where = self.tr("(Layer Properties > Source > Assigned coordinate reference system)")
        if not crs.isValid() or (not crs.authid() and crs.description().lower().startswith("undefined")):
            raise QgsProcessingException(
                self.tr("The {} has no valid CRS: set it first {} so its features can be placed on the raster.").format(
                    what, where
                )
            )
        extent = source.sourceExtent()
        if (
            crs.isGeographic()
            and not extent.isEmpty()
            and (
                max(abs(extent.xMinimum()), abs(extent.xMaximum())) > 360
                or max(abs(extent.yMinimum()), abs(extent.yMaximum())) > 90.5
            )
        ):
            raise QgsProcessingException(
                self.tr(
                    "The {} is in a geographic CRS ({}), but its coordinates ({:.0f}, {:.0f}) are not degrees: its "
                    "CRS is wrong. Set the CRS its coordinates are in {}."
                ).format(what, crs.authid() or crs.description(), extent.xMinimum(), extent.yMinimum(), where)
            )

    def raster_path(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:
        return layer_path(self.raster_layer(parameters, name, context))

    def add_input_scale_parameter(self) -> None:
        """The advanced "Input units" parameter (auto, linear power, dB) of tools that read backscatter."""
        param = QgsProcessingParameterEnum(
            INPUT_SCALE,
            self.tr("Input units"),
            options=[self.tr("Auto-detect (unit, else values)"), self.tr("Linear power"), self.tr("Decibels (dB)")],
            defaultValue=0,
        )
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def input_scale(self, parameters: dict, context: QgsProcessingContext) -> str:
        return units.SCALE_CHOICES[self.parameterAsEnum(parameters, INPUT_SCALE, context)]

    @staticmethod
    def callbacks(feedback: QgsProcessingFeedback) -> dict[str, Callable]:
        """progress / is_canceled callables for core functions."""
        return {
            "progress": feedback.setProgress,
            "is_canceled": feedback.isCanceled,
        }

    def load_segmentation(self, name_or_path: str, device: str, feedback: QgsProcessingFeedback) -> tuple:
        """A segmentation model and the model to check it against on tiles spread over the raster (None: unchecked), as
        ``models.registry.load_checked`` opens them; what was decided goes to the log."""
        from ..core.model_check import MIN_AGREEMENT, TILE_FLOOR
        from ..models.registry import load_checked

        model, reference, note = self.run_core(lambda: load_checked(name_or_path, device))
        if note:
            feedback.pushInfo(note)
        if reference is not None:
            feedback.pushInfo(
                self.tr(
                    "{} is the int8 copy of {}: tiles holding data, spread over the raster, run through both first, "
                    "and {} segments the raster unless their classes differ on more than {:.0%} of those pixels, "
                    "or on more than {:.0%} of any one tile's"
                ).format(model.path.stem, reference.path.stem, model.path.stem, 1.0 - MIN_AGREEMENT, 1.0 - TILE_FLOOR)
            )
        return model, reference

    def run_core(self, fn: Callable[[], T]) -> T:
        """Run core code, turning its errors into QgsProcessingException with the same plain message.

        While it runs, SIGTERM and SIGHUP remove the run's temporary files before the process ends
        (:func:`~..core.outputs.removed_on_termination`)."""
        try:
            with removed_on_termination():
                return fn()
        except CancelledError as exc:
            raise QgsProcessingException(self.tr("Cancelled by the user: no output was written.")) from exc
        except SarSegError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MemoryError as exc:
            raise QgsProcessingException(self.tr("Out of memory; no output was written.")) from exc
        except OSError as exc:  # disk full, no permission, a folder where a file was expected...
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                folder = os.path.dirname(exc.filename) if exc.filename else "the output folder"
                raise QgsProcessingException(
                    self.tr(
                        "The disk holding '{}' is full. Free some space there or choose a folder on another "
                        "disk. No output was written."
                    ).format(folder)  # fmt: skip
                ) from exc
            where = f" ({exc.filename})" if exc.filename else ""
            raise QgsProcessingException(
                self.tr("Could not write an output{}: {}. No output was written.").format(where, exc.strerror or exc)
            ) from exc
        except RuntimeError as exc:  # GDAL errors, raised as RuntimeError when GDAL exceptions are on
            raise QgsProcessingException(self.tr("GDAL error: {}. No output was written.").format(exc)) from exc

    # --- feature sinks written with the run's other outputs ---------------------------------------------------------

    def sink_destination(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:
        """Where the sink parameter ``name`` writes ("" when nowhere), without queuing it for loading:
        parameterAsOutputLayer also queues the destination for loading when the run ends (the dialog's "open output
        file after running"), which for a memory sink is a name no layer will have (the sink registers its own
        layer when it is written, and none when it is not)."""
        queued = context.layersToLoadOnCompletion()
        dest = self.parameterAsOutputLayer(parameters, name, context) or ""
        context.setLayersToLoadOnCompletion(queued)
        return dest

    def file_destination(self, parameters: dict, name: str, context: QgsProcessingContext) -> str | None:
        """The file a sink parameter writes to, when it is a plain file (None for a memory layer, a table in an
        existing database, ...)."""
        if parameters.get(name) is None:
            return None
        dest = self.sink_destination(parameters, name, context)
        if not dest or "|" in dest or re.match(r"^[A-Za-z][A-Za-z0-9_]+:", dest) or not Path(dest).suffix:
            return None
        return dest

    def check_outputs(self, parameters: dict, names: list[str], context: QgsProcessingContext, log: Callable) -> None:
        """Check the file destinations of sink and file parameters before any work (see ``check_destinations``)."""
        paths = []
        for name in names:
            definition = self.parameterDefinition(name)
            if definition is not None and definition.type() == "sink":
                path = self.file_destination(parameters, name, context)
            else:
                path = self.parameterAsFileOutput(parameters, name, context) if parameters.get(name) else None
            if path:
                paths.append((path, 0))
        self.run_core(lambda: check_destinations(paths, log))

    @staticmethod
    def table_fields(spec: Iterable[tuple[str, QMetaType.Type]]) -> QgsFields:
        """Fields of a table from (name, type) pairs, in order."""
        fields = QgsFields()
        for name, kind in spec:
            fields.append(QgsField(name, kind))
        return fields

    def write_table(
        self,
        outputs: OutputSet,
        parameters: dict,
        name: str,
        context: QgsProcessingContext,
        spec: Iterable[tuple[str, QMetaType.Type]],
        rows: Iterable[dict],
    ) -> tuple[str, str]:
        """A table without geometry: fields from ``spec`` ((name, type) pairs), one feature per row dict (keyed by
        field name), written by :meth:`write_features`."""
        fields = self.table_fields(spec)
        features = []
        for row in rows:
            feature = QgsFeature(fields)
            feature.setAttributes([row[f.name()] for f in fields])
            features.append(feature)
        return self.write_features(outputs, parameters, name, context, fields, features)

    def write_features(
        self,
        outputs: OutputSet,
        parameters: dict,
        name: str,
        context: QgsProcessingContext,
        fields: QgsFields,
        features: Iterable[QgsFeature],
        geometry_type: QgsWkbTypes.Type = QgsWkbTypes.NoGeometry,
        crs: QgsCoordinateReferenceSystem | None = None,
    ) -> tuple[str, str]:
        """Write ``features`` to the sink of parameter ``name`` as one of the run's ``outputs``: a file destination
        goes to a hidden temporary, moved into place with the run's other outputs; other destinations (memory
        layers, database tables) are written directly. Returns the sink's id now and once ``outputs`` is committed
        (see :meth:`sinks_committed`). A feature that cannot be written (e.g. on a full disk) stops the run."""
        dest = self.file_destination(parameters, name, context)
        redirected = dict(parameters)
        if dest:
            temporary = str(outputs.add(dest, staged=True))  # named as the destination: a GeoPackage layer takes it
            value = parameters[name]
            if isinstance(value, QgsProcessingOutputLayerDefinition):
                value = QgsProcessingOutputLayerDefinition(value)
                value.sink = QgsProperty.fromValue(temporary)
            else:
                value = temporary
            redirected[name] = value
        sink, sink_id = self.parameterAsSink(
            redirected, name, context, fields, geometry_type, crs or QgsCoordinateReferenceSystem()
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, name))
        for feature in features:
            if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters, name))
        if not sink.flushBuffer():
            raise QgsProcessingException(self.writeFeatureError(sink, parameters, name))
        del sink  # closes the file before it is moved into place
        return sink_id, sink_id.replace(temporary, dest) if dest else sink_id

    @staticmethod
    def sinks_committed(context: QgsProcessingContext, ids: list[tuple[str, str]]) -> None:
        """Once the outputs are in place, layers QGIS loads on completion point at the final files, not the
        temporaries: ``ids`` are (id while written, final id) pairs from :meth:`write_features`."""
        layers = context.layersToLoadOnCompletion()
        changed = False
        for temporary, final in ids:
            if temporary != final and temporary in layers:
                layers[final] = layers.pop(temporary)
                changed = True
        if changed:
            context.setLayersToLoadOnCompletion(layers)
