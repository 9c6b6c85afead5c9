"""Styles applied to outputs when QGIS loads them."""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsSingleBandGrayRenderer,
)


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
