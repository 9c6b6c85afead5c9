"""Radiometric conversions: linear power <-> decibels, scale detection, per-band normalisation."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .errors import SarSegError

LINEAR = "linear"
DB = "dB"
DEFAULT_FLOOR_DB = -50.0


def to_db(linear: np.ndarray, floor_db: float = DEFAULT_FLOOR_DB) -> np.ndarray:
    """10 log10(x) as float32, with values at or below ``10^(floor_db/10)`` (zeros, negatives) clamped to
    ``floor_db``. Computed in float32 as (10 / ln 10) ln(x) (within 7e-6 dB of float64 on SAR values; numpy's
    float32 logarithm is vectorised, its log10 is not: 4.4 against 13.8 ns a value on an AVX2 CPU, and about 10x
    faster than float64. The conversion runs on every pixel the segmentation reads, beside the model); the input
    is not modified."""
    x = np.asarray(linear, dtype=np.float32)
    y = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        threshold = np.float32(10.0 ** (floor_db / 10.0))
        np.maximum(x, threshold, out=y)
        np.log(y, out=y)
        y *= np.float32(10.0 / math.log(10.0))
        np.copyto(y, np.float32(floor_db), where=x <= threshold)  # the floor itself, exactly, not rounded
    return y if y.ndim else y[()]


def from_db(db: np.ndarray) -> np.ndarray:
    """10^(x/10)."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0).astype(np.float32)


# --- Normalisation -----------------------------------------------------------------------------------

ZSCORE = "zscore"
PERCENTILE = "percentile"
NORMALIZATION_METADATA_KEY = "SARSEG_NORMALIZATION"


@dataclass
class BandStats:
    """Statistics of one band used to normalise it, and how they were computed."""

    name: str
    mean: float
    std: float
    low: float
    high: float
    low_percentile: float
    high_percentile: float
    sample_size: int


@dataclass
class NormalizationStats:
    """Per-band normalisation statistics; serialised to JSON in the output metadata and a side file."""

    method: str
    bands: list[BandStats]

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "bands": [asdict(b) for b in self.bands]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> NormalizationStats:
        try:
            data = json.loads(text)
            return cls(method=data["method"], bands=[BandStats(**b) for b in data["bands"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise SarSegError(
                f"The statistics file is not a SAR Seg normalisation JSON ({exc}). "
                "Use the statistics file written by 'Normalize' or leave the field empty."
            ) from exc


def band_stats(name: str, values: np.ndarray, low_percentile: float = 2.0, high_percentile: float = 98.0) -> BandStats:
    """Mean, standard deviation and clip percentiles of the (valid) values of one band."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise SarSegError(f"Band '{name}' has no valid pixel (all nodata); it cannot be normalised.")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise SarSegError(
            f"Percentiles must satisfy 0 <= low < high <= 100 (got {low_percentile} and {high_percentile})."
        )
    low, high = np.percentile(v, [low_percentile, high_percentile])
    return BandStats(
        name=name,
        mean=float(v.mean()),
        std=float(v.std()),
        low=float(low),
        high=float(high),
        low_percentile=float(low_percentile),
        high_percentile=float(high_percentile),
        sample_size=int(v.size),
    )


def normalize_values(x: np.ndarray, stats: BandStats, method: str) -> np.ndarray:
    """z-score ``(x - mean) / std``, or percentile clip to ``[low, high]`` then min-max to ``[0, 1]``."""
    x = np.asarray(x, dtype=np.float64)
    if method == ZSCORE:
        scale = stats.std if stats.std > 0 else 1.0
        return ((x - stats.mean) / scale).astype(np.float32)
    if method == PERCENTILE:
        span = stats.high - stats.low
        span = span if span > 0 else 1.0
        return ((np.clip(x, stats.low, stats.high) - stats.low) / span).astype(np.float32)
    raise SarSegError(f"Unknown normalisation method '{method}'. Use '{ZSCORE}' or '{PERCENTILE}'.")


def check_stats_fit(stats: NormalizationStats, band_names: Sequence[str]) -> None:
    """Refuse statistics written for a raster with another number of bands."""
    if len(stats.bands) != len(band_names):
        raise SarSegError(
            f"The statistics file describes {len(stats.bands)} band(s) "
            f"({', '.join(b.name for b in stats.bands)}) but the raster has {len(band_names)} "
            f"({', '.join(band_names)}). Use statistics computed on a raster with the same bands."
        )


# --- sigma0, gamma0 and beta0 ------------------------------------------------------------------------

SIGMA0, GAMMA0, BETA0 = "sigma0", "gamma0", "beta0"
RADIOMETRIES = (SIGMA0, GAMMA0, BETA0)
#: Dataset metadata items that state the radiometry (``RADIOMETRY`` is written by ``sarseg:import_sentinel1``) and
#: the incidence angle in degrees (``INCIDENCE_ANGLE`` likewise; ``incidence_near`` / ``incidence_far`` are the
#: names of ESA SNAP's abstracted metadata).
RADIOMETRY_KEYS = ("RADIOMETRY", "CALIBRATION", "BACKSCATTER")
INCIDENCE_KEYS = (
    "INCIDENCE_ANGLE",
    "INCIDENCE_ANGLE_DEG",
    "INCIDENCE_ANGLE_MID",
    "MEAN_INCIDENCE_ANGLE",
    "INCIDENCE_MID",
    "INCIDENCE",
)
INCIDENCE_PAIR = ("INCIDENCE_NEAR", "INCIDENCE_FAR")
#: Incidence angles a backscatter product can have; a value outside is not taken as one.
INCIDENCE_RANGE_DEG = (10.0, 70.0)
#: Sentinel-1 IW spans about 29-46 degrees of incidence: its middle, taken when the raster does not say.
ASSUMED_INCIDENCE_DEG = 37.5
IW_INCIDENCE_DEG = (29.1, 46.0)
RADIOMETRY_METADATA_KEY = "SARSEG_INPUT_RADIOMETRY"

_RADIOMETRY_WORD = re.compile(r"(sigma|gamma|beta)[ _.-]?(0|nought|naught|zero)(?![0-9])")
_GREEK = {"σ": "sigma", "γ": "gamma", "β": "beta", "°": "0", "⁰": "0"}


def radiometry_word(text: str) -> str | None:
    """The radiometry a name states: "Gamma0_VV_db" -> gamma0, "Beta0_VH" -> beta0, "Sigma0_VV" / "sigma nought"
    -> sigma0; None when it names none ("VV", "Gamma-MAP filtered VV")."""
    low = (text or "").lower()
    for greek, latin in _GREEK.items():
        low = low.replace(greek, latin)
    found = {m.group(1) + "0" for m in _RADIOMETRY_WORD.finditer(low)}
    return found.pop() if len(found) == 1 else None


def _item(metadata: Mapping[str, str], keys: Sequence[str]) -> tuple[str, str] | None:
    """The first of ``keys`` (any case) present in ``metadata``, as (key as written, value)."""
    lowered = {k.lower(): k for k in metadata}
    for key in keys:
        if key.lower() in lowered:
            written = lowered[key.lower()]
            return written, str(metadata[written])
    return None


def _angle(value: str) -> float | None:
    try:
        angle = float(str(value).strip().split()[0])
    except (ValueError, IndexError):
        return None
    low, high = INCIDENCE_RANGE_DEG
    return angle if math.isfinite(angle) and low <= angle <= high else None


def incidence_from_metadata(metadata: Mapping[str, str]) -> tuple[float, str] | None:
    """The incidence angle (degrees) the dataset metadata states and the item(s) it was read from, else None."""
    item = _item(metadata, INCIDENCE_KEYS)
    if item is not None and _angle(item[1]) is not None:
        return _angle(item[1]), f"its metadata item {item[0]}={item[1]}"
    near, far = _item(metadata, INCIDENCE_PAIR[:1]), _item(metadata, INCIDENCE_PAIR[1:])
    if near and far and _angle(near[1]) is not None and _angle(far[1]) is not None:
        return (
            _angle(near[1]) + _angle(far[1])
        ) / 2.0, f"the mean of its metadata items {near[0]}={near[1]} and {far[0]}={far[1]}"
    return None


def sigma0_gain(radiometry: str, incidence_deg: float) -> float:
    """sigma0 / ``radiometry`` at ``incidence_deg``: cos for gamma0, sin for beta0, 1 for sigma0."""
    angle = math.radians(incidence_deg)
    return {SIGMA0: 1.0, GAMMA0: math.cos(angle), BETA0: math.sin(angle)}[radiometry]


@dataclass(frozen=True)
class RadiometryPlan:
    """Which backscatter coefficient a raster holds and how it is brought to sigma0, the coefficient the models were
    trained on: gamma0 = sigma0 / cos(incidence), beta0 = sigma0 / sin(incidence) (ellipsoid incidence; the
    terrain-flattened gamma0 of ESA SNAP or ASF is converted the same way, which leaves its terrain correction in).

    ``source``: what said so (empty when nothing did and sigma0 is assumed); ``incidence_deg`` and
    ``incidence_source``: the angle used and where it came from (a band of angles, the metadata, or assumed)."""

    radiometry: str = SIGMA0
    source: str = ""
    incidence_deg: float | None = None
    incidence_source: str = ""

    @property
    def converts(self) -> bool:
        return self.radiometry != SIGMA0

    @property
    def assumed_angle(self) -> bool:
        return self.converts and self.incidence_source.startswith("assumed")

    @property
    def gain(self) -> float:
        """The factor that brings the raster's linear power to sigma0 (1 for sigma0)."""
        if not self.converts or self.incidence_deg is None:
            return 1.0
        return sigma0_gain(self.radiometry, self.incidence_deg)

    @property
    def offset_db(self) -> float:
        """The same in dB: what is added to a dB value to make it sigma0."""
        return 10.0 * math.log10(self.gain)

    def note(self) -> str:
        """The log line: what the raster holds, and what is done about it."""
        if not self.converts:
            return f"The raster holds sigma0 ({self.source}), the coefficient the model was trained on"
        factor = "cos" if self.radiometry == GAMMA0 else "sin"
        spread = ""
        if self.assumed_angle:
            ends = sorted(10.0 * math.log10(sigma0_gain(self.radiometry, a)) for a in IW_INCIDENCE_DEG)
            spread = (
                f". Across a Sentinel-1 IW swath ({IW_INCIDENCE_DEG[0]:g}-{IW_INCIDENCE_DEG[1]:g} deg) the right "
                f"correction is {ends[1]:+.1f} to {ends[0]:+.1f} dB; give the raster a band of incidence angles or "
                f"an {INCIDENCE_KEYS[0]} metadata item (degrees) to use its own angle, or import it as sigma0"
            )
        return (
            f"The raster holds {self.radiometry} ({self.source}), the model was trained on sigma0: converted as "
            f"sigma0 = {self.radiometry} x {factor}(incidence) with an incidence of {self.incidence_deg:.3g} deg "
            f"({self.incidence_source}), {self.offset_db:+.2f} dB on every pixel{spread}"
        )

    def metadata(self) -> dict[str, str]:
        """Output metadata recording it (nothing for sigma0 that nothing stated)."""
        if not self.source:
            return {}
        if not self.converts:
            return {RADIOMETRY_METADATA_KEY: SIGMA0}
        return {
            RADIOMETRY_METADATA_KEY: (
                f"{self.radiometry} converted to sigma0 at {self.incidence_deg:.3g} deg incidence "
                f"({self.incidence_source}): {self.offset_db:+.2f} dB"
            )
        }


_ANGLE_BAND = re.compile(r"incidence|(^|[^a-z])(angle|theta)([^a-z]|$)")


def incidence_from_bands(descriptions: Sequence[str], samples: Sequence[np.ndarray]) -> tuple[float, str] | None:
    """The median of a band named as an incidence angle (ESA SNAP's 'incidenceAngleFromEllipsoid' or
    'localIncidenceAngle', Google Earth Engine's 'angle') whose values are angles in degrees, and where it came from;
    None when the raster has no such band. ``samples``: a value sample of every band. A band of the ellipsoid's
    incidence comes before one of the terrain's local incidence."""
    named = [(b, d, s) for b, (d, s) in enumerate(zip(descriptions, samples), start=1) if _ANGLE_BAND.search(d.lower())]
    for band, description, sample in sorted(named, key=lambda n: "ellipsoid" not in n[1].lower()):
        v = np.asarray(sample, dtype=np.float64)
        v = v[np.isfinite(v) & (v != 0)]
        if v.size and _angle(f"{np.median(v)}") is not None:
            return float(np.median(v)), f"the median of its band {band} '{description}'"
    return None


def plan_radiometry(
    metadata: Mapping[str, str],
    descriptions: Sequence[str],
    path: str = "",
    band_angle: tuple[float, str] | None = None,
) -> RadiometryPlan:
    """What a raster holds, from (first that says) its bands' descriptions, its dataset metadata
    (:data:`RADIOMETRY_KEYS`) or its file name; sigma0 when none does. Bands naming different coefficients are
    refused (SarSegError). The incidence angle of a conversion is ``band_angle`` (:func:`incidence_from_bands`)
    when given, else the metadata's (:func:`incidence_from_metadata`), else :data:`ASSUMED_INCIDENCE_DEG`."""
    named = {d: radiometry_word(d) for d in descriptions if radiometry_word(d)}
    found: str | None = None
    source = ""
    if named:
        kinds = sorted(set(named.values()))
        if len(kinds) > 1:
            raise SarSegError(
                "The bands name different backscatter coefficients ("
                + ", ".join(f"'{d}': {k}" for d, k in named.items())
                + "). Give bands of one coefficient, sigma0 preferably (ESA SNAP 'Calibrate' to sigma0, or "
                "'Import Sentinel-1' with radiometry sigma0)."
            )
        found = kinds[0]
        source = "its band description" + ("s " if len(named) > 1 else " ") + ", ".join(f"'{d}'" for d in named)
    if found is None:
        item = _item(metadata, RADIOMETRY_KEYS)
        if item is not None and (radiometry_word(item[1]) or item[1].strip().lower() in RADIOMETRIES):
            found = radiometry_word(item[1]) or item[1].strip().lower()
            source = f"its metadata item {item[0]}={item[1]}"
    if found is None and path:
        stem = os.path.splitext(os.path.basename(path))[0]
        if radiometry_word(stem):
            found = radiometry_word(stem)
            source = f"its file name '{os.path.basename(path)}'"
    if found is None:
        return RadiometryPlan()
    if found == SIGMA0:
        return RadiometryPlan(SIGMA0, source)
    stated = band_angle or incidence_from_metadata(metadata)
    if stated is not None:
        return RadiometryPlan(found, source, stated[0], stated[1])
    return RadiometryPlan(
        found, source, ASSUMED_INCIDENCE_DEG, "assumed: the middle of a Sentinel-1 IW swath; the raster does not say"
    )
