"""Domain randomisation: every training scene draws its own world, every training patch its own sensor.

The segmentation model must hold on SAR written by anyone, not only on :mod:`training.synthetic`'s central
values. Two levels of randomisation, both drawn from the literature ranges of C-band sigma0:

- :func:`draw_world` (per scene, at generation): class sigma0 around the literature values, noise floor
  -30..-20 dB, incidence slope, forest and urban texture from none to heavy, bright-point density 0-10 %,
  windy water, a smooth brightness drift, field size and elongation, coasts and no-data borders;
- :class:`SensorDraw` / :func:`simulate_sensor` (per patch, at training): pixel size 10-40 m by multilooking
  (block averaging of linear power), equivalent number of looks 1-30 by Gamma speckle on the (nearly clean)
  written scene, one of the plugin's speckle filters, and a calibration offset of up to +-2 dB for the scene.

Scenes for randomised training are written with :data:`BASE_LOOKS` looks, so that any target ENL up to 30 can be
reached by adding speckle: Gamma(L1) then Gamma(L2) speckle has 1/L = 1/L1 + 1/L2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sar_seg_plugin.core.speckle import apply_filter
from training.synthetic import (
    BARE_SOIL,
    BUILT_UP,
    CLASS_NAMES,
    FOREST,
    LABEL_NODATA,
    VEGETATION,
    WATER,
    World,
)

#: Looks of scenes written for randomised training (nearly speckle-free; the patch draws its own ENL).
BASE_LOOKS = 100.0
#: ENLs a patch is given (equal chance each; 4.4 is Sentinel-1 IW GRD, 1 single look, 20-30 multilooked).
ENL_CHOICES: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.4, 4.4, 4.4, 4.4, 6.0, 10.0, 20.0, 30.0)
#: Multilook factors (pixel size 10 m x factor); 1 most often.
PIXEL_FACTORS: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)
#: Speckle filters (name, window) of the plugin a patch may go through, and the chance that it does.
FILTERS: tuple[tuple[str, int], ...] = (
    ("lee", 5),
    ("lee", 7),
    ("refined_lee", 7),
    ("lee_sigma", 7),
    ("gamma_map", 7),
    ("frost", 5),
    ("kuan", 7),
    ("boxcar", 3),
    ("boxcar", 5),
    ("median", 5),
)
FILTER_PROBABILITY = 0.3
SCENE_OFFSET_DB = 2.0  # calibration offset of the whole scene, both bands
BAND_OFFSET_DB = 0.5  # and per band
#: Envelope of what the randomised training covers (for the model's metadata and the input-domain check).
ENL_RANGE = (1.0, 30.0)
PIXEL_SIZE_RANGE_M = (10.0, 40.0)

# Literature values (VV, VH dB) and the half-width of the per-scene draw around them.
_SIGMA0_CENTRE = {
    WATER: (-20.0, -26.0),
    VEGETATION: (-11.0, -18.0),
    FOREST: (-7.5, -13.0),
    BUILT_UP: (-4.0, -10.0),
    BARE_SOIL: (-13.0, -21.0),
}
_SIGMA0_SPREAD = {
    WATER: (4.0, 3.0),
    VEGETATION: (2.5, 2.5),
    FOREST: (1.2, 1.2),
    BUILT_UP: (2.5, 2.0),
    BARE_SOIL: (3.0, 2.0),
}


def central(rng: np.random.Generator, half_width: float) -> float:
    """A draw within +-``half_width`` that favours the centre: normal with a third of it as standard deviation,
    clipped at the ends. The literature ranges are extremes, not equally likely values: an independent scene of
    C-band SAR sits near the central values far more often than at the ends (a uniform draw, used before, put half
    the training scenes further than half-way out and left absolute backscatter a weaker cue than it is)."""
    return float(half_width * np.clip(rng.normal(0.0, 1.0 / 3.0), -1.0, 1.0))


def draw_world(rng: np.random.Generator) -> World:
    """A random scene world from the literature ranges (see the module docstring)."""
    sigma0 = []
    for c in range(len(CLASS_NAMES)):
        (vv, vh), (svv, svh) = _SIGMA0_CENTRE[c], _SIGMA0_SPREAD[c]
        sigma0.append((vv + central(rng, svv), vh + central(rng, svh)))
    windy = bool(rng.random() < 0.2)
    if windy:  # wind-roughened water: VV up to -12 dB, VH stays dark
        sigma0[WATER] = (rng.uniform(-16.0, -12.0), rng.uniform(-28.0, -23.0))
    urban_nu = None if rng.random() < 0.25 else float(np.exp(rng.uniform(math.log(1.0), math.log(10.0))))
    return World(
        sigma0_db=tuple((float(a), float(b)) for a, b in sigma0),
        noise_floor_db=float(rng.uniform(-30.0, -20.0)),
        incidence_slope_db_per_deg=float(rng.uniform(-0.2, -0.05)),
        forest_texture_nu=None if rng.random() < 0.4 else float(rng.uniform(5.0, 15.0)),
        urban_texture_nu=urban_nu,
        urban_bright_fraction=float(rng.uniform(0.0, 0.1)) if rng.random() < 0.75 else 0.0,
        vegetation_parcel_db=float(rng.uniform(0.8, 2.5)),
        bare_parcel_db=float(rng.uniform(1.0, 3.0)),
        spatial_db=float(rng.uniform(0.0, 1.5)),
        windy=windy,
        parcel_scale=float(np.exp(rng.uniform(math.log(0.5), math.log(2.0)))),
        parcel_elongation=float(rng.choice((1.0, 1.0, 2.0, 4.0))),
        coast=bool(rng.random() < 0.3),
        nodata_border=bool(rng.random() < 0.3),
    )


@dataclass(frozen=True)
class SensorDraw:
    """How one patch is sensed: multilook factor, target ENL, speckle filter (name, window) and dB offsets."""

    factor: int
    enl: float
    filter: tuple[str, int] | None
    offset_db: tuple[float, ...]

    @classmethod
    def draw(cls, rng: np.random.Generator, bands: int, max_factor: int = 4) -> SensorDraw:
        factors = [f for f in PIXEL_FACTORS if f <= max_factor] or [1]
        factor = int(rng.choice(factors))
        enl = float(rng.choice(ENL_CHOICES))
        filt = FILTERS[int(rng.integers(len(FILTERS)))] if rng.random() < FILTER_PROBABILITY else None
        scene = central(rng, SCENE_OFFSET_DB)
        offsets = tuple(float(scene + rng.uniform(-BAND_OFFSET_DB, BAND_OFFSET_DB)) for _ in range(bands))
        return cls(factor, enl, filt, offsets)

    def describe(self) -> str:
        filt = f", {self.filter[0]} {self.filter[1]}x{self.filter[1]}" if self.filter else ""
        return f"{10 * self.factor} m, ENL {self.enl:g}{filt}"


def multilook(
    linear: np.ndarray, valid: np.ndarray, labels: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average ``factor`` x ``factor`` blocks of linear power (bands, H, W); labels by block majority (nodata when
    most of the block is), validity where the whole block is valid. H and W must be multiples of ``factor``."""
    if factor == 1:
        return linear, valid, labels
    b, h, w = linear.shape
    hh, ww = h // factor, w // factor
    out = linear.reshape(b, hh, factor, ww, factor).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
    ok = valid.reshape(hh, factor, ww, factor).all(axis=(1, 3))
    ids = np.where(labels == LABEL_NODATA, len(CLASS_NAMES), labels).astype(np.int64)
    blocks = ids.reshape(hh, factor, ww, factor).transpose(0, 2, 1, 3).reshape(hh, ww, factor * factor)
    counts = np.stack([(blocks == c).sum(axis=2) for c in range(len(CLASS_NAMES) + 1)])
    majority = counts.argmax(axis=0)
    lab = np.where(majority == len(CLASS_NAMES), LABEL_NODATA, majority).astype(labels.dtype)
    return out, ok, lab


def simulate_sensor(
    linear: np.ndarray,
    valid: np.ndarray,
    labels: np.ndarray,
    draw: SensorDraw,
    rng: np.random.Generator,
    base_looks: float = BASE_LOOKS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sense a patch of a nearly clean scene (linear power with ``base_looks`` looks, (bands, H*f, W*f)) as
    ``draw`` says: multilook by ``draw.factor``, speckle to ``draw.enl`` looks, filter. Returns linear power
    (bands, H, W), validity and labels; the dB offset is left to the caller (it applies in dB)."""
    data, ok, lab = multilook(linear, valid, labels, draw.factor)
    have = base_looks * draw.factor**2
    if draw.enl < have:
        extra = 1.0 / (1.0 / draw.enl - 1.0 / have)
        data = data * (rng.standard_gamma(extra, data.shape).astype(np.float32) / np.float32(extra))
    if draw.filter is not None:
        name, window = draw.filter
        data = np.stack([apply_filter(name, band, ok, window=window, looks=draw.enl) for band in data]).astype(
            np.float32
        )
        data[:, ~ok] = 0.0
        ok = ok & np.isfinite(data).all(axis=0)
        data[:, ~ok] = 0.0
    lab = np.where(ok, lab, LABEL_NODATA).astype(lab.dtype)
    return data, ok, lab
