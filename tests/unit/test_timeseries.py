"""Tests of dated raster sequences: dates from names, ordering, alignment and stacking
(sar_seg_plugin.core.timeseries)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from rasters import GT, read_raster, wkt, write_raster

from sar_seg_plugin.core import timeseries
from sar_seg_plugin.core.errors import CancelledError, SarSegError
from sar_seg_plugin.core.timeseries import DatedRaster, Grid

write_tif = functools.partial(write_raster, geotransform=GT)


D = dt.date


# --- Dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("S1A_IW_GRDH_1SDV_20260301T054512_xxx.tif", D(2026, 3, 1)),
        ("S1A_IW_GRDH_1SDV_20260301T054512_20260301T054537_063012_07E9A1_1C2B.tif", D(2026, 3, 1)),
        ("sar_2026-03-02.tif", D(2026, 3, 2)),
        ("x_2026_03_03.tif", D(2026, 3, 3)),
        ("/data/2025-01-01/sar_20260304.tif", D(2026, 3, 4)),  # the file name, not the folder
        ("20240229.tif", D(2024, 2, 29)),
        ("no_date_here.tif", None),
        ("12345678.tif", None),
        ("tile_20261301.tif", None),  # month 13
        ("20230229.tif", None),  # not a leap year
        ("id_123202603011.tif", None),  # digits touching other digits
        ("/data/2025-01-01/sar.tif", None),
        ("orbit_12345678_2026-03-05.tif", D(2026, 3, 5)),
    ],
)
def test_date_from_name(name, expected):
    assert timeseries.date_from_name(name) == expected


def test_parse_dates_good():
    got = timeseries.parse_dates(" 2026-03-01, 20260302;2026_03_03  2026-03-10,")
    assert got == [D(2026, 3, 1), D(2026, 3, 2), D(2026, 3, 3), D(2026, 3, 10)]
    assert timeseries.parse_dates("") == []


@pytest.mark.parametrize("text", ["2026-03-01, tomorrow", "2026-02-30", "12345678", "2026-03-01,,2026-13-01"])
def test_parse_dates_bad(text):
    with pytest.raises(SarSegError):
        timeseries.parse_dates(text)


def test_order_by_date_sorts_and_notes_reorder_and_gaps():
    items = [DatedRaster(f"f{d}.tif", D(2026, 3, d), f"n{d}") for d in (5, 1, 2, 9)]
    ordered, notes = timeseries.order_by_date(items)
    assert [i.date.day for i in ordered] == [1, 2, 5, 9]
    assert [i.path for i in ordered] == ["f1.tif", "f2.tif", "f5.tif", "f9.tif"]
    assert any("not in date order" in n for n in notes)
    gap_notes = [n for n in notes if "missing" in n]
    assert gap_notes == [
        "2 day(s) missing between 2026-03-02 and 2026-03-05.",
        "3 day(s) missing between 2026-03-05 and 2026-03-09.",
    ]


def test_order_by_date_in_order_without_gaps_has_no_notes():
    items = [DatedRaster(f"f{d}.tif", D(2026, 2, 27) + dt.timedelta(days=d)) for d in range(4)]
    ordered, notes = timeseries.order_by_date(items)
    assert ordered == items and notes == []


def test_order_by_date_refuses_duplicates():
    items = [DatedRaster("a.tif", D(2026, 3, 1), "a"), DatedRaster("b.tif", D(2026, 3, 2)),
             DatedRaster("c.tif", D(2026, 3, 1), "c")]  # fmt: skip
    with pytest.raises(SarSegError, match="2026-03-01"):
        timeseries.order_by_date(items)


# --- Grid -------------------------------------------------------------------------------------------


def test_grid_bounds_and_same_as():
    g = Grid(40, 30, GT, wkt())
    assert g.bounds == (600000.0, 4900000.0 - 300.0, 600400.0, 4900000.0)
    assert g.same_as(Grid(40, 30, GT, wkt()))
    assert not g.same_as(Grid(41, 30, GT, wkt()))
    assert not g.same_as(Grid(40, 30, (600005.0, 10.0, 0.0, 4900000.0, 0.0, -10.0), wkt()))
    assert not g.same_as(Grid(40, 30, GT, wkt(32630)))


# --- Stacking ---------------------------------------------------------------------------------------


def test_stack_rasters_sample_in_date_order(tmp_path, sample_dir, sample_series):
    files = sorted(sample_dir.glob("sar_*.tif"))
    assert len(files) == 4
    shuffled = [files[i] for i in (2, 0, 3, 1)]
    items = [DatedRaster(str(f), timeseries.date_from_name(f.name), f.name) for f in shuffled]
    dst = tmp_path / "stack.tif"
    progress = []
    result = timeseries.stack_rasters(items, str(dst), progress=progress.append)
    dates = [d.isoformat() for d in sample_series.dates]
    assert result["dates"] == dates
    assert any("not in date order" in n for n in result["notes"])
    assert not any("resampled" in n for n in result["notes"])
    assert progress[-1] == pytest.approx(100.0)
    ds = gdal.Open(str(dst))
    assert ds.RasterCount == 8
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(8)] == [
        f"{d} {p}" for d in dates for p in ("VV", "VH")
    ]
    md = ds.GetMetadata()
    assert json.loads(md["SARSEG_DATES"]) == dates
    assert md["SARSEG_BANDS_PER_DATE"] == "2"
    assert json.loads(md["SARSEG_BAND_NAMES"]) == ["VV", "VH"]
    assert ds.GetGeoTransform() == sample_series.geotransform
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    assert ds.GetRasterBand(1).GetUnitType() == "linear"
    got = read_raster(dst)
    valid = sample_series.valid
    for t in range(4):
        source = read_raster(files[t])
        for b in range(2):
            band = got[2 * t + b]
            np.testing.assert_array_equal(band[valid], source[b][valid])
            np.testing.assert_array_equal(band[valid], sample_series.sigma0[t, b][valid])
            assert np.isnan(band[~valid]).all()  # nodata 0 becomes NaN in the float stack
    assert np.isnan(ds.GetRasterBand(1).GetNoDataValue())


def test_stack_rasters_resamples_coarse_raster_with_nearest(tmp_path):
    rng = np.random.default_rng(0)
    fine = rng.uniform(0.01, 0.5, (30, 40)).astype(np.float32)
    coarse = rng.uniform(0.01, 0.5, (15, 20)).astype(np.float32)
    f = write_tif(tmp_path / "fine_2026-03-01.tif", fine, nodata=0.0)
    coarse_gt = (GT[0], 20.0, 0.0, GT[3], 0.0, -20.0)
    c = write_tif(tmp_path / "coarse_2026-03-02.tif", coarse, nodata=0.0, geotransform=coarse_gt)
    items = [DatedRaster(c, D(2026, 3, 2), "coarse"), DatedRaster(f, D(2026, 3, 1), "fine")]
    dst = tmp_path / "s.tif"
    result = timeseries.stack_rasters(items, str(dst), resampling="nearest")
    assert result["grid"].same_as(Grid(40, 30, GT, wkt()))
    assert any("coarse" in n and "resampled" in n for n in result["notes"])
    got = read_raster(dst)
    assert got.shape == (2, 30, 40)
    np.testing.assert_array_equal(got[0], fine)
    np.testing.assert_array_equal(got[1], np.repeat(np.repeat(coarse, 2, 0), 2, 1))
    # No virtual files are left in memory.
    leftover = [p for p in (gdal.ReadDir("/vsimem/") or []) if p.startswith("sarseg_align_")]
    assert leftover == []


def test_stack_rasters_onto_reference_grid_of_another_raster(tmp_path):
    """A reference raster whose grid is twice as coarse: the average of 2 x 2 blocks of a fine raster."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.0, 1.0, (2, 30, 40)).astype(np.float32)
    b = rng.uniform(0.0, 1.0, (2, 30, 40)).astype(np.float32)
    pa = write_tif(tmp_path / "a_20260301.tif", a)
    pb = write_tif(tmp_path / "b_20260302.tif", b)
    ref = write_tif(
        tmp_path / "ref.tif", np.zeros((15, 20), np.float32), geotransform=(GT[0], 20.0, 0, GT[3], 0, -20.0)
    )
    dst = tmp_path / "s.tif"
    items = [DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 2))]
    timeseries.stack_rasters(items, str(dst), reference_path=ref, resampling="average")
    got = read_raster(dst)
    assert got.shape == (4, 15, 20)
    for t, src in enumerate((a, b)):
        for k in range(2):
            want = src[k].reshape(15, 2, 20, 2).mean(axis=(1, 3))
            np.testing.assert_allclose(got[2 * t + k], want, rtol=1e-5)


def test_stack_rasters_integer_labels_stay_integer_with_nodata(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, (20, 25)).astype(np.uint8)
    b = rng.integers(0, 5, (20, 25)).astype(np.uint8)
    a[:3, :3] = 255
    pa = write_tif(tmp_path / "labels_2026-03-01.tif", a, nodata=255)
    pb = write_tif(tmp_path / "labels_2026-03-04.tif", b, nodata=255)
    dst = tmp_path / "s.tif"
    result = timeseries.stack_rasters([DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 4))], str(dst))
    ds = gdal.Open(str(dst))
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert ds.GetRasterBand(1).GetNoDataValue() == 255
    np.testing.assert_array_equal(read_raster(dst), np.stack([a, b]))
    assert "2 day(s) missing between 2026-03-01 and 2026-03-04." in result["notes"]


def test_stack_rasters_refuses_non_overlapping_raster_in_other_crs(tmp_path):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((10, 10), np.float32))
    far = write_tif(tmp_path / "b_20260302.tif", np.ones((10, 10), np.float32),
                    geotransform=(100.0, 0.001, 0.0, 10.0, 0.0, -0.001), epsg=4326)  # fmt: skip
    with pytest.raises(SarSegError, match="overlap"):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(far, D(2026, 3, 2))],
                                 str(tmp_path / "s.tif"))  # fmt: skip
    assert not (tmp_path / "s.tif").exists()


def test_stack_rasters_reprojects_overlapping_raster_in_other_crs(tmp_path):
    """Control for the test above: an overlapping raster in WGS 84 is accepted and warped."""
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((10, 10), np.float32))
    utm, geo = osr.SpatialReference(wkt=wkt()), osr.SpatialReference(wkt=wkt(4326))
    geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # (lon, lat) like a GeoTIFF geotransform
    to_geo = osr.CoordinateTransformation(utm, geo)
    xmin, ymin, xmax, ymax = to_geo.TransformBounds(GT[0] - 200, GT[3] - 300, GT[0] + 300, GT[3] + 200, 21)
    gt = (xmin, (xmax - xmin) / 50, 0.0, ymax, 0.0, -(ymax - ymin) / 50)
    b = write_tif(tmp_path / "b_20260302.tif", np.full((50, 50), 2.0, np.float32), geotransform=gt, epsg=4326)
    dst = tmp_path / "s.tif"
    timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))], str(dst))
    got = read_raster(dst)
    np.testing.assert_allclose(got[1], 2.0)


def test_stack_rasters_refuses_raster_without_crs(tmp_path):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((10, 10), np.float32))
    b = write_tif(tmp_path / "b_20260302.tif", np.ones((10, 10), np.float32), epsg=None)
    with pytest.raises(SarSegError, match="coordinate reference system"):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))],
                                 str(tmp_path / "s.tif"))  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["a_20260301.tif", "b_20260302.tif"]


def test_stack_rasters_refuses_different_band_counts(tmp_path):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((2, 10, 10), np.float32))
    b = write_tif(tmp_path / "b_20260302.tif", np.ones((1, 10, 10), np.float32))
    with pytest.raises(SarSegError, match="band"):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))],
                                 str(tmp_path / "s.tif"))  # fmt: skip
    assert not (tmp_path / "s.tif").exists()


def test_stack_rasters_refuses_one_raster_duplicates_and_output_equal_to_input(tmp_path):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((10, 10), np.float32))
    b = write_tif(tmp_path / "b_20260302.tif", np.ones((10, 10), np.float32))
    before = Path(a).read_bytes()
    with pytest.raises(SarSegError):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1))], str(tmp_path / "s.tif"))
    with pytest.raises(SarSegError):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 1))],
                                 str(tmp_path / "s.tif"))  # fmt: skip
    with pytest.raises(SarSegError):
        timeseries.stack_rasters([DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))], a)
    assert Path(a).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a_20260301.tif", "b_20260302.tif"]


def test_stack_rasters_cancel_leaves_nothing(tmp_path, sample_dir):
    files = sorted(sample_dir.glob("sar_*.tif"))
    items = [DatedRaster(str(f), timeseries.date_from_name(f.name)) for f in files]
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        timeseries.stack_rasters(items, str(tmp_path / "s.tif"), is_canceled=is_canceled)
    assert os.listdir(tmp_path) == []


def test_aligned_returns_the_raster_itself_on_the_same_grid(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = write_tif(tmp_path / "a.tif", a)
    ds = timeseries.aligned(p, Grid(4, 3, GT, wkt()))
    assert ds.GetDescription() == p
    shifted = timeseries.aligned(p, Grid(4, 3, (GT[0] + 10.0, 10.0, 0.0, GT[3], 0.0, -10.0), wkt()), "nearest")
    got = shifted.GetRasterBand(1).ReadAsArray()
    np.testing.assert_array_equal(got[:, :3], a[:, 1:])
    assert np.isnan(got[:, 3]).all()


def _stack_with_reference_inputs(tmp_path):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((4, 4), np.float32))
    b = write_tif(tmp_path / "b_20260302.tif", np.full((4, 4), 2.0, np.float32))
    ref = write_tif(tmp_path / "ref.tif", np.zeros((4, 4), np.float32))
    return [DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))], ref


@pytest.mark.parametrize("target", ["a", "b"])
@pytest.mark.parametrize("spelling", ["plain", "dotted"])
def test_stack_rasters_with_reference_refuses_output_equal_to_an_input(tmp_path, target, spelling):
    items, ref = _stack_with_reference_inputs(tmp_path)
    victim = items[0].path if target == "a" else items[1].path
    dst = victim if spelling == "plain" else os.path.join(str(tmp_path), ".", os.path.basename(victim))
    files = sorted(os.listdir(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in files}
    with pytest.raises(SarSegError, match="is the input raster"):
        timeseries.stack_rasters(items, dst, reference_path=ref)
    assert sorted(os.listdir(tmp_path)) == files
    assert {name: (tmp_path / name).read_bytes() for name in files} == before


@pytest.mark.parametrize("spelling", ["plain", "dotted"])
def test_stack_rasters_refuses_output_equal_to_the_reference(tmp_path, spelling):
    items, ref = _stack_with_reference_inputs(tmp_path)
    dst = ref if spelling == "plain" else os.path.join(str(tmp_path), ".", "ref.tif")
    files = sorted(os.listdir(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in files}
    with pytest.raises(SarSegError, match="is the input raster"):
        timeseries.stack_rasters(items, dst, reference_path=ref)
    assert sorted(os.listdir(tmp_path)) == files
    assert {name: (tmp_path / name).read_bytes() for name in files} == before


def test_stack_rasters_with_reference_writes_another_output(tmp_path):
    """The same-file check refuses only the inputs and the reference: a new path next to them is written."""
    items, ref = _stack_with_reference_inputs(tmp_path)
    dst = tmp_path / "stack.tif"
    timeseries.stack_rasters(items, str(dst), reference_path=ref)
    np.testing.assert_array_equal(read_raster(dst), np.stack([np.ones((4, 4)), np.full((4, 4), 2.0)]))


# --- Review fixes: integer nodata, palettes, freeing warped copies, messages ------------------------


_BINDINGS = (gdal, ogr, osr)


@pytest.fixture(params=[False, True], ids=["gdal-plain", "gdal-exceptions"])
def gdal_mode(request):
    """Run a test with GDAL/OGR/OSR exceptions off and on (QGIS turns them on for the whole process)."""
    before = [bool(module.GetUseExceptions()) for module in _BINDINGS]
    _set_exceptions([request.param] * len(_BINDINGS))
    yield request.param
    _set_exceptions(before)


def _set_exceptions(states: list[bool]) -> None:
    # The bindings keep their error handlers on one stack and refuse to switch off one that is not on top:
    # switch all off (retrying until the order works), then on again in a fixed order.
    for _ in _BINDINGS:
        for module in reversed(_BINDINGS):
            if module.GetUseExceptions():
                with contextlib.suppress(RuntimeError):
                    module.DontUseExceptions()
    for module, on in zip(_BINDINGS, states):
        if on:
            module.UseExceptions()


SHIFTED = (GT[0] + 10.0, 10.0, 0.0, GT[3], 0.0, -10.0)  # the unit grid moved one pixel east


def _align_files() -> set[str]:
    return {p for p in (gdal.ReadDir("/vsimem/") or []) if p.startswith("sarseg_align_")}


def _add_palette(path: str, colors: dict[int, tuple[int, int, int, int]], names: list[str]) -> None:
    ds = gdal.Open(path, gdal.GA_Update)
    table = gdal.ColorTable()
    for value, rgba in colors.items():
        table.SetColorEntry(value, rgba)
    band = ds.GetRasterBand(1)
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(names)
    ds = None


@pytest.mark.parametrize(("dtype", "fill"), [(np.uint8, 255), (np.uint16, 65535), (np.int16, 32767)])
def test_aligned_integer_raster_without_nodata_keeps_class_0(tmp_path, gdal_mode, dtype, fill):
    a = np.array([[0, 1, 2, 0], [3, 0, 4, 1], [0, 0, 2, 3]], dtype)
    p = write_tif(tmp_path / "classes.tif", a, dtype=dtype)
    warped = timeseries.aligned(p, Grid(4, 3, SHIFTED, wkt()), "nearest")
    band = warped.GetRasterBand(1)
    assert band.GetNoDataValue() == fill
    got = band.ReadAsArray()
    np.testing.assert_array_equal(got[:, :3], a[:, 1:])  # class 0 is data, not the warp's fill
    np.testing.assert_array_equal(got[:, 3], fill)
    timeseries.release(warped)


def test_aligned_float_raster_without_nodata_fills_nan(tmp_path):
    p = write_tif(tmp_path / "x.tif", np.zeros((3, 4), np.float32))
    warped = timeseries.aligned(p, Grid(4, 3, SHIFTED, wkt()), "nearest")
    assert np.isnan(warped.GetRasterBand(1).GetNoDataValue())
    got = warped.GetRasterBand(1).ReadAsArray()
    assert (got[:, :3] == 0).all() and np.isnan(got[:, 3]).all()
    timeseries.release(warped)


def test_release_deletes_only_warped_copies(tmp_path, gdal_mode):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = write_tif(tmp_path / "a.tif", a)
    before = _align_files()
    warped = timeseries.aligned(p, Grid(4, 3, SHIFTED, wkt()), "nearest")
    assert len(_align_files() - before) == 1
    timeseries.release(warped)
    assert _align_files() == before
    np.testing.assert_array_equal(warped.GetRasterBand(1).ReadAsArray()[:, :3], a[:, 1:])  # still readable
    del warped
    assert _align_files() == before  # closing it later does not write the file again
    timeseries.release(None)
    same = timeseries.aligned(p, Grid(4, 3, GT, wkt()))
    timeseries.release(same)
    np.testing.assert_array_equal(same.GetRasterBand(1).ReadAsArray(), a)
    # A caller's own in-memory raster returned as it is stays.
    user = write_tif("/vsimem/sarseg_test_user.tif", a)
    try:
        timeseries.release(timeseries.aligned(user, Grid(4, 3, GT, wkt())))
        assert gdal.VSIStatL(user) is not None
    finally:
        gdal.Unlink(user)


def test_stack_rasters_failure_and_cancel_free_warped_copies(tmp_path, gdal_mode):
    a = write_tif(tmp_path / "a_20260301.tif", np.ones((10, 10), np.float32))
    b = write_tif(tmp_path / "b_20260302.tif", np.full((10, 10), 2.0, np.float32), geotransform=SHIFTED)
    far = write_tif(tmp_path / "c_20260303.tif", np.ones((10, 10), np.float32),
                    geotransform=(100.0, 0.001, 0.0, 10.0, 0.0, -0.001), epsg=4326)  # fmt: skip
    items = [DatedRaster(a, D(2026, 3, 1)), DatedRaster(b, D(2026, 3, 2))]
    before = _align_files()
    with pytest.raises(SarSegError, match="overlap"):  # b is warped before c is refused
        timeseries.stack_rasters([*items, DatedRaster(far, D(2026, 3, 3))], str(tmp_path / "s.tif"))
    assert _align_files() == before
    with pytest.raises(CancelledError):
        timeseries.stack_rasters(items, str(tmp_path / "s.tif"), is_canceled=lambda: True)
    assert _align_files() == before
    assert not (tmp_path / "s.tif").exists()


def test_stack_rasters_integer_inputs_get_one_nodata(tmp_path, gdal_mode):
    """Nodata 255, nodata 254 and no nodata (warped): all missing pixels become 255, class 0 stays data."""
    rng = np.random.default_rng(3)
    a, b, c = (rng.integers(0, 5, (10, 12)).astype(np.uint8) for _ in range(3))
    a[0, :4] = 255
    b[1, :5] = 254
    pa = write_tif(tmp_path / "a_20260301.tif", a, nodata=255)
    pb = write_tif(tmp_path / "b_20260302.tif", b, nodata=254)
    pc = write_tif(tmp_path / "c_20260303.tif", c, geotransform=SHIFTED)
    dst = tmp_path / "s.tif"
    items = [DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 2)), DatedRaster(pc, D(2026, 3, 3))]
    result = timeseries.stack_rasters(items, str(dst))
    ds = gdal.Open(str(dst))
    assert [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(3)] == [255, 255, 255]
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte
    ds = None
    got = read_raster(dst)
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], np.where(b == 254, 255, b))
    np.testing.assert_array_equal(got[2][:, 1:], c[:, :-1])  # c starts one pixel east
    np.testing.assert_array_equal(got[2][:, 0], 255)  # outside c: the warp's fill, recoded
    assert (got == 0).sum() == (a == 0).sum() + (b == 0).sum() + (c[:, :-1] == 0).sum()
    assert result["paletted"] is False


def test_stack_rasters_first_raster_without_nodata_uses_the_type_maximum(tmp_path):
    a = np.array([[0, 1], [2, 3]], np.uint16)
    b = np.array([[7, 1], [0, 7]], np.uint16)
    pa = write_tif(tmp_path / "a_20260301.tif", a, dtype=np.uint16)
    pb = write_tif(tmp_path / "b_20260302.tif", b, nodata=7, dtype=np.uint16)
    dst = tmp_path / "s.tif"
    timeseries.stack_rasters([DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 2))], str(dst))
    ds = gdal.Open(str(dst))
    assert ds.GetRasterBand(1).GetNoDataValue() == 65535 and ds.GetRasterBand(2).GetNoDataValue() == 65535
    ds = None
    np.testing.assert_array_equal(read_raster(dst), np.stack([a, [[65535, 1], [0, 65535]]]))


@pytest.mark.parametrize("first_nodata", [255, None])
def test_stack_rasters_refuses_a_class_equal_to_the_common_nodata(tmp_path, first_nodata):
    a = np.zeros((4, 4), np.uint8)
    b = np.ones((4, 4), np.uint8)
    if first_nodata is None:  # the common nodata is then 255 (b has nodata 0), and a uses 255 as a class
        a[2, 2] = 255
        pa = write_tif(tmp_path / "a_20260301.tif", a)
        pb = write_tif(tmp_path / "b_20260302.tif", b, nodata=0)
        culprit = "a_20260301.tif"
    else:  # b has no nodata and uses a's nodata 255 as a class
        b[1, 1] = 255
        pa = write_tif(tmp_path / "a_20260301.tif", a, nodata=first_nodata)
        pb = write_tif(tmp_path / "b_20260302.tif", b)
        culprit = "b_20260302.tif"
    with pytest.raises(SarSegError, match=f"'{culprit}' holds the value 255 in valid pixels"):
        timeseries.stack_rasters([DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 2))],
                                 str(tmp_path / "s.tif"))  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["a_20260301.tif", "b_20260302.tif"]


def test_stack_rasters_integer_without_any_nodata_keeps_every_value(tmp_path):
    """No raster has nodata and none is warped: no pixel is missing, so 255 stays a value and no nodata is set."""
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pa = write_tif(tmp_path / "a_20260301.tif", a)
    pb = write_tif(tmp_path / "b_20260302.tif", a[::-1])
    dst = tmp_path / "s.tif"
    timeseries.stack_rasters([DatedRaster(pa, D(2026, 3, 1)), DatedRaster(pb, D(2026, 3, 2))], str(dst))
    ds = gdal.Open(str(dst))
    assert ds.GetRasterBand(1).GetNoDataValue() is None
    ds = None
    np.testing.assert_array_equal(read_raster(dst), np.stack([a, a[::-1]]))


def test_stack_rasters_keeps_the_colour_table_and_category_names(tmp_path, gdal_mode):
    colors = {0: (0, 0, 255, 255), 1: (0, 128, 0, 255), 2: (200, 0, 0, 255)}
    names = ["water", "forest", "urban"]
    rng = np.random.default_rng(4)
    a, b = (rng.integers(0, 3, (6, 7)).astype(np.uint8) for _ in range(2))
    pa = write_tif(tmp_path / "a_20260301.tif", a, nodata=255)
    pb = write_tif(tmp_path / "b_20260302.tif", b, nodata=255)
    _add_palette(pa, colors, names)
    _add_palette(pb, {0: (9, 9, 9, 255)}, ["other"])  # the earliest raster's palette wins
    dst = tmp_path / "s.tif"
    result = timeseries.stack_rasters([DatedRaster(pb, D(2026, 3, 2)), DatedRaster(pa, D(2026, 3, 1))], str(dst))
    assert result["paletted"] is True
    ds = gdal.Open(str(dst))
    first = ds.GetRasterBand(1)
    assert first.GetColorInterpretation() == gdal.GCI_PaletteIndex
    table = first.GetRasterColorTable()
    assert {i: table.GetColorEntry(i) for i in colors} == colors
    assert [ds.GetRasterBand(i + 1).GetCategoryNames() for i in range(2)] == [names, names]
    ds = None
    np.testing.assert_array_equal(read_raster(dst), np.stack([a, b]))


def test_stack_rasters_float_or_multiband_output_is_not_paletted(tmp_path):
    f = [write_tif(tmp_path / f"f_2026030{d}.tif", np.ones((4, 4), np.float32)) for d in (1, 2)]
    m = [write_tif(tmp_path / f"m_2026030{d}.tif", np.ones((2, 4, 4), np.uint8)) for d in (1, 2)]
    for p in m:
        _add_palette(p, {1: (1, 2, 3, 255)}, ["one"])
    for paths in (f, m):
        items = [DatedRaster(p, D(2026, 3, k + 1)) for k, p in enumerate(paths)]
        assert timeseries.stack_rasters(items, str(tmp_path / "s.tif"))["paletted"] is False


def test_aligned_names_the_role_of_the_grid_in_the_overlap_message(tmp_path):
    far = write_tif(tmp_path / "labels.tif", np.ones((10, 10), np.uint8),
                    geotransform=(100.0, 0.001, 0.0, 10.0, 0.0, -0.001), epsg=4326)  # fmt: skip
    grid = Grid(40, 30, GT, wkt())
    with pytest.raises(SarSegError, match="'labels.tif' does not overlap the image raster .* CRS of the image raster"):
        timeseries.aligned(far, grid, "nearest", role="image raster")
    with pytest.raises(SarSegError, match="does not overlap the reference raster"):
        timeseries.aligned(far, grid)


@pytest.mark.parametrize(
    ("name", "message"),
    [("/data/ref.tif", "The image raster 'ref.tif' has no valid coordinate reference system"),
     ("", "The image raster has no valid coordinate reference system")],
)  # fmt: skip
def test_aligned_refuses_a_reference_grid_without_crs(tmp_path, gdal_mode, name, message):
    p = write_tif(tmp_path / "labels.tif", np.ones((3, 4), np.uint8))
    with pytest.raises(SarSegError, match=message):
        timeseries.aligned(p, Grid(4, 3, SHIFTED, "", name), "nearest", role="image raster")


def test_grid_name_is_not_part_of_equality(tmp_path):
    p = write_tif(tmp_path / "a.tif", np.ones((30, 40), np.float32))
    g = Grid.of(timeseries.read_info(gdal.Open(p)))
    assert g.name == p
    unnamed = Grid(40, 30, GT, g.projection)
    assert g == unnamed and hash(g) == hash(unnamed)
