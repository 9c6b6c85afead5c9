"""Outputs load styled: grey band 1 with a cumulative-cut stretch, not QGIS's default red/green composite."""

from __future__ import annotations

import numpy as np


def test_outputs_load_in_grey_with_a_2_98_percent_stretch(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsContrastEnhancement, QgsProject, QgsRasterMinMaxOrigin

    out = tmp_path / "lee_styled.tif"
    result = sarseg.runAndLoadResults(
        "sarseg:speckle_filter", {"INPUT": str(sample_dir / "sar_20260301.tif"), "WINDOW": 5, "OUTPUT": str(out)}
    )
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == result["OUTPUT"]]
    assert len(layers) == 1
    layer = layers[0]
    try:
        renderer = layer.renderer()
        assert renderer.type() == "singlebandgray" and renderer.inputBand() == 1
        enhancement = renderer.contrastEnhancement()
        assert enhancement.contrastEnhancementAlgorithm() == QgsContrastEnhancement.StretchToMinimumMaximum
        assert renderer.minMaxOrigin().limits() == QgsRasterMinMaxOrigin.CumulativeCut
        # The stretch limits are the band's 2nd and 98th percentiles (QGIS estimates them on a sample).
        from osgeo import gdal

        ds = gdal.Open(str(out))
        values = ds.GetRasterBand(1).ReadAsArray()
        values = values[values != 0]
        low, high = np.percentile(values, [2, 98])
        assert abs(enhancement.minimumValue() - low) < 0.25 * (high - low)
        assert abs(enhancement.maximumValue() - high) < 0.25 * (high - low)
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
