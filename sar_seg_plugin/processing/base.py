"""Shared plumbing of SAR Seg algorithms: naming, groups, help, input checks and error translation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.errors import CancelledError, SarSegError
from ..core.raster_io import try_open

ICON = Path(__file__).resolve().parent.parent / "icons" / "sarseg.svg"


def layer_path(layer: QgsMapLayer) -> str:
    """The file behind a GDAL layer (its source without ``|option`` suffixes)."""
    return layer.source().split("|")[0]


GROUPS = {
    "preprocessing": "Preprocessing",
    "segmentation": "Segmentation",
    "forecasting": "Forecasting",
    "clustering": "Clustering",
}
T = TypeVar("T")


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
            if path and os.path.isfile(path) and try_open(path) is None:
                return False, self.tr(
                    f"'{path}' is not a raster file ({definition.description()}). "
                    "Give a raster layer or a raster file such as a GeoTIFF."
                )
        return super().checkParameterValues(parameters, context)

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
                    f"Layer '{layer.name()}' is a '{layer.providerType()}' raster; SAR Seg reads file rasters "
                    "(GDAL). Export it to GeoTIFF first (right-click > Export > Save As)."
                )
            )
        return layer

    def raster_path(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:
        return layer_path(self.raster_layer(parameters, name, context))

    @staticmethod
    def callbacks(feedback: QgsProcessingFeedback) -> dict[str, Callable]:
        """progress / is_canceled callables for core functions."""
        return {
            "progress": feedback.setProgress,
            "is_canceled": feedback.isCanceled,
        }

    def run_core(self, fn: Callable[[], T]) -> T:
        """Run core code, turning its errors into QgsProcessingException with the same plain message."""
        try:
            return fn()
        except CancelledError as exc:
            raise QgsProcessingException(self.tr("Cancelled by the user: no output was written.")) from exc
        except SarSegError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MemoryError as exc:
            raise QgsProcessingException(self.tr("Out of memory; no output was written.")) from exc
        except OSError as exc:  # disk full, no permission, a folder where a file was expected...
            where = f" ({exc.filename})" if exc.filename else ""
            raise QgsProcessingException(
                self.tr(f"Could not write an output{where}: {exc.strerror or exc}. No output was written.")
            ) from exc
        except RuntimeError as exc:  # GDAL errors, raised as RuntimeError when GDAL exceptions are on
            raise QgsProcessingException(self.tr(f"GDAL error: {exc}. No output was written.")) from exc
