"""Tests of dB conversions, scale detection and normalisation statistics (sar_seg_plugin.core.radiometry)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sar_seg_plugin.core import radiometry
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.radiometry import BandStats, NormalizationStats


def test_to_db_matches_10_log10_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.gamma(4.4, 0.05 / 4.4, 10_000).astype(np.float32) + 1e-4
    db = radiometry.to_db(x)
    assert db.dtype == np.float32
    np.testing.assert_allclose(db, 10.0 * np.log10(x.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(radiometry.from_db(db), x, rtol=1e-6)
    d = np.linspace(-40.0, 10.0, 501, dtype=np.float32)
    np.testing.assert_allclose(radiometry.from_db(d), 10.0 ** (d.astype(np.float64) / 10.0), rtol=1e-6)
    np.testing.assert_allclose(radiometry.to_db(radiometry.from_db(d)), d, rtol=1e-6, atol=1e-5)
    assert radiometry.to_db(np.array([1.0]))[0] == 0.0
    assert radiometry.to_db(np.array([100.0]))[0] == pytest.approx(20.0)


def test_to_db_of_zero_and_negative_is_the_floor():
    x = np.array([0.0, -1.0, -1e-9, 1e-9, 1e-5, 1e-6], np.float64)
    np.testing.assert_array_equal(radiometry.to_db(x), np.float32([-50.0, -50.0, -50.0, -50.0, -50.0, -50.0]))
    y = radiometry.to_db(x, floor_db=-30.0)
    np.testing.assert_allclose(y, [-30.0, -30.0, -30.0, -30.0, -30.0, -30.0], rtol=1e-6)
    assert radiometry.to_db(np.array([1e-2]), floor_db=-30.0)[0] == pytest.approx(-20.0)
    # NaN stays NaN (not the floor).
    assert np.isnan(radiometry.to_db(np.array([np.nan]))[0])


def test_to_db_leaves_its_input_alone_and_takes_scalars():
    x = np.array([[0.0, 0.5], [2.0, -3.0]], np.float32)
    before = x.copy()
    db = radiometry.to_db(x)
    np.testing.assert_array_equal(x, before)
    assert db is not x and db.shape == x.shape
    assert radiometry.to_db(0.01) == pytest.approx(-20.0, abs=1e-5)
    assert np.ndim(radiometry.to_db(0.01)) == 0
    wide = np.array([1e-4, 1e-2, 1.0, 1e3], np.float64)  # float64 in: float32 out, within float32 precision
    np.testing.assert_allclose(radiometry.to_db(wide), [-40.0, -20.0, 0.0, 30.0], rtol=1e-6, atol=1e-5)


def test_band_stats_matches_numpy():
    rng = np.random.default_rng(2)
    v = rng.normal(3.0, 2.0, 5000)
    v[:17] = np.nan
    v[17:20] = np.inf
    s = radiometry.band_stats("VV", v, 5.0, 95.0)
    good = v[np.isfinite(v)]
    assert s.name == "VV"
    assert s.sample_size == good.size == 4980
    assert s.mean == pytest.approx(good.mean(), rel=1e-12)
    assert s.std == pytest.approx(good.std(), rel=1e-12)
    lo, hi = np.percentile(good, [5.0, 95.0])
    assert s.low == pytest.approx(lo, rel=1e-12) and s.high == pytest.approx(hi, rel=1e-12)
    assert (s.low_percentile, s.high_percentile) == (5.0, 95.0)


def test_band_stats_refuses_empty_and_bad_percentiles():
    with pytest.raises(SarSegError):
        radiometry.band_stats("VV", np.array([np.nan, np.inf]))
    with pytest.raises(SarSegError):
        radiometry.band_stats("VV", np.arange(10.0), 50.0, 50.0)
    with pytest.raises(SarSegError):
        radiometry.band_stats("VV", np.arange(10.0), -1.0, 50.0)
    with pytest.raises(SarSegError):
        radiometry.band_stats("VV", np.arange(10.0), 2.0, 101.0)


def _stats(mean=2.0, std=4.0, low=-1.0, high=7.0) -> BandStats:
    return BandStats("b", mean, std, low, high, 2.0, 98.0, 100)


def test_normalize_values_zscore_formula():
    x = np.linspace(-10.0, 10.0, 41)
    got = radiometry.normalize_values(x, _stats(), radiometry.ZSCORE)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (x - 2.0) / 4.0, rtol=1e-6, atol=1e-7)
    # A constant band (std 0) is only centred.
    np.testing.assert_allclose(radiometry.normalize_values(x, _stats(std=0.0), radiometry.ZSCORE), x - 2.0, atol=1e-6)


def test_normalize_values_percentile_formula():
    x = np.linspace(-10.0, 10.0, 41)
    got = radiometry.normalize_values(x, _stats(), radiometry.PERCENTILE)
    expected = (np.clip(x, -1.0, 7.0) + 1.0) / 8.0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.min() == 0.0 and got.max() == 1.0
    assert got[x == 3.0][0] == pytest.approx(0.5)
    flat = radiometry.normalize_values(x, _stats(low=1.0, high=1.0), radiometry.PERCENTILE)
    np.testing.assert_allclose(flat, np.clip(x, 1.0, 1.0) - 1.0, atol=1e-7)


def test_normalize_values_unknown_method():
    with pytest.raises(SarSegError):
        radiometry.normalize_values(np.ones(3), _stats(), "minmax")


def test_normalization_stats_json_round_trip():
    stats = NormalizationStats(
        method=radiometry.PERCENTILE,
        bands=[
            BandStats("VV", 0.0512345678901234, 0.03, 0.001, 0.2, 2.0, 98.0, 25600),
            BandStats("VH", -17.25, 3.5, -26.0, -9.0, 1.0, 99.0, 123),
        ],
    )
    text = stats.to_json()
    data = json.loads(text)
    assert data["method"] == "percentile"
    assert [b["name"] for b in data["bands"]] == ["VV", "VH"]
    assert NormalizationStats.from_json(text) == stats


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[1, 2]", '{"method": "zscore"}', '{"bands": []}', '{"method": "zscore", "bands": [{"x": 1}]}',
     '{"method": "zscore", "bands": [1]}'],
)  # fmt: skip
def test_normalization_stats_from_garbage_raises(text):
    with pytest.raises(SarSegError):
        NormalizationStats.from_json(text)


def test_check_stats_fit():
    stats = NormalizationStats(radiometry.ZSCORE, [_stats(), _stats()])
    radiometry.check_stats_fit(stats, ["VV", "VH"])
    with pytest.raises(SarSegError, match="2 band"):
        radiometry.check_stats_fit(stats, ["VV"])
    with pytest.raises(SarSegError):
        radiometry.check_stats_fit(stats, ["VV", "VH", "ratio"])


# --- sigma0, gamma0, beta0 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Gamma0_VV", "gamma0"),
        ("Gamma0_VH_db", "gamma0"),
        ("Beta0_VV", "beta0"),
        ("Sigma0_VV", "sigma0"),
        ("sigma nought VH", "sigma0"),
        ("γ0 VV", "gamma0"),
        ("VV", None),
        ("Gamma-MAP filtered VV", None),  # a speckle filter, not gamma nought
        ("beta05", None),
        ("", None),
    ],
)
def test_radiometry_word(name, expected):
    assert radiometry.radiometry_word(name) == expected


def test_gamma0_and_beta0_gains_are_cos_and_sin_of_the_incidence():
    # 30 deg: cos = sqrt(3)/2 -> -0.6247 dB, sin = 1/2 -> -3.0103 dB
    gamma = radiometry.plan_radiometry({"INCIDENCE_ANGLE": "30"}, ["Gamma0_VV", "Gamma0_VH"])
    beta = radiometry.plan_radiometry({"RADIOMETRY": "beta0", "INCIDENCE_ANGLE": "30"}, ["VV", "VH"])
    assert (gamma.radiometry, beta.radiometry) == ("gamma0", "beta0")
    assert gamma.gain == pytest.approx(3**0.5 / 2) and gamma.offset_db == pytest.approx(-0.6247, abs=1e-4)
    assert beta.gain == pytest.approx(0.5) and beta.offset_db == pytest.approx(-3.0103, abs=1e-4)
    assert not gamma.assumed_angle
    assert "its band descriptions 'Gamma0_VV', 'Gamma0_VH'" in gamma.note()
    assert "its metadata item RADIOMETRY=beta0" in beta.note() and "INCIDENCE_ANGLE=30" in beta.note()
    assert beta.metadata()[radiometry.RADIOMETRY_METADATA_KEY].startswith("beta0 converted to sigma0 at 30 deg")


def test_sigma0_or_nothing_said_converts_nothing():
    said = radiometry.plan_radiometry({}, ["Sigma0_VV", "Sigma0_VH"])
    unsaid = radiometry.plan_radiometry({"SARSEG_EVAL_SEED": "3"}, ["VV", "VH"], "/data/scene.tif")
    assert not said.converts and not unsaid.converts and said.gain == unsaid.gain == 1.0
    assert said.metadata() == {radiometry.RADIOMETRY_METADATA_KEY: "sigma0"} and unsaid.metadata() == {}
    assert unsaid.source == ""


def test_band_names_win_over_metadata_and_the_file_name():
    plan = radiometry.plan_radiometry({"RADIOMETRY": "beta0"}, ["Sigma0_VV", "Sigma0_VH"], "/x/a_gamma0.tif")
    assert plan.radiometry == "sigma0"
    plan = radiometry.plan_radiometry({"RADIOMETRY": "beta0"}, ["VV", "VH"], "/x/a_gamma0.tif")
    assert plan.radiometry == "beta0"
    plan = radiometry.plan_radiometry({}, ["VV", "VH"], "/x/S1A_IW_20240101_VVVH_gamma0_db.tif")
    assert plan.radiometry == "gamma0" and "its file name 'S1A_IW_20240101_VVVH_gamma0_db.tif'" in plan.source


def test_without_an_angle_the_middle_of_the_iw_swath_is_assumed_and_said():
    plan = radiometry.plan_radiometry({"INCIDENCE_ANGLE": "0.65"}, ["Gamma0_VV"])  # radians, not an angle we take
    assert plan.assumed_angle and plan.incidence_deg == radiometry.ASSUMED_INCIDENCE_DEG
    # the correction across the 29.1-46 deg of an IW swath, cos: -0.59 .. -1.58 dB
    assert "the right correction is -0.6 to -1.6 dB" in plan.note()
    # ESA SNAP's abstracted metadata names the swath's near and far incidence
    snap = radiometry.plan_radiometry({"incidence_near": "30.0", "incidence_far": "46.0"}, ["Beta0_VV"])
    assert snap.incidence_deg == pytest.approx(38.0) and not snap.assumed_angle


def test_bands_of_different_coefficients_are_refused():
    with pytest.raises(SarSegError, match="different backscatter coefficients.*'Sigma0_VV': sigma0.*'Gamma0_VH'"):
        radiometry.plan_radiometry({}, ["Sigma0_VV", "Gamma0_VH"])


def test_an_incidence_angle_band_gives_the_angle():
    angles = np.linspace(33.0, 39.0, 101)  # median 36
    got = radiometry.incidence_from_bands(["Gamma0_VV", "Gamma0_VH", "incidenceAngleFromEllipsoid"],
                                          [np.ones(9), np.ones(9), angles])  # fmt: skip
    assert got == (pytest.approx(36.0), "the median of its band 3 'incidenceAngleFromEllipsoid'")
    # the ellipsoid's incidence before the terrain's local one, whatever their order
    got = radiometry.incidence_from_bands(["localIncidenceAngle", "incidenceAngleFromEllipsoid"],
                                          [np.full(9, 20.0), np.full(9, 40.0)])  # fmt: skip
    assert got[0] == 40.0
    assert radiometry.incidence_from_bands(["angle"], [np.full(9, 0.63)]) is None  # radians: not taken
    assert radiometry.incidence_from_bands(["VV", "triangle"], [np.full(9, 35.0)] * 2) is None
    assert radiometry.incidence_from_bands(["angle"], [np.full(9, 35.0)])[0] == 35.0  # Google Earth Engine's name
    # the band's angle before the metadata's
    plan = radiometry.plan_radiometry({"INCIDENCE_ANGLE": "30"}, ["Beta0_VV"], "", (36.0, "band 3"))
    assert plan.incidence_deg == 36.0 and plan.gain == pytest.approx(np.sin(np.radians(36.0)))
