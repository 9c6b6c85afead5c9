"""Flood class-map series for evaluating map forecasters only (never for training).

The forecasters are trained on :mod:`training.synthetic` and :mod:`training.forecast_family`; a score on series they
made would measure how well a model learned their conventions. The series here share only the class ids with them
and are built another way:

* **Terrain**: a digital elevation model from a sum of random anisotropic Gaussian hills and hollows on a regional
  tilt; a river traced by a random walk with persistent curvature (meanders) is carved into it with a flat-bottomed
  valley, its bed falling downstream. The height above the nearest drainage (HAND) is the ground height above the
  river bed pixel nearest to it.
* **Land cover** from the terrain: forest on high and steep ground (and sometimes a broken riparian strip), a town on
  high ground near the river, fields stamped as overlapping random rectangles at a drawn orientation, sometimes a
  pond on the floodplain, sometimes a straight swath edge of no-data.
* **Water**: daily rain (drizzle plus a storm of 4-8 days, sometimes a second small pulse) drives two linear
  reservoirs in series (catchment, then river reach); the reach storage above base flow sets the stage, and the
  flood covers the fields and meadows whose HAND is under the stage and that a flood-fill from the river reaches
  (through woods and streets too, which stay mapped as forest and built-up). The peak stage is set so the flooded
  share of the scene peaks at 10-35 %; the rise lasts about 4-9 days.

Usage: :func:`make_eval_flood_windows` gives forecast windows and the phase (rising, receding, steady) of each
window's forecast period, to score forecasters per phase against persistence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training import forecasting
from training.synthetic import BARE_SOIL, BUILT_UP, FOREST, LABEL_NODATA, VEGETATION, WATER

PHASES: tuple[str, ...] = ("rising", "receding", "steady")
_SPIN_UP = 12  # days of weather before day 0 (reservoirs settle on the base flow)
_DAY_TOLERANCE = 0.001  # share of the valid pixels: a smaller daily change in flooded area is "steady"
_WINDOW_TOLERANCE = 0.002  # the same over a window's forecast period


@dataclass
class EvalFloodSeries:
    """One evaluation flood series; ``labels`` is (days, H, W) with ``LABEL_NODATA`` outside ``valid``.

    ``phase[t]`` says whether the flooded area grew ("rising"), shrank ("receding") or stayed ("steady") from the
    day before. ``flooded`` is the flooded share of the valid pixels per day (permanent water excluded), ``hand`` the
    height above the nearest drainage (m), ``permanent`` the river and ponds and ``land_cover`` the map without flood.
    """

    labels: np.ndarray
    valid: np.ndarray
    phase: list[str]
    seed: int
    flooded: np.ndarray | None = None
    hand: np.ndarray | None = None
    permanent: np.ndarray | None = None
    land_cover: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# Terrain
# --------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the pixel centres."""
    y, x = np.indices((size, size), dtype=np.float64) + 0.5
    return y, x


def _hills(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sum of random anisotropic Gaussian hills (positive) and hollows (negative) on a regional tilt, metres."""
    y, x = _grid(size)
    dem = rng.normal(0.0, 0.02) * y + rng.normal(0.0, 0.02) * x
    for _ in range(int(rng.integers(20, 45))):
        cy, cx = rng.uniform(-0.2, 1.2, 2) * size
        sy, sx = rng.uniform(0.04, 0.3, 2) * size
        height = rng.uniform(-0.3, 1.0) * 12.0 * math.sqrt(sy * sx) / size  # mostly hills, a few hollows
        dem += height * np.exp(-0.5 * (((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2))
    return dem


def _river_walk(rng: np.random.Generator, size: int) -> np.ndarray:
    """Points (y, x) of a river entering on one edge: a random walk whose curvature is an AR(1) process."""
    edge = int(rng.integers(4))
    along = rng.uniform(0.2, 0.8) * size
    start = [(0.0, along), (along, float(size)), (float(size), along), (along, 0.0)][edge]
    heading = [0.5 * math.pi, math.pi, -0.5 * math.pi, 0.0][edge] + rng.uniform(-0.5, 0.5)
    wiggle = rng.uniform(0.03, 0.09)
    y, x = start
    theta, curvature = heading, 0.0
    points = []
    for _ in range(8 * size):
        curvature = 0.85 * curvature + rng.normal(0.0, wiggle) - 0.03 * (theta - heading)
        theta = heading + float(np.clip(theta + curvature - heading, -1.2, 1.2))
        y += 0.6 * math.sin(theta)
        x += 0.6 * math.cos(theta)
        if not (-1.0 <= y <= size + 1.0 and -1.0 <= x <= size + 1.0):
            break
        points.append((y, x))
    return np.array(points)


@dataclass
class _Terrain:
    dem: np.ndarray
    hand: np.ndarray
    river: np.ndarray  # bool
    distance: np.ndarray  # pixels from the river centre line


def _terrain(rng: np.random.Generator, size: int) -> _Terrain:
    """DEM with a river and its valley carved in, and the height above the nearest drainage."""
    points = _river_walk(rng, size)
    rows = np.clip(np.floor(points[:, 0]).astype(int), 0, size - 1)
    cols = np.clip(np.floor(points[:, 1]).astype(int), 0, size - 1)
    step = np.full((size, size), -1, dtype=np.int64)
    order = np.arange(rows.size)
    step[rows[::-1], cols[::-1]] = order[::-1]  # the first visit of each pixel wins
    line = step >= 0
    distance, (ny, nx) = ndimage.distance_transform_edt(~line, return_indices=True)
    along = step[ny, nx] / max(1, rows.size)  # 0 upstream .. 1 downstream
    bed = -rng.uniform(0.5, 3.0) * along  # the bed falls downstream
    width = rng.uniform(2.2, 3.2) + rng.uniform(0.0, 2.0) * along
    river = distance < 0.5 * width

    valley_width = rng.uniform(0.08, 0.25) * size
    valley_depth = rng.uniform(2.0, 6.0)
    rise = 1.0 - np.exp(-distance / valley_width)  # flat floodplain near the river, then the valley sides
    hills = rng.uniform(0.3, 1.5) * _hills(rng, size)
    micro = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.8, 2.0))
    micro *= rng.uniform(0.05, 0.25) / (micro.std() + 1e-12)
    hills -= hills.min()
    dem = bed + valley_depth * rise + hills * rise**2 + micro
    dem[river] = bed[river] - 0.5
    return _Terrain(dem=dem, hand=dem - bed, river=river, distance=distance)


# --------------------------------------------------------------------------------------------
# Land cover
# --------------------------------------------------------------------------------------------


def _standard(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(values - mean) / std over mask."""
    if not mask.any():
        return np.zeros_like(values)
    return (values - values[mask].mean()) / (values[mask].std() + 1e-12)


def _stamped_fields(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vegetation / bare soil patchwork: overlapping random rectangles painted in turn at one orientation."""
    y, x = _grid(size)
    angle = rng.uniform(0.0, math.pi) if rng.random() < 0.6 else float(rng.integers(2)) * 0.5 * math.pi
    u = (x - 0.5 * size) * math.cos(angle) + (y - 0.5 * size) * math.sin(angle)
    v = -(x - 0.5 * size) * math.sin(angle) + (y - 0.5 * size) * math.cos(angle)
    long_side, short_side = rng.uniform(8.0, 24.0), rng.uniform(3.0, 10.0)
    share_veg = rng.uniform(0.35, 0.75)
    fields = np.where(rng.random() < share_veg, VEGETATION, BARE_SOIL) * np.ones((size, size), dtype=np.uint8)
    extent = 0.75 * size
    for _ in range(int(3.0 * size * size / (long_side * short_side))):
        cu, cv = rng.uniform(-extent, extent, 2)
        half_u = 0.5 * long_side * rng.uniform(0.5, 1.5)
        half_v = 0.5 * short_side * rng.uniform(0.5, 1.5)
        inside = (np.abs(u - cu) < half_u) & (np.abs(v - cv) < half_v)
        fields[inside] = VEGETATION if rng.random() < share_veg else BARE_SOIL
    return fields


def _town(rng: np.random.Generator, terrain: _Terrain, land: np.ndarray) -> np.ndarray:
    """A town on high ground not far from the river, outline from a few angular harmonics."""
    size = land.shape[0]
    near = land & (terrain.distance > 0.08 * size) & (terrain.distance < 0.45 * size)
    if not near.any():
        return np.zeros_like(land)
    high = near & (terrain.hand >= np.quantile(terrain.hand[near], 0.75))
    rows, cols = np.nonzero(high)
    k = int(rng.integers(rows.size))
    cy, cx = rows[k] + 0.5, cols[k] + 0.5
    y, x = _grid(size)
    theta = np.arctan2(y - cy, x - cx)
    radius = rng.uniform(0.05, 0.12) * size
    for harmonic in (2, 3, 5):
        radius = radius * (1.0 + rng.uniform(0.0, 0.18) * np.cos(harmonic * theta + rng.uniform(0.0, 2.0 * math.pi)))
    return land & (np.hypot(y - cy, x - cx) < radius)


def _swath_edge(rng: np.random.Generator, size: int) -> np.ndarray:
    """All True, or False beyond a slanted, slightly wavy line across one corner (a few % of the scene)."""
    if rng.random() >= 0.4:
        return np.ones((size, size), dtype=bool)
    y, x = _grid(size)
    corner = int(rng.integers(4))
    yy = y if corner & 1 else size - y
    xx = x if corner & 2 else size - x
    slant = rng.uniform(0.5, 2.0)
    cut = rng.uniform(0.12, 0.3) * size * (1.0 + slant) / 2.0
    wobble = 0.8 * np.sin(2.0 * math.pi * (xx - yy) / rng.uniform(10.0, 30.0))
    return yy + slant * xx + wobble > cut


def _land_cover(rng: np.random.Generator, terrain: _Terrain, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, permanent water) from the terrain."""
    size = valid.shape[0]
    permanent = terrain.river.copy()
    if rng.random() < 0.35:  # a pond on the floodplain
        plain = ~permanent & (terrain.distance > 6.0) & (terrain.distance < 0.25 * size) & valid
        if plain.any():
            rows, cols = np.nonzero(plain)
            k = int(rng.integers(rows.size))
            y, x = _grid(size)
            a, b = rng.uniform(1.5, 4.5, 2)
            pond = ((y - rows[k] - 0.5) / a) ** 2 + ((x - cols[k] - 0.5) / b) ** 2 < 1.0
            permanent |= pond
            terrain.hand[pond] = np.minimum(terrain.hand[pond], -0.2)
    permanent &= valid
    land = valid & ~permanent

    classes = _stamped_fields(rng, size)
    grad_y, grad_x = np.gradient(terrain.dem)
    slope = np.hypot(grad_y, grad_x)
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(1.5, 4.0))
    score = (
        rng.uniform(0.5, 1.5) * _standard(terrain.hand, land)
        + rng.uniform(0.0, 1.0) * _standard(slope, land)
        + rng.uniform(0.5, 1.5) * _standard(noise, land)
    )
    forest_share = rng.uniform(0.05, 0.3)
    if land.any():
        classes[land & (score > np.quantile(score[land], 1.0 - forest_share))] = FOREST
    if rng.random() < 0.4:  # broken riparian forest along the banks
        bank = land & ndimage.binary_dilation(terrain.river, iterations=2) & (_standard(noise, land) > 0.3)
        classes[bank] = FOREST
    classes[_town(rng, terrain, land)] = BUILT_UP
    classes[permanent] = WATER
    classes[~valid] = LABEL_NODATA
    return classes, permanent


# --------------------------------------------------------------------------------------------
# Weather and flood
# --------------------------------------------------------------------------------------------


def _river_stage(rng: np.random.Generator, days: int) -> np.ndarray:
    """Relative stage (0 = base flow, 1 = peak) for spin-up + days, from rain through two linear reservoirs."""
    total = _SPIN_UP + days
    rain = rng.gamma(0.6, 0.15, total)  # drizzle
    start = _SPIN_UP + int(rng.integers(0, 3))
    length = int(rng.integers(4, 9))
    intensity = rng.uniform(1.0, 3.0)
    rain[start : start + length] += intensity * rng.uniform(0.7, 1.3, length)[: max(0, total - start)]
    if rng.random() < 0.3:  # a second, smaller pulse during the recession
        later = start + length + int(rng.integers(2, 5))
        rain[later : later + 2] += 0.4 * intensity * rng.uniform(0.5, 1.0, 2)[: max(0, total - later)]
    k_catchment, k_reach = rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.45)
    base = float(np.mean(rain[:start]))
    catchment, reach = base / k_catchment, base / k_reach
    storage = np.empty(total)
    for t in range(total):
        inflow = k_catchment * catchment
        catchment += rain[t] - inflow
        reach += inflow - k_reach * reach
        storage[t] = reach
    above = np.maximum(storage - np.median(storage[:start]), 0.0)
    return (above / max(float(above.max()), 1e-9)) ** rng.uniform(0.6, 1.0)


def _inundation(
    hand: np.ndarray, stage: float, floodable: np.ndarray, permanent: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Floodable pixels under the stage reached by a flood-fill from permanent water.

    The water spreads over any ground under the stage (under trees and between houses too), but only open land
    (vegetation, bare soil) is mapped as water.
    """
    if stage <= 0 or not permanent.any():
        return np.zeros_like(floodable)
    passable = permanent | (valid & (hand < stage))
    reached = ndimage.binary_propagation(permanent, mask=passable)
    return reached & floodable & ~permanent


def _phase(change: float, tolerance: float) -> str:
    return "rising" if change > tolerance else "receding" if change < -tolerance else "steady"


def generate_eval_flood(seed: int, size: int = 96, days: int = 15) -> EvalFloodSeries:
    """One evaluation flood series (deterministic by seed): a rain-driven river flood rising then receding."""
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    if days < 2:
        raise ValueError(f"days must be at least 2, got {days}")
    terrain_rng, cover_rng, weather_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 0xF100D]).spawn(3)
    )
    terrain = _terrain(terrain_rng, size)
    valid = _swath_edge(cover_rng, size)
    classes, permanent = _land_cover(cover_rng, terrain, valid)
    floodable = (classes == VEGETATION) | (classes == BARE_SOIL)
    n_valid = float(valid.sum())

    # Peak stage: the flooded share at the peak is drawn in 10-35 %, reached by bisection on the stage.
    target = weather_rng.uniform(0.10, 0.35) * n_valid
    lo, hi = 0.0, float(terrain.hand[floodable].max()) + 1.0 if floodable.any() else 1.0
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        if _inundation(terrain.hand, mid, floodable, permanent, valid).sum() < target:
            lo = mid
        else:
            hi = mid
    peak = hi
    stage = _river_stage(weather_rng, days) * peak

    labels = np.empty((days, size, size), dtype=np.uint8)
    area = np.empty(days + 1)
    area[0] = _inundation(terrain.hand, float(stage[_SPIN_UP - 1]), floodable, permanent, valid).sum()
    for t in range(days):
        flood = _inundation(terrain.hand, float(stage[_SPIN_UP + t]), floodable, permanent, valid)
        labels[t] = classes
        labels[t][flood] = WATER
        area[t + 1] = flood.sum()
    tolerance = _DAY_TOLERANCE * n_valid
    phase = [_phase(float(area[t + 1] - area[t]), tolerance) for t in range(days)]
    return EvalFloodSeries(
        labels=labels,
        valid=valid,
        phase=phase,
        seed=int(seed),
        flooded=area[1:] / max(n_valid, 1.0),
        hand=terrain.hand.astype(np.float32),
        permanent=permanent,
        land_cover=classes,
    )


WINDOW_PERIODS: tuple[str, ...] = ("forecast", "input")


def make_eval_flood_windows(
    seeds: Sequence[int],
    size: int = 96,
    days: int = 15,
    sequence_length: int = 4,
    horizons: int = 3,
    period: str = "forecast",
) -> tuple[forecasting.Windows, np.ndarray]:
    """Every (T input dates -> next K dates) window of one evaluation series per seed, and each window's phase.

    ``period`` "forecast": the phase of the forecast period, the sign of the flooded-area change from the last input
    date to the last forecast date (what happened: a forecaster cannot know it); "input": that of the input dates,
    from the first to the last (what a user sees when the forecast is made). "steady" under 0.2 % of the valid
    pixels.
    """
    if period not in WINDOW_PERIODS:
        raise ValueError(f"period must be one of {', '.join(WINDOW_PERIODS)}, got {period!r}")
    seq, k = int(sequence_length), int(horizons)
    if seq < 1 or k < 1:
        raise ValueError(f"sequence_length and horizons must be >= 1, got {seq} and {k}")
    if days < seq + k:
        raise ValueError(f"{days} days cannot hold {seq} input dates plus {k} forecast dates")
    per_series = days - seq - k + 1
    n = len(seeds) * per_series
    inputs = np.empty((n, seq, len(forecasting.CLASS_NAMES), size, size), dtype=np.float32)
    targets = np.empty((n, k, size, size), dtype=np.uint8)
    phases: list[str] = []
    i = 0
    for seed in seeds:
        series = generate_eval_flood(int(seed), size=size, days=days)
        maps = forecasting.one_hot(series.labels)
        flooded = np.asarray(series.flooded)
        for start in range(per_series):
            end = start + seq
            inputs[i] = maps[start:end]
            targets[i] = series.labels[end : end + k]
            first, last = (end - 1, end + k - 1) if period == "forecast" else (start, end - 1)
            phases.append(_phase(float(flooded[last] - flooded[first]), _WINDOW_TOLERANCE))
            i += 1
    windows = forecasting.Windows(inputs, targets, targets != LABEL_NODATA, "classes")
    return windows, np.array(phases, dtype=str)


# --------------------------------------------------------------------------------------------
# SAR image pairs (for evaluating flood mapping only)
# --------------------------------------------------------------------------------------------

#: Flood-mapping truth classes of :func:`flood_sar_pair` (those of ``sarseg:flood_map``).
PAIR_DRY, PAIR_FLOODED, PAIR_PERMANENT, PAIR_NODATA = 0, 1, 2, 255


@dataclass
class FloodPair:
    """A pre-event and a post-event VV/VH image (linear power, (2, H, W), 0 outside ``valid``) of one evaluation
    flood series, the truth (dry, flooded, permanent water, 255 outside) and the height above drainage (m)."""

    pre: np.ndarray
    post: np.ndarray
    truth: np.ndarray
    hand: np.ndarray
    valid: np.ndarray
    seed: int


def flood_sar_pair(seed: int, size: int = 256, looks: float = 4.4, days: int = 15) -> FloodPair:
    """SAR images of the driest and the most flooded day of :func:`generate_eval_flood`'s series ``seed``, with a
    radiometry of their own: the evaluation-only generator's class levels (:mod:`training.evalgen`), a level per
    field drawn around them, flood water darker or brighter than the river (-21..-15 dB VV: calm, or with grass
    sticking out), a noise floor, and independent Gamma speckle of ``looks`` looks on each date. Flooded woods and
    streets stay as they are (the series maps them so, and C-band does not see water under them)."""
    from training.evalgen import _LEVEL_DB, _OBJECT_SPREAD_DB

    series = generate_eval_flood(seed, size, days)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A12]))
    shares = series.flooded if series.flooded is not None else np.zeros(days)
    before, after = int(np.argmin(shares)), int(np.argmax(shares))
    cover = series.land_cover
    valid = series.valid
    # Fields: connected areas of one class in the flood-free map, each with its own level.
    objects = np.zeros(cover.shape, np.int64)
    count = 0
    for c in range(5):
        lab, k = ndimage.label((cover == c) & valid)
        objects[lab > 0] = lab[lab > 0] + count
        count += k
    obj_class = np.zeros(count + 1, np.int64)
    obj_class[objects[objects > 0]] = cover[objects > 0]
    obj_offset = rng.normal(0.0, 1.0, count + 1)[:, None] * _OBJECT_SPREAD_DB[obj_class][:, None]
    level = _LEVEL_DB[obj_class] + obj_offset  # (objects, 2) dB
    flood_db = np.array([rng.uniform(-21.0, -15.0), rng.uniform(-27.0, -22.0)])
    floor_db = rng.uniform(-26.0, -22.0)
    images = []
    for day in (before, after):
        db = level[objects].transpose(2, 0, 1).copy()  # (2, H, W)
        flooded_now = (series.labels[day] == WATER) & (cover != WATER) & valid
        db[:, flooded_now] = flood_db[:, None]
        power = 10.0 ** (db / 10.0) + 10.0 ** (floor_db / 10.0)
        speckled = power * rng.gamma(looks, 1.0 / looks, power.shape)
        images.append(np.where(valid[None], speckled, 0.0).astype(np.float32))
    pre_water = (series.labels[before] == WATER) & valid
    post_water = (series.labels[after] == WATER) & valid
    truth = np.full(cover.shape, PAIR_DRY, np.uint8)
    truth[post_water & ~pre_water] = PAIR_FLOODED
    truth[post_water & pre_water] = PAIR_PERMANENT
    truth[~valid] = PAIR_NODATA
    return FloodPair(images[0], images[1], truth, series.hand, valid, int(seed))


def write_flood_pair(pair: FloodPair, folder: str, pixel_m: float = 10.0) -> dict[str, str]:
    """GeoTIFFs of a pair (EPSG:32631, ``pixel_m`` pixels): ``pre`` and ``post`` (VV, VH linear power, nodata 0,
    band units), ``truth`` (classes, 255 outside) and ``hand`` (m). Returns their paths."""
    from pathlib import Path

    from osgeo import gdal, osr

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    h, w = pair.truth.shape
    paths = {}
    for name, data, dtype, nodata in (
        ("pre", pair.pre, gdal.GDT_Float32, 0.0),
        ("post", pair.post, gdal.GDT_Float32, 0.0),
        ("truth", pair.truth[None], gdal.GDT_Byte, 255),
        ("hand", pair.hand[None], gdal.GDT_Float32, None),
    ):
        path = str(out / f"{name}_{pair.seed}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(path, w, h, data.shape[0], dtype, ["COMPRESS=DEFLATE", "TILED=YES"])
        ds.SetGeoTransform((500000.0, pixel_m, 0.0, 5000000.0, 0.0, -pixel_m))
        ds.SetProjection(srs.ExportToWkt())
        for b in range(data.shape[0]):
            band = ds.GetRasterBand(b + 1)
            band.WriteArray(data[b])
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if data.shape[0] == 2:
                band.SetDescription(("VV", "VH")[b])
                band.SetUnitType("linear")
        ds = None
        paths[name] = path
    return paths
