"""Speckle filters for SAR intensity (linear power), the set ESA SNAP offers.

Every filter takes a 2-D intensity array and a validity mask. Invalid pixels (nodata) and pixels outside
the array are *missing*: they take no part in any local statistic, and invalid pixels come out as NaN.
Because the outside of the array counts as missing, filtering a block read with a halo of
:func:`filter_halo` pixels gives exactly the pixels of filtering the whole image at once.

Local statistics use the unbiased variance (n - 1), as Orfeo ToolBox does, so Lee, Kuan, Gamma-MAP and
Frost agree with its ``Despeckle`` application away from the image border (OTB replicates border
pixels, here they are missing).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy import ndimage, optimize, special

from .domain import estimate_enl
from .errors import SarSegError

FILTERS: tuple[str, ...] = (
    "lee",
    "refined_lee",
    "lee_sigma",
    "frost",
    "gamma_map",
    "kuan",
    "boxcar",
    "median",
)
FILTER_LABELS: dict[str, str] = {
    "lee": "Lee",
    "refined_lee": "Refined Lee",
    "lee_sigma": "Lee Sigma",
    "frost": "Frost",
    "gamma_map": "Gamma-MAP",
    "kuan": "Kuan",
    "boxcar": "Boxcar (mean)",
    "median": "Median",
}
#: Filters whose result depends on the number of looks.
USES_LOOKS = frozenset({"lee", "refined_lee", "lee_sigma", "gamma_map", "kuan"})


def _prepare(intensity: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(intensity, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("speckle filters take a 2-D array (one band)")
    ok = np.isfinite(x) if valid is None else (np.asarray(valid, bool) & np.isfinite(x))
    return np.where(ok, x, 0.0), ok


def _check_window(window: int, minimum: int = 3) -> int:
    window = int(window)
    if window < minimum or window % 2 == 0:
        raise SarSegError(f"The window size must be an odd number >= {minimum} (got {window}).")
    return window


def _check_looks(looks: float) -> float:
    looks = float(looks)
    if not np.isfinite(looks) or looks <= 0:
        raise SarSegError(f"The number of looks must be a positive number (got {looks}).")
    return looks


def _box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum over a size x size box centred on each pixel, zeros outside the array.

    Two direct 1-D correlations, not a running sum (``uniform_filter``): a running sum carries the
    rounding error of a very bright point target along the whole row.
    """
    kernel = np.ones(size)
    rows = ndimage.correlate1d(a, kernel, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(rows, kernel, axis=1, mode="constant", cval=0.0)


def local_moments(x: np.ndarray, valid: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and unbiased variance of the valid pixels in a window around each pixel.

    ``x`` must be zero where ``valid`` is False. The variance is 0 where fewer than 2 pixels are valid.
    """
    n = np.rint(_box_sum(valid.astype(np.float64), window))
    s1 = _box_sum(x, window)
    s2 = _box_sum(x * x, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s1 / n, np.nan)
        var = np.where(n > 1, (s2 - s1 * mean) / (n - 1), 0.0)
    return n, mean, np.maximum(var, 0.0)


def _mmse_combine(x: np.ndarray, mean: np.ndarray, weight: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = mean + weight * (x - mean)
    return np.where(ok, out, np.nan).astype(np.float32)


def _ci2(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, var / (mean * mean), 0.0)


def _window_stats(
    intensity: np.ndarray, window: int, looks: float, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs and the local statistics the MMSE-family filters share: x, ok, mean, var, Ci²."""
    window, looks = _check_window(window), _check_looks(looks)
    x, ok = _prepare(intensity, valid)
    _, mean, var = local_moments(x, ok, window)
    return x, ok, mean, var, _ci2(mean, var)


def _lee_weight(ci2: np.ndarray, cu2: float) -> np.ndarray:
    """``max(0, 1 - Cu²/Ci²)``: 0 where the window looks homogeneous (Ci <= Cu)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ci2 > cu2, 1.0 - cu2 / ci2, 0.0)


def lee_filter(
    intensity: np.ndarray, window: int = 7, looks: float = 4.4, valid: np.ndarray | None = None
) -> np.ndarray:
    """Lee (1980) MMSE filter: ``mean + w (I - mean)``, ``w = max(0, 1 - Cu²/Ci²)``, ``Cu² = 1/L``."""
    x, ok, mean, _, ci2 = _window_stats(intensity, window, looks, valid)
    return _mmse_combine(x, mean, _lee_weight(ci2, 1.0 / looks), ok)


def kuan_filter(
    intensity: np.ndarray, window: int = 7, looks: float = 4.4, valid: np.ndarray | None = None
) -> np.ndarray:
    """Kuan (1985) filter: ``w = max(0, (1 - Cu²/Ci²) / (1 + Cu²))``."""
    x, ok, mean, _, ci2 = _window_stats(intensity, window, looks, valid)
    cu2 = 1.0 / looks
    return _mmse_combine(x, mean, _lee_weight(ci2, cu2) / (1.0 + cu2), ok)


def gamma_map_filter(
    intensity: np.ndarray, window: int = 7, looks: float = 4.4, valid: np.ndarray | None = None
) -> np.ndarray:
    """Gamma-MAP (Lopes et al. 1990): the mean where Ci <= Cu, the pixel where Ci >= sqrt(2) Cu, and the
    MAP estimate under a Gamma-distributed scene in between."""
    x, ok, mean, _, ci2 = _window_stats(intensity, window, looks, valid)
    cu2 = 1.0 / looks
    cmax2 = 2.0 * cu2
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (1.0 + cu2) / (ci2 - cu2)
        b = alpha - looks - 1.0
        d = mean * mean * b * b + 4.0 * alpha * looks * mean * x
        map_est = (b * mean + np.sqrt(np.maximum(d, 0.0))) / (2.0 * alpha)
    out = np.where(ci2 <= cu2, mean, np.where(ci2 >= cmax2, x, map_est))
    return np.where(ok, out, np.nan).astype(np.float32)


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def _shifted(padded: np.ndarray, radius: int, dy: int, dx: int, shape: tuple[int, int]) -> np.ndarray:
    return padded[radius + dy : radius + dy + shape[0], radius + dx : radius + dx + shape[1]]


def frost_filter(
    intensity: np.ndarray, window: int = 7, damping: float = 2.0, valid: np.ndarray | None = None
) -> np.ndarray:
    """Frost (1982) filter: weights ``exp(-damping * Ci² * d)`` with ``d`` the distance in pixels to the
    centre, ``Ci² = var / mean²`` over the window; the output is the normalised weighted mean."""
    window = _check_window(window)
    if damping < 0:
        raise SarSegError(f"The Frost damping factor must be >= 0 (got {damping}).")
    x, ok = _prepare(intensity, valid)
    _, mean, var = local_moments(x, ok, window)
    alpha = damping * _ci2(mean, var)
    r = window // 2
    shape = x.shape
    xp = np.pad(x, r)
    vp = np.pad(ok.astype(np.float64), r)
    # Group offsets by distance so each pixel needs one exp() per distinct distance.
    rings: dict[float, list[tuple[int, int]]] = {}
    for dy, dx in _offsets(r):
        rings.setdefault(round(float(np.hypot(dy, dx)), 12), []).append((dy, dx))
    num = np.zeros(shape)
    den = np.zeros(shape)
    for dist, offs in rings.items():
        ring_sum = np.zeros(shape)
        ring_count = np.zeros(shape)
        for dy, dx in offs:
            ring_sum += _shifted(xp, r, dy, dx, shape)
            ring_count += _shifted(vp, r, dy, dx, shape)
        weight = np.exp(-alpha * dist)
        num += weight * ring_sum
        den += weight * ring_count
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(var > 0, num / den, mean)
    return np.where(ok, out, np.nan).astype(np.float32)


def boxcar_filter(intensity: np.ndarray, window: int = 7, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of the valid pixels in the window."""
    window = _check_window(window)
    x, ok = _prepare(intensity, valid)
    _, mean, _ = local_moments(x, ok, window)
    return np.where(ok, mean, np.nan).astype(np.float32)


def _gather_chunk(window: int, budget: int = 2_000_000) -> int:
    """Pixels per chunk when whole windows are gathered, so a chunk holds ~``budget`` values (16 MB)."""
    return max(256, budget // (window * window))


def median_filter(intensity: np.ndarray, window: int = 7, valid: np.ndarray | None = None) -> np.ndarray:
    """Median of the valid pixels in the window (for an even count, the mean of the two middle values)."""
    window = _check_window(window)
    x, ok = _prepare(intensity, valid)
    r = window // 2
    out = ndimage.median_filter(x, size=window, mode="constant", cval=0.0)
    # Where the window reaches a missing pixel (border or nodata), take the median of valid pixels only.
    touches_missing = _box_sum((~ok).astype(np.float64), window) > 0.5
    touches_missing[:r, :] = touches_missing[-r:, :] = True
    touches_missing[:, :r] = touches_missing[:, -r:] = True
    ys, xs = np.nonzero(touches_missing & ok)
    if ys.size:
        padded = np.pad(np.where(ok, x, np.nan), r, constant_values=np.nan)
        view = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
        step = _gather_chunk(window)
        for start in range(0, ys.size, step):
            sl = slice(start, start + step)
            out[ys[sl], xs[sl]] = np.nanmedian(view[ys[sl], xs[sl]].reshape(-1, window * window), axis=1)
    return np.where(ok, out, np.nan).astype(np.float32)


# --- Refined Lee -------------------------------------------------------------------------------------


def _refined_lee_masks(window: int) -> list[np.ndarray]:
    """The 8 edge-aligned half windows (each keeps the centre line), indexed 2*direction + side."""
    r = window // 2
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    return [
        dx <= 0, dx >= 0,  # vertical edge: left / right half
        dx - dy >= 0, dx - dy <= 0,  # 45° edge: upper-right / lower-left
        dy <= 0, dy >= 0,  # horizontal edge: upper / lower half
        dx + dy <= 0, dx + dy >= 0,  # 135° edge: upper-left / lower-right
    ]  # fmt: skip


def refined_lee_filter(
    intensity: np.ndarray, window: int = 7, looks: float = 4.4, valid: np.ndarray | None = None
) -> np.ndarray:
    """Refined Lee (Lee 1981): pick the edge direction from 3x3 sub-window means, then apply the
    MMSE filter on the half window on the pixel's side of the edge.

    The window is split into a 3x3 grid of sub-windows (3x3 pixels in a 7x7 window); of the four
    gradient directions the strongest wins, and of its two half windows the one whose sub-window mean
    is closer to the centre's. ``var_x = (var_y - mean² Cu²) / (1 + Cu²)``, ``b = var_x / var_y``.
    """
    window, looks = _check_window(window, minimum=5), _check_looks(looks)
    x, ok = _prepare(intensity, valid)
    r = window // 2
    sub = 2 * ((window - 1) // 4) + 1
    stride = (window - sub) // 2
    shape = x.shape
    okf = ok.astype(np.float64)
    # Sub-window sums and counts; a sub-window with no valid pixel takes the centre sub-window's mean,
    # so the result depends only on pixels inside the window (and blocks stay seamless).
    # Box sums over the array padded by the stride, so a sub-window centred just outside the array still
    # counts the pixels it has inside.
    sub_sum = _box_sum(np.pad(x, stride), sub)
    sub_count = np.rint(_box_sum(np.pad(okf, stride), sub))
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.nan_to_num(_shifted(sub_sum, stride, 0, 0, shape) / _shifted(sub_count, stride, 0, 0, shape))

        def m(i: int, j: int) -> np.ndarray:  # sub-window mean at grid row i, column j (0..2)
            dy, dx = (i - 1) * stride, (j - 1) * stride
            count = _shifted(sub_count, stride, dy, dx, shape)
            total = _shifted(sub_sum, stride, dy, dx, shape)
            return np.where(count > 0, total / np.maximum(count, 1.0), centre)

    grads = np.stack(
        [
            np.abs(m(0, 2) + m(1, 2) + m(2, 2) - m(0, 0) - m(1, 0) - m(2, 0)),
            np.abs(m(0, 1) + m(0, 2) + m(1, 2) - m(1, 0) - m(2, 0) - m(2, 1)),
            np.abs(m(2, 0) + m(2, 1) + m(2, 2) - m(0, 0) - m(0, 1) - m(0, 2)),
            np.abs(m(0, 0) + m(0, 1) + m(1, 0) - m(1, 2) - m(2, 1) - m(2, 2)),
        ]
    )
    direction = np.argmax(grads, axis=0)
    # For each direction, the sub-windows on side 0 and side 1 of the edge.
    sides = [((1, 0), (1, 2)), ((0, 2), (2, 0)), ((0, 1), (2, 1)), ((0, 0), (2, 2))]
    side = np.zeros(shape, dtype=np.int64)
    for k, (a, b) in enumerate(sides):
        pick_b = np.abs(centre - m(*b)) < np.abs(centre - m(*a))
        side = np.where((direction == k) & pick_b, 1, side)
    choice = 2 * direction + side

    masks = _refined_lee_masks(window)
    xp = np.pad(x, r)
    vp = np.pad(okf, r)
    xv = np.lib.stride_tricks.sliding_window_view(xp, (window, window))
    vv = np.lib.stride_tricks.sliding_window_view(vp, (window, window))
    n = np.zeros(shape)
    s1 = np.zeros(shape)
    s2 = np.zeros(shape)
    for k, mask in enumerate(masks):
        ys, xs = np.nonzero((choice == k) & ok)
        mk = mask.astype(np.float64)
        step = _gather_chunk(window)
        for start in range(0, ys.size, step):
            sl = slice(start, start + step)
            wx = xv[ys[sl], xs[sl]]
            n[ys[sl], xs[sl]] = np.einsum("kij,ij->k", vv[ys[sl], xs[sl]], mk)
            s1[ys[sl], xs[sl]] = np.einsum("kij,ij->k", wx, mk)
            s2[ys[sl], xs[sl]] = np.einsum("kij,kij,ij->k", wx, wx, mk)
    cu2 = 1.0 / looks
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var_y = np.where(n > 1, (s2 - s1 * mean) / (n - 1), 0.0)
        var_x = (var_y - mean * mean * cu2) / (1.0 + cu2)
        b = np.clip(np.where(var_y > 0, var_x / var_y, 0.0), 0.0, 1.0)
    return _mmse_combine(x, mean, b, ok)


# --- Lee Sigma (improved sigma filter, Lee et al. 2009) ------------------------------------------------


@lru_cache(maxsize=64)
def sigma_range(looks: float, sigma: float) -> tuple[float, float, float]:
    """Sigma range ``(I1, I2)`` and speckle std ``eta`` of the truncated speckle for L looks.

    The range holds a fraction ``sigma`` of Gamma(L, 1/L) speckle and is placed so that the speckle
    inside it still has mean 1 (Lee et al. 2009, eq. 9-10); ``eta`` is its standard deviation there.
    """
    looks = _check_looks(looks)
    if not 0.0 < sigma < 1.0:
        raise SarSegError(f"Lee Sigma 'sigma' must be between 0 and 1, e.g. 0.9 (got {sigma}).")

    def cdf(v: float, k: float) -> float:  # CDF of Gamma(k, 1/L)
        return float(special.gammainc(k, looks * v))

    def upper(i1: float) -> float:
        target = cdf(i1, looks) + sigma
        return float(special.gammaincinv(looks, min(target, 1.0 - 1e-15)) / looks)

    def mean_bias(i1: float) -> float:
        i2 = upper(i1)
        # E[v; a<v<b] for Gamma(L, 1/L) is P_{L+1}(a<v<b) because k * theta = 1.
        return (cdf(i2, looks + 1) - cdf(i1, looks + 1)) / sigma - 1.0

    hi = float(special.gammaincinv(looks, 1.0 - sigma) / looks) * (1 - 1e-9)
    i1 = optimize.brentq(mean_bias, 1e-12, hi, xtol=1e-12)
    i2 = upper(i1)
    second = (looks + 1) / looks * (cdf(i2, looks + 2) - cdf(i1, looks + 2)) / sigma
    return i1, i2, float(np.sqrt(max(second - 1.0, 0.0)))


def lee_sigma_filter(
    intensity: np.ndarray,
    window: int = 9,
    looks: float = 4.4,
    sigma: float = 0.9,
    point_threshold: float | None = None,
    valid: np.ndarray | None = None,
    target_window: int = 3,
    min_target_pixels: int = 5,
) -> np.ndarray:
    """Improved Lee Sigma filter (Lee, Wen, Ainsworth et al. 2009).

    1. Point targets: pixels whose 3x3 neighbourhood holds at least ``min_target_pixels`` values above
       ``point_threshold`` are kept. Give the image's 98th percentile (the tool estimates it from a sample
       of the raster); when None it is computed from this array.
    2. A priori mean from a 3x3 Lee MMSE estimate.
    3. Only pixels of the window inside ``[I1, I2]`` x prior (see :func:`sigma_range`) are used for an MMSE
       estimate with the truncated speckle's standard deviation.
    """
    window, looks = _check_window(window), _check_looks(looks)
    x, ok = _prepare(intensity, valid)
    i1, i2, eta = sigma_range(looks, sigma)
    if point_threshold is None:
        point_threshold = float(np.percentile(x[ok], 98)) if ok.any() else np.inf
    prior = lee_filter(x, target_window, looks, ok).astype(np.float64)
    prior = np.where(ok, prior, 0.0)
    lo, hi = prior * i1, prior * i2
    r = window // 2
    shape = x.shape
    xp = np.pad(x, r)
    vp = np.pad(ok, r)
    n = np.zeros(shape)
    s1 = np.zeros(shape)
    s2 = np.zeros(shape)
    for dy, dx in _offsets(r):
        xs = _shifted(xp, r, dy, dx, shape)
        sel = _shifted(vp, r, dy, dx, shape) & (xs >= lo) & (xs <= hi)
        v = np.where(sel, xs, 0.0)
        n += sel
        s1 += v
        s2 += v * v
    eta2 = eta * eta
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s1 / n, prior)
        var_y = np.where(n > 1, (s2 - s1 * mean) / (n - 1), 0.0)
        var_x = (var_y - mean * mean * eta2) / (1.0 + eta2)
        b = np.clip(np.where(var_y > 0, var_x / var_y, 0.0), 0.0, 1.0)
    out = mean + b * (x - mean)
    bright = _box_sum(((x > point_threshold) & ok).astype(np.float64), target_window) >= min_target_pixels - 0.5
    out = np.where(bright, x, out)
    return np.where(ok, out, np.nan).astype(np.float32)


# --- Dispatch ---------------------------------------------------------------------------------------


def filter_halo(name: str, window: int) -> int:
    """Pixels of context a block needs on each side for a seamless result."""
    if name == "lee_sigma":
        return window // 2 + 1  # the 3x3 prior of every pixel in the window
    return window // 2


def apply_filter(
    name: str,
    intensity: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    window: int = 7,
    looks: float = 4.4,
    damping: float = 2.0,
    sigma: float = 0.9,
    point_threshold: float | None = None,
) -> np.ndarray:
    """Run the named filter (one of :data:`FILTERS`) with its parameters."""
    table: dict[str, Callable[[], np.ndarray]] = {
        "lee": lambda: lee_filter(intensity, window, looks, valid),
        "refined_lee": lambda: refined_lee_filter(intensity, window, looks, valid),
        "lee_sigma": lambda: lee_sigma_filter(intensity, window, looks, sigma, point_threshold, valid),
        "frost": lambda: frost_filter(intensity, window, damping, valid),
        "gamma_map": lambda: gamma_map_filter(intensity, window, looks, valid),
        "kuan": lambda: kuan_filter(intensity, window, looks, valid),
        "boxcar": lambda: boxcar_filter(intensity, window, valid),
        "median": lambda: median_filter(intensity, window, valid),
    }
    if name not in table:
        raise SarSegError(f"Unknown speckle filter '{name}'. Choose one of: {', '.join(FILTERS)}.")
    return table[name]()


# --- Looks -------------------------------------------------------------------------------------------


def enl(values: np.ndarray) -> float:
    """Equivalent number of looks of a homogeneous intensity sample: mean² / variance."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean() ** 2 / v.var(ddof=1))


def estimate_looks(intensity: np.ndarray, valid: np.ndarray | None = None, window: int = 9) -> float:
    """Estimate the equivalent number of looks (ENL) from the most homogeneous parts of an image: the estimator
    of the input-domain check (:func:`.domain.estimate_enl`, a trimmed median of the CV² of ``window`` x
    ``window`` cells, matched to pure Gamma speckle), with a SarSegError saying what to do when it cannot."""
    x, ok = _prepare(intensity, valid)
    if min(x.shape) < window:
        raise SarSegError("The image is too small to estimate the number of looks.")
    looks = estimate_enl(x, ok, window)
    if looks is None:
        raise SarSegError(
            "Too few valid, non-constant pixels to estimate the number of looks; give the number of looks instead."
        )
    return float(looks)
