"""Daily land-cover class-map series from a family of stories, to train the map forecasters.

:func:`training.synthetic.generate_series` tells one story (a flood that rises, then recedes, plus a few crop
flips). A forecaster trained on it alone learns that story's timing. The family here draws a new landscape and a
new story for every series, with wide parameter ranges:

* ``flood_river``: water rises from a meandering river over low floodable ground (vegetation, bare soil, rarely
  forest) connected to it, following a level curve with a drawn onset, rise time (1-5 days), peak, hold and fast or
  slow recession; the turn may fall before, inside or after the series, so windows see rising only, receding only or
  the turn. Pockets cut off by the falling water drain a little later than the open flood.
* ``flood_lake``: the same, spreading from the shore of a lake.
* ``flood_rain``: rain-fed ponding: several disconnected depressions fill and drain on their own schedules, never
  connected to permanent water.
* ``crops``: parcels harvested (vegetation -> bare soil), replanted or greening (bare soil -> vegetation) on drawn
  campaign days, parcel by parcel (sometimes over two days for one parcel); no flood.
* ``static``: nothing changes.

Flood stories also carry a few crop flips. Every landscape has fields (Voronoi, rectangles or elongated strips at
any orientation), forest patches, usually a town and a few hamlets, sometimes a road, a smooth elevation field
(flat to hilly) and sometimes a ragged no-data border.

With ``noisy=True`` the ``observed`` maps carry segmentation-like errors drawn independently per day: spatially
correlated blobs (a low-pass random field, thresholded) plus salt-and-pepper, about 5-15 % of the pixels, with a
confusion structure like that of a SAR segmenter (bare soil <-> vegetation most often, bare soil -> water, forest
<-> built-up) and errors along water edges. Targets stay the true maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training import forecasting
from training.synthetic import BARE_SOIL, BUILT_UP, FOREST, LABEL_NODATA, VEGETATION, WATER, _smooth_noise

FAMILY_KINDS: tuple[str, ...] = ("flood_river", "flood_lake", "flood_rain", "crops", "static")
FLOOD_KINDS: tuple[str, ...] = ("flood_river", "flood_lake", "flood_rain")
N_CLASSES = 5

_HISTORY = 8  # days simulated before day 0, so a flood may already be under way (or receding) on day 0
_N_STREAMS = 5  # layout, dynamics, observation errors, spare, windows

# Segmentation-like errors: row = true class, column = class it is mistaken for (zero diagonal, rows sum to 1).
# Class order: water, vegetation, forest, built-up, bare soil.
_CONFUSION = np.array(
    [
        [0.00, 0.30, 0.00, 0.05, 0.65],
        [0.04, 0.00, 0.14, 0.04, 0.78],
        [0.02, 0.35, 0.00, 0.55, 0.08],
        [0.02, 0.15, 0.60, 0.00, 0.23],
        [0.22, 0.70, 0.02, 0.06, 0.00],
    ]
)
# Relative chance of an error in a blob, per true class (last entry: no-data, never changed).
_PROPENSITY = np.array([0.3, 0.9, 0.6, 0.7, 1.0, 0.0])


@dataclass
class FamilySeries:
    """One series of the family; maps are indexed (day, row, col).

    ``labels`` are the true class maps and ``observed`` what a user would feed in (equal to ``labels``, or with
    segmentation-like errors); both are ``LABEL_NODATA`` outside ``valid``. ``elevation`` is the ground height (m),
    ``base`` the dry land cover of day 0 (permanent water only), ``permanent`` the permanent water and ``level`` the
    flood water level per day (m, same datum as ``elevation``; NaN for the kinds without a single level).
    """

    kind: str
    labels: np.ndarray
    observed: np.ndarray
    valid: np.ndarray
    seed: int
    elevation: np.ndarray | None = None
    base: np.ndarray | None = None
    permanent: np.ndarray | None = None
    level: np.ndarray | None = None

    @property
    def days(self) -> int:
        """Number of daily maps."""
        return int(self.labels.shape[0])


@dataclass
class _Layout:
    cover: np.ndarray  # (H, W) uint8 land cover with each field at its starting crop state
    fields: np.ndarray  # (H, W) bool: pixels whose class follows their parcel's crop state
    parcels: np.ndarray  # (H, W) int32 parcel id
    parcel_veg: np.ndarray  # (P,) bool: parcel starts as vegetation
    elevation: np.ndarray  # (H, W) float64, metres
    permanent: np.ndarray  # (H, W) bool
    valid: np.ndarray  # (H, W) bool
    forest_floods: bool


# --------------------------------------------------------------------------------------------
# Random streams and small geometry helpers
# --------------------------------------------------------------------------------------------


def _streams(seed: int, kind: str) -> list[np.random.Generator]:
    """Independent generators of one (seed, kind): layout, dynamics, observation errors, spare, windows."""
    root = np.random.SeedSequence([int(seed), FAMILY_KINDS.index(kind), 0x5EED])
    return [np.random.default_rng(s) for s in root.spawn(_N_STREAMS)]


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of the pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy + 0.5, xx + 0.5


def _rotated(yy: np.ndarray, xx: np.ndarray, angle: float, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) a direction at ``angle`` through (cy, cx)."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    return dx * c + dy * s, -dx * s + dy * c


def _valid_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """All True, or False in a ragged strip (4-15 % of the width) along one edge, like the edge of a swath."""
    if rng.random() >= 0.3:
        return np.ones((size, size), dtype=bool)
    width = rng.uniform(0.04, 0.15) * size
    edge = width * (1.0 + 0.3 * _smooth_noise(rng, (1, size), rng.uniform(3.0, 10.0))[0])
    strip = np.arange(size)[None, :] + 0.5 < edge[:, None]
    side = int(rng.integers(4))
    if side & 1:
        strip = strip[:, ::-1]
    if side & 2:
        strip = strip.T
    return ~strip


def _parcels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Field parcel ids: a Voronoi tessellation, rectangles or elongated strips (any orientation)."""
    yy, xx = _coords(size)
    pattern = int(rng.integers(3))
    if pattern == 0:  # Voronoi
        scale = rng.uniform(5.0, 14.0)
        n = max(4, round(size * size / scale**2))
        marks = np.full((size, size), -1, dtype=np.int64)
        marks[rng.integers(0, size, n), rng.integers(0, size, n)] = np.arange(n)
        _, (ir, ic) = ndimage.distance_transform_edt(marks < 0, return_indices=True)
        ids = marks[ir, ic]
    else:
        if pattern == 1:  # rectangles
            depth, length = rng.uniform(5.0, 14.0), rng.uniform(5.0, 16.0)
        else:  # strips
            depth, length = rng.uniform(2.0, 5.0), rng.uniform(12.0, 40.0)
        angle = float(rng.choice([0.0, 0.5 * math.pi])) if rng.random() < 0.5 else rng.uniform(0.0, math.pi)
        u, v = _rotated(yy, xx, angle, 0.0, 0.0)
        u -= u.min()
        v -= v.min()
        n_bands = int(v.max() / (0.6 * depth)) + 2
        edges = np.cumsum(depth * rng.uniform(0.6, 1.4, n_bands))
        band = np.searchsorted(edges, v)
        widths = length * rng.uniform(0.6, 1.4, n_bands + 1)
        offsets = rng.uniform(0.0, 1.0, n_bands + 1) * widths
        seg = np.floor((u + offsets[band]) / widths[band]).astype(np.int64)
        ids = band * (int(seg.max()) + 1) + seg
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(size, size).astype(np.int32)


def _river(rng: np.random.Generator, size: int, width_range: tuple[float, float] = (1.5, 5.0)) -> np.ndarray:
    """A meandering river crossing the scene at any angle."""
    yy, xx = _coords(size)
    u, v = _rotated(yy, xx, rng.uniform(0.0, math.pi), 0.5 * size, 0.5 * size)
    centre = np.full_like(u, rng.uniform(-0.25, 0.25) * size)
    slope = np.zeros_like(u)
    for amp, wavelength in ((rng.uniform(0.03, 0.15), rng.uniform(0.5, 1.5)), (rng.uniform(0.0, 0.05), 0.25)):
        k = 2.0 * math.pi / (wavelength * size * rng.uniform(0.7, 1.3))
        phase = rng.uniform(0.0, 2.0 * math.pi)
        centre += amp * size * np.sin(k * u + phase)
        slope += amp * size * k * np.cos(k * u + phase)
    width = rng.uniform(*width_range) * (1.0 + 0.2 * np.sin(2.0 * math.pi * u / size + rng.uniform(0.0, 6.3)))
    return np.abs(v - centre) / np.sqrt(1.0 + slope**2) < 0.5 * width


def _blob(
    rng: np.random.Generator, size: int, centre: tuple[float, float], radius: float, roughness: float
) -> np.ndarray:
    """An irregular ellipse around ``centre`` (row, col) of mean radius ``radius``."""
    yy, xx = _coords(size)
    u, v = _rotated(yy, xx, rng.uniform(0.0, math.pi), centre[0], centre[1])
    ratio = rng.uniform(0.5, 1.0)
    a, b = radius / math.sqrt(ratio), radius * math.sqrt(ratio)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if roughness > 0:
        r = r + roughness * _smooth_noise(rng, (size, size), max(1.5, 0.4 * radius))
    return r < 1.0


def _lake(rng: np.random.Generator, size: int, radius_range: tuple[float, float]) -> np.ndarray:
    """A lake, possibly cut by the scene edge."""
    centre = (rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size)
    return _blob(rng, size, centre, rng.uniform(*radius_range) * size, rng.uniform(0.05, 0.25))


def _pick_pixels(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    """Up to n distinct (row, col) pixels of mask, shape (k, 2)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pick = rng.choice(rows.size, size=min(n, rows.size), replace=False)
    return np.stack([rows[pick], cols[pick]], axis=1)


# --------------------------------------------------------------------------------------------
# Landscape
# --------------------------------------------------------------------------------------------


def _layout(rng: np.random.Generator, size: int, kind: str) -> _Layout:
    """Draw the landscape of one series: valid area, water, elevation, fields, forest, town."""
    shape = (size, size)
    yy, xx = _coords(size)
    valid = _valid_mask(rng, size)

    permanent = np.zeros(shape, dtype=bool)
    if kind == "flood_river":
        permanent |= _river(rng, size)
    elif kind == "flood_lake":
        permanent |= _lake(rng, size, (0.08, 0.22))
    else:
        draw = rng.random()
        if draw < 0.35:
            permanent |= _river(rng, size, (1.0, 3.5))
        elif draw < 0.6:
            permanent |= _lake(rng, size, (0.03, 0.09))
    permanent &= valid

    relief = rng.uniform(0.0, 1.0) ** 2 * 8.0 * (0.3 if kind == "flood_rain" else 1.0)
    elevation = relief * (
        0.8 * _smooth_noise(rng, shape, size / 4.0) + 0.3 * _smooth_noise(rng, shape, max(2.0, size / 10.0))
    )
    micro = rng.uniform(0.05, 0.4) * _smooth_noise(rng, shape, 1.5)
    if permanent.any():  # water lies in a valley: low, flattish ground near it, the relief further away
        distance = ndimage.distance_transform_edt(~permanent)
        elevation = (elevation - elevation.min()) * (1.0 - np.exp(-distance / (rng.uniform(0.1, 0.3) * size)))
        elevation += rng.uniform(0.01, 0.12) * distance + micro
        elevation[permanent] = elevation.min() - 0.5
    else:
        elevation += micro
    land = valid & ~permanent
    z = (elevation - elevation[land].mean()) / (elevation[land].std() + 1e-9) if land.any() else elevation * 0

    parcels = _parcels(rng, size)
    n_parcels = int(parcels.max()) + 1
    parcel_veg = rng.random(n_parcels) < rng.uniform(0.3, 0.8)

    # Forest: blobs of a smooth field, often on higher ground, sometimes snapped to whole parcels.
    forest = np.zeros(shape, dtype=bool)
    share = 0.0 if rng.random() < 0.15 else rng.uniform(0.03, 0.3)
    score = _smooth_noise(rng, shape, rng.uniform(2.5, 8.0)) + rng.uniform(0.0, 1.0) * z
    if share > 0 and land.any():
        forest = land & (score > np.quantile(score[land], 1.0 - share))
        if rng.random() < 0.4:
            mean = ndimage.mean(forest, labels=parcels, index=np.arange(n_parcels))
            forest = land & (np.asarray(mean)[parcels] > 0.5)

    # Town (usually), on the highest of a few candidate spots half of the time; hamlets; a road.
    built = np.zeros(shape, dtype=bool)
    if rng.random() < 0.8 and land.any():
        spots = _pick_pixels(rng, land, 4)
        pick = int(np.argmax(elevation[spots[:, 0], spots[:, 1]])) if rng.random() < 0.5 else 0
        centre = (float(spots[pick, 0]) + 0.5, float(spots[pick, 1]) + 0.5)
        built |= _blob(rng, size, centre, rng.uniform(0.05, 0.16) * size, 0.3)
    for r, c in _pick_pixels(rng, land, int(rng.integers(0, 4))):
        built |= np.hypot(yy - r - 0.5, xx - c - 0.5) < rng.uniform(1.0, 2.5)
    if rng.random() < 0.3:
        _, v = _rotated(yy, xx, rng.uniform(0.0, math.pi), *rng.uniform(0.2, 0.8, 2) * size)
        built |= np.abs(v) < 0.5
    built &= land

    cover = np.where(parcel_veg[parcels], VEGETATION, BARE_SOIL).astype(np.uint8)
    cover[forest] = FOREST
    cover[built] = BUILT_UP
    cover[permanent] = WATER
    cover[~valid] = LABEL_NODATA
    fields = land & ~forest & ~built
    forest_floods = bool(rng.random() < 0.15)
    return _Layout(cover, fields, parcels, parcel_veg, elevation, permanent, valid, forest_floods)


# --------------------------------------------------------------------------------------------
# Dynamics
# --------------------------------------------------------------------------------------------


@dataclass
class _Crops:
    start_veg: np.ndarray  # (H, W) bool
    harvest: np.ndarray  # (H, W) float day of harvest (inf: never)
    replant: np.ndarray  # (H, W) float day of replanting after harvest
    green: np.ndarray  # (H, W) float day a bare field greens up

    def vegetation(self, day: int) -> np.ndarray:
        """Pixels under vegetation on ``day`` (meaningful on field pixels)."""
        harvested = (day >= self.harvest) & (day < self.replant)
        return np.where(self.start_veg, ~harvested, day >= self.green)


def _crops(rng: np.random.Generator, layout: _Layout, days: int, rate: tuple[float, float]) -> _Crops:
    """Harvest / replant / green-up days per parcel, grouped in 1-3 campaigns; a parcel may take two days."""
    parcels, n = layout.parcels, layout.parcel_veg.size
    campaigns = rng.uniform(-0.5 * days, days, int(rng.integers(1, 4)))

    def event_days(k: int) -> np.ndarray:
        return np.floor(campaigns[rng.integers(campaigns.size, size=k)] + rng.normal(0.0, 1.5, k))

    harvest = np.full(n, np.inf)
    replant = np.full(n, np.inf)
    green = np.full(n, np.inf)
    veg = np.flatnonzero(layout.parcel_veg)
    cut = veg[rng.random(veg.size) < rng.uniform(*rate)]
    harvest[cut] = event_days(cut.size)
    again = cut[rng.random(cut.size) < rng.uniform(0.2, 0.7)]
    replant[again] = harvest[again] + rng.integers(3, 13, again.size)
    bare = np.flatnonzero(~layout.parcel_veg)
    greening = bare[rng.random(bare.size) < rng.uniform(*rate)]
    green[greening] = event_days(greening.size)

    # Some parcels change over two days: the part on one side of a line a day earlier.
    size = parcels.shape[0]
    yy, xx = _coords(size)
    counts = np.maximum(np.bincount(parcels.ravel(), minlength=n), 1)
    cy = np.bincount(parcels.ravel(), weights=yy.ravel(), minlength=n) / counts
    cx = np.bincount(parcels.ravel(), weights=xx.ravel(), minlength=n) / counts
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    split = rng.random(n) < 0.25
    side = (xx - cx[parcels]) * np.cos(angle)[parcels] + (yy - cy[parcels]) * np.sin(angle)[parcels] > 0
    early = (split[parcels] & side).astype(np.float64)
    return _Crops(
        layout.parcel_veg[parcels], harvest[parcels] - early, replant[parcels] - early, green[parcels] - early
    )


def _stage(
    t: np.ndarray, onset: float, rise: float, hold: float, tau: float, residual: float, shape: float
) -> np.ndarray:
    """Relative flood stage (0 = dry, 1 = peak) on days ``t``: smooth rise, hold, exponential recession."""
    x = np.clip((t - onset) / rise, 0.0, 1.0)
    up = np.sin(0.5 * math.pi * x) ** (2.0 * shape)
    turn = onset + rise + hold
    down = residual + (1.0 - residual) * np.exp(-np.maximum(t - turn, 0.0) / tau)
    return np.where(t <= turn, up, down)


def _draw_stage(rng: np.random.Generator, t: np.ndarray, days: int) -> np.ndarray:
    """A flood stage curve with drawn onset, rise (1-5 days), hold, fast or slow recession and residual."""
    onset = rng.uniform(-5.0, days - 2.0)
    rise = rng.uniform(1.0, 5.0)
    hold = rng.uniform(0.0, 3.0)
    tau = rng.uniform(0.7, 2.5) if rng.random() < 0.5 else rng.uniform(3.0, 10.0)
    residual = rng.uniform(0.0, 0.35)
    return _stage(t, onset, rise, hold, tau, residual, rng.uniform(0.6, 1.8))


def _connected(below: np.ndarray, permanent: np.ndarray) -> np.ndarray:
    """Pixels of ``below`` connected (4-neighbours) to permanent water, permanent water excluded."""
    components, _ = ndimage.label(below | permanent)
    keep = np.zeros(int(components.max()) + 1, dtype=bool)
    keep[np.unique(components[permanent])] = True
    keep[0] = False
    return keep[components] & below & ~permanent


def _spreading_flood(
    rng: np.random.Generator, layout: _Layout, days: int, domain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """River or lake flood: (flood water (days, H, W) bool, water level per day)."""
    elevation, permanent = layout.elevation, layout.permanent
    size = elevation.shape[0]
    flood = np.zeros((days, size, size), dtype=bool)
    if not domain.any() or not permanent.any():
        return flood, np.full(days, np.nan)
    shore = domain & ndimage.binary_dilation(permanent)  # the first ground the water can reach
    low = float(elevation[shore if shore.any() else domain].min()) - 1e-3
    high = float(elevation[domain].max()) + 1e-3
    target = rng.uniform(0.04, 0.35) * float(layout.valid.sum())
    lo, hi = low, high
    for _ in range(16):  # water level at the peak giving about the target flooded area
        mid = 0.5 * (lo + hi)
        if _connected(domain & (elevation < mid), permanent).sum() < target:
            lo = mid
        else:
            hi = mid
    peak = 0.5 * (lo + hi)
    t = np.arange(-_HISTORY, days, dtype=np.float64)
    level = low + _draw_stage(rng, t, days) * (peak - low)
    pocket = rng.uniform(0.0, 0.3) * (peak - low)  # cut-off pockets drain this much later
    wet = np.zeros((size, size), dtype=bool)
    for i, lv in enumerate(level):
        below = domain & (elevation < lv)
        wet = _connected(below, permanent) | (wet & domain & (elevation < lv + pocket))
        if i >= _HISTORY:
            flood[i - _HISTORY] = wet
    return flood, level[_HISTORY:]


def _ponding(rng: np.random.Generator, layout: _Layout, days: int, domain: np.ndarray) -> np.ndarray:
    """Rain-fed ponding: 3-10 depressions (carved into ``layout.elevation``) that fill and drain on their own.

    Each pond is the part of its depression under its own water level, which rises from the bottom towards the
    depression's spill level (the lowest point of its rim) and falls again; it never spills over.
    """
    size = layout.elevation.shape[0]
    yy, xx = _coords(size)
    dry = np.ones((size, size), dtype=bool)
    if layout.permanent.any():
        dry = ndimage.distance_transform_edt(~layout.permanent) > 3.0
    far = layout.fields & ndimage.binary_erosion(dry, iterations=9, border_value=1)
    bowls = []
    for r, c in _pick_pixels(rng, far, int(rng.integers(3, 11))):
        sigma = rng.uniform(2.0, 6.0)
        u, v = _rotated(yy, xx, rng.uniform(0.0, math.pi), r + 0.5, c + 0.5)
        ratio = rng.uniform(0.4, 1.0)
        bowl = np.exp(-0.5 * ((u / sigma) ** 2 / ratio + (v / sigma) ** 2 * ratio))
        layout.elevation -= rng.uniform(0.8, 2.5) * bowl
        bowls.append((bowl > 0.1) & dry)

    elevation = layout.elevation
    flood = np.zeros((days, size, size), dtype=bool)
    storm = rng.uniform(-4.0, days - 1.0)
    t = np.arange(days, dtype=np.float64)
    for basin in bowls:
        fill = rng.uniform(0.5, 1.0) * _stage(
            t,
            storm + rng.uniform(0.0, 1.5),
            rng.uniform(0.5, 3.0),
            rng.uniform(0.0, 2.0),
            rng.uniform(1.0, 8.0),
            0.0,
            rng.uniform(0.6, 1.8),
        )
        rim = ndimage.binary_dilation(basin) & ~basin
        inside = np.where(basin, elevation, np.inf)
        bottom = np.unravel_index(int(np.argmin(inside)), inside.shape)
        spill = float(elevation[rim].min()) if rim.any() else float(elevation[basin].max())
        if spill <= elevation[bottom]:
            continue  # no closed depression (e.g. carved into a slope)
        for day in range(days):
            level = elevation[bottom] + fill[day] * (spill - elevation[bottom])
            components, _ = ndimage.label(basin & (elevation < level))
            if components[bottom]:
                flood[day] |= (components == components[bottom]) & domain
    return flood


def _segmentation_errors(rng: np.random.Generator, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Labels with independent per-day segmentation-like errors (blobs, salt-and-pepper, water edges)."""
    days, size, _ = labels.shape
    shape = (size, size)
    rate = rng.uniform(0.06, 0.13)
    sigma = rng.uniform(1.0, 3.0)
    edge_p = rng.uniform(0.1, 0.5)
    cdf = np.cumsum(np.vstack([_CONFUSION, np.eye(N_CLASSES)[:1]]), axis=1)
    cdf[:, -1] = 1.0
    out = labels.copy()
    if not valid.any():
        return out
    for day in range(days):
        lab = labels[day]
        idx = np.where(lab >= N_CLASSES, N_CLASSES, lab).astype(np.int64)
        r = rate * rng.uniform(0.7, 1.3)
        prop = _PROPENSITY[idx]
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        share = min(0.8, 0.8 * r / max(float(prop[valid].mean()), 0.05))
        blobs = valid & (field > np.quantile(field[valid], 1.0 - share))
        components, n = ndimage.label(blobs)
        key = components * (N_CLASSES + 1) + idx
        accept = rng.random((n + 1) * (N_CLASSES + 1))
        pick = rng.random((n + 1) * (N_CLASSES + 1))
        wrong = blobs & (accept[key] < prop)
        u = pick[key]
        salt = valid & (rng.random(shape) < 0.2 * r) & ~wrong
        u = np.where(salt, rng.random(shape), u)
        wrong |= salt
        new = np.minimum((u[..., None] >= cdf[idx]).sum(-1), N_CLASSES - 1)
        obs = np.where(wrong, new, lab).astype(np.uint8)
        water = lab == WATER
        if water.any():
            larger = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) > 0  # where water looks too big
            coin = rng.random(shape) < edge_p
            grow = ndimage.binary_dilation(water) & ~water & valid & larger & coin
            shrink = water & ~ndimage.binary_erosion(water) & ~larger & coin
            obs[grow] = WATER
            obs[shrink] = np.where(rng.random(int(shrink.sum())) < 0.5, VEGETATION, BARE_SOIL)
        obs[~valid] = LABEL_NODATA
        out[day] = obs
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_family_series(
    kind: str, size: int = 64, days: int = 10, seed: int = 0, noisy: bool = False
) -> FamilySeries:
    """One daily class-map series of the given story kind, deterministic by (kind, seed).

    The true maps do not depend on ``noisy``; with ``noisy=True`` only ``observed`` carries segmentation errors.
    """
    if kind not in FAMILY_KINDS:
        raise ValueError(f"kind must be one of {FAMILY_KINDS}, got {kind!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    layout_rng, dynamics_rng, noise_rng = _streams(seed, kind)[:3]
    layout = _layout(layout_rng, size, kind)

    rate = {"crops": (0.1, 0.5), "static": (0.0, 0.0)}.get(kind, (0.0, 0.06))
    crops = _crops(dynamics_rng, layout, days, rate)
    domain = layout.fields | ((layout.cover == FOREST) & layout.forest_floods)
    level = np.full(days, np.nan)
    if kind in ("flood_river", "flood_lake"):
        flood, level = _spreading_flood(dynamics_rng, layout, days, domain)
    elif kind == "flood_rain":
        flood = _ponding(dynamics_rng, layout, days, domain)
    else:
        flood = np.zeros((days, size, size), dtype=bool)

    labels = np.empty((days, size, size), dtype=np.uint8)
    for day in range(days):
        labels[day] = layout.cover
        labels[day][layout.fields] = np.where(crops.vegetation(day), VEGETATION, BARE_SOIL)[layout.fields]
    base = labels[0].copy()
    labels[flood] = WATER
    observed = _segmentation_errors(noise_rng, labels, layout.valid) if noisy else labels.copy()
    return FamilySeries(
        kind=kind,
        labels=labels,
        observed=observed,
        valid=layout.valid,
        seed=int(seed),
        elevation=layout.elevation.astype(np.float32),
        base=base,
        permanent=layout.permanent,
        level=level,
    )


def make_family_windows(
    seeds: Sequence[int],
    kinds: Sequence[str] = FAMILY_KINDS,
    size: int = 64,
    days: int = 10,
    sequence_length: int = 4,
    horizons: int = 3,
    noisy_fraction: float = 0.3,
    gap_fraction: float = 0.15,
) -> tuple[forecasting.Windows, np.ndarray]:
    """Every (T input dates -> next K dates) window of one series per (seed, kind), and the kind of each window.

    Inputs are the one-hot ``observed`` maps; targets the true labels. Whether a series is noisy
    (``noisy_fraction``) and whether a window has a gap (``gap_fraction``: its T inputs are taken from the T + 1 days
    before the first target, one interior day dropped) is drawn from the seed. Windows starting on day 0 have no
    day to spare and never get a gap.
    """
    seq, k = int(sequence_length), int(horizons)
    if seq < 1 or k < 1:
        raise ValueError(f"sequence_length and horizons must be >= 1, got {seq} and {k}")
    if days < seq + k:
        raise ValueError(f"{days} days cannot hold {seq} input dates plus {k} forecast dates")
    for kind in kinds:
        if kind not in FAMILY_KINDS:
            raise ValueError(f"kind must be one of {FAMILY_KINDS}, got {kind!r}")
    per_series = days - seq - k + 1
    n = len(seeds) * len(kinds) * per_series
    inputs = np.empty((n, seq, N_CLASSES, size, size), dtype=np.float32)
    targets = np.empty((n, k, size, size), dtype=np.uint8)
    names: list[str] = []
    i = 0
    for seed in seeds:
        for kind in kinds:
            rng = _streams(int(seed), kind)[-1]
            noisy = bool(rng.random() < noisy_fraction)
            series = generate_family_series(kind, size=size, days=days, seed=int(seed), noisy=noisy)
            maps = forecasting.one_hot(series.observed)
            for start in range(per_series):
                gap = rng.random() < gap_fraction
                drop = 1 + int(rng.random() * max(seq - 1, 1))  # position among the T + 1 days
                end = start + seq
                if gap and start >= 1 and seq >= 2:
                    dates = [d for d in range(start - 1, end) if d != start - 1 + drop]
                else:
                    dates = list(range(start, end))
                inputs[i] = maps[dates]
                targets[i] = series.labels[end : end + k]
                names.append(kind)
                i += 1
    windows = forecasting.Windows(inputs, targets, targets != LABEL_NODATA, "classes")
    return windows, np.array(names, dtype=str)
