"""Tests of the raster-level preprocessing (sar_seg_plugin.core.preprocess) on the synthetic sample scene
and on small rasters, against numpy / the in-memory speckle filters applied to the whole band."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from rasters import GT, read_raster, write_raster

from sar_seg_plugin.core import preprocess, radiometry, raster_io, speckle
from sar_seg_plugin.core.errors import CancelledError, SarSegError
from sar_seg_plugin.core.preprocess import SpeckleSettings

write_tif = functools.partial(write_raster, geotransform=GT)


def band_info(path) -> tuple[list, list, list]:
    ds = gdal.Open(str(path))
    bands = [ds.GetRasterBand(b + 1) for b in range(ds.RasterCount)]
    return [b.GetDescription() for b in bands], [b.GetUnitType() for b in bands], [b.GetNoDataValue() for b in bands]


def assert_nan_nodata(path, got, invalid):
    """Every band declares NaN as nodata; the invalid input pixels are NaN, all the others finite."""
    nodata = band_info(path)[2]
    assert len(nodata) == got.shape[0]
    for value in nodata:
        assert value is not None and math.isnan(value), f"output nodata is {value}, not NaN"
    assert invalid.any() and (~invalid).any()
    assert np.isnan(got[invalid]).all(), "invalid input pixels must be NaN in the output"
    assert np.isfinite(got[~invalid]).all(), "valid input pixels must stay finite (valid) in the output"


def reference_filter(name, band, valid, looks=4.4, window=7, nodata=0.0):
    """The in-memory filter on the whole band, nodata pixels filled with the nodata value."""
    y = speckle.apply_filter(name, band, valid, window=window, looks=looks, damping=2.0, sigma=0.9)
    return np.where(np.isfinite(y), y, nodata).astype(np.float32)


@pytest.fixture(scope="module")
def sample_sar(sample_dir):
    return str(sample_dir / "sar_20260301.tif")


@pytest.fixture(scope="module")
def sample_array(sample_sar):
    return read_raster(sample_sar)


@pytest.fixture
def small_blocks(monkeypatch):
    """Stream the preprocessing through 48-pixel blocks, so block seams fall inside the 160-px sample."""
    monkeypatch.setattr(preprocess, "map_blocks", functools.partial(raster_io.map_blocks, block_size=48))


# --- Speckle filter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lee", "frost", "median", "gamma_map", "kuan", "refined_lee", "boxcar"])
def test_speckle_filter_raster_equals_filter_on_whole_band(tmp_path, sample_sar, sample_array, name):
    dst = tmp_path / f"{name}.tif"
    result = preprocess.speckle_filter_raster(sample_sar, str(dst), SpeckleSettings(filter_name=name))
    assert result["scale"] == ["linear", "linear"]
    got = read_raster(dst)
    for b in range(2):
        valid = sample_array[b] != 0.0
        np.testing.assert_allclose(got[b], reference_filter(name, sample_array[b], valid), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["lee", "frost", "median", "lee_sigma"])
def test_speckle_filter_raster_is_seamless_across_blocks(tmp_path, sample_sar, sample_array, small_blocks, name):
    dst = tmp_path / f"{name}.tif"
    preprocess.speckle_filter_raster(sample_sar, str(dst), SpeckleSettings(filter_name=name))
    got = read_raster(dst)
    for b in range(2):
        valid = sample_array[b] != 0.0
        if name == "lee_sigma":
            threshold = float(np.percentile(sample_array[b][valid], 98))
            y = speckle.apply_filter(name, sample_array[b], valid, window=7, looks=4.4, sigma=0.9,
                                     point_threshold=threshold)  # fmt: skip
            want = np.where(np.isfinite(y), y, 0.0)
        else:
            want = reference_filter(name, sample_array[b], valid)
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=0)


def test_speckle_filter_raster_keeps_nodata_georeferencing_and_descriptions(tmp_path, sample_sar, sample_array):
    dst = tmp_path / "lee.tif"
    preprocess.speckle_filter_raster(sample_sar, str(dst), SpeckleSettings(filter_name="lee", window=5))
    got = read_raster(dst)
    invalid = sample_array == 0.0
    assert invalid.any() and (~invalid).any()
    assert (got[invalid] == 0.0).all()
    assert np.isfinite(got).all() and (got[~invalid] > 0).all()
    src, out = gdal.Open(sample_sar), gdal.Open(str(dst))
    assert out.GetGeoTransform() == src.GetGeoTransform()
    assert osr.SpatialReference(wkt=out.GetProjection()).IsSame(osr.SpatialReference(wkt=src.GetProjection()))
    descriptions, units, nodata = band_info(dst)
    assert descriptions == ["VV", "VH"]
    assert units == ["linear", "linear"]
    assert nodata == [0.0, 0.0]
    md = out.GetMetadata()
    assert md["SARSEG_SPECKLE_FILTER"] == "lee" and md["SARSEG_WINDOW"] == "5"
    assert json.loads(md["SARSEG_LOOKS"]) == [4.4, 4.4]
    assert md["ACQUISITION_DATE"] == "2026-03-01"  # source metadata carried over
    # The filter actually smoothed: the speckle variance went down on valid pixels.
    assert got[0][~invalid[0]].std() < sample_array[0][~invalid[0]].std()


def _db_copy_without_units(path_in, path_out):
    """The sample in dB (0 = nodata), with no unit: the scale must be recognised from the values."""
    a = read_raster(path_in)
    db = np.where(a != 0.0, radiometry.to_db(a), 0.0)
    return write_tif(path_out, db, nodata=0.0, descriptions=["VV", "VH"])


@pytest.mark.parametrize("source", ["convert_db_raster", "no_units"])
def test_speckle_filter_raster_on_db_input_filters_in_linear(tmp_path, sample_sar, sample_array, source):
    db_path = tmp_path / "db.tif"
    if source == "convert_db_raster":
        preprocess.convert_db_raster(sample_sar, str(db_path), direction="to_db")
        assert band_info(db_path)[1] == ["dB", "dB"]
    else:
        _db_copy_without_units(sample_sar, db_path)
        assert band_info(db_path)[1] == ["", ""]
    db = read_raster(db_path)
    in_valid = sample_array != 0.0
    # The dB input holds its nodata as NaN (convert_db_raster) or 0 (the copy's declared nodata).
    assert (np.isnan(db[~in_valid]) if source == "convert_db_raster" else db[~in_valid] == 0.0).all()
    dst = tmp_path / "lee_db.tif"
    result = preprocess.speckle_filter_raster(str(db_path), str(dst), SpeckleSettings(filter_name="lee"))
    assert result["scale"] == ["dB", "dB"]
    got = read_raster(dst)
    # Bands in dB: the output nodata is NaN whatever the input's (0 dB is a valid value).
    assert_nan_nodata(dst, got, ~in_valid)
    for b in range(2):
        valid = in_valid[b]
        lin = radiometry.from_db(np.where(valid, db[b], 0.0))
        filtered = speckle.apply_filter("lee", lin, valid, window=7, looks=4.4)
        want = radiometry.to_db(np.where(valid, filtered, 1.0))
        np.testing.assert_allclose(got[b][valid], want[valid], rtol=1e-5, atol=1e-4)
        # Filtering dB values directly would give something else: the test can tell the two apart.
        direct = speckle.apply_filter("lee", db[b], valid, window=7, looks=4.4)
        assert np.abs(direct[valid] - want[valid]).max() > 0.1
    assert band_info(dst)[1] == ["dB", "dB"]


def test_speckle_filter_raster_input_scale_forced(tmp_path, sample_sar, sample_array):
    """Forcing 'dB' on linear input converts from dB first (a user choice the result must follow)."""
    dst = tmp_path / "forced.tif"
    result = preprocess.speckle_filter_raster(
        sample_sar, str(dst), SpeckleSettings(filter_name="boxcar", input_scale="dB")
    )
    assert result["scale"] == ["dB", "dB"]
    all_bands = read_raster(dst)
    # Filtered as dB: the input nodata 0 is not kept, the output nodata is NaN.
    assert_nan_nodata(dst, all_bands, sample_array == 0.0)
    got = all_bands[0]
    valid = sample_array[0] != 0.0
    y = speckle.apply_filter("boxcar", radiometry.from_db(sample_array[0]), valid, window=7)
    want = radiometry.to_db(np.where(valid, y, 1.0))
    np.testing.assert_allclose(got[valid], want[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "units,nodata,kept",
    [
        (["linear", "linear"], -9999.0, True),  # linear power only: the input nodata is kept
        (["linear", "dB"], -9999.0, False),  # any band in dB: NaN
        (["dB", "dB"], -9999.0, False),
        (["linear", "linear"], None, False),  # no input nodata: NaN
    ],
)
def test_speckle_filter_raster_output_nodata_policy(tmp_path, units, nodata, kept):
    rng = np.random.default_rng(21)
    lin = (0.05 * rng.gamma(4.4, 1.0 / 4.4, (2, 40, 50))).astype(np.float32)
    a = np.stack([radiometry.to_db(lin[b]) if units[b] == "dB" else lin[b] for b in range(2)]).astype(np.float32)
    invalid = np.zeros(a.shape, bool)
    invalid[0, :6, :7] = True
    invalid[1, 30:, 40:] = True
    invalid[1, 12, 20] = True
    a[invalid] = np.nan if nodata is None else nodata
    src = write_tif(tmp_path / "a.tif", a, nodata=nodata, units=units)
    dst = tmp_path / "f.tif"
    result = preprocess.speckle_filter_raster(src, str(dst), SpeckleSettings("lee", window=5))
    assert result["scale"] == units
    got = read_raster(dst)
    if kept:
        assert band_info(dst)[2] == [nodata, nodata]
        assert (got[invalid] == nodata).all()
        assert np.isfinite(got).all()
    else:
        assert_nan_nodata(dst, got, invalid)
    for b in range(2):
        valid = ~invalid[b]
        x = radiometry.from_db(a[b]) if units[b] == "dB" else a[b]
        y = speckle.apply_filter("lee", np.where(valid, x, 0.0), valid, window=5, looks=4.4)
        want = radiometry.to_db(np.where(valid, y, 1.0)) if units[b] == "dB" else y
        np.testing.assert_allclose(got[b][valid], want[valid], rtol=1e-5, atol=1e-5)
        if units[b] == "linear":
            assert (got[b][valid] > 0).all()


def test_speckle_filter_raster_estimates_looks_on_the_sample(tmp_path, sample_sar, sample_array, sample_series):
    dst = tmp_path / "est.tif"
    messages = []
    result = preprocess.speckle_filter_raster(
        sample_sar, str(dst), SpeckleSettings(filter_name="lee", looks=None), log=messages.append
    )
    looks = result["looks"]
    print(f"estimated looks on the sample scene: {looks} (generator: {sample_series.looks})")
    assert sample_series.looks == 4.4
    for value in looks:
        assert 4.4 * 0.65 <= value <= 4.4 * 1.35
    assert any("Estimated number of looks" in m for m in messages)
    assert json.loads(gdal.Open(str(dst)).GetMetadata()["SARSEG_LOOKS"]) == [round(v, 4) for v in looks]
    # The estimate is the one used by the filter.
    got = read_raster(dst)
    for b in range(2):
        valid = sample_array[b] != 0.0
        want = reference_filter("lee", sample_array[b], valid, looks=looks[b])
        np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=0)


def test_speckle_filter_raster_estimates_looks_on_pure_speckle(tmp_path):
    rng = np.random.default_rng(11)
    a = 0.08 * rng.gamma(4.4, 1.0 / 4.4, (1, 256, 256))
    src = write_tif(tmp_path / "flat.tif", a, nodata=0.0)
    result = preprocess.speckle_filter_raster(src, str(tmp_path / "o.tif"), SpeckleSettings("kuan", looks=None))
    print(f"estimated looks on pure 4.4-look speckle: {result['looks'][0]:.3f}")
    assert result["looks"][0] == pytest.approx(4.4, rel=0.10)
    # A 1-look field gives about 1.
    b = 0.08 * rng.gamma(1.0, 1.0, (1, 256, 256))
    src = write_tif(tmp_path / "flat1.tif", b, nodata=0.0)
    result = preprocess.speckle_filter_raster(src, str(tmp_path / "o1.tif"), SpeckleSettings("lee", looks=None))
    assert result["looks"][0] == pytest.approx(1.0, rel=0.10)


def test_speckle_filter_raster_refuses_bad_settings_before_writing(tmp_path, sample_sar):
    for settings in (SpeckleSettings("wiener"), SpeckleSettings("lee", window=4), SpeckleSettings("lee", looks=0)):
        with pytest.raises(SarSegError):
            preprocess.speckle_filter_raster(sample_sar, str(tmp_path / "bad.tif"), settings)
    assert os.listdir(tmp_path) == []


def test_speckle_filter_raster_cancel_leaves_nothing(tmp_path, sample_sar, small_blocks):
    calls = []

    def is_canceled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(CancelledError):
        preprocess.speckle_filter_raster(sample_sar, str(tmp_path / "c.tif"), SpeckleSettings("lee"),
                                         is_canceled=is_canceled)  # fmt: skip
    assert len(calls) == 2
    assert os.listdir(tmp_path) == []


# --- dB conversion ----------------------------------------------------------------------------------


def test_convert_db_raster_values_units_and_nodata(tmp_path, sample_sar, sample_array):
    dst = tmp_path / "db.tif"
    progress = []
    result = preprocess.convert_db_raster(sample_sar, str(dst), progress=progress.append)
    assert result["directions"] == ["to_db", "to_db"]  # auto: the bands say 'linear'
    got = read_raster(dst)
    valid = sample_array != 0.0
    np.testing.assert_allclose(got[valid], 10.0 * np.log10(sample_array[valid].astype(np.float64)), rtol=1e-6)
    assert_nan_nodata(dst, got, ~valid)
    descriptions, units, _ = band_info(dst)
    assert descriptions == ["VV", "VH"] and units == ["dB", "dB"]
    assert gdal.Open(str(dst)).GetMetadata()["SARSEG_CONVERSION"] == "to_db,to_db"
    assert progress[-1] == pytest.approx(100.0)
    # And back: auto sees 'dB' units and converts to linear.
    back = tmp_path / "lin.tif"
    result = preprocess.convert_db_raster(str(dst), str(back))
    assert result["directions"] == ["to_linear", "to_linear"]
    lin = read_raster(back)
    np.testing.assert_allclose(lin[valid], sample_array[valid], rtol=1e-5)
    assert_nan_nodata(back, lin, ~valid)
    assert band_info(back)[1] == ["linear", "linear"]


@pytest.mark.parametrize("nonpositive_to_nodata", [False, True])
def test_convert_db_raster_floor_and_nonpositive_to_nodata(tmp_path, nonpositive_to_nodata):
    a = np.array([[[0.1, 0.0, -0.5, 1.0], [1e-7, -9999.0, 2.0, 1e-3]]], np.float32)
    src = write_tif(tmp_path / "a.tif", a, nodata=-9999.0, units=["linear"])
    dst = tmp_path / "b.tif"
    preprocess.convert_db_raster(src, str(dst), direction="to_db", floor_db=-40.0,
                                 nonpositive_to_nodata=nonpositive_to_nodata)  # fmt: skip
    got = read_raster(dst)[0]
    # The input nodata -9999 is not reused: NaN is the output nodata, and 1.0 gives a valid 0 dB.
    assert math.isnan(band_info(dst)[2][0])
    low = np.nan if nonpositive_to_nodata else -40.0
    expected = np.array([[-10.0, low, low, 0.0], [low, np.nan, 10 * np.log10(2.0), -30.0]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-5, atol=1e-5)
    assert got[0, 3] == 0.0
    assert not (got == -9999.0).any()


def test_convert_db_raster_without_nodata_uses_nan(tmp_path):
    a = np.array([[[np.nan, 10.0], [-3.0, -20.0]]], np.float32)
    src = write_tif(tmp_path / "d.tif", a, units=["dB"])
    dst = tmp_path / "l.tif"
    preprocess.convert_db_raster(src, str(dst))
    got = read_raster(dst)
    invalid = np.isnan(a)
    assert_nan_nodata(dst, got, invalid)
    np.testing.assert_allclose(got[~invalid], 10.0 ** (np.array([10.0, -3.0, -20.0]) / 10.0), rtol=1e-6)


def test_convert_db_raster_unknown_direction(tmp_path, sample_sar):
    with pytest.raises(SarSegError):
        preprocess.convert_db_raster(sample_sar, str(tmp_path / "x.tif"), direction="to_amplitude")
    assert os.listdir(tmp_path) == []


# --- Normalisation ----------------------------------------------------------------------------------


def _small_raster(seed, shape=(2, 70, 90), loc=(0.05, -15.0), scale=(0.02, 3.0)):
    rng = np.random.default_rng(seed)
    a = np.stack([rng.normal(loc[b], scale[b], shape[1:]) for b in range(shape[0])]).astype(np.float32)
    a[0, :10, :12] = -9999.0
    a[1, 60:, 80:] = -9999.0
    a[1, 5, 5] = np.nan
    return a


def _valid(a, nodata=-9999.0):
    return np.isfinite(a) & (a != nodata)


def test_normalize_raster_zscore_gives_zero_mean_unit_std(tmp_path):
    a = _small_raster(0)
    src = write_tif(tmp_path / "a.tif", a, nodata=-9999.0, descriptions=["VV", "VH"])
    dst = tmp_path / "n.tif"
    stats_path = tmp_path / "stats.json"
    stats = preprocess.normalize_raster(src, str(dst), stats_path=str(stats_path))
    got = read_raster(dst)
    ok = _valid(a)
    for b in range(2):
        v = a[b][ok[b]].astype(np.float64)
        assert got[b][ok[b]].mean() == pytest.approx(0.0, abs=1e-5)
        assert got[b][ok[b]].astype(np.float64).std() == pytest.approx(1.0, rel=1e-5)
        np.testing.assert_allclose(got[b][ok[b]], (v - v.mean()) / v.std(), rtol=1e-4, atol=1e-5)
        assert stats.bands[b].mean == pytest.approx(v.mean(), rel=1e-9)
        assert stats.bands[b].std == pytest.approx(v.std(), rel=1e-9)
        assert stats.bands[b].sample_size == v.size
    assert_nan_nodata(dst, got, ~ok)
    assert not (got == -9999.0).any()
    assert [s.name for s in stats.bands] == ["VV", "VH"]
    ds = gdal.Open(str(dst))
    in_metadata = radiometry.NormalizationStats.from_json(ds.GetMetadata()[radiometry.NORMALIZATION_METADATA_KEY])
    assert in_metadata == stats
    assert radiometry.NormalizationStats.from_json(stats_path.read_text()) == stats
    assert float(ds.GetRasterBand(2).GetMetadata()["SARSEG_MEAN"]) == pytest.approx(stats.bands[1].mean, rel=1e-9)
    assert float(ds.GetRasterBand(1).GetMetadata()["SARSEG_STD"]) == pytest.approx(stats.bands[0].std, rel=1e-9)
    assert band_info(dst)[0] == ["VV", "VH"]
    assert ds.GetGeoTransform() == GT
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "n.tif", "stats.json"]


def test_normalize_raster_percentile(tmp_path):
    a = _small_raster(1)
    src = write_tif(tmp_path / "a.tif", a, nodata=-9999.0)
    dst = tmp_path / "p.tif"
    stats = preprocess.normalize_raster(src, str(dst), method="percentile", low_percentile=5, high_percentile=90)
    got = read_raster(dst)
    ok = _valid(a)
    for b in range(2):
        v = a[b][ok[b]].astype(np.float64)
        lo, hi = np.percentile(v, [5, 90])
        assert stats.bands[b].low == pytest.approx(lo) and stats.bands[b].high == pytest.approx(hi)
        np.testing.assert_allclose(got[b][ok[b]], (np.clip(v, lo, hi) - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
        # 5 % of the values sit at 0 and 10 % at 1 after clipping.
        assert (got[b][ok[b]] == 0).mean() == pytest.approx(0.05, abs=0.005)
        assert (got[b][ok[b]] == 1).mean() == pytest.approx(0.10, abs=0.005)
    assert_nan_nodata(dst, got, ~ok)
    assert stats.method == "percentile"


def test_normalize_raster_reuses_stats_of_another_raster(tmp_path):
    a = _small_raster(2)
    b = _small_raster(3, loc=(0.09, -11.0), scale=(0.05, 1.0))
    src_a = write_tif(tmp_path / "a.tif", a, nodata=-9999.0)
    src_b = write_tif(tmp_path / "b.tif", b, nodata=-9999.0)
    stats_a = preprocess.normalize_raster(src_a, str(tmp_path / "na.tif"))
    stats_b = preprocess.normalize_raster(src_b, str(tmp_path / "nb.tif"), stats=stats_a)
    assert [s.mean for s in stats_b.bands] == [s.mean for s in stats_a.bands]
    got = read_raster(tmp_path / "nb.tif")
    ok_a, ok_b = _valid(a), _valid(b)
    for k in range(2):
        va = a[k][ok_a[k]].astype(np.float64)
        vb = b[k][ok_b[k]].astype(np.float64)
        np.testing.assert_allclose(got[k][ok_b[k]], (vb - va.mean()) / va.std(), rtol=1e-4, atol=1e-5)
        # Not B's own z-score: its mean is far from 0.
        assert abs(got[k][ok_b[k]].mean()) > 0.5
    assert_nan_nodata(tmp_path / "nb.tif", got, ~ok_b)
    md = gdal.Open(str(tmp_path / "nb.tif")).GetMetadata()[radiometry.NORMALIZATION_METADATA_KEY]
    assert radiometry.NormalizationStats.from_json(md).bands == stats_a.bands


def test_normalize_raster_refuses_stats_with_other_band_count(tmp_path):
    a = _small_raster(4)
    src = write_tif(tmp_path / "a.tif", a, nodata=-9999.0)
    one = write_tif(tmp_path / "one.tif", a[:1], nodata=-9999.0)
    stats = preprocess.normalize_raster(src, str(tmp_path / "n.tif"))
    with pytest.raises(SarSegError):
        preprocess.normalize_raster(one, str(tmp_path / "n1.tif"), stats=stats)
    assert not (tmp_path / "n1.tif").exists()


@pytest.mark.parametrize("func", ["normalize", "speckle", "convert"])
def test_output_equal_to_input_is_refused_and_input_untouched(tmp_path, func):
    a = _small_raster(5)
    src = write_tif(tmp_path / "a.tif", np.abs(a), nodata=9999.0)
    before = Path(src).read_bytes()
    calls = {
        "normalize": lambda p: preprocess.normalize_raster(src, p),
        "speckle": lambda p: preprocess.speckle_filter_raster(src, p, SpeckleSettings("lee")),
        "convert": lambda p: preprocess.convert_db_raster(src, p),
    }
    with pytest.raises(SarSegError):
        calls[func](src)
    # The same file through another spelling of its path.
    with pytest.raises(SarSegError):
        calls[func](os.path.join(str(tmp_path), ".", "a.tif"))
    assert Path(src).read_bytes() == before
    assert os.listdir(tmp_path) == ["a.tif"]


@pytest.mark.parametrize("func", ["normalize", "speckle", "convert"])
def test_all_nodata_raster_is_refused_without_output(tmp_path, func):
    a = np.full((2, 20, 30), -9999.0, np.float32)
    a[1, 3, 3] = np.nan
    src = write_tif(tmp_path / "empty.tif", a, nodata=-9999.0)
    dst = str(tmp_path / "out.tif")
    calls = {
        "normalize": lambda: preprocess.normalize_raster(src, dst, stats_path=str(tmp_path / "s.json")),
        "speckle": lambda: preprocess.speckle_filter_raster(src, dst, SpeckleSettings("lee")),
        "convert": lambda: preprocess.convert_db_raster(src, dst),
    }
    with pytest.raises(SarSegError, match="no valid pixel"):
        calls[func]()
    assert os.listdir(tmp_path) == ["empty.tif"]


# --- Nodata value colliding with valid output values ---------------------------------------------------


def test_normalize_raster_percentile_keeps_every_valid_pixel_valid(tmp_path, sample_sar, sample_array):
    """Percentile normalisation maps the values at or below the low percentile to exactly 0.0, the sample's
    input nodata: the output nodata is NaN so that those valid pixels stay valid."""
    dst = tmp_path / "p.tif"
    preprocess.normalize_raster(sample_sar, str(dst), method="percentile")
    got = read_raster(dst)
    ds = raster_io.open_raster(str(dst))
    info = raster_io.read_info(ds)
    assert all(math.isnan(nd) for nd in info.nodata)
    out_valid = raster_io.valid_mask(got, info.nodata)
    in_valid = sample_array != 0.0
    np.testing.assert_array_equal(out_valid, in_valid)
    assert_nan_nodata(dst, got, ~in_valid)
    for b in range(2):
        v = sample_array[b][in_valid[b]].astype(np.float64)
        lo, hi = np.percentile(v, [2, 98])
        np.testing.assert_allclose(got[b][in_valid[b]], (np.clip(v, lo, hi) - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
        # The valid pixels clipped to the low percentile are exactly 0.0, and valid.
        zeros = got[b][in_valid[b]] == 0.0
        assert zeros.mean() == pytest.approx(0.02, abs=0.005)


def test_convert_db_raster_keeps_a_linear_one_valid(tmp_path):
    """A valid linear 1.0 becomes 0 dB, the input's nodata value: the output nodata is NaN, so it stays valid."""
    a = np.full((1, 4, 4), 0.5, np.float32)
    a[0, 0, 0] = 1.0
    a[0, 3, 3] = 0.0  # the nodata pixel
    src = write_tif(tmp_path / "a.tif", a, nodata=0.0, units=["linear"])
    dst = tmp_path / "db.tif"
    preprocess.convert_db_raster(src, str(dst), direction="to_db")
    got = read_raster(dst)
    ds = raster_io.open_raster(str(dst))
    info = raster_io.read_info(ds)
    assert math.isnan(info.nodata[0])
    valid = raster_io.valid_mask(got, info.nodata)
    np.testing.assert_array_equal(valid, a != 0.0)
    assert_nan_nodata(dst, got, a == 0.0)
    assert got[0, 0, 0] == 0.0
    np.testing.assert_allclose(got[valid & (a != 1.0)], 10.0 * np.log10(0.5), rtol=1e-6)


# --- Outputs never overwrite inputs; failures leave nothing; metadata describes the output ------------


def test_normalize_refuses_a_statistics_file_that_is_the_input(tmp_path, sample_sar):
    src = tmp_path / "in.tif"
    src.write_bytes(Path(sample_sar).read_bytes())
    before = src.read_bytes()
    with pytest.raises(SarSegError, match="is the input raster"):
        preprocess.normalize_raster(str(src), str(tmp_path / "out.tif"), stats_path=str(src))
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_normalize_with_an_unwritable_statistics_file_leaves_no_raster(tmp_path, sample_sar):
    out = tmp_path / "out.tif"
    with pytest.raises(SarSegError, match="folder '.*missing' does not exist"):
        preprocess.normalize_raster(sample_sar, str(out), stats_path=str(tmp_path / "missing" / "stats.json"))
    assert list(tmp_path.iterdir()) == []


def test_sarseg_metadata_of_the_input_is_not_carried_to_the_output(tmp_path, sample_sar):
    normalized, filtered, converted = tmp_path / "n.tif", tmp_path / "f.tif", tmp_path / "c.tif"
    preprocess.normalize_raster(sample_sar, str(normalized))
    assert radiometry.NORMALIZATION_METADATA_KEY in gdal.Open(str(normalized)).GetMetadata()
    preprocess.speckle_filter_raster(sample_sar, str(filtered), SpeckleSettings())
    ds = gdal.Open(str(filtered))
    assert ds.GetMetadataItem("SARSEG_SPECKLE_FILTER") == "lee"
    preprocess.convert_db_raster(str(filtered), str(converted), direction="to_db")
    out = gdal.Open(str(converted))
    assert "SARSEG_SPECKLE_FILTER" not in out.GetMetadata()
    assert out.GetMetadataItem("ACQUISITION_DATE") == ds.GetMetadataItem("ACQUISITION_DATE") == "2026-03-01"


def test_raster_without_georeferencing_gives_an_output_without_it(tmp_path):
    rng = np.random.default_rng(3)
    data = (0.05 * rng.gamma(4.4, 1 / 4.4, size=(40, 50))).astype(np.float32)
    src = tmp_path / "radar_geometry.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 50, 40, 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    out = tmp_path / "lee.tif"
    preprocess.speckle_filter_raster(str(src), str(out), SpeckleSettings("lee", 5, 4.4))
    result = gdal.Open(str(out))
    assert result.GetGeoTransform(can_return_null=True) is None
    np.testing.assert_allclose(result.GetRasterBand(1).ReadAsArray(), speckle.lee_filter(data, 5, 4.4), rtol=1e-6)
