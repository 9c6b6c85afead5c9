"""Tests of block iteration, atomic GeoTIFF writing and block streaming (sar_seg_plugin.core.raster_io).

Every result is compared with an independent computation on the whole array (numpy / scipy) or with
what was written through plain GDAL calls.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from osgeo import gdal, osr
from rasters import GT, leftovers, read_raster, wkt, write_raster
from scipy import ndimage

from sar_seg_plugin.core import raster_io
from sar_seg_plugin.core.errors import CancelledError, SarSegError
from sar_seg_plugin.core.raster_io import GeoTiffWriter, Window

write_tif = functools.partial(write_raster, geotransform=GT)


# --- iter_blocks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "block_size", "halo"),
    [(150, 97, 64, 5), (64, 64, 64, 3), (1, 1, 512, 2), (130, 70, 32, 0), (17, 300, 16, 40), (200, 9, 8, 1)],
)
def test_iter_blocks_cover_every_pixel_once_and_read_core_plus_clipped_halo(width, height, block_size, halo):
    blocks = raster_io.iter_blocks(width, height, block_size, halo)
    count = np.zeros((height, width), np.int32)
    expected_n = -(-width // block_size) * -(-height // block_size)
    assert len(blocks) == expected_n
    assert [b.index for b in blocks] == list(range(expected_n))
    for block in blocks:
        core, read = block.core, block.read
        assert 0 < core.width <= block_size and 0 < core.height <= block_size
        count[core.slices] += 1
        # Read window: core grown by the halo on every side, clipped to the raster.
        x0, y0 = max(0, core.x - halo), max(0, core.y - halo)
        x1, y1 = min(width, core.x + core.width + halo), min(height, core.y + core.height + halo)
        assert (read.x, read.y, read.width, read.height) == (x0, y0, x1 - x0, y1 - y0)
        # inner: where the core lies in an array read over ``read``.
        coords = np.mgrid[read.y : read.y + read.height, read.x : read.x + read.width]
        inner = coords[(slice(None), *block.inner)]
        assert inner.shape == (2, core.height, core.width)
        assert inner[0, 0, 0] == core.y and inner[1, 0, 0] == core.x
        assert inner[0, -1, -1] == core.y + core.height - 1 and inner[1, -1, -1] == core.x + core.width - 1
    assert count.min() == 1 and count.max() == 1


def test_iter_blocks_refuses_empty_raster():
    with pytest.raises(SarSegError):
        raster_io.iter_blocks(0, 10)
    with pytest.raises(SarSegError):
        raster_io.iter_blocks(10, 0)


# --- valid_mask / sample_band / read_info ---------------------------------------------------------------


def test_valid_mask_treats_nan_and_nodata_as_invalid():
    data = np.array(
        [
            [[1.0, 0.0, np.nan], [np.inf, 2.0, -9999.0]],
            [[0.0, np.nan, 3.0], [-9999.0, 5.0, 0.0]],
        ],
        np.float32,
    )
    valid = raster_io.valid_mask(data, [0.0, -9999.0])
    expected = np.array(
        [
            [[True, False, False], [False, True, True]],
            [[True, False, True], [False, True, True]],
        ]
    )
    np.testing.assert_array_equal(valid, expected)
    # No nodata (None) or a NaN nodata: only non-finite values are invalid.
    np.testing.assert_array_equal(raster_io.valid_mask(data, [None, float("nan")]), np.isfinite(data))
    # Integers: only the nodata value is invalid.
    ints = np.array([[[0, 255, 3], [255, 255, 1]]], np.uint8)
    np.testing.assert_array_equal(raster_io.valid_mask(ints, [255]), ints != 255)
    np.testing.assert_array_equal(raster_io.valid_mask(ints, [None]), np.ones(ints.shape, bool))


def test_sample_band_returns_every_valid_pixel_of_a_small_raster(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.uniform(1.0, 2.0, (2, 37, 23)).astype(np.float32)
    a[0, :5, :7] = -9999.0
    a[0, 10, 10] = np.nan
    a[1, 20:, :] = -9999.0
    path = write_tif(tmp_path / "s.tif", a, nodata=-9999.0)
    ds = raster_io.open_raster(path)
    for b in range(2):
        got = raster_io.sample_band(ds, b + 1)
        want = a[b][np.isfinite(a[b]) & (a[b] != -9999.0)]
        assert got.size == want.size
        np.testing.assert_array_equal(np.sort(got), np.sort(want.astype(np.float64)))
    assert raster_io.sample_band(ds, 1).size == 37 * 23 - 35 - 1


def test_sample_band_decimates_large_rasters_to_at_most_max_pixels(tmp_path):
    a = np.arange(200 * 120, dtype=np.float32).reshape(1, 120, 200) + 1.0
    path = write_tif(tmp_path / "big.tif", a, nodata=0.0)
    ds = raster_io.open_raster(path)
    got = raster_io.sample_band(ds, 1, max_pixels=1000)
    assert 500 <= got.size <= 1000
    # Decimated values are pixels of the raster, spread over all of it.
    assert np.isin(got, a.ravel()).all()
    assert got.min() < a.max() * 0.1 and got.max() > a.max() * 0.9


def test_read_info_and_read_window(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 30, 40)).astype(np.float32)
    path = write_tif(tmp_path / "i.tif", a, nodata=-1.5, descriptions=["VV", ""], units=["linear", ""])
    ds = raster_io.open_raster(path)
    info = raster_io.read_info(ds)
    assert (info.width, info.height, info.band_count) == (40, 30, 2)
    assert info.geotransform == GT
    assert osr.SpatialReference(wkt=info.projection).GetAuthorityCode(None) == "32631"
    assert info.nodata == [-1.5, -1.5]
    assert info.descriptions == ["VV", ""] and info.units == ["linear", ""]
    assert info.band_label(1) == "VV" and info.band_label(2) == "band 2"
    assert info.dtype == np.float32
    w = Window(7, 3, 11, 5)
    np.testing.assert_array_equal(raster_io.read_window(ds, w), a[:, 3:8, 7:18])
    np.testing.assert_array_equal(raster_io.read_window(ds, w, [2]), a[1:2, 3:8, 7:18])


def test_open_raster_errors(tmp_path):
    with pytest.raises(SarSegError):
        raster_io.open_raster(tmp_path / "missing.tif")
    with pytest.raises(SarSegError):
        raster_io.open_raster("")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(SarSegError):
        raster_io.open_raster(bad)


# --- GeoTiffWriter ----------------------------------------------------------------------------------


def test_writer_keeps_georeferencing_nodata_descriptions_units_metadata_and_colours(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 5, (2, 45, 70)).astype(np.uint8)
    data[:, 0, 0] = 255
    colours = {0: (31, 120, 180, 255), 1: (178, 223, 138, 255), 4: (217, 178, 111, 255), 255: (0, 0, 0, 0)}
    gt = (500010.0, 20.0, 0.0, 4100030.0, 0.0, -20.0)
    crs = wkt(32630)
    dst = tmp_path / "out.tif"
    with GeoTiffWriter(
        dst,
        70,
        45,
        2,
        np.uint8,
        gt,
        crs,
        nodata=255,
        descriptions=["class", "other"],
        units=["", "m"],
        metadata={"SARSEG_TEST": "yes", "NUMBER": 3},
        band_metadata=[{"A": "1"}, {"B": 2.5}],
        color_table=colours,
        category_names=["water", "vegetation"],
    ) as w:
        # Two windows that together cover the raster.
        w.write(Window(0, 0, 70, 20), data[:, :20])
        w.write(Window(0, 20, 70, 25), data[:, 20:])
    # Category names live in the .aux.xml side-car, which is moved into place with the file.
    assert leftovers(tmp_path) == ["out.tif", "out.tif.aux.xml"]
    ds = gdal.Open(str(dst))
    assert ds.GetGeoTransform() == gt
    assert osr.SpatialReference(wkt=ds.GetProjection()).IsSame(osr.SpatialReference(wkt=crs))
    np.testing.assert_array_equal(read_raster(dst), data)
    b1, b2 = ds.GetRasterBand(1), ds.GetRasterBand(2)
    assert b1.DataType == gdal.GDT_Byte
    assert b1.GetNoDataValue() == 255 and b2.GetNoDataValue() == 255
    assert b1.GetDescription() == "class" and b2.GetDescription() == "other"
    assert b1.GetUnitType() == "" and b2.GetUnitType() == "m"
    md = ds.GetMetadata()
    assert md["SARSEG_TEST"] == "yes" and md["NUMBER"] == "3"
    assert b1.GetMetadata()["A"] == "1"
    assert b2.GetMetadata()["B"] == "2.5"
    ct = b1.GetRasterColorTable()
    assert ct is not None
    for value, rgba in colours.items():
        assert ct.GetColorEntry(value) == rgba
    assert b1.GetRasterColorInterpretation() == gdal.GCI_PaletteIndex
    assert b1.GetCategoryNames()[:2] == ["water", "vegetation"]
    # Tiled and compressed as documented.
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    assert b1.GetBlockSize() == [256, 256]


def test_writer_float_nodata_nan_and_single_band_2d_write(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    a[1, 1] = np.nan
    dst = tmp_path / "f.tif"
    with GeoTiffWriter(dst, 4, 3, 1, np.float32, GT, wkt(), nodata=float("nan")) as w:
        w.write(Window(0, 0, 4, 3), a)
    got = read_raster(dst)[0]
    np.testing.assert_array_equal(got, a)  # NaN compares equal at the same place
    assert np.isnan(gdal.Open(str(dst)).GetRasterBand(1).GetNoDataValue())


def test_writer_rejects_bad_paths_and_shapes(tmp_path):
    with pytest.raises(SarSegError):
        GeoTiffWriter(tmp_path / "x.png", 4, 4, 1, np.float32, GT, wkt())
    with pytest.raises(SarSegError):
        GeoTiffWriter(tmp_path / "missing" / "x.tif", 4, 4, 1, np.float32, GT, wkt())
    with pytest.raises(ValueError), GeoTiffWriter(tmp_path / "x.tif", 4, 4, 2, np.float32, GT, wkt()) as w:
        w.write(Window(0, 0, 4, 4), np.zeros((1, 4, 4), np.float32))
    assert leftovers(tmp_path) == []


def test_writer_exception_leaves_nothing_and_no_partial_file(tmp_path):
    dst = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="boom"), GeoTiffWriter(dst, 20, 10, 1, np.float32, GT, wkt()) as w:
        w.write(Window(0, 0, 20, 10), np.ones((10, 20), np.float32))
        assert any(".partial" in n for n in os.listdir(tmp_path))  # the work happens in a temporary file
        raise RuntimeError("boom")
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_writer_exception_leaves_existing_destination_byte_identical(tmp_path):
    dst = tmp_path / "out.tif"
    with GeoTiffWriter(dst, 8, 8, 1, np.float32, GT, wkt(), category_names=["a", "b"]) as w:
        w.write(Window(0, 0, 8, 8), np.full((8, 8), 7.0, np.float32))
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert "out.tif" in before
    with (
        pytest.raises(CancelledError),
        GeoTiffWriter(dst, 8, 8, 1, np.float32, GT, wkt(), category_names=["c"]) as w,
    ):
        w.write(Window(0, 0, 8, 8), np.zeros((8, 8), np.float32))
        raise CancelledError("stop")
    after = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert after == before
    np.testing.assert_array_equal(read_raster(dst), np.full((1, 8, 8), 7.0, np.float32))


def test_writer_success_replaces_existing_file_and_stale_sidecar(tmp_path):
    dst = tmp_path / "out.tif"
    with GeoTiffWriter(dst, 8, 8, 1, np.uint8, GT, wkt(), category_names=["old"]) as w:
        w.write(Window(0, 0, 8, 8), np.ones((8, 8), np.uint8))
    sidecar = tmp_path / "out.tif.aux.xml"
    if not sidecar.exists():  # make sure there is a stale side-car to remove
        sidecar.write_text("<PAMDataset><Metadata><MDI key='STALE'>1</MDI></Metadata></PAMDataset>")
    with GeoTiffWriter(dst, 8, 8, 1, np.uint8, GT, wkt()) as w:
        w.write(Window(0, 0, 8, 8), np.full((8, 8), 3, np.uint8))
    assert not sidecar.exists()
    np.testing.assert_array_equal(read_raster(dst), np.full((1, 8, 8), 3, np.uint8))
    assert leftovers(tmp_path) == ["out.tif"]


# --- map_blocks -------------------------------------------------------------------------------------

KERNEL = np.arange(25, dtype=np.float64).reshape(5, 5)  # asymmetric: a shifted or flipped block shows


def _correlate_blocks(data, valid, block):
    out = np.empty(data.shape, np.float64)
    for b in range(data.shape[0]):
        out[b] = ndimage.correlate(data[b].astype(np.float64), KERNEL, mode="nearest")
    return out


def _integer_valued(shape, seed=0) -> np.ndarray:
    """Integer values, so sums of products are exact in float and block results can be compared exactly."""
    return np.random.default_rng(seed).integers(0, 100, shape).astype(np.float32)


@pytest.mark.parametrize(("block_size", "workers"), [(64, None), (16, 2), (200, 1)])
def test_map_blocks_with_halo_equals_the_whole_image_result(tmp_path, block_size, workers):
    a = _integer_valued((2, 97, 150))
    src_path = write_tif(tmp_path / "src.tif", a)
    src = raster_io.open_raster(src_path)
    dst = tmp_path / "dst.tif"
    progress = []
    with GeoTiffWriter(dst, 150, 97, 2, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(
            src, w, _correlate_blocks, halo=2, block_size=block_size, workers=workers, progress=progress.append
        )
    expected = np.stack([ndimage.correlate(a[b].astype(np.float64), KERNEL, mode="nearest") for b in range(2)])
    np.testing.assert_array_equal(read_raster(dst), expected.astype(np.float32))
    n_blocks = -(-150 // block_size) * -(-97 // block_size)
    assert len(progress) == n_blocks
    assert progress == sorted(progress)
    assert progress[-1] == pytest.approx(100.0)


def test_map_blocks_without_enough_halo_differs_from_the_whole_image(tmp_path):
    """Control for the test above: with no halo the block seams show, so that comparison can fail."""
    a = _integer_valued((1, 97, 150), seed=1)
    src = raster_io.open_raster(write_tif(tmp_path / "src.tif", a))
    with GeoTiffWriter(tmp_path / "dst.tif", 150, 97, 1, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(src, w, _correlate_blocks, halo=0, block_size=64)
    expected = ndimage.correlate(a[0].astype(np.float64), KERNEL, mode="nearest").astype(np.float32)
    assert not np.array_equal(read_raster(tmp_path / "dst.tif")[0], expected)


def test_map_blocks_uniform_filter_matches_whole_image(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.gamma(4.4, 0.1 / 4.4, (1, 97, 150)).astype(np.float32)
    src = raster_io.open_raster(write_tif(tmp_path / "src.tif", a))

    def smooth(data, valid, block):
        return ndimage.uniform_filter(data.astype(np.float64), size=(1, 7, 7), mode="reflect")

    with GeoTiffWriter(tmp_path / "dst.tif", 150, 97, 1, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(src, w, smooth, halo=3, block_size=64)
    expected = ndimage.uniform_filter(a[0].astype(np.float64), size=7, mode="reflect")
    np.testing.assert_allclose(read_raster(tmp_path / "dst.tif")[0], expected, rtol=1e-6)


def test_map_blocks_passes_the_validity_mask_and_selected_bands(tmp_path):
    a = _integer_valued((3, 50, 70), seed=2) + 1.0
    a[0, 5:9, 60:] = -5.0
    a[1, 40:, :3] = np.nan
    a[2, :, 0] = -5.0
    src = raster_io.open_raster(write_tif(tmp_path / "src.tif", a, nodata=-5.0))
    seen = []

    def echo(data, valid, block):
        seen.append(block.index)
        return np.concatenate([valid.astype(np.float32), data], axis=0)

    with GeoTiffWriter(tmp_path / "dst.tif", 70, 50, 4, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(src, w, echo, halo=1, block_size=32, bands=[2, 1])
    got = read_raster(tmp_path / "dst.tif")
    sel = a[[1, 0]]
    np.testing.assert_array_equal(got[:2], (np.isfinite(sel) & (sel != -5.0)).astype(np.float32))
    np.testing.assert_array_equal(got[2:], sel)
    assert sorted(seen) == list(range(6))


def test_map_blocks_cancel_raises_and_leaves_no_output(tmp_path):
    a = _integer_valued((1, 97, 150))
    src = raster_io.open_raster(write_tif(tmp_path / "src.tif", a))
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > 1

    dst = tmp_path / "dst.tif"
    with pytest.raises(CancelledError), GeoTiffWriter(dst, 150, 97, 1, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(src, w, _correlate_blocks, halo=2, block_size=64, is_canceled=is_canceled)
    assert len(calls) == 2
    assert not dst.exists()
    assert leftovers(tmp_path) == ["src.tif"]


def test_map_blocks_error_in_function_leaves_no_output(tmp_path):
    src = raster_io.open_raster(write_tif(tmp_path / "src.tif", _integer_valued((1, 40, 40))))

    def fail(data, valid, block):
        if block.index == 2:
            raise ZeroDivisionError("bad block")
        return data

    with pytest.raises(ZeroDivisionError), GeoTiffWriter(tmp_path / "d.tif", 40, 40, 1, np.float32, GT, wkt()) as w:
        raster_io.map_blocks(src, w, fail, block_size=16)
    assert leftovers(tmp_path) == ["src.tif"]


def test_open_raster_accepts_gdal_connection_strings(tmp_path):
    src = write_tif(tmp_path / "a.tif", np.arange(12, dtype=np.float32).reshape(3, 4))
    gpkg = tmp_path / "rasters.gpkg"
    gdal.Translate(str(gpkg), src, format="GPKG", creationOptions=["RASTER_TABLE=vv"])
    ds = raster_io.open_raster(f"GPKG:{gpkg}:vv")
    np.testing.assert_array_equal(raster_io.read_window(ds, Window(0, 0, 4, 3))[0], np.arange(12).reshape(3, 4))
    with pytest.raises(SarSegError, match="does not exist"):
        raster_io.open_raster(str(tmp_path / "nothing.tif"))
    with pytest.raises(SarSegError, match="could not be opened"):
        raster_io.open_raster(f"GPKG:{gpkg}:no_such_table")


@pytest.mark.parametrize("width,height", [(2000, 1500), (300, 5000), (100, 100), (256, 256)])
def test_spread_windows_do_not_overlap_and_stay_inside(width, height):
    windows = raster_io.spread_windows(width, height, count=16, size=256)
    cover = np.zeros((height, width), int)
    for w in windows:
        assert w.x >= 0 and w.y >= 0 and w.x + w.width <= width and w.y + w.height <= height
        cover[w.slices] += 1
    assert cover.max() == 1
    assert 1 <= len(windows) <= 16
    if width >= 4 * 256 and height >= 4 * 256:
        assert len(windows) == 16
        assert cover[:, :256].any() and cover[:, -256:].any()  # spread from edge to edge


@pytest.mark.parametrize(("width", "height"), [(1500, 1100), (120, 90)])
def test_spread_windows_read_whole_hold_the_sample_windows_values(tmp_path, width, height):
    rng = np.random.default_rng(2)
    data = rng.gamma(4.4, 0.025, (2, height, width)).astype(np.float32)
    data[:, :40, :] = 0.0  # nodata
    data[1, 50:60, :] = np.nan
    path = write_tif(tmp_path / "r.tif", data, nodata=0.0)
    ds = gdal.Open(path)
    windows = raster_io.read_spread_windows(ds)
    expected = (
        raster_io.spread_windows(width, height) if width * height > 16 * 256 * 256 else [Window(0, 0, width, height)]
    )
    assert [w.shape for w in windows] == [(2, e.height, e.width) for e in expected]
    for window, e in zip(windows, expected):
        block = data[:, e.y : e.y + e.height, e.x : e.x + e.width].astype(np.float64)
        np.testing.assert_array_equal(window, np.where(np.isfinite(block) & (block != 0), block, np.nan))
    for b in (1, 2):
        values = np.concatenate([w[b - 1][~np.isnan(w[b - 1])] for w in windows])
        np.testing.assert_array_equal(values, raster_io.sample_windows(ds, b))
    ds = None


def test_undeclared_fill_is_the_value_every_band_shares_where_no_backscatter_can_be():
    a = np.full((3, 10, 10), 0.05)
    a[:, :, :3] = 0.0  # 30 % fill in every band
    a[1, 5, 5] = 0.0  # one band alone at 0: backscatter clipped by noise removal, not fill
    a[:, 9, 9] = np.nan  # no data already
    windows = [a, a[:, :5].copy()]
    zero, finite = 30 + 15, 99 + 50  # counted here by hand
    value, share = raster_io.undeclared_fill(windows, [1, 2], [None, None, None])
    assert value == 0.0 and share == pytest.approx(zero / finite)
    assert raster_io.undeclared_fill(windows, [1, 2], [None, 0.0, None]) is None  # declared: its own rule
    assert raster_io.undeclared_fill([np.full((2, 4, 4), 0.1)], [1, 2], [None, None]) is None
    # in dB: -99 in both bands is fill; -50 (a dB floor) in both bands and -99 in one band only are not
    db = np.full((2, 10, 10), -12.0)
    db[:, :2] = -99.0
    db[:, 2:4] = -50.0
    db[0, 4:7] = -99.0
    value, share = raster_io.undeclared_fill([db], [1, 2], [None, None])
    assert value == -99.0 and share == pytest.approx(0.2)
    assert raster_io.undeclared_fill([db[:, 2:]], [1, 2], [None, None]) is None


# --- declared band scale and offset -------------------------------------------------------------------------------


def test_declared_scale_and_offset_are_applied_as_qgis_shows_them(tmp_path):
    """Int16 dB x 100 (scale 0.01, nodata -32768): read as stored x 0.01, in float, nodata as NaN."""
    rng = np.random.default_rng(3)
    stored = rng.integers(-2500, 0, (2, 40, 50)).astype(np.int16)
    stored[:, 0, :7] = -32768
    path = write_tif(tmp_path / "scaled.tif", stored, nodata=-32768, descriptions=["VV", "VH"], units=["dB", "dB"],
                     dtype=np.int16, scale=0.01)  # fmt: skip
    ds = raster_io.open_raster(path)
    info = raster_io.read_info(ds)
    assert info.path == path and info.dtype == np.float32
    assert info.descriptions == ["VV", "VH"] and info.units == ["dB", "dB"]
    assert info.scaling == [(0.01, 0.0), (0.01, 0.0)]
    data = raster_io.read_window(ds, Window(0, 0, 50, 40))
    valid = raster_io.valid_mask(data, info.nodata)
    expected = stored.astype(np.float64) * 0.01
    assert not valid[:, 0, :7].any() and valid.sum() == stored.size - 14
    np.testing.assert_allclose(data[valid], expected[stored != -32768], rtol=1e-6)
    sample = raster_io.sample_band(ds, 2)
    np.testing.assert_allclose(np.sort(sample), np.sort(expected[1][stored[1] != -32768]), rtol=1e-6)
    note = raster_io.scaling_note(info)
    assert "VV = stored x 0.01 + 0" in note and "VH = stored x 0.01 + 0" in note


def test_an_offset_value_equal_to_the_stored_nodata_stays_valid(tmp_path):
    """UInt16 (dB + 50) x 1000, nodata 0: a pixel of exactly 0 dB (stored 50000) is data, a stored 0 is not."""
    stored = np.array([[[0, 50000, 38250, 65535]]], dtype=np.uint16)
    path = write_tif(tmp_path / "offset.tif", stored, nodata=0, dtype=np.uint16, scale=0.001, offset=-50.0)
    ds = raster_io.open_raster(path)
    info = raster_io.read_info(ds)
    data = raster_io.read_window(ds, Window(0, 0, 4, 1))
    assert raster_io.valid_mask(data, info.nodata)[0, 0].tolist() == [False, True, True, True]
    np.testing.assert_allclose(data[0, 0, 1:], [0.0, -11.75, 15.535], atol=1e-5)
    assert "band 1 = stored x 0.001 - 50" in raster_io.scaling_note(info)


def test_wide_integers_are_unscaled_in_double_precision(tmp_path):
    stored = np.array([[[123456789, -5]]], dtype=np.int32)
    ds = raster_io.open_raster(write_tif(tmp_path / "wide.tif", stored, dtype=np.int32, scale=1e-6))
    assert raster_io.read_info(ds).dtype == np.float64
    np.testing.assert_allclose(raster_io.read_window(ds, Window(0, 0, 2, 1), dtype=np.float64)[0, 0],
                               [123.456789, -5e-6], rtol=1e-12)  # fmt: skip


def test_a_raster_without_scale_is_read_as_it_is(tmp_path):
    path = write_tif(tmp_path / "plain.tif", np.ones((1, 3, 3), np.float32), scale=1.0, offset=0.0)
    ds = raster_io.open_raster(path)
    assert ds.GetDescription() == path and raster_io.declared_scaling(ds) is None
    info = raster_io.read_info(ds)
    assert info.scaling == [] and raster_io.scaling_note(info) is None
