"""The forecaster training family: determinism, shapes, per-kind dynamics, segmentation-like errors, windows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from training import forecast_family as ff
from training.forecasting import one_hot
from training.synthetic import BARE_SOIL, BUILT_UP, FOREST, LABEL_NODATA, VEGETATION, WATER

SIZE = 40
DAYS = 8
SEEDS = range(8)


def _flooded(series: ff.FamilySeries) -> np.ndarray:
    return (series.labels == WATER) & ~series.permanent[None]


@pytest.mark.parametrize("kind", ff.FAMILY_KINDS)
def test_shapes_dtypes_and_nodata(kind):
    s = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=3, noisy=True)
    assert s.kind == kind and s.seed == 3 and s.days == DAYS
    assert s.labels.shape == s.observed.shape == (DAYS, SIZE, SIZE)
    assert s.labels.dtype == s.observed.dtype == np.uint8
    assert s.valid.shape == (SIZE, SIZE) and s.valid.dtype == bool
    assert s.elevation.shape == (SIZE, SIZE) and s.level.shape == (DAYS,)
    for maps in (s.labels, s.observed):
        assert (maps[:, ~s.valid] == LABEL_NODATA).all()
        assert (maps[:, s.valid] < 5).all()


@pytest.mark.parametrize("kind", ff.FAMILY_KINDS)
def test_deterministic_by_seed(kind):
    a = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=5, noisy=True)
    b = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=5, noisy=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.observed, b.observed)
    c = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=6, noisy=True)
    assert not np.array_equal(a.observed, c.observed)
    clean = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=5, noisy=False)
    np.testing.assert_array_equal(clean.labels, a.labels)  # the errors never touch the truth
    np.testing.assert_array_equal(clean.observed, clean.labels)


def test_rejects_unknown_kind():
    with pytest.raises(ValueError):
        ff.generate_family_series("tsunami")
    with pytest.raises(ValueError):
        ff.make_family_windows([0], kinds=["tsunami"])


def test_static_days_are_identical():
    for seed in range(4):
        s = ff.generate_family_series("static", size=SIZE, days=DAYS, seed=seed)
        assert (s.labels == s.labels[:1]).all()


@pytest.mark.parametrize("kind", ff.FAMILY_KINDS)
def test_most_pixels_stay_unchanged(kind):
    changes = []
    for seed in SEEDS:
        s = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=seed)
        changes += [float((s.labels[t] != s.labels[t - 1])[s.valid].mean()) for t in range(1, DAYS)]
    assert np.mean(changes) < 0.05
    assert np.median(changes) < 0.03


def test_crops_change_only_vegetation_and_bare_soil():
    changed = 0
    for seed in SEEDS:
        s = ff.generate_family_series("crops", size=SIZE, days=DAYS, seed=seed)
        before, after = s.labels[:-1], s.labels[1:]
        diff = before != after
        changed += int(diff.sum())
        assert np.isin(before[diff], (VEGETATION, BARE_SOIL)).all()
        assert np.isin(after[diff], (VEGETATION, BARE_SOIL)).all()
        assert ((s.labels == WATER) == s.permanent[None]).all()
    assert changed > 0


@pytest.mark.parametrize("kind", ["flood_river", "flood_lake"])
def test_spreading_floods_follow_the_level(kind):
    rose, rose_then_fell = 0, 0
    for seed in range(12):
        s = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=seed)
        flooded = _flooded(s)
        assert s.permanent.any()
        # Only floodable ground floods: vegetation, bare soil, sometimes forest; never built-up.
        assert np.isin(s.base[flooded.any(0)], (VEGETATION, BARE_SOIL, FOREST)).all()
        assert not (s.labels[:, s.base == BUILT_UP] == WATER).any()
        area = flooded.sum((1, 2))
        for t in range(1, DAYS):
            if s.level[t] <= s.level[t - 1]:
                continue  # at the peak or receding: cut-off pockets may linger
            # Rising: every flooded pixel is under the level and connected to the river or lake.
            assert (s.elevation[flooded[t]] < s.level[t] + 1e-4).all()
            components, _ = ndimage.label(s.labels[t] == WATER)
            touching = np.unique(components[s.permanent])
            assert np.isin(components[flooded[t]], touching).all()
        if flooded.any():
            land = s.valid & ~s.permanent
            assert np.median(s.elevation[flooded.any(0)]) < np.median(s.elevation[land])
        up = np.diff(area) > 0
        rose += bool(up.any())
        rose_then_fell += bool(up.any() and (np.diff(area)[np.argmax(up) :] < 0).any())
    assert rose >= 4 and rose_then_fell >= 2


def test_rain_ponds_fill_and_drain_away_from_permanent_water():
    isolated, rose_then_fell = 0, 0
    for seed in range(12):
        s = ff.generate_family_series("flood_rain", size=SIZE, days=DAYS, seed=seed)
        flooded = _flooded(s)
        assert np.isin(s.base[flooded.any(0)], (VEGETATION, BARE_SOIL, FOREST)).all()
        near_permanent = ndimage.binary_dilation(s.permanent, iterations=2)
        for t in range(DAYS):
            components, n = ndimage.label(flooded[t])
            touching = set(np.unique(components[near_permanent]).tolist())
            isolated += len(set(range(1, n + 1)) - touching)
        if flooded.any():  # ponds sit in local depressions
            relief = ndimage.uniform_filter(s.elevation.astype(np.float64), 11) - s.elevation
            assert relief[flooded.any(0)].mean() > 0
        area = flooded.sum((1, 2))
        up = np.diff(area) > 0
        rose_then_fell += bool(up.any() and (np.diff(area)[np.argmax(up) :] < 0).any())
    assert isolated > 0 and rose_then_fell >= 1


def test_noisy_observations_look_like_segmentation_errors():
    pairs = np.zeros((5, 5), dtype=np.int64)
    for kind in ff.FAMILY_KINDS:
        for seed in range(3):
            s = ff.generate_family_series(kind, size=SIZE, days=DAYS, seed=seed, noisy=True)
            wrong = (s.observed != s.labels) & s.valid[None]
            share = wrong.sum() / (DAYS * s.valid.sum())
            assert 0.03 <= share <= 0.20, (kind, seed, share)
            np.add.at(pairs, (s.labels[wrong], s.observed[wrong]), 1)
            # Errors change from day to day (independent draws), unlike the truth of a static scene.
            if kind == "static":
                assert not (s.observed == s.observed[:1]).all()
    both = pairs + pairs.T
    np.fill_diagonal(both, 0)
    assert {int(i) for i in np.unravel_index(np.argmax(both), both.shape)} == {VEGETATION, BARE_SOIL}
    assert pairs[BARE_SOIL, WATER] > pairs[VEGETATION, WATER]
    assert pairs[FOREST, BUILT_UP] > 0 and pairs[BUILT_UP, FOREST] > 0


def test_windows_count_shapes_and_kinds():
    seeds, kinds, t, k = [0, 1], ("flood_river", "crops", "static"), 3, 2
    windows, names = ff.make_family_windows(seeds, kinds, size=24, days=7, sequence_length=t, horizons=k)
    n = len(seeds) * len(kinds) * (7 - t - k + 1)
    assert len(windows) == n and names.shape == (n,)
    assert windows.inputs.shape == (n, t, 5, 24, 24) and windows.inputs.dtype == np.float32
    assert windows.targets.shape == (n, k, 24, 24) and windows.targets.dtype == np.uint8
    assert windows.input_kind == "classes"
    np.testing.assert_array_equal(windows.valid, windows.targets != LABEL_NODATA)
    assert list(names[:3]) == ["flood_river"] * 3 and set(names) == set(kinds)
    again, _ = ff.make_family_windows(seeds, kinds, size=24, days=7, sequence_length=t, horizons=k)
    np.testing.assert_array_equal(windows.inputs, again.inputs)
    with pytest.raises(ValueError):
        ff.make_family_windows([0], days=6, sequence_length=4, horizons=3)


def test_windows_inputs_targets_and_gaps():
    t, k, days, kinds = 4, 2, 8, ("flood_river", "static")
    per = days - t - k + 1
    common = {"size": 24, "days": days, "sequence_length": t, "horizons": k, "noisy_fraction": 1.0}
    plain, _ = ff.make_family_windows([2], kinds, gap_fraction=0.0, **common)
    gapped, _ = ff.make_family_windows([2], kinds, gap_fraction=1.0, **common)
    for j, kind in enumerate(kinds):
        s = ff.generate_family_series(kind, size=24, days=days, seed=2, noisy=True)
        maps = one_hot(s.observed)  # independent errors every day: no two days are alike
        for start in range(per):
            i, end = j * per + start, start + t
            np.testing.assert_array_equal(plain.inputs[i], maps[start:end])
            np.testing.assert_array_equal(plain.targets[i], s.labels[end : end + k])
            np.testing.assert_array_equal(gapped.targets[i], s.labels[end : end + k])
            if start == 0:  # no day before the first input to make room for a gap
                np.testing.assert_array_equal(gapped.inputs[i], maps[start:end])
                continue
            options = [[d for d in range(start - 1, end) if d != start - 1 + drop] for drop in range(1, t)]
            assert sum(np.array_equal(gapped.inputs[i], maps[dates]) for dates in options) == 1
            assert not np.array_equal(gapped.inputs[i], plain.inputs[i])


def test_noisy_fraction_feeds_observed_maps():
    windows, _ = ff.make_family_windows(
        [1], ("crops",), size=24, days=6, sequence_length=3, horizons=2, noisy_fraction=1.0, gap_fraction=0.0
    )
    s = ff.generate_family_series("crops", size=24, days=6, seed=1, noisy=True)
    np.testing.assert_array_equal(windows.inputs[0], one_hot(s.observed[:3]))
    np.testing.assert_array_equal(windows.targets[0], s.labels[3:5])
    assert not np.array_equal(windows.inputs[0], one_hot(s.labels[:3]))
