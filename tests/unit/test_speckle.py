"""Tests of the speckle filters against independent per-pixel references, speckle theory and block I/O.

The reference filters below are written directly from the published formulas with plain Python loops
over the valid pixels of each window (clipped at the array border); they share no code with
``speckle.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, ndimage, stats

from sar_seg_plugin.core import raster_io, speckle
from sar_seg_plugin.core.errors import SarSegError

LOOKS = 4.4
RTOL = 1e-5


# --- Synthetic data ----------------------------------------------------------------------------------


def _gamma_speckle(rng: np.random.Generator, truth: np.ndarray, looks: float = LOOKS) -> np.ndarray:
    """Multiplicative L-look intensity speckle: truth * Gamma(L, 1/L)."""
    return truth * rng.gamma(looks, 1.0 / looks, size=truth.shape)


def _structured_image(seed: int = 0, shape: tuple[int, int] = (24, 24)) -> np.ndarray:
    """Two regions (dark / bright, diagonal boundary) and two bright point targets, speckled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.where(xx + 0.5 * yy < 16, 0.02, 0.15)
    truth[shape[0] // 4, 17 * shape[1] // 24] = 3.0
    truth[17 * shape[0] // 24, 5 * shape[1] // 24] = 1.5
    return _gamma_speckle(rng, truth)


def _sparse_invalid(shape: tuple[int, int] = (24, 24)) -> np.ndarray:
    """A valid mask with a few invalid pixels: a corner, a pair, one beside a point target, border pixels."""
    valid = np.ones(shape, bool)
    for y, x in [(0, 0), (5, 5), (5, 6), (12, 20), (shape[0] - 1, 11), (17, 6), (9, shape[1] - 1)]:
        valid[y, x] = False
    return valid


# --- Plain-loop reference filters ---------------------------------------------------------------------


def _reference(img: np.ndarray, valid: np.ndarray, window: int, pixel_fn) -> np.ndarray:
    """Apply ``pixel_fn(centre, values, distances)`` over the valid pixels of each clipped window."""
    h, w = img.shape
    r = window // 2
    out = np.full((h, w), np.nan)
    for y in range(h):
        for x in range(w):
            if not valid[y, x]:
                continue
            values, dists = [], []
            for yy in range(max(0, y - r), min(h, y + r + 1)):
                for xx in range(max(0, x - r), min(w, x + r + 1)):
                    if valid[yy, xx]:
                        values.append(float(img[yy, xx]))
                        dists.append(math.hypot(yy - y, xx - x))
            out[y, x] = pixel_fn(float(img[y, x]), values, dists)
    return out


def _mean_var(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def _ci2(mean: float, var: float) -> float:
    return var / (mean * mean) if mean > 0 else 0.0


def _ref_lee(looks: float):
    cu2 = 1.0 / looks

    def fn(centre, values, _dists):
        mean, var = _mean_var(values)
        ci2 = _ci2(mean, var)
        w = max(0.0, 1.0 - cu2 / ci2) if ci2 > 0 else 0.0
        return mean + w * (centre - mean)

    return fn


def _ref_kuan(looks: float):
    cu2 = 1.0 / looks

    def fn(centre, values, _dists):
        mean, var = _mean_var(values)
        ci2 = _ci2(mean, var)
        w = max(0.0, (1.0 - cu2 / ci2) / (1.0 + cu2)) if ci2 > 0 else 0.0
        return mean + w * (centre - mean)

    return fn


def _ref_gamma_map(looks: float):
    cu = math.sqrt(1.0 / looks)

    def fn(centre, values, _dists):
        mean, var = _mean_var(values)
        ci = math.sqrt(_ci2(mean, var))
        if ci <= cu:
            return mean
        if ci >= math.sqrt(2.0) * cu:
            return centre
        alpha = (1.0 + cu * cu) / (ci * ci - cu * cu)
        b = alpha - looks - 1.0
        d = mean * mean * b * b + 4.0 * alpha * looks * mean * centre
        return (b * mean + math.sqrt(d)) / (2.0 * alpha)

    return fn


def _ref_frost(damping: float):
    def fn(_centre, values, dists):
        mean, var = _mean_var(values)
        alpha = damping * _ci2(mean, var)
        weights = [math.exp(-alpha * d) for d in dists]
        return math.fsum(wt * v for wt, v in zip(weights, values)) / math.fsum(weights)

    return fn


def _ref_boxcar(_centre, values, _dists):
    return _mean_var(values)[0]


def _ref_median(_centre, values, _dists):
    return float(np.median(values))


REFERENCES = {
    "lee": (lambda img, ok, win: speckle.lee_filter(img, win, LOOKS, ok), _ref_lee(LOOKS)),
    "kuan": (lambda img, ok, win: speckle.kuan_filter(img, win, LOOKS, ok), _ref_kuan(LOOKS)),
    "gamma_map": (lambda img, ok, win: speckle.gamma_map_filter(img, win, LOOKS, ok), _ref_gamma_map(LOOKS)),
    "frost": (lambda img, ok, win: speckle.frost_filter(img, win, 2.0, ok), _ref_frost(2.0)),
    "boxcar": (lambda img, ok, win: speckle.boxcar_filter(img, win, ok), _ref_boxcar),
    "median": (lambda img, ok, win: speckle.median_filter(img, win, ok), _ref_median),
}


def _assert_close_nan(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12, equal_nan=True)


# --- 1. Reference implementations --------------------------------------------------------------------


@pytest.mark.parametrize("with_invalid", [False, True], ids=["all-valid", "invalid"])
@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_filter_matches_plain_loop_reference(name, window, with_invalid):
    img = _structured_image()
    valid = _sparse_invalid() if with_invalid else np.ones(img.shape, bool)
    run, pixel_fn = REFERENCES[name]
    expected = _reference(img, valid, window, pixel_fn)
    actual = run(img, valid, window)
    assert actual.dtype == np.float32
    _assert_close_nan(actual, expected)


def test_reference_image_exercises_all_gamma_map_branches():
    """Guard for the reference test: the 7x7 Gamma-MAP sees all three regimes on the test image."""
    img = _structured_image()
    ok = np.ones(img.shape, bool)
    cu2 = 1.0 / LOOKS
    regimes = set()

    def classify(_centre, values, _dists):
        mean, var = _mean_var(values)
        ci2 = _ci2(mean, var)
        regimes.add("mean" if ci2 <= cu2 else "pixel" if ci2 >= 2 * cu2 else "map")
        return 0.0

    _reference(img, ok, 7, classify)
    _reference(img, ok, 3, classify)
    assert regimes == {"mean", "pixel", "map"}


def test_nan_pixels_without_mask_are_missing():
    """NaN in the intensity with ``valid=None`` behaves like an explicit invalid mask."""
    img = _structured_image(seed=3)
    valid = _sparse_invalid()
    with_nan = np.where(valid, img, np.nan)
    for run, pixel_fn in REFERENCES.values():
        expected = _reference(img, valid, 3, pixel_fn)
        _assert_close_nan(run(with_nan, None, 3), expected)


def test_frost_without_damping_is_boxcar():
    img = _structured_image(seed=4)
    valid = _sparse_invalid()
    _assert_close_nan(
        speckle.frost_filter(img, 5, 0.0, valid).astype(np.float64),
        _reference(img, valid, 5, _ref_boxcar),
    )


# --- 2. Boxcar / median against scipy.ndimage in the interior ----------------------------------------


@pytest.mark.parametrize("window", [3, 5, 7])
def test_boxcar_and_median_match_scipy_in_interior(window):
    rng = np.random.default_rng(11)
    truth = np.where(np.arange(60)[None, :] < 25, 0.03, 0.12) * np.ones((50, 1))
    img = _gamma_speckle(rng, truth)
    r = window // 2
    inner = (slice(r, -r), slice(r, -r))
    box = speckle.boxcar_filter(img, window)
    med = speckle.median_filter(img, window)
    np.testing.assert_allclose(box[inner], ndimage.uniform_filter(img, window)[inner], rtol=RTOL)
    np.testing.assert_allclose(med[inner], ndimage.median_filter(img, window)[inner], rtol=RTOL)
    assert np.isfinite(box).all() and np.isfinite(med).all()


# --- 3. Speckle theory: ENL and edge preservation ----------------------------------------------------


@pytest.fixture(scope="module")
def flat_speckle() -> np.ndarray:
    rng = np.random.default_rng(2024)
    return 0.05 * rng.gamma(LOOKS, 1.0 / LOOKS, size=(400, 400))


@pytest.fixture(scope="module")
def step_image() -> np.ndarray:
    """Step edge between columns 31 and 32: 0.01 on the left, 0.1 on the right, L-look speckle."""
    rng = np.random.default_rng(77)
    truth = np.where(np.arange(64)[None, :] < 32, 0.01, 0.1) * np.ones((200, 1))
    return _gamma_speckle(rng, truth)


def _interior_enl(filtered: np.ndarray, margin: int = 10) -> float:
    return speckle.enl(filtered[margin:-margin, margin:-margin])


def _retained_step(filtered: np.ndarray) -> float:
    """Fraction of the true step (0.09) still present between the columns at distance 1..2 on each side
    of the edge, from column means over the rows away from the top and bottom border: 1 = sharp edge,
    2/7 for a 7x7 boxcar."""
    col_means = filtered[10:-10].mean(axis=0)
    left = col_means[30:32].mean()
    right = col_means[32:34].mean()
    return float((right - left) / (0.1 - 0.01))


def test_enl_of_raw_speckle_is_the_number_of_looks(flat_speckle):
    measured = speckle.enl(flat_speckle)
    print(f"ENL raw speckle: {measured:.3f} (L = {LOOKS})")
    assert measured == pytest.approx(LOOKS, rel=0.05)


def test_enl_ignores_nan(flat_speckle):
    sample = flat_speckle[:100, :100].copy()
    expected = speckle.enl(sample[:50])
    sample[50:] = np.nan
    assert speckle.enl(sample) == pytest.approx(expected, rel=1e-12)
    values = sample[:50].ravel()
    assert expected == pytest.approx(values.mean() ** 2 / values.var(ddof=1), rel=1e-12)


def test_boxcar_7x7_multiplies_enl_by_49(flat_speckle):
    out = speckle.boxcar_filter(flat_speckle, 7).astype(np.float64)
    # Pixels 7 apart have disjoint windows, so they are independent samples of the 49-pixel mean.
    spaced = speckle.enl(out[3:-3:7, 3:-3:7])
    whole = _interior_enl(out)
    print(f"ENL boxcar 7x7: spaced sample {spaced:.1f}, whole interior {whole:.1f}, 49 L = {49 * LOOKS:.1f}")
    assert 0.8 * 49 * LOOKS < spaced < 1.2 * 49 * LOOKS
    assert 0.8 * 49 * LOOKS < whole < 1.2 * 49 * LOOKS


def test_lee_smooths_flat_area_and_keeps_edge_sharper_than_boxcar(flat_speckle, step_image):
    lee_enl = _interior_enl(speckle.lee_filter(flat_speckle, 7, LOOKS).astype(np.float64))
    lee_step = _retained_step(speckle.lee_filter(step_image, 7, LOOKS))
    box_step = _retained_step(speckle.boxcar_filter(step_image, 7))
    print(f"ENL Lee 7x7 (whole interior): {lee_enl:.1f}; retained step Lee {lee_step:.3f}, boxcar {box_step:.3f}")
    assert lee_enl > 10 * LOOKS
    assert box_step == pytest.approx(2 / 7, abs=0.03)  # the geometric value for a 7x7 mean
    assert lee_step > box_step + 0.3


@pytest.mark.parametrize("name", ["refined_lee", "lee_sigma"])
def test_refined_lee_and_lee_sigma_smooth_and_keep_edges(name, flat_speckle, step_image):
    flat = speckle.apply_filter(name, flat_speckle, window=7, looks=LOOKS).astype(np.float64)
    measured_enl = _interior_enl(flat)
    step = _retained_step(speckle.apply_filter(name, step_image, window=7, looks=LOOKS))
    box_step = _retained_step(speckle.boxcar_filter(step_image, 7))
    print(f"{name} 7x7: ENL (whole interior) {measured_enl:.1f}, retained step {step:.3f} (boxcar {box_step:.3f})")
    assert measured_enl > 5 * LOOKS
    assert step > box_step + 0.3


def test_filters_preserve_mean_of_flat_area(flat_speckle):
    """The MMSE filters are (close to) unbiased on a homogeneous area."""
    true_mean = flat_speckle.mean()
    for name in ("lee", "kuan", "gamma_map", "frost", "boxcar", "refined_lee", "lee_sigma"):
        out = speckle.apply_filter(name, flat_speckle[:150, :150], window=7, looks=LOOKS)
        assert float(np.mean(out)) == pytest.approx(true_mean, rel=0.03), name


# --- 4. Looks estimation ---------------------------------------------------------------------------


@pytest.mark.parametrize("looks", [1.0, 4.4, 10.0])
def test_estimate_looks_on_pure_speckle(looks):
    rng = np.random.default_rng(int(looks * 10))
    img = 0.08 * rng.gamma(looks, 1.0 / looks, size=(270, 270))
    estimated = speckle.estimate_looks(img)
    print(f"estimate_looks pure speckle L={looks}: {estimated:.3f}")
    assert estimated == pytest.approx(looks, rel=0.10)


def test_estimate_looks_on_piecewise_constant_scene():
    rng = np.random.default_rng(5)
    truth = np.full((270, 270), 0.04)
    truth[:130, :100] = 0.2
    truth[50:200, 140:270] = 0.008
    truth[180:270, 20:120] = 0.5
    truth[100:160, 60:200] = 0.07
    img = _gamma_speckle(rng, truth)
    estimated = speckle.estimate_looks(img)
    print(f"estimate_looks piecewise-constant L={LOOKS}: {estimated:.3f}")
    assert estimated == pytest.approx(LOOKS, rel=0.15)


def test_estimate_looks_uses_only_valid_cells():
    rng = np.random.default_rng(6)
    img = 0.05 * rng.gamma(LOOKS, 1.0 / LOOKS, size=(270, 270))
    valid = np.ones(img.shape, bool)
    valid[:, :90] = False
    img[:, :90] = rng.uniform(0, 1e3, size=(270, 90))  # garbage under the nodata mask
    estimated = speckle.estimate_looks(img, valid)
    assert estimated == pytest.approx(LOOKS, rel=0.10)


# --- 5. Lee Sigma range ----------------------------------------------------------------------------


def test_sigma_range_single_look_matches_published_table():
    # Lee et al. (2009), Table I, single-look intensity, sigma = 0.9: I1 = 0.084, I2 = 3.941, eta = 0.8191.
    i1, i2, eta = speckle.sigma_range(1, 0.9)
    assert i1 == pytest.approx(0.084, abs=1e-2)
    assert i2 == pytest.approx(3.941, abs=1e-2)
    assert eta == pytest.approx(0.8191, abs=1e-2)


@pytest.mark.parametrize(("looks", "sigma"), [(4.4, 0.9), (1.0, 0.9), (2.0, 0.7), (4.4, 0.5)])
def test_sigma_range_by_numerical_integration(looks, sigma):
    i1, i2, eta = speckle.sigma_range(looks, sigma)
    dist = stats.gamma(a=looks, scale=1.0 / looks)
    assert 0 < i1 < 1 < i2
    mass = integrate.quad(dist.pdf, i1, i2, epsabs=1e-13, epsrel=1e-12)[0]
    first = integrate.quad(lambda v: v * dist.pdf(v), i1, i2, epsabs=1e-13, epsrel=1e-12)[0]
    second = integrate.quad(lambda v: (v - 1.0) ** 2 * dist.pdf(v), i1, i2, epsabs=1e-13, epsrel=1e-12)[0]
    assert mass == pytest.approx(sigma, abs=1e-7)
    assert first / mass == pytest.approx(1.0, abs=1e-7)
    assert eta == pytest.approx(math.sqrt(second / mass), rel=1e-6)


# --- 6. Block processing gives the whole-image result ------------------------------------------------


@pytest.fixture(scope="module")
def block_scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(99)
    height, width = 170, 200
    yy, xx = np.mgrid[:height, :width]
    truth = np.where((xx - 100) ** 2 + (yy - 80) ** 2 < 50**2, 0.15, 0.02)
    truth[yy > 2 * xx - 40] = 0.005
    for y, x in [(63, 64), (64, 130), (127, 63), (20, 190), (160, 5)]:
        truth[y - 1 : y + 2, x - 1 : x + 2] = 4.0  # point targets straddling block boundaries
    img = _gamma_speckle(rng, truth)
    valid = rng.random(img.shape) > 0.02
    valid[:, :2] = False  # nodata along the left edge of the scene
    img[~valid] = -9999.0
    return img, valid


def _blockwise(name: str, img: np.ndarray, valid: np.ndarray, window: int, **kwargs) -> np.ndarray:
    height, width = img.shape
    out = np.full(img.shape, -1.0, dtype=np.float32)
    halo = speckle.filter_halo(name, window)
    blocks = raster_io.iter_blocks(width, height, block_size=64, halo=halo)
    assert len(blocks) == 4 * 3
    for block in blocks:
        read = block.read.slices
        result = speckle.apply_filter(name, img[read], valid[read], window=window, looks=LOOKS, **kwargs)
        out[block.core.slices] = result[block.inner]
    return out


@pytest.mark.parametrize("window", [5, 7, 11])
@pytest.mark.parametrize("name", speckle.FILTERS)
def test_blockwise_equals_whole_image(name, window, block_scene):
    img, valid = block_scene
    kwargs = {"point_threshold": float(np.percentile(img[valid], 98))} if name == "lee_sigma" else {}
    whole = speckle.apply_filter(name, img, valid, window=window, looks=LOOKS, **kwargs)
    np.testing.assert_array_equal(_blockwise(name, img, valid, window, **kwargs), whole)


def test_refined_lee_depends_only_on_pixels_within_its_halo():
    """Rows 0..3 of a 7x7 Refined Lee only see rows 0..6 (halo 3), so cropping below row 6 changes nothing."""
    rng = np.random.default_rng(0)
    img = 0.05 * rng.gamma(LOOKS, 1.0 / LOOKS, size=(16, 12))
    valid = np.ones(img.shape, bool)
    valid[:, :3] = False  # a 3-column nodata strip: the left sub-windows of column 3 are empty
    assert speckle.filter_halo("refined_lee", 7) == 3
    whole = speckle.refined_lee_filter(img, 7, LOOKS, valid)
    cropped = speckle.refined_lee_filter(img[:7], 7, LOOKS, valid[:7])
    np.testing.assert_array_equal(cropped[:4], whole[:4])


def test_blockwise_refined_lee_with_nodata_strip(block_scene):
    """The same with block I/O: a 3-pixel nodata strip along the scene edge breaks the seams."""
    img, valid = (a.copy() for a in block_scene)
    valid[:, :3] = False
    img[~valid] = -9999.0
    whole = speckle.refined_lee_filter(img, 7, LOOKS, valid)
    np.testing.assert_array_equal(_blockwise("refined_lee", img, valid, 7), whole)


def test_strong_point_target_does_not_disturb_distant_pixels():
    """A 60 dB point target (1e3 over a 1e-3 background) leaves the MMSE filters accurate along its row."""
    rng = np.random.default_rng(1)
    img = 0.001 * rng.gamma(LOOKS, 1.0 / LOOKS, size=(24, 60))
    img[12, 2] = 1e3
    ok = np.ones(img.shape, bool)
    for name in ("lee", "kuan", "gamma_map", "frost"):
        run, pixel_fn = REFERENCES[name]
        _assert_close_nan(run(img, ok, 7), _reference(img, ok, 7, pixel_fn), rtol=2e-4)


# --- 7. Nodata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", speckle.FILTERS)
def test_invalid_pixels_are_nan_and_do_not_contaminate(name):
    img = _structured_image(seed=8, shape=(30, 30))
    valid = _sparse_invalid((30, 30))
    valid[14:17, 14:17] = False
    huge = np.where(valid, img, 1e9)
    zero = np.where(valid, img, 0.0)
    kwargs = {"point_threshold": float(np.percentile(img[valid], 98))} if name == "lee_sigma" else {}
    out_huge = speckle.apply_filter(name, huge, valid, window=7, looks=LOOKS, **kwargs)
    out_zero = speckle.apply_filter(name, zero, valid, window=7, looks=LOOKS, **kwargs)
    out_nan = speckle.apply_filter(name, np.where(valid, img, np.nan), None, window=7, looks=LOOKS, **kwargs)
    assert np.isnan(out_huge[~valid]).all()
    assert np.isfinite(out_huge[valid]).all()
    np.testing.assert_array_equal(out_huge, out_zero)
    np.testing.assert_array_equal(out_nan, out_zero)
    # Pixels next to the nodata patch stay in the range of the valid data.
    ring = ndimage.binary_dilation(~valid, iterations=1) & valid
    assert out_huge[ring].max() <= img[valid].max()


def test_lee_sigma_default_threshold_ignores_invalid_values():
    img = _structured_image(seed=9, shape=(30, 30))
    valid = _sparse_invalid((30, 30))
    huge = np.where(valid, img, 1e9)
    zero = np.where(valid, img, 0.0)
    np.testing.assert_array_equal(
        speckle.lee_sigma_filter(huge, 7, LOOKS, valid=valid),
        speckle.lee_sigma_filter(zero, 7, LOOKS, valid=valid),
    )


def test_all_invalid_gives_all_nan():
    img = np.ones((12, 12))
    valid = np.zeros(img.shape, bool)
    for name in speckle.FILTERS:
        out = speckle.apply_filter(name, img, valid, window=5, looks=LOOKS)
        assert out.shape == img.shape and np.isnan(out).all(), name


# --- 8. Parameter validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", speckle.FILTERS)
@pytest.mark.parametrize("window", [4, 8, 1, 0, -3])
def test_bad_window_raises(name, window):
    img = _structured_image(seed=1, shape=(12, 12))
    with pytest.raises(SarSegError):
        speckle.apply_filter(name, img, window=window)


@pytest.mark.parametrize("name", sorted(speckle.USES_LOOKS))
@pytest.mark.parametrize("looks", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_looks_raises(name, looks):
    img = _structured_image(seed=1, shape=(12, 12))
    with pytest.raises(SarSegError):
        speckle.apply_filter(name, img, window=5, looks=looks)


@pytest.mark.parametrize("sigma", [0.0, 1.0, -0.2, 1.5])
def test_bad_sigma_raises(sigma):
    img = _structured_image(seed=1, shape=(12, 12))
    with pytest.raises(SarSegError):
        speckle.sigma_range(LOOKS, sigma)
    with pytest.raises(SarSegError):
        speckle.lee_sigma_filter(img, 5, LOOKS, sigma)


def test_bad_damping_and_unknown_filter_raise():
    img = _structured_image(seed=1, shape=(12, 12))
    with pytest.raises(SarSegError):
        speckle.frost_filter(img, 5, -0.5)
    with pytest.raises(SarSegError):
        speckle.apply_filter("frost", img, window=5, damping=-1.0)
    with pytest.raises(SarSegError):
        speckle.apply_filter("wiener", img)
    with pytest.raises(SarSegError):
        speckle.estimate_looks(img[:5, :5])


# --- Refined Lee and Lee Sigma against per-pixel loops of their descriptions ---------------------------


def _refined_lee_pixel(img: np.ndarray, valid: np.ndarray, y: int, x: int, window: int, looks: float) -> float:
    """Refined Lee at one pixel, written from the description (Lee 1981), one loop at a time."""
    h, w = img.shape
    r = window // 2
    sub = 2 * ((window - 1) // 4) + 1
    stride = (window - sub) // 2

    def inside(yy: int, xx: int) -> bool:
        return 0 <= yy < h and 0 <= xx < w and bool(valid[yy, xx])

    def sub_mean(cy: int, cx: int) -> float | None:
        vals = [img[yy, xx] for yy in range(cy - sub // 2, cy + sub // 2 + 1)
                for xx in range(cx - sub // 2, cx + sub // 2 + 1) if inside(yy, xx)]  # fmt: skip
        return float(np.mean(vals)) if vals else None

    centre = sub_mean(y, x)
    m = [[sub_mean(y + (i - 1) * stride, x + (j - 1) * stride) for j in range(3)] for i in range(3)]
    m = [[centre if v is None else v for v in row] for row in m]
    gradients = [
        abs(m[0][2] + m[1][2] + m[2][2] - m[0][0] - m[1][0] - m[2][0]),
        abs(m[0][1] + m[0][2] + m[1][2] - m[1][0] - m[2][0] - m[2][1]),
        abs(m[2][0] + m[2][1] + m[2][2] - m[0][0] - m[0][1] - m[0][2]),
        abs(m[0][0] + m[0][1] + m[1][0] - m[1][2] - m[2][1] - m[2][2]),
    ]
    direction = int(np.argmax(gradients))
    a, b = [((1, 0), (1, 2)), ((0, 2), (2, 0)), ((0, 1), (2, 1)), ((0, 0), (2, 2))][direction]
    side = 1 if abs(centre - m[b[0]][b[1]]) < abs(centre - m[a[0]][a[1]]) else 0
    half = [
        (lambda dy, dx: dx <= 0, lambda dy, dx: dx >= 0),
        (lambda dy, dx: dx - dy >= 0, lambda dy, dx: dx - dy <= 0),
        (lambda dy, dx: dy <= 0, lambda dy, dx: dy >= 0),
        (lambda dy, dx: dx + dy <= 0, lambda dy, dx: dx + dy >= 0),
    ][direction][side]
    vals = [float(img[y + dy, x + dx]) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if half(dy, dx) and inside(y + dy, x + dx)]  # fmt: skip
    mean, var_y = _mean_var(vals)
    cu2 = 1.0 / looks
    var_x = (var_y - mean * mean * cu2) / (1.0 + cu2)
    weight = min(max(var_x / var_y, 0.0), 1.0) if var_y > 0 else 0.0
    return mean + weight * (float(img[y, x]) - mean)


@pytest.mark.parametrize("window", [5, 7, 9, 11])
@pytest.mark.parametrize("with_invalid", [False, True])
def test_refined_lee_matches_a_per_pixel_loop(window, with_invalid):
    img = _structured_image(seed=11, shape=(22, 22))
    valid = _sparse_invalid((22, 22)) if with_invalid else np.ones(img.shape, bool)
    got = speckle.refined_lee_filter(img, window, LOOKS, valid)
    expected = np.full(img.shape, np.nan)
    for y, x in zip(*np.nonzero(valid)):
        expected[y, x] = _refined_lee_pixel(img, valid, y, x, window, LOOKS)
    _assert_close_nan(got, expected, rtol=1e-5)


def _lee_sigma_pixel(img, valid, y, x, window, looks, sigma, threshold):
    """Improved Lee Sigma (Lee et al. 2009) at one pixel, from the description."""
    h, w = img.shape

    def values(cy, cx, half):
        return [float(img[yy, xx]) for yy in range(cy - half, cy + half + 1) for xx in range(cx - half, cx + half + 1)
                if 0 <= yy < h and 0 <= xx < w and valid[yy, xx]]  # fmt: skip

    if sum(v > threshold for v in values(y, x, 1)) >= 5:
        return float(img[y, x])  # point target: kept
    mean3, var3 = _mean_var(values(y, x, 1))
    ci2 = _ci2(mean3, var3)
    weight = max(0.0, 1.0 - (1.0 / looks) / ci2) if ci2 > 1.0 / looks else 0.0
    prior = mean3 + weight * (float(img[y, x]) - mean3)
    i1, i2, eta = speckle.sigma_range(looks, sigma)
    chosen = [v for v in values(y, x, window // 2) if prior * i1 <= v <= prior * i2]
    if not chosen:
        return prior
    mean, var_y = _mean_var(chosen)
    var_x = (var_y - mean * mean * eta * eta) / (1.0 + eta * eta)
    b = min(max(var_x / var_y, 0.0), 1.0) if var_y > 0 else 0.0
    return mean + b * (float(img[y, x]) - mean)


@pytest.mark.parametrize("window", [5, 9])
def test_lee_sigma_matches_a_per_pixel_loop(window):
    img = _structured_image(seed=12, shape=(22, 22))
    valid = _sparse_invalid((22, 22))
    threshold = float(np.percentile(img[valid], 98))
    got = speckle.lee_sigma_filter(img, window, LOOKS, 0.9, threshold, valid)
    expected = np.full(img.shape, np.nan)
    for y, x in zip(*np.nonzero(valid)):
        expected[y, x] = _lee_sigma_pixel(img, valid, y, x, window, LOOKS, 0.9, threshold)
    _assert_close_nan(got, expected, rtol=1e-5)
