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


def style_on_load(
    context: QgsProcessingContext, output: str, processor: QgsProcessingLayerPostProcessorInterface
) -> None:
    """Attach a style to an output that QGIS will load when the algorithm finishes."""
    if context.willLoadLayerOnCompletion(output):
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(processor)
