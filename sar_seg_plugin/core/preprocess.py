"""Raster-level preprocessing: speckle filtering, dB conversion and normalisation, streamed by blocks.

Each function takes file paths, parameters and ``progress`` / ``is_canceled`` callables, and returns a
small dict describing what it did; the Processing algorithms are thin wrappers around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from . import radiometry, speckle, units
from .errors import SarSegError
from .outputs import OutputSet, check_destinations, write_text
from .raster_io import (
    CancelFn,
    GeoTiffWriter,
    ProgressFn,
    RasterInfo,
    check_not_same_file,
    map_blocks,
    open_raster,
    raster_bytes,
    read_info,
    read_window,
    sample_band,
    sample_windows,
    scaling_note,
    spread_windows,
    valid_mask,
)

#: Pixels of each band read to estimate statistics (the whole band below this size).
STATS_SAMPLE = 4_000_000


def check_has_data(
    ds: gdal.Dataset, info: RasterInfo, full: bool = False, windows: Sequence[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Sample every band; refuse a raster whose pixels are all nodata.

    By default the sample comes from a few windows spread over the raster (cheap on large rasters);
    only when those hold no data is the whole raster scanned before refusing it. ``full`` samples the
    whole raster on a regular grid instead (for statistics). ``windows``: those windows already read for
    every band (:func:`~.raster_io.read_spread_windows`), so they are not read again.
    """
    if full:
        samples = [sample_band(ds, b + 1, STATS_SAMPLE) for b in range(info.band_count)]
    else:
        if windows is not None:
            samples = [np.concatenate([w[b][~np.isnan(w[b])] for w in windows]) for b in range(info.band_count)]
        else:
            samples = [sample_windows(ds, b + 1) for b in range(info.band_count)]
        if all(s.size == 0 for s in samples):
            samples = [sample_band(ds, b + 1, STATS_SAMPLE) for b in range(info.band_count)]
    if all(s.size == 0 for s in samples):
        raise SarSegError(
            f"The raster '{info.path}' holds no valid pixel: every pixel is nodata"
            f"{'' if info.nodata[0] is None else f' ({info.nodata[0]})'}. Check the input or its nodata value."
        )
    return samples


def _output_nodata(info: RasterInfo, keep_input_nodata: bool) -> float:
    """The input's nodata value where no valid output can take it (speckle-filtered linear power stays
    positive), else NaN: a dB or normalised value may well equal the input's nodata (0 dB is 0)."""
    nd = info.nodata[0]
    return float(nd) if (keep_input_nodata and nd is not None) else float("nan")


def _fill(out: np.ndarray, nodata: float) -> np.ndarray:
    if np.isnan(nodata):
        return out
    return np.where(np.isfinite(out), out, nodata).astype(np.float32)


# --- Speckle filter -----------------------------------------------------------------------------------


@dataclass
class SpeckleSettings:
    """Parameters of a speckle filter run."""

    filter_name: str = "lee"
    window: int = 7
    looks: float | None = 4.4  # None: estimate from the image
    damping: float = 2.0
    sigma: float = 0.9
    input_scale: str = "auto"  # "auto" | "linear" | "dB"


def estimate_raster_looks(ds: gdal.Dataset, info: RasterInfo, band: int, scale: str, cells: int = 16) -> float:
    """Estimate the ENL of a band from up to ``cells`` contiguous 256x256 windows spread over it."""
    pieces = []
    for window in spread_windows(info.width, info.height, cells, 256):
        data = read_window(ds, window, [band])
        valid = valid_mask(data, [info.nodata[band - 1]])[0]
        linear = radiometry.from_db(data[0]) if scale == radiometry.DB else data[0]
        pieces.append(np.where(valid, linear, np.nan))
    values = np.concatenate([p.reshape(-1, p.shape[-1]) for p in pieces], axis=0)
    return speckle.estimate_looks(values, np.isfinite(values))


def _carried_metadata(info: RasterInfo) -> dict[str, str]:
    """The input's dataset metadata minus SAR Seg's own keys, which describe the input, not the output."""
    return {k: v for k, v in info.metadata.items() if not k.startswith("SARSEG_")}


def speckle_filter_raster(
    src_path: str,
    dst_path: str,
    settings: SpeckleSettings,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Filter every band of a raster; dB input is converted to linear power, filtered and converted back.

    How each band's scale is decided (unit, values, or ``settings.input_scale``) is said in ``log`` (``warn`` when
    the unit and the values disagree) and recorded in the output's metadata.

    Returns ``{"looks": [...], "scale": [...]}`` with the looks and scale used per band.
    """
    if settings.filter_name not in speckle.FILTERS:
        raise SarSegError(
            f"Unknown speckle filter '{settings.filter_name}'. Choose one of {', '.join(speckle.FILTERS)}."
        )
    check_not_same_file([src_path], dst_path)
    ds = open_raster(src_path)
    info = read_info(ds)
    say = log or (lambda _msg: None)
    check_destinations([(dst_path, raster_bytes(info))], say)
    samples = check_has_data(ds, info)
    band_scales = read_scales(info, samples, settings.input_scale, log, warn)
    scales = [s.scale for s in band_scales]
    for b, scale in enumerate(scales):
        if scale == radiometry.DB:
            say(
                f"{info.band_label(b + 1)} is in dB: speckle is multiplicative in linear power, so it is "
                "converted to linear power, filtered, and converted back to dB."
            )

    uses_looks = settings.filter_name in speckle.USES_LOOKS
    looks: list[float] = []
    for b in range(info.band_count):
        if settings.looks is None and uses_looks:
            value = estimate_raster_looks(ds, info, b + 1, scales[b])
            say(f"Estimated number of looks for {info.band_label(b + 1)}: {value:.2f}")
        elif settings.looks is not None:
            value = float(settings.looks)
        else:
            value = float("nan")
        looks.append(value)

    thresholds: list[float | None] = [None] * info.band_count
    if settings.filter_name == "lee_sigma":
        for b, sample in enumerate(samples):
            lin = radiometry.from_db(sample) if scales[b] == radiometry.DB else sample
            thresholds[b] = float(np.percentile(lin, 98)) if lin.size else None

    window = int(settings.window)
    halo = speckle.filter_halo(settings.filter_name, window)
    nodata = _output_nodata(info, keep_input_nodata=radiometry.DB not in scales)

    def run(data: np.ndarray, valid: np.ndarray, _block: object) -> np.ndarray:
        out = np.empty(data.shape, np.float32)
        for b in range(data.shape[0]):
            x = radiometry.from_db(data[b]) if scales[b] == radiometry.DB else data[b]
            y = speckle.apply_filter(
                settings.filter_name,
                x,
                valid[b],
                window=window,
                looks=looks[b],
                damping=settings.damping,
                sigma=settings.sigma,
                point_threshold=thresholds[b],
            )
            if scales[b] == radiometry.DB:
                y = np.where(np.isfinite(y), radiometry.to_db(y), np.nan)
            out[b] = _fill(y, nodata)
        return out

    # Validate parameters once on a tiny array, so bad values fail before any output exists.
    probe = np.ones((window + 2, window + 2), np.float32)
    speckle.apply_filter(settings.filter_name, probe, None, window=window, looks=looks[0] if uses_looks else 1.0,
                         damping=settings.damping, sigma=settings.sigma)  # fmt: skip

    metadata = _carried_metadata(info)
    metadata.update(units.scales_metadata(band_scales))
    metadata.update(
        {
            "SARSEG_SPECKLE_FILTER": settings.filter_name,
            "SARSEG_WINDOW": str(window),
            "SARSEG_LOOKS": json.dumps([round(v, 4) if np.isfinite(v) else None for v in looks]),
        }
    )
    with GeoTiffWriter.like(dst_path, info, nodata=nodata, units=scales, metadata=metadata) as writer:
        map_blocks(ds, writer, run, halo=halo, progress=progress, is_canceled=is_canceled)
    return {"looks": looks, "scale": scales}


# --- dB conversion ------------------------------------------------------------------------------------

TO_DB = "to_db"
TO_LINEAR = "to_linear"


def convert_db_raster(
    src_path: str,
    dst_path: str,
    direction: str = "auto",
    floor_db: float = radiometry.DEFAULT_FLOOR_DB,
    nonpositive_to_nodata: bool = False,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
    input_scale: str = units.AUTO,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Convert every band between linear power and dB.

    ``direction`` is ``to_db``, ``to_linear`` or ``auto`` (each band the other way from its scale). Each band's
    scale is decided by :func:`units.resolve_band` (``input_scale`` overrides it); a band already in the scale asked
    for is refused, not converted twice. Linear values at or below the floor (zeros, negatives) become ``floor_db``,
    or nodata with ``nonpositive_to_nodata``.
    """
    if direction not in (TO_DB, TO_LINEAR, "auto"):
        raise SarSegError(f"Unknown conversion '{direction}'. Use '{TO_DB}', '{TO_LINEAR}' or 'auto'.")
    check_not_same_file([src_path], dst_path)
    ds = open_raster(src_path)
    info = read_info(ds)
    check_destinations([(dst_path, raster_bytes(info))], log)
    samples = check_has_data(ds, info)
    band_scales = read_scales(info, samples, input_scale, log, warn)
    directions = []
    for scale in band_scales:
        wanted = direction if direction != "auto" else (TO_LINEAR if scale.scale == radiometry.DB else TO_DB)
        if (wanted == TO_DB) == (scale.scale == radiometry.DB):
            other = "'dB to linear power'" if scale.scale == radiometry.DB else "'Linear power to dB'"
            raise SarSegError(
                f"{scale.label} is already in {units.scale_label(scale.scale)} ({scale.why}); converting it again "
                f"would give wrong values. Choose {other} or 'Auto-detect', or set 'Input units' if the band is "
                "not what it seems."
            )
        directions.append(wanted)
    nodata = _output_nodata(info, keep_input_nodata=False)
    floor = 10.0 ** (floor_db / 10.0)

    def run(data: np.ndarray, valid: np.ndarray, _block: object) -> np.ndarray:
        out = np.empty(data.shape, np.float32)
        for b in range(data.shape[0]):
            if directions[b] == TO_DB:
                y = radiometry.to_db(data[b], floor_db)
                ok = valid[b] & (data[b] > floor) if nonpositive_to_nodata else valid[b]
            else:
                y = radiometry.from_db(data[b])
                ok = valid[b]
            out[b] = np.where(ok, y, nodata)
        return out

    out_units = [radiometry.DB if d == TO_DB else radiometry.LINEAR for d in directions]
    metadata = _carried_metadata(info)
    metadata.update(units.scales_metadata(band_scales))
    metadata["SARSEG_CONVERSION"] = ",".join(directions)
    with GeoTiffWriter.like(dst_path, info, nodata=nodata, units=out_units, metadata=metadata) as writer:
        map_blocks(ds, writer, run, progress=progress, is_canceled=is_canceled)
    return {"directions": directions, "scales": band_scales}


def read_scales(
    info: RasterInfo,
    samples: list[np.ndarray],
    choice: str,
    log: Callable[[str], None] | None,
    warn: Callable[[str], None] | None,
) -> list[units.BandScale]:
    """Every band's scale by the rule of :mod:`.units`, each decision said in ``log`` (``warn`` for disagreements),
    after the declared scale and offset the values were read with, if any."""
    note = scaling_note(info)
    if note and log:
        log(note)
    scales = units.resolve_scales(info, samples, choice)
    units.tell_scales(scales, log, warn)
    return scales


# --- Normalisation -----------------------------------------------------------------------------------

#: Band unit of normalised outputs (read by :func:`units.unit_word` as normalised values).
NORMALIZED_UNITS = {radiometry.ZSCORE: "z-score", radiometry.PERCENTILE: "normalised"}


def compute_normalization_stats(
    src_path: str, method: str, low_percentile: float = 2.0, high_percentile: float = 98.0
) -> radiometry.NormalizationStats:
    """Per-band statistics over the raster (a regular sample of at most 4 M pixels per band)."""
    ds = open_raster(src_path)
    info = read_info(ds)
    samples = check_has_data(ds, info, full=True)
    bands = [
        radiometry.band_stats(info.band_label(b + 1), s, low_percentile, high_percentile) for b, s in enumerate(samples)
    ]
    return radiometry.NormalizationStats(method=method, bands=bands)


def normalize_raster(
    src_path: str,
    dst_path: str,
    method: str = radiometry.ZSCORE,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    stats: radiometry.NormalizationStats | None = None,
    stats_path: str | None = None,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
) -> radiometry.NormalizationStats:
    """Standardise every band; the statistics used are written to the output metadata (and ``stats_path``).

    Give ``stats`` to reuse statistics from an earlier run (e.g. those of a model's training data).
    """
    check_not_same_file([src_path], dst_path)
    if stats_path:
        check_not_same_file([src_path, dst_path], stats_path)
    ds = open_raster(src_path)
    info = read_info(ds)
    check_destinations([(dst_path, raster_bytes(info))] + ([(stats_path, 0)] if stats_path else []))
    if stats is None:
        stats = compute_normalization_stats(src_path, method, low_percentile, high_percentile)
    else:
        check_has_data(ds, info)
        stats = radiometry.NormalizationStats(method=method, bands=stats.bands)
    radiometry.check_stats_fit(stats, [info.band_label(b + 1) for b in range(info.band_count)])
    nodata = _output_nodata(info, keep_input_nodata=False)

    def run(data: np.ndarray, valid: np.ndarray, _block: object) -> np.ndarray:
        out = np.empty(data.shape, np.float32)
        for b in range(data.shape[0]):
            out[b] = np.where(valid[b], radiometry.normalize_values(data[b], stats.bands[b], method), nodata)
        return out

    metadata = _carried_metadata(info)
    metadata[radiometry.NORMALIZATION_METADATA_KEY] = stats.to_json()
    band_metadata = [
        {"SARSEG_MEAN": b.mean, "SARSEG_STD": b.std, "SARSEG_LOW": b.low, "SARSEG_HIGH": b.high} for b in stats.bands
    ]
    # The raster and the statistics file appear together, or neither does.
    with OutputSet() as outputs:
        if stats_path:
            write_text(stats_path, stats.to_json(), outputs)
        # The band unit says the values are no longer backscatter, so no tool takes them as dB or linear power.
        out_units = [NORMALIZED_UNITS.get(method, "normalised")] * info.band_count
        with GeoTiffWriter.like(
            dst_path,
            info,
            nodata=nodata,
            units=out_units,
            metadata=metadata,
            band_metadata=band_metadata,
            outputs=outputs,
        ) as writer:
            map_blocks(ds, writer, run, progress=progress, is_canceled=is_canceled)
    return stats
