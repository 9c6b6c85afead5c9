"""Styles applied to outputs when QGIS loads them."""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsSingleBandGrayRenderer,
)
from qgis.PyQt.QtGui import QColor


class GrayStretchStyle(QgsProcessingLayerPostProcessorInterface):
    """Show band 1 in grey with a 2-98 % cumulative-cut stretch (readable for speckled SAR)."""

    def __init__(self, band: int = 1) -> None:
        super().__init__()
        self.band = band

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return
        layer.setRenderer(QgsSingleBandGrayRenderer(layer.dataProvider(), self.band))
        layer.setContrastEnhancement(
            QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut
        )
        layer.triggerRepaint()


#: The context holds post-processors by pointer; Python must keep them alive until QGIS has used them,
#: which is after the algorithm instance that made them is gone. One per output path is enough.
_ALIVE: dict[str, QgsProcessingLayerPostProcessorInterface] = {}


def style_on_load(
    context: QgsProcessingContext, output: str, processor: QgsProcessingLayerPostProcessorInterface
) -> None:
    """Attach a style to an output that QGIS will load when the algorithm finishes."""
    if context.willLoadLayerOnCompletion(output):
        _ALIVE[output] = processor
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(processor)


def paletted_renderer(layer: QgsRasterLayer, classes: list[tuple[int, str, str]]) -> None:
    """Show band 1 as the given (value, label, #rrggbb) classes only (a GeoTIFF colour table has 256 entries,
    which QGIS would list whole)."""
    entries = [QgsPalettedRasterRenderer.Class(value, QColor(colour), label) for value, label, colour in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
    layer.triggerRepaint()


class ClassPaletteStyle(QgsProcessingLayerPostProcessorInterface):
    """Paletted rendering of a class raster with its classes only, named and coloured."""

    def __init__(self, classes: list[tuple[int, str, str]]) -> None:
        super().__init__()
        self.classes = classes

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            paletted_renderer(layer, self.classes)
