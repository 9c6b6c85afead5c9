"""Domain randomisation: worlds within the literature ranges, sensors that give the asked ENL and pixel size."""

from __future__ import annotations

import numpy as np
import pytest

from training import domains
from training.domains import SensorDraw, draw_world, multilook, simulate_sensor
from training.synthetic import (
    BUILT_UP,
    CLASS_NAMES,
    FOREST,
    LABEL_NODATA,
    WATER,
    World,
    generate_series,
)


def _enl(x: np.ndarray) -> float:
    x = x.astype(np.float64).ravel()
    return float(x.mean() ** 2 / x.var(ddof=1))


def test_worlds_stay_within_the_literature_ranges_and_vary() -> None:
    worlds = [draw_world(np.random.default_rng(i)) for i in range(300)]
    water_vv = np.array([w.sigma0_db[WATER][0] for w in worlds])
    assert water_vv.min() >= -25.0 and water_vv.max() <= -12.0
    windy = np.array([w.windy for w in worlds])
    assert 0.1 < windy.mean() < 0.3
    assert water_vv[windy].min() >= -16.0  # wind-roughened water is bright in VV ...
    assert max(w.sigma0_db[WATER][1] for w in worlds) <= -22.0  # ... and VH stays dark
    floors = np.array([w.noise_floor_db for w in worlds])
    assert floors.min() >= -30.0 and floors.max() <= -20.0 and floors.std() > 2.0
    assert any(w.urban_texture_nu is None for w in worlds) and any(w.urban_texture_nu for w in worlds)
    assert all(0.0 <= w.urban_bright_fraction <= 0.1 for w in worlds)
    assert any(w.coast for w in worlds) and any(w.nodata_border for w in worlds)
    forest_vv = np.array([w.sigma0_db[FOREST][0] for w in worlds])
    assert forest_vv.min() >= -8.7 - 1e-9 and forest_vv.max() <= -6.3 + 1e-9
    # Centre-weighted: normal with a third of the half-range (1.2 dB) as standard deviation, clipped. Within half
    # the half-range: P(|z| < 1.5) = 0.866 (a uniform draw: 0.5); the ends are still reached.
    near = np.abs(forest_vv + 7.5) < 0.6
    assert 0.8 < near.mean() < 0.93, near.mean()
    assert forest_vv.std() == pytest.approx(0.4, rel=0.15)
    assert forest_vv.min() < -8.2 and forest_vv.max() > -6.8


def test_central_draws_favour_the_centre_and_stay_in_range() -> None:
    rng = np.random.default_rng(5)
    x = np.array([domains.central(rng, 2.0) for _ in range(20000)])
    assert np.abs(x).max() <= 2.0 and np.abs(x).max() > 1.9
    # an independent check of the distribution: normal, sd 2/3, clipped at 3 sd (0.27 % at the ends)
    assert x.std() == pytest.approx(2.0 / 3.0, rel=0.03)
    assert np.mean(np.abs(x) < 2.0 / 3.0) == pytest.approx(0.6827, abs=0.015)
    assert np.mean(np.abs(x) >= 2.0) == pytest.approx(0.0027, abs=0.0015)


def test_a_world_changes_the_scene_and_the_default_world_does_not() -> None:
    plain = generate_series(size=96, days=2, seed=4, n_communes=4)
    again = generate_series(size=96, days=2, seed=4, n_communes=4, world=World())
    assert np.array_equal(plain.sigma0, again.sigma0)
    world = World(
        sigma0_db=tuple((vv - 3.0, vh - 3.0) for vv, vh in World().sigma0_db),
        urban_texture_nu=None,
        urban_bright_fraction=0.0,
        forest_texture_nu=None,
    )
    shifted = generate_series(size=96, days=2, seed=4, n_communes=4, world=world)
    assert np.array_equal(plain.labels, shifted.labels)
    built = (plain.labels[0] == BUILT_UP) & plain.valid
    # no texture: the clean built-up VV is a smooth field; with the default Gamma(2) texture it is not
    assert np.std(np.log(shifted.sigma0_clean[0, 0][built])) < 0.5 * np.std(np.log(plain.sigma0_clean[0, 0][built]))


def test_coast_and_border_add_water_and_nodata() -> None:
    plain = generate_series(size=128, days=2, seed=9, n_communes=4)
    coast = generate_series(size=128, days=2, seed=9, n_communes=4, world=World(coast=True, nodata_border=True))
    assert (coast.labels[0] == WATER).mean() > (plain.labels[0] == WATER).mean() + 0.05
    assert (~coast.valid).mean() > (~plain.valid).mean() + 0.02
    assert np.all(coast.labels[0][~coast.valid] == LABEL_NODATA)


def test_multilook_averages_power_and_takes_the_majority_label() -> None:
    linear = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    labels = np.array([[0, 0, 1, 1], [0, 3, 1, 2], [4, 4, 2, 255], [4, 255, 255, 255]], np.uint8)
    out, ok, lab = multilook(linear, valid, labels, 2)
    assert out.shape == (2, 2, 2)
    assert out[1, 1, 1] == pytest.approx(linear[1, 2:, 2:].mean())
    assert ok.tolist() == [[False, True], [True, True]]
    assert lab.tolist() == [[0, 1], [4, 255]]


@pytest.mark.parametrize(("enl", "factor"), [(1.0, 1), (4.4, 1), (20.0, 2), (4.4, 4)])
def test_sensor_gives_the_asked_enl_at_the_asked_pixel_size(enl: float, factor: int) -> None:
    rng = np.random.default_rng(0)
    size = 256 * factor
    clean = np.full((2, size, size), 0.05, np.float32)
    base = clean * rng.standard_gamma(domains.BASE_LOOKS, clean.shape).astype(np.float32) / domains.BASE_LOOKS
    labels = np.zeros((size, size), np.uint8)
    draw = SensorDraw(factor, enl, None, (0.0, 0.0))
    out, ok, lab = simulate_sensor(base, np.ones((size, size), bool), labels, draw, rng)
    assert out.shape == (2, 256, 256) and ok.all() and (lab == 0).all()
    assert _enl(out[0]) == pytest.approx(enl, rel=0.08)
    assert out[0].mean() == pytest.approx(0.05, rel=0.03)


def test_a_speckle_filter_raises_the_enl_and_keeps_nodata_out() -> None:
    rng = np.random.default_rng(1)
    base = np.full((2, 128, 128), 0.05, np.float32)
    valid = np.ones((128, 128), bool)
    valid[:10] = False
    labels = np.zeros((128, 128), np.uint8)
    out, ok, lab = simulate_sensor(base, valid, labels, SensorDraw(1, 4.4, ("lee", 7), (0.0, 0.0)), rng)
    assert _enl(out[0][ok]) > 3 * 4.4
    assert not ok[:10].any() and (lab[:10] == LABEL_NODATA).all() and (out[:, :10] == 0).all()


def test_sensor_draws_cover_the_ranges() -> None:
    rng = np.random.default_rng(2)
    draws = [SensorDraw.draw(rng, 2) for _ in range(2000)]
    assert {d.factor for d in draws} == {1, 2, 3, 4}
    assert min(d.enl for d in draws) == 1.0 and max(d.enl for d in draws) == 30.0
    share = np.mean([d.filter is not None for d in draws])
    assert share == pytest.approx(domains.FILTER_PROBABILITY, abs=0.04)
    offsets = np.array([d.offset_db for d in draws])
    assert np.abs(offsets).max() <= domains.SCENE_OFFSET_DB + domains.BAND_OFFSET_DB
    assert np.abs(offsets).max() > 2.0
    scene = offsets.mean(axis=1)  # the scene's offset, centre-weighted: most patches within 1 dB of calibrated
    assert np.mean(np.abs(scene) < 1.0) > 0.8
    assert {d.factor for d in (SensorDraw.draw(rng, 2, max_factor=1) for _ in range(50))} == {1}
    assert len(CLASS_NAMES) == 5
