"""Every preprocessing algorithm through processing.run on the synthetic sample, values checked
against independent computations on the whole arrays."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import read_raster

from sar_seg_plugin.core import speckle
from training import synthetic

read = functools.partial(read_raster, dtype=np.float64)


def unit(path: Path, band: int) -> str:
    ds = gdal.Open(str(path))  # keep the dataset alive while its band is used
    return ds.GetRasterBand(band).GetUnitType()


def assert_nan_nodata(path: Path, data: np.ndarray, invalid: np.ndarray) -> None:
    """Every band declares NaN as nodata; invalid input pixels are NaN in ``data``, the others finite."""
    ds = gdal.Open(str(path))
    for i in range(ds.RasterCount):
        nodata = ds.GetRasterBand(i + 1).GetNoDataValue()
        assert nodata is not None and math.isnan(nodata), f"band {i + 1} nodata is {nodata}, not NaN"
    assert invalid.any() and (~invalid).any()
    assert np.isnan(data[invalid]).all(), "nodata pixels must be NaN"
    assert np.isfinite(data[~invalid]).all(), "valid pixels must stay finite"


def scene(sample_dir: Path, day: int = 0) -> Path:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    return sample_dir / manifest["files"][day]["sar"]


def labels(sample_dir: Path, day: int = 0) -> Path:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    return sample_dir / manifest["files"][day]["labels"]


@pytest.mark.parametrize("index,name", list(enumerate(speckle.FILTERS)))
def test_speckle_filter_equals_whole_image_filtering(sarseg, sample_dir, tmp_path, index, name):
    src = scene(sample_dir)
    out = tmp_path / f"{name}.tif"
    result = sarseg.run(
        "sarseg:speckle_filter", {"INPUT": str(src), "FILTER": index, "WINDOW": 5, "LOOKS": 4.4, "OUTPUT": str(out)}
    )
    assert result["OUTPUT"] == str(out)
    data, got = read(src), read(out)
    valid = data != synthetic.SAR_NODATA
    for b in range(2):
        threshold = float(np.percentile(data[b][valid[b]], 98))
        expected = speckle.apply_filter(name, data[b], valid[b], window=5, looks=4.4, point_threshold=threshold)
        np.testing.assert_allclose(got[b][valid[b]], expected[valid[b]], rtol=2e-6)
        assert np.all(got[b][~valid[b]] == synthetic.SAR_NODATA), "nodata pixels must stay nodata"
    src_ds, out_ds = gdal.Open(str(src)), gdal.Open(str(out))
    assert out_ds.GetGeoTransform() == src_ds.GetGeoTransform()
    assert out_ds.GetSpatialRef().IsSame(src_ds.GetSpatialRef())
    assert [out_ds.GetRasterBand(i).GetDescription() for i in (1, 2)] == ["VV", "VH"]
    assert out_ds.GetRasterBand(1).GetNoDataValue() == synthetic.SAR_NODATA
    assert out_ds.GetMetadataItem("SARSEG_SPECKLE_FILTER") == name


def test_lee_raises_enl_on_the_sample_water_and_keeps_the_mean(sarseg, sample_dir, sample_series, tmp_path):
    out = tmp_path / "lee.tif"
    sarseg.run("sarseg:speckle_filter", {"INPUT": str(scene(sample_dir)), "FILTER": 0, "WINDOW": 7, "OUTPUT": str(out)})
    raw, filtered = read(scene(sample_dir))[0], read(out)[0]
    clean = sample_series.sigma0_clean[0, 0].astype(np.float64)
    # Pixels whose 7x7 neighbourhood is one flat class: ground truth from the generator.
    lab = sample_series.labels[0]
    from scipy import ndimage

    flat = (ndimage.minimum_filter(lab, 7) == ndimage.maximum_filter(lab, 7)) & (lab == synthetic.WATER)
    flat &= ndimage.minimum_filter(sample_series.valid, 7)
    ratio_raw = raw[flat] / clean[flat]
    ratio_lee = filtered[flat] / clean[flat]
    assert 3.5 < speckle.enl(ratio_raw) < 5.5  # the generator's L = 4.4
    assert speckle.enl(ratio_lee) > 4 * speckle.enl(ratio_raw)
    assert abs(ratio_lee.mean() - 1.0) < 0.05


def test_speckle_filter_on_db_input_filters_in_linear_power(sarseg, sample_dir, tmp_path):
    db = tmp_path / "db.tif"
    sarseg.run("sarseg:convert_db", {"INPUT": str(scene(sample_dir)), "DIRECTION": 0, "OUTPUT": str(db)})
    out = tmp_path / "lee_db.tif"
    sarseg.run("sarseg:speckle_filter", {"INPUT": str(db), "FILTER": 0, "WINDOW": 5, "LOOKS": 4.4, "OUTPUT": str(out)})
    x, x_db, got = read(scene(sample_dir)), read(db), read(out)
    valid = x != synthetic.SAR_NODATA
    assert_nan_nodata(db, x_db, ~valid)  # the dB input holds its nodata as NaN
    linear = 10 ** (np.where(valid[0], x_db[0], 0.0) / 10)
    expected = 10 * np.log10(speckle.lee_filter(linear, 5, 4.4, valid[0]).astype(np.float64))
    np.testing.assert_allclose(got[0][valid[0]], expected[valid[0]], atol=1e-4)
    assert_nan_nodata(out, got, ~valid)  # filtered in dB: NaN nodata
    assert unit(out, 1) == "dB"


def test_estimated_looks_are_reported(sarseg, sample_dir, tmp_path):
    result = sarseg.run(
        "sarseg:speckle_filter",
        {"INPUT": str(scene(sample_dir)), "FILTER": 4, "ESTIMATE_LOOKS": True, "OUTPUT": str(tmp_path / "g.tif")},
    )
    # Texture and field-to-field variation make the effective ENL of the scene a little below L = 4.4.
    assert 2.8 < result["LOOKS_USED"] < 4.9
    assert json.loads(gdal.Open(result["OUTPUT"]).GetMetadataItem("SARSEG_LOOKS"))[0] == pytest.approx(
        result["LOOKS_USED"], abs=1e-3
    )


def test_convert_db_round_trip(sarseg, sample_dir, tmp_path):
    src = scene(sample_dir)
    db, back = tmp_path / "db.tif", tmp_path / "back.tif"
    sarseg.run("sarseg:convert_db", {"INPUT": str(src), "DIRECTION": 0, "OUTPUT": str(db)})
    sarseg.run("sarseg:convert_db", {"INPUT": str(db), "DIRECTION": 2, "OUTPUT": str(back)})  # auto: dB -> linear
    x, y, z = read(src), read(db), read(back)
    valid = x != synthetic.SAR_NODATA
    np.testing.assert_allclose(y[valid], 10 * np.log10(x[valid]), atol=2e-5)
    np.testing.assert_allclose(z[valid], x[valid], rtol=2e-6)
    # The dB values may equal the input nodata (0 dB), so both outputs write NaN as nodata, not 0.
    assert_nan_nodata(db, y, ~valid)
    assert_nan_nodata(back, z, ~valid)
    assert gdal.Open(str(back)).GetRasterBand(1).GetNoDataValue() != synthetic.SAR_NODATA
    assert unit(db, 2) == "dB"
    assert unit(back, 2) == "linear"


def test_normalize_zscore_and_reused_statistics(sarseg, sample_dir, tmp_path):
    a, b = scene(sample_dir, 0), scene(sample_dir, 3)
    out_a, stats = tmp_path / "a.tif", tmp_path / "stats.json"
    sarseg.run("sarseg:normalize", {"INPUT": str(a), "METHOD": 0, "OUTPUT": str(out_a), "OUTPUT_STATS": str(stats)})
    x, y = read(a), read(out_a)
    valid = x != synthetic.SAR_NODATA
    for band in range(2):
        v = x[band][valid[band]]
        np.testing.assert_allclose(y[band][valid[band]], (v - v.mean()) / v.std(), rtol=1e-4, atol=1e-5)
    assert_nan_nodata(out_a, y, ~valid)
    saved = json.loads(stats.read_text())
    assert saved["method"] == "zscore" and saved["bands"][0]["name"] == "VV"
    assert json.loads(gdal.Open(str(out_a)).GetMetadataItem("SARSEG_NORMALIZATION")) == saved

    out_b = tmp_path / "b.tif"
    sarseg.run("sarseg:normalize", {"INPUT": str(b), "METHOD": 0, "STATS_FILE": str(stats), "OUTPUT": str(out_b)})
    xb, yb = read(b), read(out_b)
    vb = xb != synthetic.SAR_NODATA
    mean, std = saved["bands"][1]["mean"], saved["bands"][1]["std"]
    np.testing.assert_allclose(yb[1][vb[1]], (xb[1][vb[1]] - mean) / std, rtol=1e-4, atol=1e-5)
    assert_nan_nodata(out_b, yb, ~vb)


def test_normalize_percentile_clip(sarseg, sample_dir, tmp_path):
    src = scene(sample_dir)
    out = tmp_path / "p.tif"
    sarseg.run(
        "sarseg:normalize",
        {"INPUT": str(src), "METHOD": 1, "LOW_PERCENTILE": 5, "HIGH_PERCENTILE": 95, "OUTPUT": str(out)},
    )
    x_all, y_all = read(src), read(out)
    assert_nan_nodata(out, y_all, x_all == synthetic.SAR_NODATA)
    x, y = x_all[0], y_all[0]
    valid = x != synthetic.SAR_NODATA
    lo, hi = np.percentile(x[valid], [5, 95])
    np.testing.assert_allclose(y[valid], (np.clip(x[valid], lo, hi) - lo) / (hi - lo), atol=1e-5)
    # The low clip maps about 5 % of the valid pixels to 0.0 (the input nodata value): they stay valid.
    assert (y[valid] == 0.0).mean() == pytest.approx(0.05, abs=0.01)


def test_extract_patches_split_without_leakage(sarseg, sample_dir, tmp_path):
    out = tmp_path / "patches"
    result = sarseg.run(
        "sarseg:extract_patches",
        {"INPUT": str(scene(sample_dir)), "LABELS": str(labels(sample_dir)), "PATCH_SIZE": 32, "STRIDE": 16,
         "MIN_VALID": 0.9, "VAL_FRACTION": 0.3, "SPLIT_BLOCK": 64, "OUTPUT": str(out)},
    )  # fmt: skip
    with open(result["INDEX"]) as index:
        rows = list(csv.DictReader(index))
    assert result["TRAIN_COUNT"] == sum(r["split"] == "train" for r in rows) > 0
    assert result["VAL_COUNT"] == sum(r["split"] == "val" for r in rows) > 0
    cover = {"train": np.zeros((160, 160), bool), "val": np.zeros((160, 160), bool)}
    src, lab = read(scene(sample_dir)), read(labels(sample_dir))[0]
    for r in rows:
        x, y = int(r["col"]), int(r["row"])
        cover[r["split"]][y : y + 32, x : x + 32] = True
        patch = read(out / r["image"])
        np.testing.assert_array_equal(patch, src[:, y : y + 32, x : x + 32])
        np.testing.assert_array_equal(read(out / r["label"])[0], lab[y : y + 32, x : x + 32])
        assert (patch[0] != synthetic.SAR_NODATA).mean() >= 0.9
    assert not np.any(cover["train"] & cover["val"]), "a pixel is shared between training and validation"


def test_extract_patches_npz_with_aoi(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    ds = gdal.Open(str(scene(sample_dir)))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    aoi = QgsVectorLayer(f"Polygon?crs={ds.GetSpatialRef().GetAuthorityCode(None) and 'EPSG:32631'}", "aoi", "memory")
    feature = QgsFeature()
    # The left half of the scene.
    feature.setGeometry(
        QgsGeometry.fromRect(__import__("qgis.core").core.QgsRectangle(x0, y0 + 160 * dy, x0 + 80 * dx, y0))
    )
    aoi.dataProvider().addFeatures([feature])
    out = tmp_path / "npz"
    result = sarseg.run(
        "sarseg:extract_patches",
        {"INPUT": str(scene(sample_dir)), "AOI": aoi, "PATCH_SIZE": 32, "STRIDE": 32, "MIN_VALID": 0.5,
         "VAL_FRACTION": 0.0, "FORMAT": 1, "OUTPUT": str(out)},
    )  # fmt: skip
    with np.load(out / "train.npz") as npz:
        images, positions = npz["images"], npz["positions"]
    assert images.shape == (result["TRAIN_COUNT"], 2, 32, 32)
    assert np.all(positions[:, 0] + 32 <= 80 + 16), "patches must lie mostly inside the AOI (left half)"
    src = read(scene(sample_dir))
    for image, (x, y) in zip(images, positions):
        np.testing.assert_array_equal(image, src[:, y : y + 32, x : x + 32].astype(np.float32))


def test_stack_time_series_sorts_by_date_and_aligns(sarseg, sample_dir, tmp_path):
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    scenes = [sample_dir / f["sar"] for f in manifest["files"]]
    # A coarser copy (20 m instead of 10 m) of the last date, to be aligned onto the 10 m grid.
    coarse = tmp_path / f"coarse_{manifest['files'][-1]['date'].replace('-', '')}.tif"
    gdal.Translate(str(coarse), str(scenes[-1]), xRes=20, yRes=20, resampleAlg="average")
    inputs = [str(coarse), str(scenes[1]), str(scenes[0]), str(scenes[2])]  # shuffled
    out = tmp_path / "stack.tif"
    result = sarseg.run("sarseg:stack_time_series", {"INPUTS": inputs, "RESAMPLING": 1, "OUTPUT": str(out)})
    dates = [f["date"] for f in manifest["files"]]
    assert result["DATES_OUT"] == ",".join(dates)
    ds = gdal.Open(str(out))
    assert ds.RasterCount == 8 and ds.RasterXSize == 160
    assert ds.GetRasterBand(3).GetDescription() == f"{dates[1]} VV"
    assert json.loads(ds.GetMetadataItem("SARSEG_DATES")) == dates
    stack = read(out)
    for t in range(3):
        x = read(scenes[t])
        valid = x != synthetic.SAR_NODATA
        np.testing.assert_array_equal(stack[2 * t : 2 * t + 2][valid], x[valid])
    c = read(coarse)[0]
    expected = np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)
    ok = (expected != synthetic.SAR_NODATA) & np.isfinite(stack[6])
    np.testing.assert_array_equal(stack[6][ok], expected[ok])
    assert ok.mean() > 0.9


def test_modeler_model_chains_speckle_filter_and_db(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(Path(__file__).resolve().parents[1] / "data" / "speckle_to_db.model3"))
    out = tmp_path / "model_out.tif"
    result = sarseg.run(model, {"sar": str(scene(sample_dir)), "filtered_db": str(out)})
    assert Path(result["filtered_db"]) == out
    x_all, got = read(scene(sample_dir)), read(out)
    x = x_all[1]
    valid = x != synthetic.SAR_NODATA
    expected = 10 * np.log10(speckle.lee_filter(x, 5, 4.4, valid).astype(np.float64))
    np.testing.assert_allclose(got[1][valid], expected[valid], atol=1e-4)
    assert_nan_nodata(out, got, x_all == synthetic.SAR_NODATA)  # the dB step writes NaN nodata


def test_stack_dates_from_layer_temporal_properties(sarseg, sample_dir, tmp_path):
    """Layers whose file names hold no date, dated through QGIS's temporal properties."""
    import datetime as dt
    import shutil

    from qgis.core import QgsDateTimeRange, QgsRasterLayer, QgsRasterLayerTemporalProperties
    from qgis.PyQt.QtCore import QDate, QDateTime, QTime

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    layers = []
    for name, day in (("late", 2), ("early", 0), ("middle", 1)):
        path = tmp_path / f"{name}.tif"
        shutil.copy(sample_dir / manifest["files"][day]["sar"], path)
        layer = QgsRasterLayer(str(path), name)
        props = layer.temporalProperties()
        props.setIsActive(True)
        props.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
        date = dt.date.fromisoformat(manifest["files"][day]["date"])
        start = QDateTime(QDate(date.year, date.month, date.day), QTime(0, 0))
        props.setFixedTemporalRange(QgsDateTimeRange(start, start.addDays(1)))
        layers.append(layer)
    out = tmp_path / "stack.tif"
    result = sarseg.run("sarseg:stack_time_series", {"INPUTS": layers, "DATE_SOURCE": 3, "OUTPUT": str(out)})
    assert result["DATES_OUT"] == ",".join(f["date"] for f in manifest["files"][:3])
    stack = read(out)
    early = read(sample_dir / manifest["files"][0]["sar"])
    valid = early != synthetic.SAR_NODATA
    np.testing.assert_array_equal(stack[0:2][valid], early[valid])
