"""The evaluation-only flood generator: independence from the training generators, determinism, flood shape, windows."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
from scipy import ndimage

from training import evalflood
from training.evalflood import PHASES, generate_eval_flood, make_eval_flood_windows
from training.forecasting import one_hot
from training.synthetic import BARE_SOIL, BUILT_UP, FOREST, LABEL_NODATA, VEGETATION, WATER

SIZE = 64
DAYS = 15
SEEDS = range(6)


@pytest.fixture(scope="module")
def series():
    return [generate_eval_flood(seed, size=SIZE, days=DAYS) for seed in SEEDS]


def test_code_of_its_own():
    source = inspect.getsource(evalflood)
    assert "generate_series" not in source and "_smooth_noise" not in source
    constants = {"WATER", "VEGETATION", "FOREST", "BUILT_UP", "BARE_SOIL", "LABEL_NODATA", "CLASS_NAMES"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert "forecast_family" not in node.module
            if node.module == "training.synthetic":
                assert {alias.name for alias in node.names} <= constants
            if node.module == "training":
                assert {alias.name for alias in node.names}.isdisjoint({"synthetic", "forecast_family"})
        if isinstance(node, ast.Import):
            assert all("synthetic" not in a.name and "forecast_family" not in a.name for a in node.names)


def test_shapes_dtypes_nodata_and_determinism(series):
    s = series[0]
    assert s.labels.shape == (DAYS, SIZE, SIZE) and s.labels.dtype == np.uint8
    assert s.valid.shape == (SIZE, SIZE) and s.valid.dtype == bool
    assert len(s.phase) == DAYS and set(s.phase) <= set(PHASES) and s.seed == 0
    assert (s.labels[:, ~s.valid] == LABEL_NODATA).all() and (s.labels[:, s.valid] < 5).all()
    again = generate_eval_flood(0, size=SIZE, days=DAYS)
    np.testing.assert_array_equal(s.labels, again.labels)
    assert s.phase == again.phase
    assert not np.array_equal(s.labels, series[1].labels)


def test_flood_rises_for_days_then_recedes(series):
    speeds = []
    for s in series:
        peak = int(np.argmax(s.flooded))
        assert 0.08 <= s.flooded[peak] <= 0.40, (s.seed, s.flooded[peak])
        assert s.flooded[0] < 0.05  # the series starts before the flood
        rising = [t for t, p in enumerate(s.phase) if p == "rising"]
        assert 4 <= len(rising) <= 10, (s.seed, s.phase)
        assert "rising" not in s.phase[peak + 1 :] and "receding" in s.phase[peak + 1 :]
        speeds.append(s.flooded[peak] / len(rising))
    assert max(speeds) > 1.5 * min(speeds)  # varied speeds between seeds


def test_phase_follows_the_flooded_area(series):
    for s in series:
        area = np.concatenate([[np.nan], s.flooded])
        for t in range(1, DAYS):
            change = area[t + 1] - area[t]
            expected = "rising" if change > 0.001 else "receding" if change < -0.001 else "steady"
            assert s.phase[t] == expected


def test_only_fields_flood_and_water_reaches_from_the_river(series):
    for s in series:
        dry = s.land_cover
        for t in range(DAYS):
            lab = s.labels[t]
            flooded = (lab == WATER) & ~s.permanent
            assert np.isin(dry[flooded], (VEGETATION, BARE_SOIL)).all()
            np.testing.assert_array_equal(lab[lab != WATER], dry[lab != WATER])  # nothing else changes
            assert (lab[dry == WATER] == WATER).all()
            # Water reaches every flooded field from the river, over open land, under trees or between houses.
            reached = ndimage.binary_propagation(s.permanent, mask=(lab == WATER) | np.isin(dry, (FOREST, BUILT_UP)))
            assert reached[flooded].all()
            if flooded.any():  # low ground first: flooded pixels lie under the unflooded fields of the valley
                assert np.median(s.hand[flooded]) < np.median(s.hand[(lab == VEGETATION) | (lab == BARE_SOIL)])


def test_windows_count_targets_and_phases():
    t, k = 4, 3
    windows, phases = make_eval_flood_windows([0, 1, 2], size=48, days=DAYS, sequence_length=t, horizons=k)
    per = DAYS - t - k + 1
    assert len(windows) == 3 * per and phases.shape == (3 * per,)
    assert windows.inputs.shape == (3 * per, t, 5, 48, 48) and windows.inputs.dtype == np.float32
    assert windows.targets.shape == (3 * per, k, 48, 48) and windows.input_kind == "classes"
    np.testing.assert_array_equal(windows.valid, windows.targets != LABEL_NODATA)
    assert {"rising", "receding"} <= set(phases)
    s = generate_eval_flood(1, size=48, days=DAYS)
    for start in range(per):
        i, end = per + start, start + t
        np.testing.assert_array_equal(windows.inputs[i], one_hot(s.labels[start:end]))
        np.testing.assert_array_equal(windows.targets[i], s.labels[end : end + k])
        change = s.flooded[end + k - 1] - s.flooded[end - 1]
        assert phases[i] == ("rising" if change > 0.002 else "receding" if change < -0.002 else "steady")
    _, seen = make_eval_flood_windows([0, 1, 2], size=48, days=DAYS, sequence_length=t, horizons=k, period="input")
    for start in range(per):
        change = s.flooded[start + t - 1] - s.flooded[start]  # first to last input date of window per + start
        assert seen[per + start] == ("rising" if change > 0.002 else "receding" if change < -0.002 else "steady")
    assert (seen != phases).any()  # a flood that turns: rising in its inputs, receding over its forecast days
    with pytest.raises(ValueError):
        make_eval_flood_windows([0], days=6, sequence_length=4, horizons=3)
    with pytest.raises(ValueError, match="period"):
        make_eval_flood_windows([0], days=DAYS, period="future")
