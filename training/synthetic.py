"""Deterministic synthetic Sentinel-1-like SAR scene series (demo and test data).

The generator builds a square scene tiled by communes, gives each commune an archetype
(floodplain, agricultural, forested, urban) and draws a land-cover map whose class proportions
follow that archetype. It then simulates a daily series of dual-polarisation (VV, VH) C-band
backscatter with a flood that rises and recedes, crop harvest / green-up events, incidence-angle
trend, thermal noise floor and multiplicative Gamma speckle.

Only numpy and scipy are needed to generate; osgeo (GDAL/OGR) is used to write GeoTIFF and
GeoPackage files.

Usage::

    python -m training.synthetic --out DIR [--size 512] [--days 10] [--seed 0] [--looks 4.4] [--communes 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from sar_seg_plugin.models.metadata import LAND_COVER_CLASSES, LAND_COVER_COLOURS

CLASS_NAMES: tuple[str, ...] = LAND_COVER_CLASSES
CLASS_COLORS: tuple[str, ...] = LAND_COVER_COLOURS
WATER, VEGETATION, FOREST, BUILT_UP, BARE_SOIL = range(5)
LABEL_NODATA: int = 255
SAR_NODATA: float = 0.0
DEFAULT_EPSG = 32631
BAND_NAMES: tuple[str, ...] = ("VV", "VH")

# Archetype name -> class proportions (class id -> fraction of the commune area).
ARCHETYPES: dict[str, dict[int, float]] = {
    "floodplain": {WATER: 0.42, VEGETATION: 0.28, FOREST: 0.10, BUILT_UP: 0.05, BARE_SOIL: 0.15},
    "agricultural": {WATER: 0.03, VEGETATION: 0.50, FOREST: 0.10, BUILT_UP: 0.05, BARE_SOIL: 0.32},
    "forested": {WATER: 0.03, VEGETATION: 0.15, FOREST: 0.65, BUILT_UP: 0.04, BARE_SOIL: 0.13},
    "urban": {WATER: 0.04, VEGETATION: 0.20, FOREST: 0.08, BUILT_UP: 0.55, BARE_SOIL: 0.13},
}

# Typical C-band backscatter per class in dB: (VV, VH).
CLASS_SIGMA0_DB: dict[int, tuple[float, float]] = {
    WATER: (-20.0, -26.0),
    VEGETATION: (-11.0, -18.0),
    FOREST: (-7.5, -13.0),
    BUILT_UP: (-4.0, -10.0),
    BARE_SOIL: (-13.0, -21.0),
}
NOISE_FLOOR_DB = -24.0
NOISE_FLOOR = 10.0 ** (NOISE_FLOOR_DB / 10.0)
FOREST_TEXTURE_NU = 10.0
URBAN_TEXTURE_NU = 2.0
INCIDENCE_NEAR_DEG = 30.0
INCIDENCE_FAR_DEG = 45.0
INCIDENCE_SLOPE_DB_PER_DEG = -0.15
DATE_JITTER_DB = 0.3
VEGETATION_PARCEL_DB = 1.5
BARE_PARCEL_DB = 2.0

_WIND_DB = 2.0  # amplitude of the smooth wind pattern over water (VV, dB) in a windy world
_ORIGIN = (600000.0, 4900000.0)  # upper-left corner, WGS 84 / UTM 31N
_FLOOD_PEAK_QUANTILE = 0.15  # share of floodable land below the peak water level
_FLOOD_RESIDUAL = 0.2  # share of the peak level left on the last day
_DOMINANCE = 1.3  # minimum ratio between a commune's dominant class share and the next one


@dataclass(frozen=True)
class World:
    """The radiometry and geometry rules of one scene. The defaults are the central literature values (the demo,
    test and forecaster data); :func:`training.domains.draw_world` draws other worlds for robust training.

    ``sigma0_db`` holds (VV, VH) dB per class id; ``forest_texture_nu`` / ``urban_texture_nu`` are the Gamma
    texture shapes (None: no texture); ``urban_bright_fraction`` is the share of built-up pixels that are bright
    point targets; ``spatial_db`` the amplitude of a smooth large-scale brightness drift; ``windy`` adds a smooth
    wind pattern to the VV of water; ``parcel_scale`` / ``parcel_elongation`` change the size and shape of fields;
    ``coast`` adds sea along one edge and ``nodata_border`` a ragged no-data strip along one edge.
    """

    sigma0_db: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: tuple(CLASS_SIGMA0_DB[c] for c in range(len(CLASS_NAMES)))
    )
    noise_floor_db: float = NOISE_FLOOR_DB
    incidence_slope_db_per_deg: float = INCIDENCE_SLOPE_DB_PER_DEG
    forest_texture_nu: float | None = FOREST_TEXTURE_NU
    urban_texture_nu: float | None = URBAN_TEXTURE_NU
    urban_bright_fraction: float = 0.015
    vegetation_parcel_db: float = VEGETATION_PARCEL_DB
    bare_parcel_db: float = BARE_PARCEL_DB
    spatial_db: float = 0.0
    windy: bool = False
    parcel_scale: float = 1.0
    parcel_elongation: float = 1.0
    coast: bool = False
    nodata_border: bool = False


@dataclass
class SyntheticSeries:
    """A generated scene series; arrays are indexed (date, [band,] row, col)."""

    dates: list[datetime.date]
    labels: np.ndarray
    sigma0_clean: np.ndarray
    sigma0: np.ndarray
    valid: np.ndarray
    communes: np.ndarray
    commune_polygons: list[dict]
    geotransform: tuple[float, ...]
    epsg: int
    looks: float
    seed: int = 0

    @property
    def size(self) -> int:
        """Scene width (= height) in pixels."""
        return int(self.valid.shape[1])

    @property
    def days(self) -> int:
        """Number of dates."""
        return len(self.dates)

    @property
    def pixel_size(self) -> float:
        """Pixel size in map units (metres)."""
        return float(self.geotransform[1])


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def speckle(clean: np.ndarray, looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative Gamma(L, 1/L) speckle on linear intensity (mean 1, variance 1/L)."""
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    clean = np.asarray(clean)
    dtype = np.float32 if clean.dtype == np.float32 else np.float64
    noise = rng.standard_gamma(looks, size=clean.shape, dtype=dtype)
    noise *= dtype(1.0 / looks)
    noise *= clean
    return noise


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-smoothed noise (computed coarse then upsampled)."""
    h, w = shape
    factor = max(1, int(sigma // 3))
    coarse = rng.standard_normal((h // factor + 3, w // factor + 3))
    coarse = ndimage.gaussian_filter(coarse, sigma / factor, mode="wrap")
    field = ndimage.zoom(coarse, factor, order=1) if factor > 1 else coarse
    field = field[:h, :w].astype(np.float64)
    field -= field.mean()
    field /= field.std() + 1e-12
    return field


def _segments(rng: np.random.Generator, n: int, lo: int, hi: int, gap: int = 0) -> np.ndarray:
    """Split range(n) into random segments of length lo..hi; returns the segment id (-1 in gaps)."""
    ids = np.full(n, -1, dtype=np.int32)
    pos, k = 0, 0
    while pos < n:
        length = int(rng.integers(lo, hi + 1))
        ids[pos : min(n, pos + length)] = k
        pos += length + gap
        k += 1
    return ids


def _grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of the most square grid with exactly n cells."""
    best = (1, n)
    for rows in range(1, math.isqrt(n) + 1):
        if n % rows == 0:
            best = (rows, n // rows)
    return best


def _flood_curve(days: int) -> np.ndarray:
    """Relative water level per day: 0 on day 0, 1 at the peak (near the middle), then receding."""
    peak = max(1, round(0.45 * (days - 1)))
    curve = np.zeros(days)
    for t in range(days):
        if t <= peak:
            curve[t] = math.sin(0.5 * math.pi * t / peak) ** 2
        else:
            fall = math.sin(0.5 * math.pi * (t - peak) / (days - 1 - peak)) ** 2
            curve[t] = 1.0 - (1.0 - _FLOOD_RESIDUAL) * fall
    return curve


# --------------------------------------------------------------------------------------------
# Scene layout
# --------------------------------------------------------------------------------------------


def _commune_grid(
    rng: np.random.Generator, size: int, n_communes: int
) -> tuple[np.ndarray, list[list[tuple[float, float]]]]:
    """Jittered grid of convex quadrilaterals; returns the commune raster (ids 1..n) and pixel quads."""
    rows, cols = _grid_shape(n_communes)
    jy, jx = np.meshgrid(np.arange(rows + 1), np.arange(cols + 1), indexing="ij")
    cell_w, cell_h = size / cols, size / rows
    vx = jx * cell_w + np.where((jx > 0) & (jx < cols), rng.uniform(-0.22, 0.22, jx.shape) * cell_w, 0.0)
    vy = jy * cell_h + np.where((jy > 0) & (jy < rows), rng.uniform(-0.22, 0.22, jy.shape) * cell_h, 0.0)

    raster = np.zeros((size, size), dtype=np.int32)
    quads: list[list[tuple[float, float]]] = []
    for i in range(rows):
        for j in range(cols):
            # Top-left, top-right, bottom-right, bottom-left: clockwise as displayed north-up.
            quad = [
                (float(vx[i, j]), float(vy[i, j])),
                (float(vx[i, j + 1]), float(vy[i, j + 1])),
                (float(vx[i + 1, j + 1]), float(vy[i + 1, j + 1])),
                (float(vx[i + 1, j]), float(vy[i + 1, j])),
            ]
            quads.append(quad)
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            c0, c1 = max(0, int(min(xs)) - 1), min(size, int(math.ceil(max(xs))) + 1)
            r0, r1 = max(0, int(min(ys)) - 1), min(size, int(math.ceil(max(ys))) + 1)
            px = np.arange(c0, c1)[None, :] + 0.5
            py = np.arange(r0, r1)[:, None] + 0.5
            inside = np.ones((r1 - r0, c1 - c0), dtype=bool)
            for k in range(4):
                (ax, ay), (bx, by) = quad[k], quad[(k + 1) % 4]
                inside &= (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= -1e-9
            sub = raster[r0:r1, c0:c1]
            sub[inside & (sub == 0)] = len(quads)
    if (raster == 0).any():  # numerical leftovers: take the nearest commune
        idx = ndimage.distance_transform_edt(raster == 0, return_distances=False, return_indices=True)
        raster = raster[tuple(idx)]
    return raster, quads


def _river(rng: np.random.Generator, size: int) -> np.ndarray:
    """A meandering river a few pixels wide crossing the scene."""
    x = np.arange(size) + 0.5
    centre = rng.uniform(0.35, 0.65) * size
    centre = (
        centre
        + rng.uniform(0.06, 0.12) * size * np.sin(2 * np.pi * x / (rng.uniform(0.6, 1.1) * size) + rng.uniform(0, 6.3))
        + rng.uniform(0.02, 0.04) * size * np.sin(2 * np.pi * x / (rng.uniform(0.18, 0.3) * size) + rng.uniform(0, 6.3))
    )
    slope = np.gradient(centre)
    width = max(2.0, 5.0 * size / 512.0) * (
        1.0 + 0.25 * np.sin(2 * np.pi * x / (rng.uniform(0.3, 0.6) * size) + rng.uniform(0, 6.3))
    )
    rows = np.arange(size)[:, None] + 0.5
    mask = np.abs(rows - centre[None, :]) / np.sqrt(1.0 + slope**2)[None, :] < 0.5 * width[None, :]
    return mask.T.copy() if rng.random() < 0.5 else mask


def _valid_mask(rng: np.random.Generator, size: int, enabled: bool) -> np.ndarray:
    """False inside a triangular no-data corner covering about 2-3 % of the scene."""
    if not enabled:
        return np.ones((size, size), dtype=bool)
    fraction = rng.uniform(0.02, 0.03)
    leg_x = rng.uniform(0.25, 0.5) * size
    leg_y = 2.0 * fraction * size * size / leg_x
    centres = np.arange(size) + 0.5
    triangle = centres[None, :] / leg_x + centres[:, None] / leg_y < 1.0
    corner = int(rng.integers(4))
    if corner & 1:
        triangle = triangle[:, ::-1]
    if corner & 2:
        triangle = triangle[::-1, :]
    return ~triangle


def _commune_targets(rng: np.random.Generator, archetype: str) -> np.ndarray:
    """Archetype proportions with multiplicative noise; the dominant class stays clearly dominant."""
    base = np.array([ARCHETYPES[archetype][c] for c in range(len(CLASS_NAMES))])
    noisy = base * rng.uniform(0.85, 1.15, base.size)
    top = int(np.argmax(base))
    runner_up = float(np.delete(noisy, top).max())
    noisy[top] = max(noisy[top], _DOMINANCE * runner_up)
    return noisy / noisy.sum()


def _pick_lowest(values: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k candidate flat indices with the lowest values."""
    if k <= 0 or candidates.size == 0:
        return candidates[:0]
    if k >= candidates.size:
        return candidates
    return candidates[np.argpartition(values[candidates], k - 1)[:k]]


def _town_pixels(
    size: int,
    avail: np.ndarray,
    inverse: np.ndarray,
    ranked_counts: np.ndarray,
    ranked: np.ndarray,
    street: np.ndarray,
    target: float,
) -> np.ndarray:
    """Flat indices of the best-ranked blocks reaching target pixels, plus the streets between them."""
    before = np.cumsum(ranked_counts) - ranked_counts
    chosen = np.zeros(ranked.size, dtype=bool)
    chosen[ranked[before + 0.5 * ranked_counts < target]] = True
    built = np.zeros(size * size, dtype=bool)
    built[avail[chosen[inverse]]] = True
    col = street % size
    left = np.where(col > 0, street - 1, street)
    right = np.where(col < size - 1, street + 1, street)
    up = np.where(street >= size, street - size, street)
    down = np.where(street < size * (size - 1), street + size, street)
    for _ in range(2):  # the second pass closes street crossings
        between = (built[left] & built[right] & (left != street) & (right != street)) | (
            built[up] & built[down] & (up != street) & (down != street)
        )
        built[street[between]] = True
    return np.flatnonzero(built)


@dataclass
class _LandCover:
    classes: np.ndarray  # (H, W) uint8 base land cover (valid pixels)
    unit: np.ndarray  # (H, W) int32 parcel-unit id, -1 outside parcels
    unit_class: np.ndarray  # (U,) base class of each unit (vegetation or bare soil)


def _allocate_land_cover(
    rng: np.random.Generator,
    size: int,
    communes: np.ndarray,
    targets: list[np.ndarray],
    river: np.ndarray,
    elevation: np.ndarray,
    valid: np.ndarray,
    world: World,
) -> _LandCover:
    """Draw the base land cover commune by commune so that it follows each commune's targets."""
    scale = min(1.0, size / 512.0) * world.parcel_scale
    stretch = math.sqrt(world.parcel_elongation)  # fields longer along the strips, narrower across
    plo, phi = max(4, round(10 * scale)), max(6, round(40 * scale))
    slo, shi = max(4, round(plo * stretch)), max(6, round(phi * stretch))
    hlo, hhi = max(3, round(plo / stretch)), max(4, round(phi / stretch))
    parcels = np.empty((size, size), dtype=np.int32)
    offset, r = 0, 0
    while r < size:
        r1 = min(size, r + int(rng.integers(hlo, hhi + 1)))
        strip = _segments(rng, size, slo, shi)
        parcels[r:r1] = strip[None, :] + offset
        offset += int(strip.max()) + 1
        r = r1
    if rng.random() < 0.5:
        parcels = parcels.T.copy()

    blo, bhi = max(2, round(4 * scale)), max(3, round(9 * scale))
    brow, bcol = _segments(rng, size, blo, bhi, gap=1), _segments(rng, size, blo, bhi, gap=1)
    blocks = np.where(
        (brow[:, None] >= 0) & (bcol[None, :] >= 0), brow[:, None] * (int(bcol.max()) + 1) + bcol[None, :], -1
    )
    forest_field = _smooth_noise(rng, (size, size), max(2.0, size / 40.0)).ravel()

    classes = np.full(size * size, LABEL_NODATA, dtype=np.uint8)
    unit = np.full(size * size, -1, dtype=np.int32)
    unit_class: list[np.ndarray] = []
    n_units = 0
    rows_flat = np.repeat(np.arange(size), size).astype(np.float64)
    cols_flat = np.tile(np.arange(size), size).astype(np.float64)
    river_f, elev_f, blocks_f, parcels_f = river.ravel(), elevation.ravel(), blocks.ravel(), parcels.ravel()
    pixels_by_commune = (communes.ravel() * valid.ravel()).astype(np.int64)
    order = np.argsort(pixels_by_commune, kind="stable")
    bounds = np.searchsorted(pixels_by_commune[order], np.arange(len(targets) + 2))

    for cid in range(1, len(targets) + 1):
        idx = order[bounds[cid] : bounds[cid + 1]]
        n = idx.size
        if n == 0:
            continue
        frac = targets[cid - 1]
        free = np.ones(n, dtype=bool)

        # Water: the river plus the lowest ground (lakes, backwaters).
        on_river = river_f[idx]
        water = idx[on_river]
        extra = round(frac[WATER] * n) - water.size
        water = np.concatenate([water, _pick_lowest(elev_f, idx[~on_river], extra)])
        classes[water] = WATER
        free &= classes[idx] == LABEL_NODATA

        # Built-up: whole city blocks, nearest to a jittered town centre first.
        avail = idx[free & (blocks_f[idx] >= 0)]
        if avail.size and frac[BUILT_UP] > 0:
            block_ids, inverse = np.unique(blocks_f[avail], return_inverse=True)
            counts = np.bincount(inverse)
            cy = np.bincount(inverse, weights=rows_flat[avail]) / counts
            cx = np.bincount(inverse, weights=cols_flat[avail]) / counts
            radius = math.sqrt(n)
            ty = rows_flat[idx].mean() + rng.uniform(-0.15, 0.15) * radius
            tx = cols_flat[idx].mean() + rng.uniform(-0.15, 0.15) * radius
            score = np.hypot(cy - ty, cx - tx) * rng.uniform(0.7, 1.3, block_ids.size)
            ranked = np.argsort(score)
            street = idx[free & (blocks_f[idx] < 0)]
            target = frac[BUILT_UP] * n
            town = _town_pixels(size, avail, inverse, counts[ranked], ranked, street, target)
            if town.size > target > 0:  # streets inside the town add area: aim lower once
                town = _town_pixels(size, avail, inverse, counts[ranked], ranked, street, target**2 / town.size)
            classes[town] = BUILT_UP
            free &= classes[idx] == LABEL_NODATA

        # Forest: blobs where the smooth forest field is highest.
        forest = _pick_lowest(-forest_field, idx[free], round(frac[FOREST] * n))
        classes[forest] = FOREST
        free &= classes[idx] == LABEL_NODATA

        # Agricultural parcels (parcel pieces inside the commune) of vegetation or bare soil.
        rest = idx[free]
        if rest.size:
            piece_ids, inverse = np.unique(parcels_f[rest], return_inverse=True)
            counts = np.bincount(inverse)
            share = frac[VEGETATION] / max(frac[VEGETATION] + frac[BARE_SOIL], 1e-9)
            shuffled = rng.permutation(piece_ids.size)
            before = np.cumsum(counts[shuffled]) - counts[shuffled]
            is_veg = np.zeros(piece_ids.size, dtype=bool)
            is_veg[shuffled[before + 0.5 * counts[shuffled] < share * rest.size]] = True
            piece_class = np.where(is_veg, VEGETATION, BARE_SOIL).astype(np.uint8)
            classes[rest] = piece_class[inverse]
            unit[rest] = n_units + inverse
            unit_class.append(piece_class)
            n_units += piece_ids.size

    all_units = np.concatenate(unit_class) if unit_class else np.zeros(0, dtype=np.uint8)
    return _LandCover(classes.reshape(size, size), unit.reshape(size, size), all_units)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generate_series(
    size: int = 512,
    days: int = 10,
    seed: int = 0,
    looks: float = 4.4,
    start: datetime.date = datetime.date(2026, 3, 1),
    pixel_size: float = 10.0,
    n_communes: int = 16,
    nodata_corner: bool = True,
    world: World | None = None,
) -> SyntheticSeries:
    """Generate a deterministic (by seed) synthetic Sentinel-1-like daily series of size x size pixels.

    ``world`` sets the radiometry and geometry rules (default: :class:`World`, the central values)."""
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    if days < 2:
        raise ValueError(f"days must be at least 2, got {days}")
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    if n_communes < 1 or n_communes > (size // 8) ** 2:
        raise ValueError(f"n_communes must be between 1 and {(size // 8) ** 2}, got {n_communes}")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")

    layout_rng, cover_rng, change_rng, radio_rng, speckle_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    shape = (size, size)
    world = world or World()

    # Layout: communes, archetypes, river, ground elevation, no-data corner.
    communes, quads = _commune_grid(layout_rng, size, n_communes)
    names = list(ARCHETYPES)
    archetype_ids = layout_rng.permutation(np.arange(n_communes) % len(names))
    river = _river(layout_rng, size)
    if world.coast:
        river |= _coast(layout_rng, size)
    distance = ndimage.distance_transform_edt(~river) if river.any() else np.full(shape, float(size))
    elevation = (
        30.0 * distance / size
        + 1.5 * _smooth_noise(layout_rng, shape, size / 16.0)
        + 0.3 * _smooth_noise(layout_rng, shape, max(2.0, size / 64.0))
    )
    valid = _valid_mask(layout_rng, size, nodata_corner)
    if world.nodata_border:
        valid &= _border_mask(layout_rng, size)

    targets = [_commune_targets(cover_rng, names[a]) for a in archetype_ids]
    cover = _allocate_land_cover(cover_rng, size, communes, targets, river, elevation, valid, world)
    base = cover.classes

    # Crop changes: some vegetation units are harvested, some bare units green up.
    n_units = cover.unit_class.size
    change_day = np.full(n_units, days + 1, dtype=np.int32)
    for cls in (VEGETATION, BARE_SOIL):
        candidates = np.flatnonzero(cover.unit_class == cls)
        if candidates.size:
            k = max(1, round(0.12 * candidates.size))
            chosen = change_rng.choice(candidates, size=k, replace=False)
            change_day[chosen] = change_rng.integers(1, days, size=k)
    change_map = np.append(change_day, days + 1)[np.where(cover.unit >= 0, cover.unit, n_units)]

    # Flood: water level over the elevation field, connected to permanent water.
    permanent = (base == WATER) & valid
    floodable = ((base == VEGETATION) | (base == BARE_SOIL)) & valid
    curve = _flood_curve(days)
    if floodable.any():
        low = float(elevation[floodable].min()) - 1e-6
        high = float(np.quantile(elevation[floodable], _FLOOD_PEAK_QUANTILE))
    else:
        low = high = float(elevation.min()) - 1.0

    labels = np.empty((days, size, size), dtype=np.uint8)
    for t in range(days):
        lab = base.copy()
        changed = change_map <= t
        lab[changed & (base == VEGETATION)] = BARE_SOIL
        lab[changed & (base == BARE_SOIL)] = VEGETATION
        level = low + curve[t] * (high - low)
        wet = (elevation < level) | permanent
        components, _ = ndimage.label(wet)
        connected = np.zeros(components.max() + 1, dtype=bool)
        connected[np.unique(components[permanent])] = True
        connected[0] = False
        lab[connected[components] & floodable] = WATER
        lab[~valid] = LABEL_NODATA
        labels[t] = lab

    sigma0_clean = _radiometry(radio_rng, labels, base, cover, change_map, valid, world)
    sigma0 = speckle(sigma0_clean, looks, speckle_rng)
    sigma0[:, :, ~valid] = SAR_NODATA

    geotransform = (_ORIGIN[0], float(pixel_size), 0.0, _ORIGIN[1], 0.0, -float(pixel_size))
    polygons = []
    width = len(str(n_communes)) if n_communes >= 100 else 2
    for cid, quad in enumerate(quads, start=1):
        inside = (communes == cid) & valid
        urban_fraction = float((base[inside] == BUILT_UP).mean()) if inside.any() else 0.0
        population = int(round(500 + 20000 * urban_fraction * layout_rng.uniform(0.8, 1.2)))
        # Reversed: exterior rings are written counter-clockwise.
        ring = [(geotransform[0] + x * pixel_size, geotransform[3] - y * pixel_size) for x, y in quad[::-1]]
        ring.append(ring[0])
        arch = int(archetype_ids[cid - 1])
        polygons.append(
            {
                "id": cid,
                "name": f"Commune {cid:0{width}d}",
                "archetype": names[arch],
                "archetype_id": arch,
                "population": population,
                "ring": ring,
            }
        )

    return SyntheticSeries(
        dates=[start + datetime.timedelta(days=t) for t in range(days)],
        labels=labels,
        sigma0_clean=sigma0_clean,
        sigma0=sigma0,
        valid=valid,
        communes=communes,
        commune_polygons=polygons,
        geotransform=geotransform,
        epsg=DEFAULT_EPSG,
        looks=float(looks),
        seed=int(seed),
    )


def _radiometry(
    rng: np.random.Generator,
    labels: np.ndarray,
    base: np.ndarray,
    cover: _LandCover,
    change_map: np.ndarray,
    valid: np.ndarray,
    world: World | None = None,
) -> np.ndarray:
    """Speckle-free linear sigma0 (T, 2, H, W) from the label series."""
    world = world or World()
    days, size, _ = labels.shape
    n_classes = len(CLASS_NAMES)
    table = np.array(world.sigma0_db, dtype=np.float32)  # (C, 2)

    # Per parcel unit: field offsets (dB) and crop growth rate (dB/day).
    n_units = cover.unit_class.size + 1  # last entry: pixels outside parcels
    veg_common = rng.uniform(-world.vegetation_parcel_db, world.vegetation_parcel_db, n_units)
    bare_common = rng.uniform(-world.bare_parcel_db, world.bare_parcel_db, n_units)
    veg_off = np.stack([veg_common, veg_common + rng.uniform(-0.5, 0.5, n_units)])
    bare_off = np.stack([bare_common, bare_common + rng.uniform(-0.5, 0.5, n_units)])
    growth = rng.uniform(-0.03, 0.12, n_units)
    growth = np.stack([growth, 1.5 * growth])
    veg_off[:, -1] = bare_off[:, -1] = growth[:, -1] = 0.0
    unit = np.where(cover.unit >= 0, cover.unit, n_units - 1)

    # Texture (fixed scene property): forest Gamma(nu), built-up Gamma(nu) plus bright point targets.
    texture = np.ones((size, size), dtype=np.float32)
    forest = base == FOREST
    if world.forest_texture_nu is not None:
        nu = world.forest_texture_nu
        texture[forest] = rng.standard_gamma(nu, int(forest.sum())) / nu
    built = base == BUILT_UP
    if world.urban_texture_nu is not None:
        nu = world.urban_texture_nu
        urban = rng.standard_gamma(nu, int(built.sum())) / nu
    else:
        urban = np.ones(int(built.sum()))
    bright = rng.random(urban.size) < world.urban_bright_fraction
    urban[bright] *= rng.uniform(5.0, 20.0, int(bright.sum()))
    texture[built] = urban

    cols = np.arange(size) + 0.5
    incidence = INCIDENCE_NEAR_DEG + (INCIDENCE_FAR_DEG - INCIDENCE_NEAR_DEG) * cols / size
    mid = 0.5 * (INCIDENCE_NEAR_DEG + INCIDENCE_FAR_DEG)
    angle_db = (world.incidence_slope_db_per_deg * (incidence - mid)).astype(np.float32)[None, :]
    date_db = rng.uniform(-DATE_JITTER_DB, DATE_JITTER_DB, (days, n_classes, 2)).astype(np.float32)
    drift_db = np.zeros((size, size), dtype=np.float32)
    if world.spatial_db > 0:
        drift_db += (world.spatial_db * _smooth_noise(rng, (size, size), size / 6.0)).astype(np.float32)
    wind_db = np.zeros((size, size), dtype=np.float32)
    if world.windy:
        wind_db += (_WIND_DB * _smooth_noise(rng, (size, size), size / 10.0)).astype(np.float32)
    noise_floor = np.float32(10.0 ** (world.noise_floor_db / 10.0))

    greened = (base == BARE_SOIL) & (change_map < days + 1)
    out = np.empty((days, 2, size, size), dtype=np.float32)
    for t in range(days):
        lab = np.where(labels[t] == LABEL_NODATA, WATER, labels[t])
        veg = lab == VEGETATION
        bare = lab == BARE_SOIL
        young = np.where(greened & (change_map <= t), -2.0 * np.exp(-(t - change_map) / 3.0), 0.0)
        for p in range(2):
            db = table[lab, p] + date_db[t, lab, p] + angle_db
            db += np.where(veg, veg_off[p][unit] + growth[p][unit] * t + young, 0.0).astype(np.float32)
            db += np.where(bare, bare_off[p][unit], 0.0).astype(np.float32)
            if world.spatial_db > 0:
                db += drift_db
            if world.windy and p == 0:
                db += np.where(lab == WATER, wind_db, np.float32(0.0))
            lin = np.power(np.float32(10.0), db * np.float32(0.1))
            lin *= texture
            lin += noise_floor
            lin[~valid] = SAR_NODATA
            out[t, p] = lin
    return out


def _coast(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sea along one edge of the scene, 8-25 % deep, with a wavy shoreline."""
    x = np.arange(size) + 0.5
    depth = rng.uniform(0.08, 0.25) * size
    wave = np.sin(2 * np.pi * x / (rng.uniform(0.3, 0.9) * size) + rng.uniform(0, 6.3))
    shore = depth + rng.uniform(0.02, 0.06) * size * wave
    shore += 0.5 * _smooth_noise(rng, (1, size), 4.0)[0] * rng.uniform(1.0, 4.0)
    sea = np.arange(size)[:, None] + 0.5 < shore[None, :]
    side = int(rng.integers(4))
    if side & 1:
        sea = sea[::-1]
    return sea.T.copy() if side & 2 else sea


def _border_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """False in a ragged no-data strip (3-12 % of the width) along one edge, like the edge of a swath."""
    width = rng.uniform(0.03, 0.12) * size
    edge = width + 0.3 * width * _smooth_noise(rng, (1, size), 8.0)[0]
    strip = np.arange(size)[None, :] + 0.5 < edge[:, None]
    side = int(rng.integers(4))
    if side & 1:
        strip = strip[:, ::-1]
    return ~(strip.T.copy() if side & 2 else strip)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _hex_to_rgba(colour: str) -> tuple[int, int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16), 255


def _require(obj: object, what: str) -> object:
    """Raise if a GDAL/OGR call returned None (works with and without GDAL exceptions enabled)."""
    if obj is None:
        from osgeo import gdal

        raise RuntimeError(f"GDAL could not {what}: {gdal.GetLastErrorMsg()}")
    return obj


def _create_tiff(path: Path, size: int, bands: int, data_type: int, predictor: int, series: SyntheticSeries) -> object:
    from osgeo import gdal, osr

    options = ["TILED=YES", "COMPRESS=DEFLATE", f"PREDICTOR={predictor}", "NUM_THREADS=ALL_CPUS"]
    driver = _require(gdal.GetDriverByName("GTiff"), "load the GTiff driver")
    ds = _require(driver.Create(str(path), size, size, bands, data_type, options=options), f"create {path}")
    ds.SetGeoTransform(series.geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(series.epsg)
    ds.SetProjection(srs.ExportToWkt())
    return ds


def write_series(series: SyntheticSeries, out_dir: str | Path) -> dict[str, object]:
    """Write per-date SAR and label GeoTIFFs, communes.gpkg and manifest.json; return the manifest."""
    from osgeo import gdal, ogr, osr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = series.size
    files = []
    for t, date in enumerate(series.dates):
        stamp = date.strftime("%Y%m%d")
        sar_name, label_name = f"sar_{stamp}.tif", f"labels_{stamp}.tif"

        ds = _create_tiff(out / sar_name, size, 2, gdal.GDT_Float32, 3, series)
        ds.SetMetadataItem("ACQUISITION_DATE", date.isoformat())
        ds.SetMetadataItem("LOOKS", f"{series.looks:g}")
        ds.SetMetadataItem("POLARISATIONS", ",".join(BAND_NAMES))
        ds.SetMetadataItem("SOURCE", "synthetic Sentinel-1-like IW GRD (training.synthetic)")
        for b, name in enumerate(BAND_NAMES):
            band = ds.GetRasterBand(b + 1)
            band.SetDescription(name)
            band.SetNoDataValue(SAR_NODATA)
            band.SetUnitType("linear")
            band.SetMetadataItem("POLARISATION", name)
            band.WriteArray(series.sigma0[t, b])
        ds.FlushCache()
        ds = None

        ds = _create_tiff(out / label_name, size, 1, gdal.GDT_Byte, 2, series)
        ds.SetMetadataItem("ACQUISITION_DATE", date.isoformat())
        band = ds.GetRasterBand(1)
        band.SetDescription("class")
        band.SetNoDataValue(LABEL_NODATA)
        table = gdal.ColorTable()
        for cid, colour in enumerate(CLASS_COLORS):
            table.SetColorEntry(cid, _hex_to_rgba(colour))
        table.SetColorEntry(LABEL_NODATA, (0, 0, 0, 0))
        band.SetRasterColorTable(table)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(list(CLASS_NAMES))  # stored in the .aux.xml sidecar by the GTiff driver
        band.SetMetadataItem("CLASS_NAMES", ",".join(CLASS_NAMES))
        band.WriteArray(series.labels[t])
        ds.FlushCache()
        ds = None
        files.append({"date": date.isoformat(), "sar": sar_name, "labels": label_name})

    gpkg = out / "communes.gpkg"
    if gpkg.exists():
        gpkg.unlink()
    driver = _require(ogr.GetDriverByName("GPKG"), "load the GPKG driver")
    vds = _require(driver.CreateDataSource(str(gpkg)), f"create {gpkg}")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(series.epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = _require(vds.CreateLayer("communes", srs, ogr.wkbPolygon), "create the communes layer")
    for name, kind in (
        ("commune_id", ogr.OFTInteger),
        ("name", ogr.OFTString),
        ("archetype", ogr.OFTString),
        ("archetype_id", ogr.OFTInteger),
        ("population", ogr.OFTInteger),
    ):
        layer.CreateField(ogr.FieldDefn(name, kind))
    layer.StartTransaction()
    for poly in series.commune_polygons:
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in poly["ring"]:
            ring.AddPoint_2D(float(x), float(y))
        geometry = ogr.Geometry(ogr.wkbPolygon)
        geometry.AddGeometry(ring)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("commune_id", int(poly["id"]))
        feature.SetField("name", str(poly["name"]))
        feature.SetField("archetype", str(poly["archetype"]))
        feature.SetField("archetype_id", int(poly["archetype_id"]))
        feature.SetField("population", int(poly["population"]))
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    vds = None

    manifest: dict[str, object] = {
        "generator": "training.synthetic",
        "seed": series.seed,
        "size": size,
        "days": series.days,
        "looks": series.looks,
        "pixel_size": series.pixel_size,
        "epsg": series.epsg,
        "geotransform": list(series.geotransform),
        "bands": list(BAND_NAMES),
        "sar_units": "linear",
        "sar_nodata": SAR_NODATA,
        "label_nodata": LABEL_NODATA,
        "class_names": list(CLASS_NAMES),
        "class_colors": list(CLASS_COLORS),
        "dates": [d.isoformat() for d in series.dates],
        "files": files,
        "communes_file": gpkg.name,
        "communes_layer": "communes",
        "archetype_names": list(ARCHETYPES),
        "archetype_proportions": {
            name: {CLASS_NAMES[c]: v for c, v in props.items()} for name, props in ARCHETYPES.items()
        },
        "archetypes": {str(p["id"]): p["archetype"] for p in series.commune_polygons},
        "communes": [
            {k: p[k] for k in ("id", "name", "archetype", "archetype_id", "population")}
            for p in series.commune_polygons
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: generate a series and write it to --out."""
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description="Write a synthetic Sentinel-1-like SAR series."
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--size", type=int, default=512, help="scene width and height in pixels")
    parser.add_argument("--days", type=int, default=10, help="number of consecutive daily dates")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--looks", type=float, default=4.4, help="equivalent number of looks of the speckle")
    parser.add_argument("--communes", type=int, default=16, help="number of communes")
    parser.add_argument("--start", type=datetime.date.fromisoformat, default=datetime.date(2026, 3, 1))
    parser.add_argument("--no-nodata-corner", action="store_true", help="do not mask a scene corner")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    try:
        series = generate_series(
            size=args.size,
            days=args.days,
            seed=args.seed,
            looks=args.looks,
            start=args.start,
            n_communes=args.communes,
            nodata_corner=not args.no_nodata_corner,
        )
    except ValueError as exc:
        parser.error(str(exc))
    write_series(series, args.out)
    print(
        f"Wrote {series.days} dates of {series.size}x{series.size} px, "
        f"{len(series.commune_polygons)} communes to {args.out} in {time.perf_counter() - began:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
