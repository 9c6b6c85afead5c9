"""Styles applied to outputs when QGIS loads them."""

from __future__ import annotations

from qgis.core import (
    NULL,
    QgsCategorizedSymbolRenderer,
    QgsContrastEnhancement,
    QgsGraduatedSymbolRenderer,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSingleBandGrayRenderer,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

from ..core.cluster_report import cluster_color


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


def cluster_renderer(layer: QgsVectorLayer, k: int, field: str = "cluster") -> None:
    """Categorised rendering by cluster: clusters 1..k in the report's colours, NULL ("not clustered") in grey."""
    categories = []
    for c in range(1, k + 1):
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
        symbol.setColor(QColor(cluster_color(c)))
        categories.append(QgsRendererCategory(c, symbol, f"cluster {c}"))
    symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
    symbol.setColor(QColor("#d0d0d0"))
    symbol.setOpacity(0.6)
    categories.append(QgsRendererCategory(NULL, symbol, "not clustered"))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    layer.triggerRepaint()


class ClusterStyle(QgsProcessingLayerPostProcessorInterface):
    """Categorised style of the clustered communes (see :func:`cluster_renderer`)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            cluster_renderer(layer, self.k)


class FloodPolygonStyle(QgsProcessingLayerPostProcessorInterface):
    """Flood polygons in the flood map's blue, half transparent, so the map shows through."""

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
            symbol.setColor(QColor("#1e6ee6"))
            symbol.setOpacity(0.6)
            layer.renderer().setSymbol(symbol)
            layer.triggerRepaint()


class FloodCommunesStyle(QgsProcessingLayerPostProcessorInterface):
    """Communes shaded by their flooded share of land (flooded_pct): five classes from white to deep blue."""

    BREAKS = (0.0, 1.0, 5.0, 15.0, 30.0, 100.0)
    COLOURS = ("#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b")

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
            return
        ranges = []
        for (lo, hi), colour in zip(zip(self.BREAKS[:-1], self.BREAKS[1:]), self.COLOURS):
            symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
            symbol.setColor(QColor(colour))
            ranges.append(QgsRendererRange(lo, hi, symbol, f"{lo:g} - {hi:g} % flooded"))
        layer.setRenderer(QgsGraduatedSymbolRenderer("flooded_pct", ranges))
        layer.triggerRepaint()
