"""The classical baseline of the model card: Lee-filtered VV/VH -> random forest."""

from __future__ import annotations

import numpy as np
from osgeo import gdal

from sar_seg_plugin.core.speckle import lee_filter
from training.baseline import random_forest_baseline, scene_features
from training.data import make_synthetic_dataset


def test_features_are_lee_filtered_db_and_labels_mask_nodata(tmp_path):
    scene = make_synthetic_dataset(tmp_path, n_scenes=1, size=64, seed=3)[0]
    x, y = scene_features(scene)
    ds = gdal.Open(str(scene.image))
    vv = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    vh = ds.GetRasterBand(2).ReadAsArray().astype(np.float64)
    valid = (vv != 0) & (vh != 0)
    expected_vv = 10 * np.log10(lee_filter(vv, 7, 4.4, vv != 0).astype(np.float64))
    np.testing.assert_allclose(x[:, 0][valid.ravel()], expected_vv[valid], rtol=1e-5)
    np.testing.assert_allclose(x[:, 2], x[:, 0] - x[:, 1], rtol=1e-6)
    assert np.all(y[~valid.ravel()] == 255)


def test_random_forest_separates_water_from_the_rest(tmp_path):
    train = make_synthetic_dataset(tmp_path / "train", n_scenes=2, size=96, seed=10)
    test = make_synthetic_dataset(tmp_path / "test", n_scenes=1, size=96, seed=90)
    metrics = random_forest_baseline(train, test, sample=6000)
    # Calm water is 7-9 dB darker than any land class in VV: even a per-pixel classifier finds it.
    assert metrics["per_class"]["water"]["iou"] > 0.8
    assert 0.3 < metrics["miou"] < 1.0
