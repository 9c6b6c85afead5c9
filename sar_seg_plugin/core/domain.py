"""The input domain of a segmentation model: what a raster looks like next to what the model was trained on.

A model's metadata may record the envelope of its training inputs (``training["input_domain"]``)::

    {"enl": [1.0, 30.0],                  # equivalent number of looks, first (VV-like) band, linear power
     "pixel_size_m": [10.0, 40.0],        # pixel sizes trained on
     "db_percentiles": {"levels": [2, 50, 98],
                        "bands": {"VV": [[lo, hi], [lo, hi], [lo, hi]], ...}}}  # per band and level, in dB

Every part is optional. Training writes it with :func:`envelope_from_stats` from the :class:`DomainStats` of its
patches (:func:`measure_domain`); ``sarseg:segment`` measures the same statistics on a sample of the raster and
:func:`check_domain` says, in words, what lies outside and what to do. A result outside the envelope is still
produced: the check warns, it does not refuse. numpy only, no qgis import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import SarSegError
from .radiometry import DB, LINEAR, to_db

#: Key of the envelope in ``ModelMetadata.training``.
ENVELOPE_KEY = "input_domain"
#: Percentiles (of a scene's values in dB) the envelope records, per band.
PERCENTILE_LEVELS = (2, 50, 98)
#: dB added on each side of the training scenes' percentile ranges: calibration differences between products
#: (about +-0.5 dB for Sentinel-1) and the sampling error of a percentile should not raise a warning.
PERCENTILE_MARGIN_DB = 1.0
#: Side of the non-overlapping square cells whose mean²/variance the ENL estimate starts from.
ENL_WINDOW = 7
#: Fewest usable cells for an ENL estimate.
MIN_ENL_CELLS = 50
#: Share of the cells kept as homogeneous: those whose CV² is below this quantile of pure L-look speckle's.
ENL_KEEP = 0.75
#: ENLs reported at most (a constant or heavily filtered image has an unbounded ENL).
MAX_ENL = 1000.0
#: Share of neighbouring pixel pairs holding the very same value above which a raster of many distinct values is
#: taken as median-filtered. A median's output is one of its window's inputs, so neighbours share it: 12-20 % of
#: pairs after a 3x3-9x9 median on speckled scenes, none unfiltered or after the other filters, 1-6 % for
#: backscatter quantised to 16-bit amplitude or to 0.1-0.5 dB.
MEDIAN_TIE_SHARE = 0.08
#: ... and the share of distinct values a sample of about :data:`DISTINCT_SAMPLE` values must hold for it (a
#: quantised raster holds few: 0.2-1.5 % for 16-bit amplitude or 0.1-0.5 dB steps, 12 % for float16; 28-47 % after
#: a median filter).
MEDIAN_DISTINCT_SHARE = 0.2
DISTINCT_SAMPLE = 100_000
#: Windows of a sample looked at for repeated blocks.
BLOCK_WINDOWS = 4
#: Relative error of the ENL estimate (up to about 11 % low on heavily textured scenes) allowed at the ends of
#: the trained ENL range before a warning.
ENL_TOLERANCE = 0.2
#: Relative pixel-size difference accepted at the ends of the trained pixel-size range (as for resampling).
PIXEL_SIZE_TOLERANCE = 0.10


# --- Equivalent number of looks -----------------------------------------------------------------------------


def _cells(linear: np.ndarray, valid: np.ndarray | None, window: int) -> np.ndarray:
    """Sample CV² (variance / mean²) of the non-overlapping ``window`` x ``window`` cells of a (h, w) array that
    are wholly valid, with a positive mean and a variance (not constant)."""
    x = np.asarray(linear, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (h, w) array, got shape {x.shape}")
    ok = np.isfinite(x) if valid is None else (np.asarray(valid, bool) & np.isfinite(x))
    h, w = (s - s % window for s in x.shape)
    if h == 0 or w == 0:
        return np.empty(0)
    cells = x[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2).reshape(-1, window * window)
    cells_ok = ok[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2).reshape(-1, window**2)
    cells = cells[cells_ok.all(axis=1)]
    mean = cells.mean(axis=1)
    var = cells.var(axis=1, ddof=1)
    usable = (mean > 0) & (var > 1e-12 * mean**2)  # constant cells (fill, saturation) hold no speckle
    return var[usable] / mean[usable] ** 2


@lru_cache(maxsize=512)
def _speckle_cv2(looks: float, n: int, cells: int = 8000) -> np.ndarray:
    """Sorted sample CV² of ``cells`` cells of ``n`` pixels of pure L-look Gamma speckle (fixed seed)."""
    rng = np.random.default_rng(20240611)
    sample = rng.gamma(looks, 1.0 / looks, size=(cells, n))
    return np.sort(sample.var(axis=1, ddof=1) / sample.mean(axis=1) ** 2)


def enl_from_cell_cv2(cv2: np.ndarray, window: int = ENL_WINDOW) -> float | None:
    """The ENL from the sample CV² of ``window`` x ``window`` cells (:func:`estimate_enl`); None for too few."""
    cv2 = np.asarray(cv2, dtype=np.float64)
    cv2 = cv2[np.isfinite(cv2) & (cv2 > 0)]
    if cv2.size < MIN_ENL_CELLS:
        return None
    n = window * window
    looks = 1.0 / float(np.median(cv2))
    for _ in range(60):
        if looks >= MAX_ENL:
            return MAX_ENL
        simulated = _speckle_cv2(float(f"{looks:.3g}"), n)
        threshold = float(np.quantile(simulated, ENL_KEEP))
        kept = cv2[cv2 <= threshold]
        if kept.size < MIN_ENL_CELLS // 2:
            kept = np.sort(cv2)[: MIN_ENL_CELLS // 2]
        # CV² scales about as 1/L: move L by the ratio of the kept cells' median to pure speckle's.
        updated = looks * float(np.quantile(simulated, ENL_KEEP / 2)) / float(np.median(kept))
        converged = abs(updated / looks - 1.0) < 1e-3
        looks = updated
        if converged:
            break
    return float(min(looks, MAX_ENL))


def estimate_enl(linear: np.ndarray, valid: np.ndarray | None = None, window: int = ENL_WINDOW) -> float | None:
    """Equivalent number of looks of a (h, w) sample in linear power; None when fewer than
    :data:`MIN_ENL_CELLS` wholly valid ``window`` x ``window`` cells are left.

    Each non-overlapping cell gives a sample CV² = variance / mean² (1/ENL on pure speckle). Edges, texture and
    bright targets only raise a cell's CV², so the estimate keeps the cells that look like pure speckle: those
    below the 75th percentile of the CV² of pure L-look Gamma speckle in cells of the same size, and takes L
    where the median of the kept cells equals that of pure speckle below the same percentile (37.5th); L is
    found by fixed-point iteration from 1 / median CV² of all cells. The pure-speckle quantiles come from a
    fixed-seed simulation, so the small-sample bias of the variance cancels out.

    Measured (tests/unit/test_domain.py, 384 x 384 scenes of parcels of random sigma0 times L-look speckle,
    3 seeds) for L = 1, 2, 4.4, 10, 20: within 4 % with no texture, 6 % with 30 % of the parcels textured
    (Gamma texture, nu 1 to 10), 11 % (low, at L = 1) with 60 %. The plain rule (a low percentile of CV², as
    :func:`~.speckle.estimate_looks`, calibrated the same way) is 6 %, 11 % and 18 % low on the same scenes.
    """
    window = int(window)
    if window < 3:
        raise ValueError(f"the ENL window must be at least 3 pixels, got {window}")
    return enl_from_cell_cv2(_cells(linear, valid, window), window)


# --- Statistics of a sample -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainStats:
    """What the input-domain check compares: the ENL of the first band (linear power; None when it could not be
    measured), each band's 2nd, 50th and 98th percentile in dB (by band name), and the pixel size in metres
    (None when unknown); ``ties``: how often neighbouring pixels of the first band hold the very same value
    (:func:`measure_ties`, on the native pixels)."""

    enl: float | None
    percentiles_db: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    pixel_size_m: float | None = None
    ties: Ties | None = None

    def median_db(self, band: str) -> float | None:
        p = self.percentiles_db.get(band)
        return None if p is None else p[PERCENTILE_LEVELS.index(50)]

    def describe(self) -> str:
        """E.g. "ENL about 4.3, VV median -11.2 dB, VH median -18.0 dB, pixel size 10 m"."""
        parts = [f"ENL about {_enl_text(self.enl)}" if self.enl is not None else "ENL not measurable"]
        parts += [f"{band} median {self.median_db(band):.1f} dB" for band in self.percentiles_db]
        if self.pixel_size_m is not None:
            parts.append(f"pixel size {self.pixel_size_m:.3g} m")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "enl": None if self.enl is None else round(self.enl, 3),
            "db_percentiles": {
                "levels": list(PERCENTILE_LEVELS),
                "bands": {b: [round(v, 2) for v in p] for b, p in self.percentiles_db.items()},
            },
            "pixel_size_m": None if self.pixel_size_m is None else round(self.pixel_size_m, 3),
            "ties": None if self.ties is None else self.ties.to_json(),
        }


@dataclass(frozen=True)
class Ties:
    """Of the valid horizontal and vertical neighbour pairs of a sample, the share holding the very same value
    (``share``), and the share of distinct values among its valid pixels (``distinct``)."""

    share: float
    distinct: float
    pairs: int
    block: int | None = None  # k when the values repeat in k x k blocks (nearest-neighbour upsampling)
    pixel_size_m: float | None = None  # of the pixels measured

    @property
    def median_filtered(self) -> bool:
        """Many equal neighbours among many distinct values, not in blocks: the signature of a median filter."""
        return self.share >= MEDIAN_TIE_SHARE and self.distinct >= MEDIAN_DISTINCT_SHARE and self.block is None

    def to_json(self) -> dict[str, Any]:
        return {
            "share": round(self.share, 4),
            "distinct": round(self.distinct, 4),
            "pairs": self.pairs,
            "block": self.block,
            "pixel_size_m": self.pixel_size_m,
        }


#: Share of the neighbour pairs inside every k x k block (at the best phase) that must tie, and 1 - the share of
#: pairs across blocks that may, for the values to be taken as repeated in blocks (a constant raster is not).
BLOCK_TIE_SHARE = 0.9


def _block_size(a: np.ndarray, ok: np.ndarray) -> int | None:
    """k (2-4) when the values of ``a`` repeat in k x k blocks at some phase, in both axes; else None."""
    for k in (2, 3, 4):
        found = True
        for x in (a, a.T):
            valid = ok if x is a else ok.T
            tie = (x[:, 1:] == x[:, :-1]) & valid[:, 1:] & valid[:, :-1]
            both = valid[:, 1:] & valid[:, :-1]
            best = 0.0
            for phase in range(k):
                inside = (np.arange(x.shape[1] - 1) - phase) % k != k - 1  # the pair (c, c+1) lies in one block
                n, m = int(both[:, inside].sum()), int(both[:, ~inside].sum())
                if n and m and float(tie[:, ~inside].sum()) / m < 1.0 - BLOCK_TIE_SHARE:  # blocks differ
                    best = max(best, float(tie[:, inside].sum()) / n)
            if best < BLOCK_TIE_SHARE:
                found = False
                break
        if found:
            return k
    return None


def measure_ties(
    windows: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    pixel_size_m: float | None = None,
) -> Ties | None:
    """:class:`Ties` of (h, w) windows of ``pixel_size_m`` pixels (NaN, exact zeros and False in ``masks`` are
    not data); None without a valid neighbour pair."""
    same = pairs = 0
    values = []
    blocks = []
    for i, a in enumerate(windows):
        a = np.asarray(a)
        ok = np.isfinite(a) & (a != 0)
        if masks is not None and masks[i] is not None:
            ok &= np.asarray(masks[i], bool)
        for x, y, both in (
            (a[:, 1:], a[:, :-1], ok[:, 1:] & ok[:, :-1]),
            (a[1:, :], a[:-1, :], ok[1:, :] & ok[:-1, :]),
        ):
            pairs += int(both.sum())
            same += int(((x == y) & both).sum())
        values.append(a[ok])
        if ok.sum() >= 64 and len(blocks) < BLOCK_WINDOWS:  # windows with some data: all must show the same blocks
            blocks.append(_block_size(a, ok))
    if pairs == 0:
        return None
    v = np.concatenate(values)
    v = v[:: max(1, v.size // DISTINCT_SAMPLE)]  # a share of distinct values depends on the sample's size: fix it
    block = blocks[0] if blocks and all(b == blocks[0] for b in blocks) else None
    return Ties(same / pairs, np.unique(v).size / v.size, pairs, block, pixel_size_m)


def _enl_text(enl: float) -> str:
    return f"{MAX_ENL:g} or more" if enl >= MAX_ENL else f"{enl:.2g}" if enl < 10 else f"{enl:.0f}"


def _as_windows(arrays: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        if arrays.ndim == 2:
            return [arrays[None]]
        if arrays.ndim == 3:
            return [arrays]
        raise ValueError(f"expected (bands, h, w) arrays, got shape {arrays.shape}")
    return [np.asarray(a)[None] if np.asarray(a).ndim == 2 else np.asarray(a) for a in arrays]


def measure_domain(
    windows: np.ndarray | Sequence[np.ndarray],
    band_names: Sequence[str],
    scales: Sequence[str],
    pixel_size_m: float | None = None,
    *,
    valid: np.ndarray | Sequence[np.ndarray] | None = None,
    enl_window: int = ENL_WINDOW,
) -> DomainStats:
    """The :class:`DomainStats` of a sample: one (bands, h, w) array, or several (windows spread over a raster).

    ``band_names`` and ``scales`` (:data:`~.radiometry.DB` or :data:`~.radiometry.LINEAR`) say what each band is.
    Pixels that are NaN, or False in ``valid`` (one (h, w) mask per window), are left out. The ENL is measured
    on the first band in linear power, over the cells of every window together. Percentiles are of all valid
    values in dB (linear power through :func:`~.radiometry.to_db`, floor -50 dB), exact zeros left out (products
    fill the area outside a swath with 0, often without declaring it nodata).
    """
    arrays = _as_windows(windows)
    if len(band_names) != len(scales):
        raise ValueError("one scale per band name is needed")
    for scale in scales:
        if scale not in (DB, LINEAR):
            raise ValueError(f"band scales must be '{DB}' or '{LINEAR}', got {scale!r}")
    masks: list[np.ndarray | None]
    if valid is None:
        masks = [None] * len(arrays)
    else:
        masks = [np.asarray(valid, bool)] if isinstance(valid, np.ndarray) else [np.asarray(v, bool) for v in valid]
        if len(masks) != len(arrays):
            raise ValueError("one validity mask per window is needed")
    for a in arrays:
        if a.shape[0] != len(band_names):
            raise ValueError(f"expected {len(band_names)} bands, got an array of shape {a.shape}")

    cv2 = []
    for a, ok in zip(arrays, masks):
        first = np.asarray(a[0], dtype=np.float64)
        if scales[0] == DB:
            first = np.power(10.0, first / 10.0)
        cv2.append(_cells(first, ok, enl_window))
    enl = enl_from_cell_cv2(np.concatenate(cv2) if cv2 else np.empty(0), enl_window)
    ties = measure_ties([a[0] for a in arrays], masks, pixel_size_m)

    percentiles: dict[str, tuple[float, float, float]] = {}
    for b, (name, scale) in enumerate(zip(band_names, scales)):
        values = []
        for a, ok in zip(arrays, masks):
            v = np.asarray(a[b], dtype=np.float64)
            keep = np.isfinite(v) & (v != 0)
            if ok is not None:
                keep &= ok
            values.append(v[keep])
        v = np.concatenate(values) if values else np.empty(0)
        if v.size == 0:
            continue
        db = v if scale == DB else to_db(v).astype(np.float64)
        p = np.percentile(db, PERCENTILE_LEVELS)
        percentiles[name] = (float(p[0]), float(p[1]), float(p[2]))
    return DomainStats(enl, percentiles, pixel_size_m, ties)


def block_average(windows: np.ndarray | Sequence[np.ndarray], scales: Sequence[str], factor: int) -> list[np.ndarray]:
    """(bands, h, w) windows averaged over ``factor`` x ``factor`` blocks in linear power (multilooking), as
    linear power; a block with a NaN pixel is NaN. Rows and columns that do not fill a block are dropped."""
    out = []
    for a in _as_windows(windows):
        linear = np.asarray(a, dtype=np.float64).copy()
        for b, scale in enumerate(scales):
            if scale == DB:
                linear[b] = np.power(10.0, linear[b] / 10.0)
        if factor > 1:
            bands, h, w = linear.shape
            hh, ww = h // factor, w // factor
            blocks = linear[:, : hh * factor, : ww * factor].reshape(bands, hh, factor, ww, factor)
            linear = blocks.mean(axis=(2, 4))  # NaN anywhere in a block makes it NaN
        out.append(linear)
    return out


def measure_averaged(
    windows: np.ndarray | Sequence[np.ndarray],
    band_names: Sequence[str],
    scales: Sequence[str],
    pixel_size_m: float,
    averaged_to_m: float,
    *,
    enl_window: int = ENL_WINDOW,
    native_ties: Ties | None = None,
) -> DomainStats:
    """The :class:`DomainStats` of a raster of ``pixel_size_m`` pixels once averaged in linear power to
    ``averaged_to_m`` (what the model sees after multilooking), from a sample of its native pixels
    (``native_ties``: their :func:`measure_ties`, when already measured).

    The sample is averaged over blocks of the whole number of pixels nearest to the size ratio and measured;
    the ENL is then scaled by the square of what that whole number leaves of the ratio (speckle taken as
    independent between pixels), e.g. by (1.4 / 1)² for 7 m pixels averaged to 10 m.
    """
    ratio = averaged_to_m / pixel_size_m
    factor = max(1, int(round(ratio)))
    averaged = block_average(windows, scales, factor)
    stats = measure_domain(averaged, band_names, [LINEAR] * len(band_names), averaged_to_m, enl_window=enl_window)
    # Averaging hides ties: those of the native pixels count (``native_ties`` when already measured), unless the
    # averaging undoes repeated blocks.
    ties = native_ties or measure_ties([a[0] for a in _as_windows(windows)], pixel_size_m=pixel_size_m)
    if ties is None or not ties.block or factor % ties.block:
        stats = replace(stats, ties=ties)
    if stats.enl is not None and ratio > factor:
        stats = replace(stats, enl=min(stats.enl * (ratio / factor) ** 2, MAX_ENL))
    return stats


# --- The envelope -------------------------------------------------------------------------------------------


def _range(values: Sequence[float]) -> list[float]:
    return [float(min(values)), float(max(values))]


def envelope_from_stats(
    stats: Sequence[DomainStats],
    band_names: Sequence[str],
    enl_range: Sequence[float] | None = None,
    pixel_size_range: Sequence[float] | None = None,
    margin_db: float = PERCENTILE_MARGIN_DB,
) -> dict[str, Any]:
    """The envelope (the JSON object of ``training["input_domain"]``) of the inputs a model was trained on.

    ``stats`` are those of the training patches or scenes (:func:`measure_domain`). ``enl_range`` and
    ``pixel_size_range`` are what training simulated; None takes them from the measured stats (left out when
    none was measured). Each band's percentile ranges are the range over ``stats`` widened by ``margin_db`` dB
    on each side (:data:`PERCENTILE_MARGIN_DB`); bands no stats measured are left out.
    """
    if not stats:
        raise ValueError("the envelope needs the stats of at least one training sample")
    envelope: dict[str, Any] = {}
    if enl_range is None:
        measured = [s.enl for s in stats if s.enl is not None]
        enl_range = _range(measured) if measured else None
    if enl_range is not None:
        envelope["enl"] = [round(float(v), 3) for v in _range(enl_range)]
    if pixel_size_range is None:
        sizes = [s.pixel_size_m for s in stats if s.pixel_size_m is not None]
        pixel_size_range = _range(sizes) if sizes else None
    if pixel_size_range is not None:
        envelope["pixel_size_m"] = [round(float(v), 3) for v in _range(pixel_size_range)]
    bands: dict[str, list[list[float]]] = {}
    for name in band_names:
        rows = [s.percentiles_db[name] for s in stats if name in s.percentiles_db]
        if rows:
            table = np.asarray(rows, dtype=np.float64)
            bands[name] = [
                [round(float(table[:, k].min()) - margin_db, 2), round(float(table[:, k].max()) + margin_db, 2)]
                for k in range(len(PERCENTILE_LEVELS))
            ]
    if bands:
        envelope["db_percentiles"] = {"levels": list(PERCENTILE_LEVELS), "bands": bands}
    validate_envelope(envelope, band_names)
    return envelope


def _is_range(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and value[0] <= value[1]
    )


def validate_envelope(envelope: Any, band_names: Sequence[str] | None = None) -> None:
    """Raise SarSegError saying what is wrong when ``envelope`` is not an input-domain envelope (see the module
    docstring); ``band_names``, when given, are the only bands it may name."""
    if not isinstance(envelope, Mapping):
        raise SarSegError(f"'{ENVELOPE_KEY}' must be a JSON object, got {envelope!r}")
    unknown = set(envelope) - {"enl", "pixel_size_m", "db_percentiles"}
    if unknown:
        raise SarSegError(
            f"'{ENVELOPE_KEY}' has unknown keys {sorted(unknown)}: expected enl, pixel_size_m and db_percentiles"
        )
    for key in ("enl", "pixel_size_m"):
        if key in envelope and not (_is_range(envelope[key]) and envelope[key][0] > 0):
            raise SarSegError(f"'{ENVELOPE_KEY}.{key}' must be [low, high] with 0 < low <= high, got {envelope[key]!r}")
    if "db_percentiles" not in envelope:
        return
    table = envelope["db_percentiles"]
    if not isinstance(table, Mapping) or list(table.get("levels", [])) != list(PERCENTILE_LEVELS):
        levels = ", ".join(map(str, PERCENTILE_LEVELS))
        expected = '{"levels": [' + levels + '], "bands": {"VV": [[low, high], ...], ...}}'
        raise SarSegError(f"'{ENVELOPE_KEY}.db_percentiles' must be like {expected}, got {table!r}")
    bands = table.get("bands")
    if not isinstance(bands, Mapping):
        raise SarSegError(f"'{ENVELOPE_KEY}.db_percentiles.bands' must map band names to ranges, got {bands!r}")
    for name, ranges in bands.items():
        if band_names is not None and name not in band_names:
            raise SarSegError(
                f"'{ENVELOPE_KEY}.db_percentiles' names band {name!r}, which is not an input band of the model "
                f"({', '.join(band_names)})"
            )
        if not (isinstance(ranges, (list, tuple)) and len(ranges) == len(PERCENTILE_LEVELS)):
            raise SarSegError(
                f"'{ENVELOPE_KEY}.db_percentiles.bands.{name}' must hold one [low, high] per level "
                f"{list(PERCENTILE_LEVELS)}, got {ranges!r}"
            )
        for r in ranges:
            if not _is_range(r):
                raise SarSegError(
                    f"'{ENVELOPE_KEY}.db_percentiles.bands.{name}' must hold [low, high] pairs of dB, got {r!r}"
                )


def trained_pixel_sizes(envelope: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The (low, high) pixel sizes in metres an envelope records, or None when it does not say."""
    if envelope is None or not _is_range(envelope.get("pixel_size_m")):
        return None
    lo, hi = envelope["pixel_size_m"]
    return float(lo), float(hi)


# --- The check ----------------------------------------------------------------------------------------------

_LEVEL_WORDS = {2: "2nd percentile", 50: "median", 98: "98th percentile"}


def _db_range(lo: float, hi: float) -> str:
    return f"{lo:.1f}..{hi:.1f} dB"


def _check_enl(enl: float, lo: float, hi: float) -> str | None:
    trained = f"{lo:.3g}-{hi:.3g}"
    if enl < lo * (1.0 - ENL_TOLERANCE):
        hint = " (single look?)" if enl < 1.5 else ""
        return (
            f"Input ENL about {_enl_text(enl)}{hint}, below the {trained} the model was trained on: the raster is "
            "noisier than the training data. Apply a speckle filter (sarseg:speckle_filter) or multilook before "
            "segmenting, or fine-tune the model on such data"
        )
    if enl > hi * (1.0 + ENL_TOLERANCE):
        return (
            f"Input ENL about {_enl_text(enl)} (speckle-filtered or multilooked?), above the {trained} the model "
            "was trained on: the raster is smoother than the training data. Segment the product before speckle "
            "filtering or multilooking, or fine-tune the model on such data"
        )
    return None


def _check_pixel_size(size: float, lo: float, hi: float) -> str | None:
    trained = f"{lo:g}-{hi:g} m"
    if size < lo * (1.0 - PIXEL_SIZE_TOLERANCE):
        return (
            f"Input pixel size about {size:.3g} m, finer than the {trained} the model was trained on: turn on "
            f"'Resample to the model's pixel size' (it averages the raster to {lo:g} m pixels), or resample it "
            f"with averaging to {lo:g} m or more before segmenting"
        )
    if size > hi * (1.0 + PIXEL_SIZE_TOLERANCE):
        return (
            f"Input pixel size about {size:.3g} m, coarser than the {trained} the model was trained on: resampling "
            "to finer pixels cannot restore the detail the model learnt from, so small fields, roads and buildings "
            f"are missed. Use a product with pixels of {hi:g} m or finer, or fine-tune the model on such data"
        )
    return None


def _check_band(band: str, measured: Sequence[float], ranges: Sequence[Sequence[float]]) -> list[str]:
    median = PERCENTILE_LEVELS.index(50)
    p, (lo, hi) = measured[median], ranges[median]
    if not lo <= p <= hi:
        side = "below" if p < lo else "above"
        return [
            f"The {band} median is {p:.1f} dB, {side} the {_db_range(lo, hi)} of training scenes: is the raster "
            "calibrated sigma0 in the units the log reports (not amplitude, digital numbers, gamma0 or values "
            "scaled or offset)? Check the 'Input units' and the product's calibration; the classes are unreliable "
            "until the values fit"
        ]
    messages = []
    for k, level in enumerate(PERCENTILE_LEVELS):
        if k == median:
            continue
        p, (lo, hi) = measured[k], ranges[k]
        if lo <= p <= hi:
            continue
        if p < lo:
            what = (
                "darker areas than the training scenes (more calm water or shadow, a lower noise floor, or a "
                "negative calibration offset)"
            )
        else:
            what = (
                "brighter areas than the training scenes (more built-up or bright point targets, steep slopes, "
                "or a positive calibration offset)"
            )
        side = "below" if p < lo else "above"
        messages.append(
            f"The {band} {_LEVEL_WORDS[level]} is {p:.1f} dB, {side} the {_db_range(lo, hi)} of training scenes: "
            f"the raster has {what}; classes in those areas are less reliable"
        )
    return messages


def check_domain(stats: DomainStats, envelope: Mapping[str, Any]) -> list[str]:
    """One message per way ``stats`` lie outside ``envelope``: what differs, with numbers, and what to do.
    Empty when inside. Parts the envelope or the stats lack are not checked."""
    messages = []
    if "enl" in envelope and stats.enl is not None:
        message = _check_enl(stats.enl, *envelope["enl"])
        if message:
            messages.append(message)
    if "pixel_size_m" in envelope and stats.pixel_size_m is not None:
        message = _check_pixel_size(stats.pixel_size_m, *envelope["pixel_size_m"])
        if message:
            messages.append(message)
    bands = envelope.get("db_percentiles", {}).get("bands", {})
    for band, measured in stats.percentiles_db.items():
        if band in bands:
            messages += _check_band(band, measured, bands[band])
    first = next(iter(stats.percentiles_db), "band 1")
    if stats.ties is not None and stats.ties.block is not None:
        k, native = stats.ties.block, stats.ties.pixel_size_m
        size = "" if native is None else f" ({k * native:.3g} m, not {native:.3g} m)"
        messages.append(
            f"The {first} values repeat in {k}x{k} blocks: the raster was resampled by nearest neighbour from "
            f"pixels {k} times as large{size}, so its pixels hold less detail than their size says, and speckle "
            "and texture look coarser than the model knows. Leave 'Resample to the model's pixel size' on (it "
            "averages the blocks back where the model's pixel sizes allow), or give the raster at the pixel size "
            "it was made at (gdalwarp -r average, not -r near)"
        )
    if stats.ties is not None and stats.ties.median_filtered:
        messages.append(
            f"{stats.ties.share:.0%} of neighbouring {first} pixels hold the very same value, among "
            f"{stats.ties.distinct:.0%} distinct values (not a coarse quantisation): the raster looks "
            "median-filtered. A median filter removes the bright points and texture that tell built-up land from "
            "the other classes (with the bundled model on evaluation-only scenes, built-up IoU 0.65 unfiltered, "
            "0.52 after a 3x3 median, 0.35 after a 7x7). Segment the unfiltered image, or filter it with Lee or "
            "Refined Lee (sarseg:speckle_filter)"
        )
    return messages


@dataclass(frozen=True)
class DomainCheck:
    """The outcome of the input-domain check of one run: ``status`` "inside", "outside" or "unchecked" (the
    model records no envelope, or nothing could be measured), the stats and the warnings."""

    status: str
    stats: DomainStats | None = None
    warnings: tuple[str, ...] = ()
    note: str = ""

    def tell(self, log: Callable[[str], None] | None, warn: Callable[[str], None] | None) -> None:
        """The summary in ``log``, then each warning in ``warn`` (``log`` when none)."""
        if log:
            log(self.summary())
        for message in self.warnings:
            if warn or log:
                (warn or log)(message)

    def summary(self) -> str:
        """The log line."""
        if self.stats is None:
            return f"Input domain: not checked ({self.note})"
        measured = self.stats.describe() + (f" ({self.note})" if self.note else "")
        if self.status == "inside":
            return f"Input domain: {measured}: inside the model's training envelope"
        count = len(self.warnings)
        return f"Input domain: {measured}: outside the model's training envelope ({count} warning{'s' * (count > 1)})"

    def metadata(self) -> dict[str, str]:
        """GDAL metadata items of the outputs."""
        items = {"SARSEG_INPUT_DOMAIN": self.status}
        if self.stats is not None and self.stats.enl is not None:
            items["SARSEG_INPUT_ENL"] = f"{self.stats.enl:.3g}"
        if self.stats is not None and self.stats.percentiles_db:
            items["SARSEG_INPUT_DB_PERCENTILES"] = ", ".join(
                f"{band} {'/'.join(f'{v:.1f}' for v in p)}" for band, p in self.stats.percentiles_db.items()
            )
        if self.warnings:
            items["SARSEG_DOMAIN_WARNINGS"] = " | ".join(self.warnings)
        return items

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stats": None if self.stats is None else self.stats.to_json(),
            "warnings": list(self.warnings),
            "note": self.note,
        }
