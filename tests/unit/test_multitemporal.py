"""Multi-temporal speckle filter (sar_seg_plugin.core.multitemporal): ENL gain against the independent formula
(N dates of L-look speckle average to N * L looks), levels kept per date, blocks identical to the whole array."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from rasters import write_raster

from sar_seg_plugin.core import multitemporal as mt
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.speckle import enl


def _speckled(levels: np.ndarray, looks: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return levels * rng.gamma(looks, 1.0 / looks, levels.shape)


@pytest.mark.parametrize("dates", [2, 4, 8])
def test_enl_grows_with_the_number_of_dates(dates):
    """Homogeneous area, L = 4.4 looks per date: the filtered ENL is N * L, less what the finite window adds.
    With window w, E[I] has relative variance 1 / (L w²): the expected ENL is 1 / (1/(N L) + 1/(L w²))."""
    looks, window, size = 4.4, 9, 300
    stack = np.stack([_speckled(np.full((size, size), 0.05 * (1 + i)), looks, i) for i in range(dates)])
    valid = np.ones(stack.shape, bool)
    out = mt.quegan_filter(stack, valid, window)
    inner = (slice(window, -window), slice(window, -window))
    expected = 1.0 / (1.0 / (dates * looks) + 1.0 / (looks * window * window))
    for k in range(dates):
        assert enl(stack[k][inner]) == pytest.approx(looks, rel=0.05)
        assert enl(out[k][inner]) == pytest.approx(expected, rel=0.12)
        assert out[k][inner].mean() == pytest.approx(0.05 * (1 + k), rel=0.01)  # each date keeps its level


def test_each_date_keeps_its_own_edges_and_levels():
    """A field that changes from one date to the next keeps each date's level (no smearing of change)."""
    levels = np.full((3, 120, 120), 0.02)
    levels[1, :, 60:] = 0.2  # date 1: the right half is 10 dB brighter
    stack = np.stack([_speckled(levels[i], 4.4, 10 + i) for i in range(3)])
    out = mt.quegan_filter(stack, np.ones(stack.shape, bool), 7)
    right, left = (slice(10, -10), slice(75, -10)), (slice(10, -10), slice(10, 45))
    assert out[1][right].mean() == pytest.approx(0.2, rel=0.05)
    assert out[1][left].mean() == pytest.approx(0.02, rel=0.05)
    assert out[0][right].mean() == pytest.approx(0.02, rel=0.05)


def test_invalid_pixels_stay_nodata_and_others_use_the_dates_they_have():
    stack = np.stack([_speckled(np.full((50, 50), 0.1), 4.4, i) for i in range(3)])
    valid = np.ones(stack.shape, bool)
    valid[0, 20:30, 20:30] = False
    out = mt.quegan_filter(stack, valid, 5)
    assert np.isnan(out[0][20:30, 20:30]).all()
    assert np.isfinite(out[1]).all() and np.isfinite(out[0][~(~valid[0])]).all()


def test_rasters_in_blocks_equal_the_whole_array_filter(tmp_path):
    rng = np.random.default_rng(3)
    levels = 10 ** (rng.uniform(-2.2, -0.5, (1, 1, 1)) + np.zeros((3, 2, 150, 170)))
    stacks = np.stack([_speckled(levels[i], 4.4, 20 + i) for i in range(3)]).astype(np.float32)
    paths = [
        write_raster(tmp_path / f"s1_2026030{i + 1}.tif", stacks[i], descriptions=["VV", "VH"], units=["linear"] * 2)
        for i in range(3)
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    outs = mt.multitemporal_filter_rasters([str(p) for p in paths], str(out_dir), 5, block_size=64)
    assert [p.split("/")[-1] for p in outs] == [f"s1_2026030{i + 1}_mtf.tif" for i in range(3)]
    for b in range(2):
        whole = mt.quegan_filter(stacks[:, b].astype(np.float64), np.ones((3, 150, 170), bool), 5)
        for i, path in enumerate(outs):
            ds = gdal.Open(path)
            assert ds.GetRasterBand(b + 1).GetDescription() == ["VV", "VH"][b]
            np.testing.assert_allclose(ds.GetRasterBand(b + 1).ReadAsArray(), whole[i], rtol=1e-5)


def test_db_rasters_are_filtered_in_linear_power_and_written_in_db(tmp_path):
    lin = np.stack([_speckled(np.full((1, 60, 60), 0.05), 4.4, i) for i in range(2)]).astype(np.float32)
    paths = [
        write_raster(tmp_path / f"d{i}_2026010{i + 1}.tif", 10 * np.log10(lin[i]), descriptions=["VV"], units=["dB"])
        for i in range(2)
    ]
    (tmp_path / "out").mkdir()
    outs = mt.multitemporal_filter_rasters([str(p) for p in paths], str(tmp_path / "out"), 5)
    whole = mt.quegan_filter(lin[:, 0].astype(np.float64), np.ones((2, 60, 60), bool), 5)
    for i, path in enumerate(outs):
        ds = gdal.Open(path)
        assert ds.GetRasterBand(1).GetUnitType() == "dB"
        np.testing.assert_allclose(ds.ReadAsArray(), 10 * np.log10(whole[i]), atol=1e-4)


def test_bad_inputs_write_nothing(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((2, 20, 20), np.float32), descriptions=["VV", "VH"])
    b = write_raster(tmp_path / "b.tif", np.ones((1, 20, 20), np.float32), descriptions=["VV"])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SarSegError, match="at least 2 dates"):
        mt.multitemporal_filter_rasters([str(a)], str(out))
    with pytest.raises(SarSegError, match="same bands"):
        mt.multitemporal_filter_rasters([str(a), str(b)], str(out))
    with pytest.raises(SarSegError, match="odd number"):
        mt.multitemporal_filter_rasters([str(a), str(a)], str(out), 4)
    assert list(out.iterdir()) == []
