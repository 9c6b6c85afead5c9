"""sarseg:segment resampling through processing.run: an 80 m raster, an EPSG:4326 raster and a single-look 10 m raster
come back on their grid."""

from __future__ import annotations

import gc

import pytest
from osgeo import gdal
from rasters import leftovers

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def collect_garbage():
    """Free GDAL datasets held by exception tracebacks while GDAL is still up (QGIS exits at session end)."""
    yield
    gc.collect()


def segment_algorithm(sarseg):  # noqa: ANN001
    from qgis.core import QgsApplication

    if QgsApplication.processingRegistry().algorithmById("sarseg:segment") is not None:
        return "sarseg:segment"
    from sar_seg_plugin.processing.segment import SegmentAlgorithm

    algorithm = SegmentAlgorithm()
    algorithm.initAlgorithm()
    return algorithm


def grid(path) -> tuple:  # noqa: ANN001
    ds = gdal.Open(str(path))
    result = (ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(), ds.GetProjection())
    ds = None
    return result


@pytest.fixture()
def inputs(sample_dir, tmp_path):  # noqa: ANN001
    folder = tmp_path / "in"
    folder.mkdir()
    sar = str(sample_dir / "sar_20260301.tif")
    coarse = str(folder / "sar_80m.tif")  # coarser than any pixel size the bundled model was trained on
    gdal.Translate(coarse, sar, width=20, height=20, resampleAlg="average")
    ds = gdal.Open(coarse, gdal.GA_Update)
    for b in (1, 2):
        ds.GetRasterBand(b).SetUnitType("linear")
    ds = None
    geographic = str(folder / "sar_4326.tif")
    gdal.Warp(geographic, sar, dstSRS="EPSG:4326", resampleAlg="bilinear")
    from training import synthetic

    single = folder / "single_look"  # the sample scene with single-look speckle: averaged 2 x 2 to 20 m first
    synthetic.write_series(synthetic.generate_series(size=160, days=2, seed=7, n_communes=4, looks=1.0), single)
    return {"coarse": coarse, "geographic": geographic, "single_look": str(single / "sar_20260301.tif")}


@pytest.mark.parametrize(
    ("name", "why"),
    [("coarse", "80 x 80 m"), ("geographic", "geographic"), ("single_look", "single-look (ENL about 0.9")],
)
def test_resampled_output_is_on_the_input_grid(sarseg, inputs, tmp_path, feedback, name, why):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, conf = out_dir / "classes.tif", out_dir / "conf.tif"
    result = sarseg.run(
        segment_algorithm(sarseg),
        {"INPUT": inputs[name], "DEVICE": 1, "OUTPUT": str(out), "OUTPUT_CONFIDENCE": str(conf)},
        feedback=feedback,
    )
    assert result["OUTPUT"] == str(out)
    assert any(line.startswith("Resampling") and why in line for line in feedback.lines), feedback.lines
    assert grid(out) == grid(inputs[name]) and grid(conf) == grid(inputs[name])
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.GetColorTable() is not None and band.GetCategoryNames()[:2] == ["water", "vegetation"]
    ds = band = None
    assert leftovers(out_dir, keep=["classes.tif", "classes.tif.aux.xml", "conf.tif"]) == []


def test_resample_can_be_turned_off(sarseg, inputs, tmp_path, feedback):
    out = tmp_path / "classes.tif"
    sarseg.run(
        segment_algorithm(sarseg), {"INPUT": inputs["coarse"], "RESAMPLE": False, "OUTPUT": str(out)}, feedback=feedback
    )
    assert any("turned off" in line for line in feedback.lines)
    assert not any("warping to" in line for line in feedback.lines)
    assert grid(out) == grid(inputs["coarse"])
