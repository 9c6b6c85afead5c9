"""Class polygons from sarseg:segment and sarseg:forecast: rasterised back they are the class maps, their areas
are the pixel counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr

from training import synthetic


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("polygon_series")
    synthetic.write_series(synthetic.generate_series(size=256, days=4, seed=2, n_communes=4), out)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"pre": str(out / manifest["files"][0]["sar"])}


def test_segment_writes_class_polygons_that_burn_back_to_its_classes(sarseg, series, tmp_path):
    """sarseg:segment with polygons: every class patch as a polygon (rasterised back: the class raster), areas from
    pixel counts; with a smallest area, no smaller polygon and the others unchanged."""
    import processing

    out = processing.run(
        "sarseg:segment",
        {"INPUT": series["pre"], "OUTPUT": str(tmp_path / "classes.tif"), "OUTPUT_POLYGONS": str(tmp_path / "lc.gpkg")},
    )
    classes = gdal.Open(out["OUTPUT"])
    data = classes.ReadAsArray()
    ds = ogr.Open(out["OUTPUT_POLYGONS"])
    layer = ds.GetLayer(0)
    burnt = gdal.GetDriverByName("MEM").Create("", classes.RasterXSize, classes.RasterYSize, 1, gdal.GDT_Byte)
    burnt.SetGeoTransform(classes.GetGeoTransform())
    burnt.SetProjection(classes.GetProjection())
    burnt.GetRasterBand(1).Fill(255)
    gdal.RasterizeLayer(burnt, [1], layer, options=["ATTRIBUTE=class"])
    assert np.array_equal(burnt.ReadAsArray(), data)
    names = {f.GetField("class"): f.GetField("name") for f in layer}
    assert names[0] == "water" and set(names) == set(np.unique(data[data != 255]).tolist())
    for c in names:
        total = sum(f.GetField("area_km2") for f in layer if f.GetField("class") == c)
        assert total == pytest.approx((data == c).sum() * 100 / 1e6, rel=1e-9)
    small = processing.run(
        "sarseg:segment",
        {"INPUT": series["pre"], "OUTPUT": str(tmp_path / "c2.tif"), "OUTPUT_POLYGONS": str(tmp_path / "big.gpkg"),
         "MIN_POLYGON_AREA": 5000},
    )  # fmt: skip
    big = ogr.Open(small["OUTPUT_POLYGONS"])
    areas = sorted(f.GetField("area_km2") for f in big.GetLayer(0))
    every = sorted(f.GetField("area_km2") for f in layer)
    assert min(areas) >= 0.005 and areas == [a for a in every if a >= 0.005]


def test_forecast_writes_class_polygons_beside_each_map(sarseg, sample_dir, tmp_path):
    import processing

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    files = [str(sample_dir / e["labels"]) for e in manifest["files"]]
    out = processing.run(
        "sarseg:forecast", {"INPUTS": files, "POLYGONS": True, "HINDCAST": False, "OUTPUT_FOLDER": str(tmp_path)}
    )
    assert len(out["OUTPUT_POLYGON_FILES"]) == len(out["OUTPUT_LAYERS"]) == 4
    for raster, vector in zip(out["OUTPUT_LAYERS"], out["OUTPUT_POLYGON_FILES"]):
        classes = gdal.Open(raster).ReadAsArray()
        ds = ogr.Open(vector)
        per_class: dict[int, float] = {}
        for f in ds.GetLayer(0):
            per_class[f.GetField("class")] = per_class.get(f.GetField("class"), 0.0) + f.GetField("area_km2")
        for c, area in per_class.items():
            assert area == pytest.approx((classes == c).sum() * 100 / 1e6, rel=1e-9)
        assert set(per_class) == set(np.unique(classes[classes != 255]).tolist())


def test_forecast_polygons_drop_patches_under_the_smallest_area(sarseg, sample_dir, tmp_path):
    import processing

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    files = [str(sample_dir / e["labels"]) for e in manifest["files"]]
    params = {"INPUTS": files, "POLYGONS": True, "HINDCAST": False}
    every = processing.run("sarseg:forecast", {**params, "OUTPUT_FOLDER": str(tmp_path / "a")})
    big = processing.run("sarseg:forecast", {**params, "MIN_POLYGON_AREA": 3000, "OUTPUT_FOLDER": str(tmp_path / "b")})
    for a, b in zip(every["OUTPUT_POLYGON_FILES"], big["OUTPUT_POLYGON_FILES"]):
        da, db = ogr.Open(a), ogr.Open(b)
        all_areas = sorted(f.GetField("area_km2") for f in da.GetLayer(0))
        kept = sorted(f.GetField("area_km2") for f in db.GetLayer(0))
        assert kept == [x for x in all_areas if x >= 0.003] and len(kept) < len(all_areas)
