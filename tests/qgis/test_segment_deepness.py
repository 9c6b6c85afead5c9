"""A model with Deepness-style metadata (the QGIS Deepness plugin's model zoo) runs in sarseg:segment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

DATA = Path(__file__).resolve().parents[1] / "data"


def conv_weights(in_channels: int, out_channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights of the tiny test models, from the script that builds them."""
    spec = importlib.util.spec_from_file_location("make_tiny_models", DATA / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.conv_weights(in_channels, out_channels, seed)


def test_deepness_model_segments_an_rgb_raster(sarseg, tmp_path):
    from sar_seg_plugin.processing.segment import SegmentAlgorithm

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(3, 48, 80)).astype(np.uint8)
    src = tmp_path / "rgb.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 80, 48, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.5, 0, 4800000.0, 0, -0.5))  # 50 cm/px, the model's resolution
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rgb[b])
    ds = None
    out = tmp_path / "classes.tif"
    sarseg.run(SegmentAlgorithm(), {"INPUT": str(src), "MODEL_FILE": str(DATA / "models" / "deepness_3to3.onnx"),
                                    "OUTPUT": str(out)})  # fmt: skip
    # Deepness: x / 255, then (x - mean) / std per band; the model is a 1x1 convolution.
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    x = (rgb / 255.0 - mean) / std
    weights, bias = conv_weights(3, 3, seed=3)
    logits = np.einsum("oi,ihw->ohw", weights[:, :, 0, 0], x) + bias[:, None, None]
    result = gdal.Open(str(out))
    band = result.GetRasterBand(1)
    band.GetNoDataValue()  # GDAL 3.6 reads the category names of the .aux.xml only after another band call
    np.testing.assert_array_equal(band.ReadAsArray(), logits.argmax(axis=0))
    assert band.GetCategoryNames()[:3] == ["_background", "building", "water"]
