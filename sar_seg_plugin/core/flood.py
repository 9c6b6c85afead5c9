"""Flood mapping from a post-event SAR image and, optionally, a pre-event one. No qgis import.

Open water is dark in co-polarised C-band backscatter (specular reflection: VV about -20 dB against -12..-5 dB
for land), and land that floods darkens by several dB between two dates. The map is made in two passes:

1. **Thresholds** (:func:`split_threshold`). Windows spread over the images are cut into tiles; a tile counts when
   its histogram holds two populations: the Kittler-Illingworth (minimum error) threshold leaves at least
   :data:`MIN_SHARE` of the tile on each side and Ashman's D of the two sides is at least :data:`MIN_ASHMAN_D`.
   The threshold is then Kittler-Illingworth (or Otsu) on the pixels of those tiles pooled (split-based
   thresholding, as in Bovolo & Bruzzone 2007 and Martinis et al. 2009): tiles of land alone or water alone, which
   dominate a scene, do not drag it. It is found for the water of the post-event image (dB), the water of the
   pre-event image, and the change (the log-ratio post - pre in dB); a threshold may also be given. Where no tile
   of the post-event image holds water and land (no lake or river), the tiles where the change holds a drop are
   used for its water threshold (the flood itself is the water there); where nothing holds two populations, the
   literature value is used (:data:`DEFAULT_WATER_DB`, :data:`DEFAULT_CHANGE_DB`) and the log says so.
2. **Classes**, block by block with a halo: each image is first smoothed with the median of its dB values in a
   small window (a median keeps shores where they are; a mean of three land pixels in nine lifts water by 3 dB and
   shrinks every flood by its rim). With a pre-event image: *permanent water* is water on both dates, *flooded* is
   water after that was not water before and darkened by more than the change threshold; without: every water
   pixel is *water*. An optional height raster (height above the nearest drainage, HAND, or a DEM) removes flood
   above a height. A minimum mapping unit then removes smaller patches (GDAL's sieve: a patch takes the class of
   its largest neighbour).

Bands: where both images have a co-polarised band (VV, else HH) and its cross-polarised partner (VH, HV), the
thresholds and classes are on the mean of the two dB values (the geometric mean of the powers): open water is dark
in both, a flood darkens both, and the speckle of the two bands is independent, so the mean halves the variance of
the change and of the level. On pairs of the evaluation-only flood generator whose flood is shallow (-15 dB VV,
grass through the water, 2-3 dB below the fields) this is what tells the flood from the fields. Otherwise (or with
``polarisations="co-pol"``) the first band named VV, else HH, else band 1 is used alone. Unnamed bands are taken
by brightness: band 2 is the co-polarised band when band 1 is clearly the darker (cross-polarised backscatter
first, as some exports write it), and the darker band is its cross-polarised partner when 4 dB or more below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from . import radiometry
from .errors import CancelledError, SarSegError
from .outputs import OutputSet, check_destinations
from .raster_io import (
    GeoTiffWriter,
    RasterInfo,
    Window,
    check_not_same_file,
    iter_blocks,
    open_raster,
    read_info,
    read_window,
    source_path,
    spread_windows,
    valid_mask,
)
from .resampling import ground_pixel_size_m
from .speckle import local_moments
from .timeseries import Grid, aligned, release
from .units import AUTO, BandMatch, check_band_order, pair_medians_db, polarisation_of

#: dB by which the darker of two unnamed bands must be below the other to be taken as its cross-polarised partner:
#: calibrated VV/VH pairs are 5-10 dB apart; two dates of one band rarely are, even across a flood.
PAIR_GAP_DB = 4.0
DRY, FLOODED, PERMANENT_WATER = 0, 1, 2
NODATA = 255
CLASS_NAMES = ("dry", "flooded", "permanent water")
#: Without a pre-event image, class 1 is all open water (flood and permanent water cannot be told apart).
WATER_ONLY_NAMES = ("dry", "water")
COLORS = {DRY: (235, 230, 215, 255), FLOODED: (30, 110, 230, 255), PERMANENT_WATER: (10, 30, 110, 255)}
#: Literature values used when no tile shows two populations: VV of open water below -18 dB; a drop of 3 dB.
DEFAULT_WATER_DB = -18.0
DEFAULT_CHANGE_DB = -3.0
#: Plausible ranges: a water threshold outside is reported as suspect.
WATER_RANGE_DB = (-26.0, -13.0)
#: A tile counts for the water threshold only when its darker population is water-like (mean below this, VV dB;
#: forest next to bare soil is bimodal too), for the change threshold when its lower population is a real drop: on
#: land that does not change, the log-ratio of two 5x5 medians at ENL 4.4 spreads by about 0.8 dB, so a population
#: 2 dB down that Ashman's D also sets apart is a drop (a shallow flood with grass through it drops 2-3 dB).
WATER_MEAN_BELOW_DB = -15.0
DROP_MEAN_BELOW_DB = -2.0
#: The same levels for the mean of the co- and cross-polarised dB values: open water is about 6 dB darker in VH
#: than in VV (-20 / -26 dB), land 6-8 dB, so each VV level is lowered by 3 dB.
DUAL_DEFAULT_WATER_DB = DEFAULT_WATER_DB - 3.0
DUAL_WATER_MEAN_BELOW_DB = WATER_MEAN_BELOW_DB - 3.0
DUAL_WATER_RANGE_DB = (WATER_RANGE_DB[0] - 3.0, WATER_RANGE_DB[1] - 3.0)
#: Which bands are thresholded: "auto" = co- and cross-polarised together where both images have both, else the
#: co-polarised band; "co-pol" = the co-polarised band only.
POLARISATIONS = ("auto", "co-pol")
TILE = 64
MIN_SHARE = 0.1
MIN_ASHMAN_D = 2.0
MIN_VALID_SHARE = 0.8
DEFAULT_SMOOTH = 3
#: Thresholds are found on images smoothed at least this much: single speckled pixels rarely look bimodal.
THRESHOLD_SMOOTH = 5
DEFAULT_MIN_AREA_M2 = 1000.0
SAMPLE_WINDOWS = 64
#: Rasters up to this size are sampled whole for the thresholds; larger ones in spread windows.
WHOLE_SAMPLE_PIXELS = 1024 * 1024
SAMPLE_SIZE = 256
METHODS = ("kittler-illingworth", "otsu")
HIST_BINS = 256
ProgressFn = Callable[[float], None]
LogFn = Callable[[str], None]


# --- thresholds ---------------------------------------------------------------------------------------------------


def _histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.percentile(values, (0.1, 99.9))
    if not hi > lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return counts.astype(np.float64), 0.5 * (edges[:-1] + edges[1:])


def kittler_illingworth(values: np.ndarray, bins: int = HIST_BINS) -> float:
    """Minimum-error threshold (Kittler & Illingworth 1986): the split of the histogram into two Gaussians that
    minimises J(t) = 1 + 2 [P1 ln s1 + P2 ln s2] - 2 [P1 ln P1 + P2 ln P2]. Returned as the upper edge of the lower
    class's last bin (values <= t are the lower class)."""
    h, centres = _histogram(values, bins)
    p = h / h.sum()
    c1 = np.cumsum(p)
    m1 = np.cumsum(p * centres)
    s1 = np.cumsum(p * centres**2)
    total_m, total_s = m1[-1], s1[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = 1.0 - c1
        mean1, mean2 = m1 / c1, (total_m - m1) / c2
        var1 = s1 / c1 - mean1**2
        var2 = (total_s - s1) / c2 - mean2**2
        j = 1.0 + 2.0 * (c1 * np.log(np.sqrt(var1)) + c2 * np.log(np.sqrt(var2)))
        j -= 2.0 * (c1 * np.log(c1) + c2 * np.log(c2))
    ok = (c1 > 1e-6) & (c2 > 1e-6) & (var1 > 0) & (var2 > 0) & np.isfinite(j)
    if not ok.any():
        return otsu(values, bins)
    k = int(np.argmin(np.where(ok, j, np.inf)))
    step = centres[1] - centres[0] if len(centres) > 1 else 0.0
    return float(centres[k] + 0.5 * step)


def otsu(values: np.ndarray, bins: int = HIST_BINS) -> float:
    """Otsu's threshold: the split that maximises the between-class variance."""
    h, centres = _histogram(values, bins)
    p = h / h.sum()
    c1 = np.cumsum(p)
    m1 = np.cumsum(p * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m1[-1] * c1 - m1) ** 2 / (c1 * (1.0 - c1))
    k = int(np.nanargmax(np.where((c1 > 0) & (c1 < 1), between, np.nan)))
    step = centres[1] - centres[0] if len(centres) > 1 else 0.0
    return float(centres[k] + 0.5 * step)


def ashman_d(low: np.ndarray, high: np.ndarray) -> float:
    """Ashman's D of two samples: |m1 - m2| sqrt(2) / sqrt(s1² + s2²); above 2, a clean separation."""
    spread = np.sqrt(low.var() + high.var())
    return float(np.sqrt(2.0) * abs(high.mean() - low.mean()) / spread) if spread > 0 else 0.0


def bimodal(values: np.ndarray, low_below: float | None = None) -> bool:
    """Whether a tile's values hold two populations (see the module docstring), the lower one with a mean below
    ``low_below`` (water, not just the darker of two kinds of land)."""
    if values.size < 100:
        return False
    t = kittler_illingworth(values, 64)
    low, high = values[values <= t], values[values > t]
    share = low.size / values.size
    if not (MIN_SHARE <= share <= 1.0 - MIN_SHARE and ashman_d(low, high) >= MIN_ASHMAN_D):
        return False
    return low_below is None or float(low.mean()) < low_below


@dataclass
class Threshold:
    """A threshold and how it was found (``how``: a sentence for the log and the report)."""

    name: str
    value: float
    how: str
    tiles_used: int = 0
    tiles_tried: int = 0
    suspect: str = ""


def _tiles(image: np.ndarray, tile: int):  # noqa: ANN202 - a generator of ((y, x), finite values)
    h, w = image.shape
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            values = image[y : y + tile, x : x + tile]
            values = values[np.isfinite(values)]
            if values.size >= MIN_VALID_SHARE * tile * tile:
                yield (y, x), values


def bimodal_tiles(
    images: Sequence[np.ndarray], tile: int = TILE, low_below: float | None = None
) -> tuple[set[tuple[int, int, int]], int]:
    """The tiles (image index, y, x) of ``images`` that hold two populations (:func:`bimodal`), and how many tiles
    had enough data to be tried."""
    picked, tried = set(), 0
    for i, image in enumerate(images):
        for (y, x), values in _tiles(image, tile):
            tried += 1
            if bimodal(values, low_below):
                picked.add((i, y, x))
    return picked, tried


def split_threshold(
    images: Sequence[np.ndarray],
    name: str,
    default: float,
    *,
    method: str = METHODS[0],
    tile: int = TILE,
    given: float | None = None,
    plausible: tuple[float, float] | None = None,
    low_below: float | None = None,
    also: set[tuple[int, int, int]] | None = None,
    also_why: str = "",
    label: str = "VV",
) -> Threshold:
    """The threshold of ``images`` (2-D arrays, NaN = no data) by split-based thresholding (module docstring).
    ``given``: used as it is. ``default``: when no tile holds two populations. ``low_below``: a tile counts only
    when its lower population's mean is below it (open water, a flood's drop). ``also``: more tiles (image index,
    y, x) to pool, chosen on another image (``also_why`` says which, for the log). ``label``: what the images
    show (for the log)."""
    if given is not None:
        return Threshold(name, float(given), f"{name}: {given:g} dB, as given")
    if method not in METHODS:
        raise SarSegError(f"Unknown threshold method '{method}': expected one of {', '.join(METHODS)}.")
    own, tried = bimodal_tiles(images, tile, low_below)
    wanted = own | (also or set())
    picked = [values for i, image in enumerate(images) for (y, x), values in _tiles(image, tile) if (i, y, x) in wanted]
    if not picked:
        return Threshold(
            name, default,
            f"{name}: {default:g} dB, the literature value: none of the {tried} tiles of {tile} px holds two "
            "populations (no open water, or water bodies smaller than a tile). Give the threshold if you know it.",
            0, tried,
        )  # fmt: skip
    pooled = np.concatenate(picked)
    value = kittler_illingworth(pooled) if method == METHODS[0] else otsu(pooled)
    kind = "Kittler-Illingworth" if method == METHODS[0] else "Otsu"
    extra = len(wanted) - len(own)
    more = f", {extra} of them {also_why}" if extra and also_why else ""
    result = Threshold(
        name, value,
        f"{name}: {value:.2f} dB, {kind} on the {len(picked)} of {tried} tiles of {tile} px that hold two "
        f"populations{more} ({pooled.size:,} pixels)",
        len(picked), tried,
    )  # fmt: skip
    if plausible and not plausible[0] <= value <= plausible[1]:
        result.suspect = (
            f"The {name} {value:.2f} dB lies outside {plausible[0]:g}..{plausible[1]:g} dB, where open water in C-band "
            f"{label} usually separates: check the input's calibration and units, or give the threshold."
        )
    return result


# --- classes of a block -------------------------------------------------------------------------------------------


def smoothed_db(linear: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """The median of the dB values in ``window`` (pixels without data take the mean of their valid neighbours
    first); NaN where not valid. A median, not a mean: at a shore a pixel keeps the side most of its window is
    on, where a mean of 3 land pixels in 9 lifts water by 3 dB and shrinks every flood by its rim."""
    from scipy import ndimage

    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(valid, 10.0 * np.log10(np.where(valid, linear, 1.0)), 0.0)
    if window > 1:
        _, mean, _ = local_moments(db, valid, window)
        filled = np.where(valid, db, np.nan_to_num(mean, nan=0.0))
        db = ndimage.median_filter(filled, size=window, mode="nearest")
    return np.where(valid, db, np.nan)


@dataclass
class Rules:
    """The thresholds (dB) and masks that classify a pixel."""

    water_db: float
    pre_water_db: float | None = None
    change_db: float | None = None
    max_height: float | None = None


def classify(
    post_db: np.ndarray,
    pre_db: np.ndarray | None,
    valid: np.ndarray,
    rules: Rules,
    height: np.ndarray | None = None,
    model_water: np.ndarray | None = None,
) -> np.ndarray:
    """Class ids (uint8) of a block: see the module docstring. ``valid``: both images hold data. ``model_water``:
    where a segmentation model sees water in the post-event image, a third opinion: with a pre-event image, land
    that was not water before is flooded when two of three say so (dark now, darker than before, the model)."""
    water = post_db < rules.water_db
    out = np.full(post_db.shape, DRY, np.uint8)
    if pre_db is None:
        flooded = water
    else:
        pre_water = pre_db < (rules.pre_water_db if rules.pre_water_db is not None else rules.water_db)
        out[water & pre_water] = PERMANENT_WATER
        drop = (post_db - pre_db) < rules.change_db
        if model_water is None:
            flooded = water & ~pre_water & drop
        else:
            votes = water.astype(np.uint8) + drop + model_water
            flooded = ~pre_water & (votes >= 2)
    if height is not None and rules.max_height is not None:
        flooded &= ~(np.isfinite(height) & (height > rules.max_height))
    out[flooded] = FLOODED
    out[~valid] = NODATA
    return out


# --- rasters ------------------------------------------------------------------------------------------------------


def pol_bands(
    ds: gdal.Dataset,
    warn: LogFn | None = None,
    say: LogFn | None = None,
    samples: Sequence[np.ndarray] | None = None,
) -> tuple[int, int | None]:
    """The co-polarised band (the first named VV, else HH, else 1) and its cross-polarised partner (VH with VV, HV
    with HH; None when there is none). Of two or more bands named as no polarisation, bands 1 and 2 are taken by
    brightness (cross-polarised backscatter is 5-10 dB darker): band 2 is the co-polarised one when band 1 is
    clearly the darker (exports often put VH first; :func:`.units.check_band_order`, said in ``warn``), and the
    darker of the two is its partner when it is darker by :data:`PAIR_GAP_DB` or more (said in ``say``); else the
    co-polarised band alone. ``samples``: the image's value sample per band, when already read."""
    descriptions = [ds.GetRasterBand(b).GetDescription() for b in range(1, ds.RasterCount + 1)]
    names = [polarisation_of(d) for d in descriptions]
    for co, cross in (("VV", "VH"), ("HH", "HV")):
        if co in names:
            return names.index(co) + 1, (names.index(cross) + 1 if cross in names else None)
    if ds.RasterCount >= 2 and not any(names):
        if samples is None:
            from .preprocess import check_has_data

            samples = check_has_data(ds, read_info(ds))
        match, note = check_band_order(("VV", "VH"), descriptions, BandMatch((1, 2), ""), samples)
        if note and warn:
            warn(f"{Path(source_path(ds)).name}: {note}")
        co, cross = match.bands
        medians = pair_medians_db(samples[co - 1], samples[cross - 1])
        if medians is not None and medians[0] - medians[1] >= PAIR_GAP_DB:  # clearly a co-/cross-pol pair
            if say and not note:
                say(
                    f"{Path(source_path(ds)).name}: unnamed bands taken as VV (band {co}) and VH (band {cross}):"
                    f" band {cross} is {medians[0] - medians[1]:.1f} dB darker (medians {medians[0]:.1f} and "
                    f"{medians[1]:.1f} dB), as cross-polarised backscatter is. Name the bands (VV, VH) to be sure."
                )
            return co, cross
        return co, None
    return 1, None


@dataclass(frozen=True)
class Index:
    """What the thresholds are found on: one co-polarised band, or the mean of the co- and cross-polarised dB
    values (the geometric mean of their powers), with the water levels that go with it."""

    label: str  # in the output's metadata (SARSEG_FLOOD_BANDS)
    words: str  # in the log
    default_water_db: float
    water_mean_below_db: float
    water_range_db: tuple[float, float]


CO_POL = Index("co-pol", "VV (or HH)", DEFAULT_WATER_DB, WATER_MEAN_BELOW_DB, WATER_RANGE_DB)
DUAL_POL = Index(
    "co+cross", "VV and VH (or HH and HV) averaged in dB", DUAL_DEFAULT_WATER_DB, DUAL_WATER_MEAN_BELOW_DB,
    DUAL_WATER_RANGE_DB,
)  # fmt: skip


@dataclass
class FloodResult:
    path: str
    thresholds: list[Threshold]
    counts: dict[str, int]
    pixel_area_m2: float
    class_names: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    histogram: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def area_km2(self, name: str) -> float:
        return self.counts.get(name, 0) * self.pixel_area_m2 / 1e6


def _linear(
    ds: gdal.Dataset, window: Window, bands: Sequence[int], scales: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The power of one band, or the geometric mean of two (whose dB is the mean of their dB values), and where
    every band holds data."""
    data = read_window(ds, window, list(bands), np.float64)
    valid = valid_mask(data, [ds.GetRasterBand(b).GetNoDataValue() for b in bands]).all(axis=0)
    powers = [radiometry.from_db(x) if scale == radiometry.DB else x for x, scale in zip(data, scales)]
    for x in powers:
        valid &= np.isfinite(x) & (x > 0)
    if len(powers) == 1:
        return powers[0], valid
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.where(valid, powers[0] * powers[1], 0.0)), valid


def _samples(path: str, ds: gdal.Dataset) -> tuple[RasterInfo, list[np.ndarray]]:
    """The image's own info (units, names) and a value sample of every band of ``ds`` (it, or its aligned copy):
    read once, for the band choice and the scales."""
    from .preprocess import check_has_data

    info = read_info(open_raster(path))
    return info, check_has_data(ds, info)


def _band_scales(
    info: RasterInfo, samples: list[np.ndarray], bands: Sequence[int], choice: str, log: LogFn | None,
    warn: LogFn | None,
) -> list[str]:  # fmt: skip
    """The scale (linear, dB) of each of ``bands``, said in the log once."""
    from .preprocess import read_scales

    scales = read_scales(info, samples, choice, log, warn)
    return [scales[band - 1].scale for band in bands]


def flood_map(
    post: str,
    destination: str,
    *,
    pre: str | None = None,
    height: str | None = None,
    max_height: float | None = None,
    opinion: str | None = None,
    opinion_water: int = 0,
    water_db: float | None = None,
    change_db: float | None = None,
    method: str = METHODS[0],
    smooth: int = DEFAULT_SMOOTH,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    input_scale: str = AUTO,
    polarisations: str = POLARISATIONS[0],
    block_size: int = 512,
    outputs: OutputSet | None = None,
    progress: ProgressFn | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    warn: LogFn | None = None,
) -> FloodResult:
    """Map the flood of ``post`` (against ``pre`` when given) into the class GeoTIFF ``destination`` (see the
    module docstring). Other grids (pre-event image, height raster) are aligned to the post-event image's.
    ``opinion``: a class raster of the post-event image (e.g. from ``sarseg:segment``) whose class ``opinion_water``
    is water: a third opinion on the flood (:func:`classify`), used with a pre-event image only."""
    say = log or (lambda _m: None)
    caution = warn or say
    report = progress or (lambda _p: None)
    if smooth < 1 or smooth % 2 == 0:
        raise SarSegError(f"The smoothing window must be an odd number of pixels (1, 3, 5, ...); {smooth} given.")
    if min_area_m2 < 0:
        raise SarSegError(f"The minimum mapping unit must be 0 or more square metres; {min_area_m2:g} given.")
    if height is not None and max_height is None:
        raise SarSegError("A height raster needs a maximum height: give the height above which land cannot flood.")
    if polarisations not in POLARISATIONS:
        raise SarSegError(f"Unknown polarisations '{polarisations}': expected one of {', '.join(POLARISATIONS)}.")
    check_not_same_file([post, pre, height], destination)
    post_ds = open_raster(post)
    info = read_info(post_ds)
    grid = Grid.of(info)
    if grid.geotransform is None:
        raise SarSegError(f"'{Path(post).name}' has no georeferencing: a flood map needs pixel sizes and areas.")
    pixel_area = pixel_area_m2(grid)
    sources: list[gdal.Dataset] = []
    try:
        pre_ds = None
        if pre is not None:
            pre_ds = aligned(pre, grid, "bilinear", "post-event image")
            sources.append(pre_ds)
            if pre_ds.GetDescription().startswith("/vsimem/"):
                say(f"'{Path(pre).name}' was resampled (bilinear) to the grid of '{Path(post).name}'.")
        post_read = _samples(post, post_ds)
        pre_read = _samples(pre, pre_ds) if pre_ds else None
        post_bands, pre_bands, index = _choose_bands(
            post_ds, pre_ds, polarisations, say, caution, post_read[1], pre_read[1] if pre_read else None
        )
        post_scales = _band_scales(*post_read, post_bands, input_scale, log, warn)
        pre_scales = _band_scales(*pre_read, pre_bands, input_scale, log, warn) if pre_read else []
        opinion_ds = None
        if opinion is not None and pre is not None:
            opinion_ds = aligned(opinion, grid, "nearest", "post-event image")
            sources.append(opinion_ds)
            say(f"Third opinion: class {opinion_water} of '{Path(opinion).name}' is water; land that was not water "
                "before is flooded where two of three say so (dark now, darker than before, the model).")  # fmt: skip
        elif opinion is not None:
            say("The model's opinion is used with a pre-event image only: without one, water is the threshold's.")
        height_ds = None
        if height is not None:
            height_ds = aligned(height, grid, "bilinear", "post-event image")
            sources.append(height_ds)
        halo = smooth // 2
        # Pass 1: thresholds from windows spread over the images.
        small = info.width * info.height <= WHOLE_SAMPLE_PIXELS
        windows = (
            [Window(0, 0, info.width, info.height)]
            if small
            else spread_windows(info.width, info.height, SAMPLE_WINDOWS, SAMPLE_SIZE)
        )
        post_tiles, pre_tiles, change_tiles = [], [], []
        sample_smooth = max(smooth, THRESHOLD_SMOOTH)
        for window in windows:
            x, v = _linear(post_ds, window, post_bands, post_scales)
            p_db = smoothed_db(x, v, sample_smooth)
            post_tiles.append(p_db)
            if pre_ds is not None:
                y, u = _linear(pre_ds, window, pre_bands, pre_scales)
                q_db = smoothed_db(y, u, sample_smooth)
                pre_tiles.append(q_db)
                change_tiles.append(p_db - q_db)
            for ds in (post_ds, *sources):  # GDAL's block cache would keep every window's tiles (of both bands)
                ds.FlushCache()
        water_levels = dict(method=method, given=water_db, plausible=index.water_range_db,
                            low_below=index.water_mean_below_db, label=index.words)  # fmt: skip
        change_tiles = [np.where(np.isfinite(c), c, np.nan) for c in change_tiles]
        water_t = split_threshold(post_tiles, "water threshold", index.default_water_db, **water_levels)
        if water_t.tiles_used == 0 and water_db is None and change_tiles:
            # No lake or river to learn water from; where the change holds a drop and the rest, the post-event image
            # holds the flood's water and land: the threshold is found there (a shallow flood is brighter than the
            # literature's open water).
            drop_tiles = bimodal_tiles(change_tiles, TILE, DROP_MEAN_BELOW_DB)[0]
            if drop_tiles:
                water_t = split_threshold(post_tiles, "water threshold", index.default_water_db, also=drop_tiles,
                                          also_why="where the change holds a drop", **water_levels)  # fmt: skip
        thresholds = [water_t]
        rules = Rules(water_t.value, max_height=max_height)
        if pre_ds is not None:
            pre_t = split_threshold(pre_tiles, "pre-event water threshold", water_t.value, **water_levels)
            if pre_t.tiles_used == 0 and water_db is None:
                pre_t.how = (
                    f"pre-event water threshold: {water_t.value:.2f} dB, the post-event one: no tile of the "
                    "pre-event image holds two populations (little open water before the event)"
                )
            change_t = split_threshold(change_tiles, "change threshold", DEFAULT_CHANGE_DB, method=method,
                                       given=change_db, low_below=DROP_MEAN_BELOW_DB)  # fmt: skip
            if change_t.value > 0:
                change_t.suspect = (
                    f"The change threshold {change_t.value:.2f} dB is a rise, not a drop: the images may be in the "
                    "wrong order (pre-event first?). The literature value -3 dB is used instead."
                )
                change_t.value = DEFAULT_CHANGE_DB
            thresholds += [pre_t, change_t]
            rules.pre_water_db, rules.change_db = pre_t.value, change_t.value
        for t in thresholds:
            say(t.how)
            if t.suspect:
                caution(t.suspect)
        histograms = {f"post-event, {index.words} (dB)": _hist(post_tiles)}
        if change_tiles:
            histograms[f"change post - pre, {index.words} (dB)"] = _hist(change_tiles)
        post_tiles = pre_tiles = change_tiles = []  # the sample is not needed any more (~100 MB on large rasters)
        names = CLASS_NAMES if pre_ds is not None else WATER_ONLY_NAMES
        if pre_ds is None:
            say("No pre-event image: every open-water pixel is mapped as water (flood and permanent water together).")
        # Pass 2: classes, block by block, into an uncompressed scratch raster (sieved in place: GDAL's sieve works
        # a patch at a time), then copied into the output, counting the classes.
        run_own = outputs is None
        run = OutputSet() if run_own else outputs
        with run if run_own else ExitStack():
            if run_own:
                check_destinations([(destination, info.width * info.height)], say)
            scratch = run.add(destination, suffix=".classes.tif")
            raw = gdal.GetDriverByName("GTiff").Create(
                str(scratch), info.width, info.height, 1, gdal.GDT_Byte, ["TILED=YES", "BIGTIFF=IF_SAFER"]
            )
            if raw is None:
                raise SarSegError(f"Cannot write beside '{destination}': {gdal.GetLastErrorMsg()}")
            raw.SetGeoTransform(list(grid.geotransform))
            raw.SetProjection(grid.projection)
            band = raw.GetRasterBand(1)
            band.SetNoDataValue(NODATA)
            blocks = iter_blocks(info.width, info.height, block_size, halo)
            for k, block in enumerate(blocks):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                x, v = _linear(post_ds, block.read, post_bands, post_scales)
                p_db = smoothed_db(x, v, smooth)
                q_db, valid = None, v
                if pre_ds is not None:
                    y, u = _linear(pre_ds, block.read, pre_bands, pre_scales)
                    q_db = smoothed_db(y, u, smooth)
                    valid = v & u
                h = None
                if height_ds is not None:
                    h = read_window(height_ds, block.read, [1], np.float64)[0]
                    h[~valid_mask(h[None], [height_ds.GetRasterBand(1).GetNoDataValue()])[0]] = np.nan
                m = None
                if opinion_ds is not None:
                    m = read_window(opinion_ds, block.read, [1], np.uint8)[0] == opinion_water
                cls = classify(p_db, q_db, valid, rules, h, m)
                band.WriteArray(cls[block.inner], block.core.x, block.core.y)
                for ds in (post_ds, raw, *sources):
                    ds.FlushCache()
                report(70.0 * (k + 1) / len(blocks))
            min_pixels = int(round(min_area_m2 / pixel_area)) if pixel_area > 0 else 0
            if min_pixels > 1:
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                gdal.SieveFilter(band, band.GetMaskBand(), band, min_pixels, 4)
                say(f"Minimum mapping unit {min_area_m2:g} m² = {min_pixels} pixels: smaller patches removed.")
            report(85.0)
            counts = np.zeros(256, np.int64)
            with GeoTiffWriter(
                destination, info.width, info.height, 1, np.uint8, grid.geotransform, grid.projection,
                nodata=NODATA, color_table=dict(COLORS), category_names=list(names),
                metadata={"SARSEG_FLOOD_CLASSES": ",".join(names), "SARSEG_FLOOD_BANDS": index.label,
                          **{f"SARSEG_{t.name.upper().replace(' ', '_').replace('-', '_')}_DB": f"{t.value:.3f}"
                             for t in thresholds}},
                outputs=run,
            ) as out:  # fmt: skip
                for block in iter_blocks(info.width, info.height, 1024):
                    data = read_window(raw, block.core, [1], np.uint8)
                    counts += np.bincount(data.ravel(), minlength=256)
                    out.write(block.core, data)
                    raw.FlushCache()
            raw = band = None
            run.discard(scratch)
            report(100.0)
    finally:
        for ds in sources:
            release(ds)
        sources.clear()
    counted = {name: int(counts[i]) for i, name in enumerate(names)}
    result = FloodResult(destination, thresholds, counted, pixel_area, names, histogram=histograms)
    for name in names[1:]:
        say(f"{name}: {result.area_km2(name):.3f} km² ({counted[name]:,} pixels)")
    return result


def _choose_bands(
    post: gdal.Dataset,
    pre: gdal.Dataset | None,
    polarisations: str,
    say: LogFn,
    warn: LogFn,
    post_samples: list[np.ndarray],
    pre_samples: list[np.ndarray] | None,
) -> tuple[list[int], list[int], Index]:
    """The bands of each image to threshold, and what they make (:class:`Index`), said in the log (from each
    image's value sample)."""

    def name(ds: gdal.Dataset, band: int) -> str:
        return ds.GetRasterBand(band).GetDescription() or "unnamed"

    post_co, post_cross = pol_bands(post, warn, say, post_samples)
    pre_co, pre_cross = pol_bands(pre, warn, say, pre_samples) if pre is not None else (None, None)
    both = post_cross is not None and (pre is None or pre_cross is not None)
    if polarisations == "auto" and both:
        say(
            f"Post-event image: bands {post_co} ({name(post, post_co)}) and {post_cross} ({name(post, post_cross)})"
            + (f"; pre-event image: bands {pre_co} and {pre_cross}" if pre is not None else "")
            + ". Water and change are found on the mean of the co- and cross-polarised dB values: open water is "
            "dark in both, and the two speckles are independent (half the variance in the mean)."
        )  # fmt: skip
        return [post_co, post_cross], ([pre_co, pre_cross] if pre is not None else []), DUAL_POL
    why = "" if polarisations == "co-pol" else " (no cross-polarised band in both images)"
    say(
        f"Post-event image: band {post_co} ({name(post, post_co)})"
        + (f"; pre-event image: band {pre_co} ({name(pre, pre_co)})" if pre is not None else "")
        + f": the co-polarised band only{why}."
    )  # fmt: skip
    return [post_co], ([pre_co] if pre is not None else []), CO_POL


def pixel_area_m2(grid: Grid) -> float:
    """Ground area of one pixel (m²): in the CRS's linear unit when projected (corrected where the projection
    stretches lengths, as Web Mercator does); for a CRS in degrees, at the latitude of the grid's centre (a degree
    of longitude shrinks with its cosine). See :func:`.resampling.ground_pixel_size_m`."""
    gt = grid.geotransform
    area = abs(gt[1] * gt[5] - gt[2] * gt[4])
    if not grid.projection:
        return area
    srs = osr.SpatialReference()
    srs.ImportFromWkt(grid.projection)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    size = ground_pixel_size_m(gt, srs, grid.width, grid.height)
    if size is None:
        return area
    return area * (size[0] * size[1]) / (math.hypot(gt[1], gt[4]) * math.hypot(gt[2], gt[5]))


def _hist(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    values = np.concatenate([i[np.isfinite(i)] for i in images]) if images else np.zeros(0)
    if values.size == 0:
        return np.zeros(0), np.zeros(0)
    lo, hi = np.percentile(values, (0.5, 99.5))
    counts, edges = np.histogram(values, bins=80, range=(lo, hi if hi > lo else lo + 1))
    return counts, edges


# --- polygons and communes ----------------------------------------------------------------------------------------


def polygonize(
    classes: str,
    destination: str,
    *,
    outputs: OutputSet | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> int:
    """The flooded patches of a :func:`flood_map` class raster as polygons (layer ``flood``; fields ``class``,
    ``name`` and ``area_km2``) in the GeoPackage ``destination``; returns how many."""
    from .vectors import polygonize_classes

    return polygonize_classes(
        classes, destination, {FLOODED: "flooded"}, layer_name="flood", outputs=outputs, is_canceled=is_canceled
    )


@dataclass
class CommuneFlood:
    """Per commune (in the order given): km² flooded and of permanent water, the flooded share of its mapped
    land, and the share of its area the map covers (0 outside the raster)."""

    flooded_km2: np.ndarray
    permanent_km2: np.ndarray
    flooded_share: np.ndarray
    mapped_share: np.ndarray


def flood_per_commune(
    classes: str,
    geometries: Sequence[bytes | None],
    *,
    is_canceled: Callable[[], bool] | None = None,
) -> CommuneFlood:
    """Flood areas per polygon (WKB in the class raster's CRS; None = skipped) from the class raster of
    :func:`flood_map`, block by block (a pixel belongs to the polygon that holds its centre)."""
    import tempfile

    from .outputs import remove_folder, temporary_folder
    from .zonal import rasterize_zones, zonal_features

    src = open_raster(classes)
    info = read_info(src)
    grid = Grid.of(info)
    pixel_area = pixel_area_m2(grid)
    names = [str(i) for i in range(3)]
    work = temporary_folder(tempfile.gettempdir())
    zones = None
    try:
        zones_path = str(work / "zones.tif")
        rasterize_zones(geometries, grid, zones_path)
        zones = gdal.Open(zones_path)
        res = zonal_features(src, zones, len(geometries), classes=src, class_names=names, is_canceled=is_canceled)
    finally:
        zones = None
        remove_folder(work)
    fractions = np.nan_to_num(res.fractions)
    counts = fractions * res.classified_pixels[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mapped = np.where(res.zone_pixels > 0, res.classified_pixels / np.maximum(res.zone_pixels, 1), 0.0)
        land = counts[:, DRY] + counts[:, FLOODED]
        share = np.where(land > 0, counts[:, FLOODED] / np.maximum(land, 1), np.nan)
    return CommuneFlood(
        flooded_km2=counts[:, FLOODED] * pixel_area / 1e6,
        permanent_km2=counts[:, PERMANENT_WATER] * pixel_area / 1e6,
        flooded_share=share,
        mapped_share=mapped,
    )


def write_report(
    path: str,
    result: FloodResult,
    *,
    post: str,
    pre: str | None = None,
    communes: Sequence[tuple[str, float, float, float]] = (),
    outputs: OutputSet | None = None,
) -> Path:
    """The HTML summary: inputs, thresholds and how they were found, histograms with the thresholds, class areas,
    and (``communes``: name, flooded km², permanent water km², flooded share) the most flooded communes."""
    import html

    from .html_report import fmt, svg_histogram, table, write_page

    parts = [
        "<h2>Inputs</h2>",
        table(
            [],
            [[("post-event", "name"), (html.escape(post), "name")]]
            + ([[("pre-event", "name"), (html.escape(pre), "name")]] if pre else []),
            "left",
        ),  # fmt: skip
        "<h2>Thresholds</h2>",
        table(
            [("threshold", "name"), "dB", "tiles used / tried", ("how it was found", "name")],
            [
                [
                    (html.escape(t.name), "name"),
                    fmt(t.value, 2),
                    f"{t.tiles_used} / {t.tiles_tried}",
                    (html.escape(t.how + (" " + t.suspect if t.suspect else "")), "name"),
                ]
                for t in result.thresholds
            ],
            "wide",
        ),  # fmt: skip
    ]
    for name, (counts, edges) in result.histogram.items():
        marks = [t for t in result.thresholds if (t.name.startswith("change") == name.startswith("change"))]
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(svg_histogram(counts, edges, [(t.value, t.name) for t in marks], name))
    parts += [
        "<h2>Areas</h2>",
        table(
            [("class", "name"), "km²", "pixels"],
            [
                [(html.escape(n), "name"), fmt(result.area_km2(n), 3), f"{result.counts[n]:,}"]
                for n in result.class_names
            ],
        ),  # fmt: skip
    ]
    if communes:
        ranked = sorted(communes, key=lambda row: -(row[1] if np.isfinite(row[1]) else -1))
        parts += [
            "<h2>Communes, most flooded first</h2>",
            table(
                [("commune", "name"), "flooded km²", "permanent water km²", "flooded share of land"],
                [
                    [(html.escape(str(n)), "name"), fmt(f, 3), fmt(p, 3), fmt(100 * s, 1) + " %"]
                    for n, f, p, s in ranked
                ],
            ),  # fmt: skip
        ]
    return write_page(path, "SAR Seg flood map", parts, outputs)
