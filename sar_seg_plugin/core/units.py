"""One rule, used by every tool, for what a band holds: linear power or dB, and which polarisation.

Unit metadata decides when it is present and the values agree with it; when it is absent the values decide; when
the two disagree the values win and the log says so; when neither can tell, or the values cannot be calibrated
backscatter at all (digital numbers, integers scaled without a declared scale, normalised values), the run stops
with a message that says what to do. A declared band scale and offset are applied before
(``raster_io.open_raster``). A user's explicit choice ("Input units") always wins, with a warning when the values
disagree.

Bands named as polarisations (VV, VH, HH, HV, in the band description) are matched to what a model expects by
name; unnamed bands are taken in order, and the log says so. No qgis import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..models.metadata import ModelMetadata
from .errors import SarSegError
from .radiometry import (
    DB,
    DEFAULT_FLOOR_DB,
    LINEAR,
    RadiometryPlan,
    from_db,
    incidence_from_bands,
    plan_radiometry,
    to_db,
)
from .raster_io import RasterInfo

AUTO = "auto"
#: The choices of every tool's "Input units" parameter, in the order the parameter lists them.
SCALE_CHOICES = (AUTO, LINEAR, DB)
#: What a band's unit or description may say besides dB and linear power.
AMPLITUDE = "amplitude"
NORMALISED = "normalised"
POLARISATIONS = ("VV", "VH", "HH", "HV")
LogFn = Callable[[str], None]
#: Metadata key under which outputs record how their input bands were read.
SCALES_METADATA_KEY = "SARSEG_INPUT_SCALES"
#: Dataset metadata written by sarseg:normalize: values are standardised, no longer backscatter.
NORMALIZATION_METADATA_KEY = "SARSEG_NORMALIZATION"

_UNIT_ALIASES = {
    "db": DB,
    "decibel": DB,
    "decibels": DB,
    "linear": LINEAR,
    "linear power": LINEAR,
    "intensity": LINEAR,
    "power": LINEAR,
    "amplitude": AMPLITUDE,
    "z-score": NORMALISED,
    "zscore": NORMALISED,
    "normalised": NORMALISED,
    "normalized": NORMALISED,
    "reflectance": "reflectance",
    "uint8": "uint8",
}
# Words in a band description that state its scale (ESA SNAP names bands "Sigma0_VV_db", "Amplitude_VV", ...).
_DESCRIPTION_WORDS = {"db": DB, "intensity": LINEAR, "amplitude": AMPLITUDE}

# Plausible sigma0 / gamma0 / beta0 of a whole scene (medians): about -45 to +2 dB.
DB_MEDIAN_RANGE = (-60.0, -1.0)
LINEAR_MEDIAN_RANGE = (1e-6, 1.5)
MIN_SAMPLE = 16


def unit_word(unit: str) -> str:
    """A band unit string as dB, linear, amplitude, normalised, reflectance or uint8; "" when absent or unknown."""
    return _UNIT_ALIASES.get((unit or "").strip().lower(), "")


def description_scale(description: str) -> str:
    """The scale a band description states, e.g. "Sigma0_VV_db" -> dB, "Amplitude_HH" -> amplitude; else ""."""
    for word in re.split(r"[^a-z0-9]+", (description or "").lower()):
        if word in _DESCRIPTION_WORDS:
            return _DESCRIPTION_WORDS[word]
    return ""


def polarisation_of(description: str) -> str | None:
    """The polarisation a band description names as a word (``VV``, ``Sigma0_VH_db``, ``vv``), else None."""
    text = (description or "").strip().upper()
    for pol in POLARISATIONS:
        if re.search(rf"(^|[^A-Z]){pol}([^A-Z]|$)", text):
            return pol
    return None


@dataclass(frozen=True)
class ValueEvidence:
    """What a band's values say about its scale: ``scale`` (dB, linear, or None when they say neither), a short
    ``summary`` of the values and ``why`` in words."""

    scale: str | None
    summary: str
    why: str
    negative: float = 0.0  # share of negative values


def scale_from_values(sample: np.ndarray) -> ValueEvidence:
    """Tell dB from linear power by the values alone.

    Calibrated backscatter in linear power is positive with a scene median between about 1e-5 and 1 (-50 to 0 dB);
    in dB it is mostly negative with a median between about -45 and -1. Values centred on zero (a z-score, a
    difference), far too large (digital numbers, amplitude counts) or far too negative (dB scaled by 10 or 100) are
    neither, and are reported as such. Exact zeros are left out: products fill the area outside the swath with 0,
    often without declaring it as nodata.
    """
    v = np.asarray(sample, dtype=np.float64)
    v = v[np.isfinite(v) & (v != 0)]  # exact zeros: fill outside a swath whose nodata value is not declared
    if v.size < MIN_SAMPLE:
        return ValueEvidence(None, f"{v.size} valid value(s)", "too few valid pixels to tell")
    p1, med, p99 = np.percentile(v, [1, 50, 99])
    negative = float((v < 0).mean())
    summary = f"median {med:.4g}, 1-99 % range {p1:.4g} .. {p99:.4g}, {negative:.0%} negative"

    def evidence(scale: str | None, why: str) -> ValueEvidence:
        return ValueEvidence(scale, summary, why, negative)

    if abs(med) < 1.0 and 0.2 < negative < 0.8:
        return evidence(None, "the values are centred on 0: normalised values or a difference, not backscatter")
    if negative >= 0.5:
        if DB_MEDIAN_RANGE[0] <= med <= DB_MEDIAN_RANGE[1] and p99 < 40:
            return evidence(DB, "mostly negative values in the range of backscatter in dB")
        if med < DB_MEDIAN_RANGE[0]:
            return evidence(None, "the values are far below backscatter in dB (-45 to +5): dB scaled by 10 or 100?")
        return evidence(None, "the values are neither backscatter in dB nor linear power")
    if negative > 0.2:
        return evidence(None, "the values mix signs: neither linear power (never negative) nor dB")
    if LINEAR_MEDIAN_RANGE[0] <= med <= LINEAR_MEDIAN_RANGE[1] and p99 < 1e4:
        return evidence(LINEAR, "positive values in the range of backscatter in linear power")
    if med > LINEAR_MEDIAN_RANGE[1]:
        return evidence(
            None,
            "the values are far above calibrated backscatter in linear power (about 0.001 to 1): uncalibrated "
            "digital numbers or amplitudes?",
        )
    return evidence(None, "the values are far below backscatter in linear power (about 0.001 to 1)")


@dataclass(frozen=True)
class BandScale:
    """How one band is read: ``scale`` (dB or linear), where that came from (``source``: "unit", "values" or
    "choice") and ``why``; ``warning`` when the metadata or the choice disagreed with the values."""

    band: int  # 1-based
    label: str
    scale: str
    source: str
    why: str
    warning: bool = False

    @property
    def note(self) -> str:
        """The log line: the band and why it is read as it is."""
        return f"{self.label}: {self.why}"


#: A scene median above this (dB) is not calibrated backscatter, whatever the band's unit says: a scene of towns
#: alone is about -4 dB in VV, while uncalibrated intensity (digital numbers squared) is some +30 to +60 dB.
CALIBRATED_MAX_MEDIAN_DB = 5.0


def scale_label(scale: str) -> str:
    """ "dB" or "linear power", for messages."""
    return "dB" if scale == DB else "linear power"


def _integer_message(label: str, dtype: np.dtype, sample: np.ndarray, evidence: ValueEvidence) -> str:
    v = np.asarray(sample, dtype=np.float64)
    med = float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else 0.0
    if med < DB_MEDIAN_RANGE[0]:
        likely = (
            f"dB scaled by an integer factor (a median of {med:g} would be {med / 100:.1f} dB at a scale of 100, "
            f"{med / 10:.1f} dB at 10). Declare the scale on the file, which QGIS and SAR Seg then apply (e.g. "
            "gdal_edit.py -scale 0.01 -units dB FILE), or divide by the factor in the Raster Calculator, save as "
            "Float32 and set the band unit to dB"
        )
    else:
        likely = (
            "uncalibrated digital numbers (e.g. a Sentinel-1 GRD measurement file) or scaled values. Calibrate the "
            "product to sigma0 first (ESA SNAP 'Calibrate', or GDAL's SENTINEL1_CALIB:SIGMA0 subdataset)"
        )
    return (
        f"{label} holds {np.dtype(dtype).name} integers ({evidence.summary}), not calibrated backscatter: most "
        f"likely {likely}. If these integers really are dB or linear power, set 'Input units' to say so."
    )


def resolve_band(
    band: int,
    label: str,
    unit: str,
    description: str,
    dtype: np.dtype,
    sample: np.ndarray,
    choice: str = AUTO,
) -> BandScale:
    """The scale of one band by the rule of this module (see the module docstring); raises SarSegError when the
    band cannot be read as backscatter and no choice was given."""
    if choice not in SCALE_CHOICES:
        raise SarSegError(f"Unknown input units '{choice}'. Use one of {', '.join(SCALE_CHOICES)}.")
    ev = scale_from_values(sample)
    declared = unit_word(unit) or description_scale(description)
    stated = f"unit '{unit}'" if unit_word(unit) else f"description '{description}'"
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    warning = False
    if choice != AUTO:
        scale, source = choice, "choice"
        why = f"read as {scale_label(choice)} as chosen in 'Input units' ({ev.summary})"
        if ev.scale is not None and ev.scale != choice:
            why += f", although its values look like {scale_label(ev.scale)}"
            warning = True
    elif declared == NORMALISED:
        raise SarSegError(
            f"{label} holds normalised values ({stated}), not backscatter. Give the raster as it was before "
            "'Normalize' (linear power or dB): the tools and models normalise it themselves."
        )
    elif declared == AMPLITUDE:
        raise SarSegError(
            f"{label} holds amplitude ({stated}), not power. Square it to intensity (linear power) in the Raster "
            "Calculator first, or set 'Input units' if it really is power."
        )
    elif ev.scale is None and integer or ev.scale == LINEAR and integer and declared != LINEAR:
        raise SarSegError(_integer_message(label, dtype, sample, ev))
    elif (
        declared in (DB, LINEAR)
        and ev.scale is None
        and (median_db := _median_db(sample, declared)) is not None
        and median_db > CALIBRATED_MAX_MEDIAN_DB
    ):
        raise SarSegError(
            f"{label} is labelled {scale_label(declared)} ({stated}), but its median is "
            f"{median_db:+.1f} dB ({ev.summary}): far above the backscatter of any calibrated "
            f"scene (medians about -30 to 0 dB). Most likely uncalibrated intensity (digital numbers squared, such "
            "as ESA SNAP's 'Intensity_VV' before 'Calibrate'). Calibrate to sigma0 first (SNAP Radiometric > "
            "Calibrate, or 'Import Sentinel-1' on the product), or set 'Input units' if these values really are "
            "backscatter."
        )
    elif declared in (DB, LINEAR) and ev.scale in (declared, None):
        scale, source = declared, "unit"
        if ev.scale == declared:
            why = f"in {scale_label(declared)} by its {stated}, and its values agree ({ev.summary})"
        else:
            why = f"read as {scale_label(declared)} as its {stated} says, although {ev.why} ({ev.summary})"
            warning = True
    elif declared in (DB, LINEAR):
        scale, source, warning = ev.scale, "values", True
        why = (
            f"labelled {scale_label(declared)} ({stated}) but its values are {scale_label(ev.scale)} "
            f"({ev.summary}): read as {scale_label(ev.scale)}. Correct the band's unit, or set 'Input units' if "
            "the label is right."
        )
    elif ev.scale is None:
        raise SarSegError(
            f"Cannot tell whether {label} holds linear power or dB: it has no dB or linear unit and {ev.why} "
            f"({ev.summary}). "
            "Give calibrated backscatter (sigma0), or set 'Input units' to linear power or dB if you know which."
        )
    else:
        scale, source = ev.scale, "values"
        why = f"no dB or linear unit, {scale_label(scale)} by its values ({ev.why}; {ev.summary})"
    if scale == LINEAR and ev.negative > 0:
        why += (
            f". {ev.negative:.1%} of its values are negative, which power cannot be (thermal-noise subtraction "
            "leaves some): they are used as they are"
        )
        warning = True
    return BandScale(band, label, scale, source, why, warning)


def tell(notes: Sequence[str], warnings: Sequence[str], log: LogFn | None, warn: LogFn | None) -> None:
    """Say the decisions: ``notes`` in ``log``, ``warnings`` (disagreements) in ``warn`` (``log`` when none)."""
    for note in notes:
        if log:
            log(note)
    for note in warnings:
        if warn or log:
            (warn or log)(note)


def tell_scales(scales: Sequence[BandScale], log: LogFn | None, warn: LogFn | None) -> None:
    """Say how each band's scale was decided (:func:`tell`)."""
    tell([s.note for s in scales if not s.warning], [s.note for s in scales if s.warning], log, warn)


def is_backscatter(info: RasterInfo) -> bool:
    """Whether a raster says it holds backscatter: a band unit of dB or linear power, or a band named as a
    polarisation; not when it says it holds normalised values."""
    if NORMALIZATION_METADATA_KEY in (info.metadata or {}) or any(unit_word(u) == NORMALISED for u in info.units):
        return False
    return any(unit_word(u) in (DB, LINEAR) for u in info.units) or any(map(polarisation_of, info.descriptions))


def convert_scale(values: np.ndarray, source: str, target: str) -> np.ndarray:
    """Values in scale ``source`` expressed in scale ``target`` (dB or linear power)."""
    if source == target:
        return values
    return to_db(values) if target == DB else from_db(values)


def refuse_normalised(metadata: dict[str, str], path: str) -> None:
    """Refuse a raster written by sarseg:normalize where backscatter is needed."""
    if NORMALIZATION_METADATA_KEY in (metadata or {}):
        raise SarSegError(
            f"'{path}' holds normalised values (written by 'Normalize'), not backscatter. Give the raster as it was "
            "before normalisation (linear power or dB): the tools and models normalise it themselves."
        )


def resolve_scales(info: RasterInfo, samples: Sequence[np.ndarray], choice: str = AUTO) -> list[BandScale]:
    """The scale of every band of a raster, from a sample of each band's valid values."""
    refuse_normalised(info.metadata, info.path)
    scales = [
        resolve_band(
            b, band_name(info, b), info.units[b - 1], info.descriptions[b - 1], info.dtype, samples[b - 1], choice
        )  # fmt: skip
        for b in range(1, info.band_count + 1)
    ]
    return flag_amplitude(info.descriptions, samples, scales)


def band_name(info: RasterInfo, band: int) -> str:
    """How the log names a 1-based band: "band 2 ('VH')", or "band 2" when it has no description."""
    description = info.descriptions[band - 1]
    return f"band {band} ('{description}')" if description else f"band {band}"


def scales_metadata(scales: Sequence[BandScale]) -> dict[str, str]:
    """Output metadata recording how the input bands were read (band, scale, source)."""
    return {SCALES_METADATA_KEY: json.dumps([{k: v for k, v in asdict(s).items() if k != "why"} for s in scales])}


# --- amplitude read as power ------------------------------------------------------------------------------------

#: Co- and cross-polarised partners (the pairs a dual-polarisation product holds).
POLARISATION_PAIRS = (("VV", "VH"), ("HH", "HV"))
#: Calibrated C-band backscatter power: the cross-polarised band's scene median is below about -14 dB and the
#: co-polarised median is 5-10 dB above it (FACTS: water -20 / -26, crops -11 / -18, forest -7.5 / -13, towns -4 /
#: -10). Amplitude (the square root of power) read as power halves every dB value: a cross-polarised median of
#: about -7 to -12 dB, 2.5-5 dB under the co-polarised one. A pair read as power (or dB) with the cross-polarised
#: median above ``AMPLITUDE_CROSS_MEDIAN_DB[0]`` *and* the two medians closer than ``AMPLITUDE_GAP_DB[1]`` looks
#: like amplitude. A power scene of towns alone (-4 / -10) has the bright cross-polarised median but the full gap;
#: both limits were checked on both scene generators at every ENL, filter and pixel size of the model card's grid
#: (power: gaps 5.3-9.9 dB, cross-polarised medians -24..-14.5 dB; their amplitude: 2.6-5.0 dB, -12..-7 dB).
#: Values that squared would not be backscatter power either (a cross-polarised median above -8 dB, or two bands
#: alike) are not called amplitude: the other rules judge them.
AMPLITUDE_CROSS_MEDIAN_DB = (-13.0, -4.0)
AMPLITUDE_GAP_DB = (1.5, 5.1)
#: Refused only below this gap: between it and AMPLITUDE_GAP_DB[1] (amplitude of windy water, but also a power
#: scene of dense forest or gamma0 a little brighter than sigma0) the measurement is a warning.
AMPLITUDE_REFUSE_GAP_DB = 4.5


#: Values a scene median is taken on (evenly thinned): plenty for a median, cheap next to a model run.
MEDIAN_SAMPLE = 100_000


def _thin(sample: np.ndarray) -> np.ndarray:
    v = np.asarray(sample).ravel()
    return v[:: max(1, v.size // MEDIAN_SAMPLE)]


def _median_db(sample: np.ndarray, scale: str) -> float | None:
    v = np.asarray(_thin(sample), dtype=np.float64)
    v = v[np.isfinite(v) & (v != 0)]
    if scale == LINEAR:
        v = 10.0 * np.log10(v[v > 0])
    return float(np.median(v)) if v.size >= MIN_SAMPLE else None


def amplitude_suspicion(
    co: np.ndarray, cross: np.ndarray, co_scale: str, cross_scale: str, names: tuple[str, str] = ("VV", "VH")
) -> str | None:
    """Why a co- and cross-polarised pair (value samples, each with the scale it is read in) looks like amplitude
    rather than power, or None when it does not (see :data:`AMPLITUDE_CROSS_MEDIAN_DB`)."""
    found = _amplitude_medians(co, cross, co_scale, cross_scale)
    return None if found is None else _amplitude_message(*found, co_scale, names)


def _amplitude_medians(
    co: np.ndarray, cross: np.ndarray, co_scale: str, cross_scale: str
) -> tuple[float, float] | None:
    """The pair's medians (dB) when they look like amplitude (:data:`AMPLITUDE_CROSS_MEDIAN_DB`), else None."""
    m_co, m_cross = _median_db(co, co_scale), _median_db(cross, cross_scale)
    if m_co is None or m_cross is None:
        return None
    low, high = AMPLITUDE_CROSS_MEDIAN_DB
    if not (low < m_cross < high and AMPLITUDE_GAP_DB[0] < m_co - m_cross < AMPLITUDE_GAP_DB[1]):
        return None
    return m_co, m_cross


def _amplitude_message(m_co: float, m_cross: float, co_scale: str, names: tuple[str, str]) -> str:
    return (
        f"{names[0]} and {names[1]} look like amplitude (the square root of power), not power: read as "
        f"{scale_label(co_scale)}, their medians are {m_co:.1f} and {m_cross:.1f} dB, {m_co - m_cross:.1f} dB "
        f"apart, where calibrated backscatter power has its {names[1]} median below about "
        f"{AMPLITUDE_CROSS_MEDIAN_DB[0]:g} dB and {names[0]} 5-10 dB above it; amplitude read as power halves both "
        f"(squared, these would be {2 * m_co:.1f} and {2 * m_cross:.1f} dB)"
    )


def check_amplitude(
    names: Sequence[str], samples: Sequence[np.ndarray], scales: Sequence[BandScale]
) -> tuple[str, bool, int] | None:
    """The amplitude check of a raster's bands (``names``: each band's polarisation or name, ``samples`` and
    ``scales`` in the same order): None when no co- / cross-polarised pair looks like amplitude, else (message,
    refuse, index of the co-polarised band). ``refuse`` is True when neither band's scale was stated (no unit, no
    'Input units' choice) and the medians are under :data:`AMPLITUDE_REFUSE_GAP_DB` apart: the values decide, and
    amplitude cannot be read as power. A stated unit or choice, or a gap not beyond doubt, goes on, with the
    message as a warning."""
    pols = [polarisation_of(n) for n in names]
    for co, cross in POLARISATION_PAIRS:
        if co in pols and cross in pols:
            i, j = pols.index(co), pols.index(cross)
            found = _amplitude_medians(samples[i], samples[j], scales[i].scale, scales[j].scale)
            if found is None:
                return None
            why = _amplitude_message(*found, scales[i].scale, (co, cross))
            stated = scales[i].source != "values" or scales[j].source != "values"
            if scales[i].scale == DB and scales[j].scale == DB:
                fix = (
                    "If they are dB computed as 10 log10 of amplitude, multiply them by 2 (gdal_calc.py -A input.tif "
                    '--allBands=A --calc="2*A" --type=Float32 --outfile=db.tif)'
                )
            else:
                fix = (
                    "Square the bands to intensity (linear power), e.g. gdal_calc.py -A input.tif --allBands=A "
                    '--calc="A*A" --type=Float32 --outfile=power.tif (or the Raster Calculator, band by band)'
                )
            if stated or found[0] - found[1] >= AMPLITUDE_REFUSE_GAP_DB:  # not beyond doubt: said, not refused
                return f"{why}. They are read as stated, but check them: {fix}.", False, i
            return f"{why}. {fix}; or set 'Input units' if they really are power (or dB of power).", True, i
    return None


def flag_amplitude(names: Sequence[str], samples: Sequence[np.ndarray], scales: Sequence[BandScale]) -> list[BandScale]:
    """``scales`` after the amplitude check (:func:`check_amplitude`): raises SarSegError where the values alone
    decided; where a unit or choice stated the scale, the co-polarised band's decision carries the message as a
    warning."""
    found = check_amplitude(names, samples, scales)
    if found is None:
        return list(scales)
    message, refuse, i = found
    if refuse:
        raise SarSegError(message)
    out = list(scales)
    out[i] = replace(out[i], why=f"{out[i].why}. {message}", warning=True)
    return out


# --- bands a model expects, matched by name ---------------------------------------------------------------------


@dataclass(frozen=True)
class BandMatch:
    """Which raster band feeds each of a model's inputs (1-based, in the model's order), and the log line."""

    bands: tuple[int, ...]
    note: str


def _listing(names: Sequence[str], band_units: Sequence[str] | None = None) -> str:
    """E.g. "VV (dB), VH (dB)"."""
    if not band_units:
        return ", ".join(names)
    return ", ".join(f"{name} ({unit})" for name, unit in zip(names, band_units))


def match_bands(
    expected: Sequence[str],
    descriptions: Sequence[str],
    what: str = "the model",
    expected_units: Sequence[str] | None = None,
) -> BandMatch:
    """Raster bands for the ``expected`` band names: by polarisation name when the model's bands are polarisations
    and the raster names its bands; else in order, the band count having to match.

    Extra raster bands are left out when the names say which to use; a missing or doubled polarisation is refused.
    """
    wanted = [polarisation_of(name) for name in expected]
    have = [polarisation_of(d) for d in descriptions]
    listed = (
        ", ".join(f"{name} ({unit})" for name, unit in zip(expected, expected_units or []))
        if expected_units
        else ", ".join(expected)
    )
    n = len(descriptions)
    if all(wanted) and any(have):
        chosen = []
        for pol in wanted:
            found = [i + 1 for i, h in enumerate(have) if h == pol]
            if not found:
                named = ", ".join(f"{i + 1}: '{d}'" for i, d in enumerate(descriptions) if d) or "none"
                others = sorted({h for h in have if h and h not in wanted})
                if others and not any(h in wanted for h in have):
                    raise SarSegError(
                        f"{what} expects bands {listed}, but the raster holds {'/'.join(others)} (band names: "
                        f"{named}): another polarisation than the model was trained on, whose backscatter differs "
                        "(over water, towns and crops HH is not VV), so its classes would not hold. Give "
                        f"{'/'.join(wanted)} data, or fine-tune a model on labelled {'/'.join(others)} scenes "
                        "(README, 'Fine-tuning on your own labels'); renaming the bands would hide the difference, "
                        "not remove it."
                    )
                raise SarSegError(
                    f"{what} expects bands {listed}, but no band of the raster is named {pol} (band names: {named}). "
                    f"Give a raster with {listed} bands, or name its bands (band descriptions) {listed}."
                )
            if len(found) > 1:
                raise SarSegError(
                    f"{what} expects one {pol} band, but bands {', '.join(map(str, found))} of the raster are all "
                    f"named {pol}. Keep one {pol} band (e.g. with Raster > Extraction or gdal_translate -b)."
                )
            chosen.append(found[0])
        pairs = ", ".join(f"{name} <- band {b} ('{descriptions[b - 1]}')" for name, b in zip(expected, chosen))
        unused = [i + 1 for i in range(n) if i + 1 not in chosen]
        if chosen == list(range(1, len(expected) + 1)) and not unused:
            note = f"Bands matched by name: {pairs}"
        else:
            note = f"Bands matched by name (not by position): {pairs}" + (
                f"; band(s) {', '.join(map(str, unused))} not used" if unused else ""
            )
        return BandMatch(tuple(chosen), note)
    if n != len(expected):
        raise SarSegError(
            f"{what} expects {len(expected)} band{'s' if len(expected) != 1 else ''}: {listed}; the raster has {n} "
            f"band{'s' if n != 1 else ''}. Choose (or stack) a raster with exactly these bands"
            + (", or name its bands so they can be matched" if all(wanted) else ", in this order")
        )
    if all(wanted):
        pairs = ", ".join(f"band {i + 1} as {name}" for i, name in enumerate(expected))
        note = (
            f"The raster's bands are not named as polarisations: taken in order, {pairs}. Name them (band "
            f"descriptions {listed}) to have them matched by name."
        )
    else:
        note = f"Bands taken in order as {listed}"
    return BandMatch(tuple(range(1, n + 1)), note)


#: How much darker (dB, scene medians) the band in the co-polarised place must be than the cross-polarised one for
#: the two to count as swapped: calibrated co-polarised power is 5-10 dB above the cross-polarised (amplitude 2.5-5).
SWAPPED_GAP_DB = 2.0


def pair_medians_db(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """The scene medians in dB of two backscatter bands (value samples) read in one scale, or None when their
    values do not say one scale for both (the unit rule judges them) or the samples are too small."""
    a, b = _thin(a), _thin(b)
    scale_a, scale_b = scale_from_values(a).scale, scale_from_values(b).scale
    if scale_a is None or scale_a != scale_b:
        return None
    m_a, m_b = _median_db(a, scale_a), _median_db(b, scale_b)
    return None if m_a is None or m_b is None else (m_a, m_b)


def check_band_order(
    expected: Sequence[str], descriptions: Sequence[str], match: BandMatch, samples: Sequence[np.ndarray]
) -> tuple[BandMatch, str | None]:
    """A co- and cross-polarised pair of ``expected`` bands checked against their scene medians: cross-polarised
    backscatter is the darker. Bands taken in order (the raster names none as a polarisation) whose co-polarised
    place holds the clearly darker band (by :data:`SWAPPED_GAP_DB`) are swapped; named ones are kept, with a
    warning. Returns the (maybe new) match and the warning, if any. Bands whose values do not say one scale for
    both are left as they are (the unit rule judges them)."""
    pols = [polarisation_of(n) for n in expected]
    by_name = any(polarisation_of(d) for d in descriptions)
    for co, cross in POLARISATION_PAIRS:
        if co not in pols or cross not in pols:
            continue
        i, j = pols.index(co), pols.index(cross)
        band_co, band_cross = match.bands[i], match.bands[j]
        medians = pair_medians_db(samples[band_co - 1], samples[band_cross - 1])
        if medians is None or medians[0] - medians[1] > -SWAPPED_GAP_DB:
            return match, None
        m_co, m_cross = medians
        measured = (
            f"band {band_co} is {m_cross - m_co:.1f} dB darker than band {band_cross} (medians {m_co:.1f} and "
            f"{m_cross:.1f} dB), while cross-polarised backscatter ({cross}) is the darker of the two, by 5-10 dB"
        )
        if by_name:
            return match, (
                f"The band named {co} is not the brighter one: {measured}. Check the band names: swapped names "
                "swap the classes."
            )
        bands = list(match.bands)
        bands[i], bands[j] = band_cross, band_co
        note = (
            f"The raster's bands are not named as polarisations and, taken in order, {measured}: so band "
            f"{band_cross} is taken as {co} and band {band_co} as {cross} (exports often put {cross} first). Name "
            f"the bands (descriptions {co}, {cross}) to have them matched by name."
        )
        return BandMatch(tuple(bands), note), note
    return match, None


# --- a raster read for a model ---------------------------------------------------------------------------------

TO_DB = "to_db"
TO_LINEAR = "to_linear"


@dataclass
class ModelInput:
    """How a raster feeds a model: the raster band for each model input (1-based, in the model's order), the
    conversion each needs (``""``, :data:`TO_DB` or :data:`TO_LINEAR`), the scales decided, and the log lines
    (``notes``; ``warnings`` for disagreements between a band's unit and its values)."""

    bands: tuple[int, ...]
    conversions: tuple[str, ...]
    scales: list[BandScale]
    notes: list[str]
    warnings: list[str]
    #: gamma0 or beta0 brought to sigma0 (:func:`.radiometry.plan_radiometry`); ``units``: the unit of each model
    #: band after conversion, where the backscatter bands get the plan's gain (a dB offset, or a factor).
    radiometry: RadiometryPlan = RadiometryPlan()
    units: tuple[str, ...] = ()

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Convert, in place, a float32 (model bands, h, w) block read from :attr:`bands` to the model's units."""
        for b, conversion in enumerate(self.conversions):
            if conversion:
                data[b] = convert_scale(data[b], *((LINEAR, DB) if conversion == TO_DB else (DB, LINEAR)))
        if self.radiometry.converts:
            for b, unit in enumerate(self.units):
                if unit in (DB, LINEAR):
                    data[b] = self.to_sigma0(data[b], unit)
        return data

    def to_sigma0(self, values: np.ndarray, scale: str) -> np.ndarray:
        """One backscatter band's ``values`` in ``scale`` (dB or linear) brought to sigma0: a new array, or
        ``values`` itself when the raster holds sigma0."""
        if not self.radiometry.converts:
            return values
        if scale == DB:
            return values + np.float32(self.radiometry.offset_db)
        return values * np.float32(self.radiometry.gain)

    @property
    def reordered(self) -> bool:
        """Whether the model reads other bands, or in another order, than the raster's own."""
        return list(self.bands) != list(range(1, len(self.bands) + 1))

    def metadata(self) -> dict[str, str]:
        return {**scales_metadata(self.scales), **self.radiometry.metadata()}

    def tell(self, log: LogFn | None, warn: LogFn | None) -> None:
        """Say how the bands were matched and read (:func:`tell`)."""
        tell(self.notes, self.warnings, log, warn)


def plan_model_input(
    meta: ModelMetadata, info: RasterInfo, samples: Sequence[np.ndarray], choice: str = AUTO
) -> ModelInput:
    """Match a raster (``raster_io.RasterInfo`` and one value sample per band) to a model's inputs
    (``ModelMetadata``): bands by name (:func:`match_bands`), then each backscatter band's scale by
    :func:`resolve_band` and the conversion to the unit the model wants. Bands a model takes in another unit
    (reflectance, uint8) are only refused when the raster states a backscatter unit for them."""
    what = f"Model '{meta.name}'"
    match = match_bands(meta.input_bands, info.descriptions, what, meta.input_units)
    match, order_warning = check_band_order(meta.input_bands, info.descriptions, match, samples)
    notes = [] if order_warning == match.note else [match.note]  # a swap's note is its warning
    warnings = [order_warning] if order_warning else []
    scales, conversions = [], []
    sar = [u in (DB, LINEAR) for u in meta.input_units]
    if any(sar):
        refuse_normalised(info.metadata, info.path)
    for name, band, wanted, is_sar in zip(meta.input_bands, match.bands, meta.input_units, sar):
        if not is_sar:
            stated = unit_word(info.units[band - 1])
            if stated:
                raise SarSegError(
                    f"{what} expects {name} in {wanted}, but band {band} of the raster is in {stated} "
                    f"(unit '{info.units[band - 1]}'). Give the raster the model was made for."
                )
            conversions.append("")
            continue
        stated = unit_word(info.units[band - 1])
        if stated in ("reflectance", "uint8"):
            raise SarSegError(
                f"{what} expects {_listing(meta.input_bands, meta.input_units)}; band {band} of the raster is in "
                f"{stated}, not {wanted}. Give {name} in {wanted}, as the model was made for."
            )
        scale = resolve_band(
            band,
            band_name(info, band),
            info.units[band - 1],
            info.descriptions[band - 1],
            info.dtype,
            samples[band - 1],
            choice,
        )
        scales.append(scale)
        (warnings if scale.warning else notes).append(scale.note)
        conversions.append("" if scale.scale == wanted else TO_DB if wanted == DB else TO_LINEAR)
    sar_names = [name for name, is_sar in zip(meta.input_bands, sar) if is_sar]
    sar_samples = [samples[b - 1] for b, is_sar in zip(match.bands, sar) if is_sar]
    flagged = flag_amplitude(sar_names, sar_samples, scales)
    for before, after in zip(scales, flagged):
        if after is not before:  # the check's warning replaces the band's line
            (warnings if before.warning else notes).remove(before.note)
            warnings.append(after.note)
    scales = flagged
    if TO_DB in conversions:
        notes.append(f"Converting linear power to dB (floor {DEFAULT_FLOOR_DB:g} dB) as the model expects dB")
    if TO_LINEAR in conversions:
        notes.append("Converting dB to linear power as the model expects linear power")
    radiometry = RadiometryPlan()
    if any(sar):
        sar_bands = [band for band, is_sar in zip(match.bands, sar) if is_sar]
        radiometry = plan_radiometry(
            info.metadata,
            [info.descriptions[b - 1] for b in sar_bands],
            info.path,
            incidence_from_bands(info.descriptions, samples),
        )
        if radiometry.source:
            (warnings if radiometry.assumed_angle else notes).append(radiometry.note())
    return ModelInput(match.bands, tuple(conversions), scales, notes, warnings, radiometry, tuple(meta.input_units))
