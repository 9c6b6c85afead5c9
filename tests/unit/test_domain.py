"""The input-domain check (sar_seg_plugin.core.domain): ENL against known looks, percentiles against numpy on the
same data, the envelope's JSON, the messages; and segment_raster writing the outcome to the log and the outputs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import bilinear_classes, read_raster

from sar_seg_plugin.core import domain, speckle
from sar_seg_plugin.core.class_rasters import CLASS_NODATA
from sar_seg_plugin.core.domain import DomainCheck, DomainStats, check_domain, envelope_from_stats, estimate_enl
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.models.metadata import (
    MetadataFieldError,
    ModelMetadata,
    Normalization,
    metadata_from_props,
    metadata_to_props,
)
from training import synthetic

TEST_MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
LOOKS = (1.0, 2.0, 4.4, 10.0, 20.0)


def parcel_scene(looks: float, size: int = 384, textured: float = 0.3, seed: int = 0) -> np.ndarray:
    """Linear power: rectangular parcels (24 px on average) of random sigma0 from -25 to -3 dB, a share ``textured`` of
    them multiplied by Gamma texture (nu from 1 to 10, strong to mild), all times L-look Gamma(L, 1/L) speckle."""
    rng = np.random.default_rng(seed)
    cuts = size // 24
    rows = np.searchsorted(np.sort(rng.integers(0, size, cuts)), np.arange(size))
    cols = np.searchsorted(np.sort(rng.integers(0, size, cuts)), np.arange(size))
    parcel = rows[:, None] * (cuts + 1) + cols[None, :]
    count = (cuts + 1) ** 2
    clean = 10.0 ** (rng.uniform(-25.0, -3.0, count)[parcel] / 10.0)
    nu = np.where(rng.random(count) < textured, rng.uniform(1.0, 10.0, count), 0.0)
    texture = np.ones((size, size))
    for k in np.flatnonzero(nu):
        inside = parcel == k
        texture[inside] = rng.gamma(nu[k], 1.0 / nu[k], inside.sum())
    return clean * texture * rng.gamma(looks, 1.0 / looks, (size, size))


# --- ENL -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("looks", LOOKS)
@pytest.mark.parametrize(("textured", "tolerance"), [(0.0, 0.08), (0.3, 0.2)])
def test_enl_of_gamma_speckled_parcels_is_the_number_of_looks(looks, textured, tolerance):
    enl = estimate_enl(parcel_scene(looks, textured=textured, seed=int(looks * 10)))
    print(f"L = {looks:g}, {textured:.0%} textured: ENL {enl:.3f} ({enl / looks - 1:+.1%})")
    assert enl == pytest.approx(looks, rel=tolerance)


def low_cv2_percentile_enl(image: np.ndarray, window: int = 7, percentile: float = 10.0) -> float:
    """The plain rule the trimmed median replaced: L whose pure Gamma speckle gives the same low percentile of
    the cells' CV² (fixed-seed simulation, fixed-point iteration)."""
    h, w = (s - s % window for s in image.shape)
    cells = image[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2).reshape(-1, window**2)
    observed = float(np.percentile(cells.var(axis=1, ddof=1) / cells.mean(axis=1) ** 2, percentile))
    looks = 1.0 / observed
    for _ in range(8):
        sample = np.random.default_rng(12345).gamma(looks, 1.0 / looks, size=(8000, window**2))
        looks *= float(np.percentile(sample.var(axis=1, ddof=1) / sample.mean(axis=1) ** 2, percentile)) / observed
    return looks


@pytest.mark.parametrize("looks", [2.0, 4.4])
def test_enl_keeps_to_homogeneous_cells_where_a_low_cv2_percentile_drifts(looks):
    """Why the trimmed median: with most parcels textured, speckle.estimate_looks (10th percentile of the cells'
    CV², calibrated the same way) is pulled low by textured cells; keeping only cells that look like pure
    speckle holds within 15 %."""
    image = parcel_scene(looks, textured=0.6, seed=5)
    trimmed = estimate_enl(image)
    percentile = low_cv2_percentile_enl(image, window=7)
    print(f"L = {looks:g}: trimmed median {trimmed:.3f}, 10th percentile of CV² {percentile:.3f}")
    assert trimmed == pytest.approx(looks, rel=0.15)
    assert abs(trimmed / looks - 1) < abs(percentile / looks - 1)


def test_lee_filtered_input_measures_far_more_looks_than_unfiltered():
    image = parcel_scene(4.4, seed=2)
    raw = estimate_enl(image)
    filtered = estimate_enl(speckle.lee_filter(image, 7, 4.4))
    print(f"ENL unfiltered {raw:.2f}, Lee 7x7 {filtered:.1f}")
    assert raw == pytest.approx(4.4, rel=0.2)
    assert filtered > 5 * raw


def test_enl_leaves_out_invalid_pixels():
    image = parcel_scene(4.4, seed=3)
    left = 7 * 27  # a whole number of cells: the left part's cells are exactly those of the masked image
    valid = np.ones(image.shape, bool)
    valid[:, left:] = False
    garbage = image.copy()
    garbage[:, left:] = np.where(np.arange(image.shape[1] - left) % 2, 0.0, 1e6)
    expected = estimate_enl(image[:, :left])
    assert estimate_enl(garbage, valid) == pytest.approx(expected, rel=1e-12)
    with_nan = image.copy()
    with_nan[:, left:] = np.nan
    assert estimate_enl(with_nan) == pytest.approx(expected, rel=1e-12)


def test_enl_is_none_without_enough_cells():
    rng = np.random.default_rng(0)
    assert estimate_enl(rng.gamma(4.4, 1 / 4.4, (20, 20))) is None  # 4 cells
    assert estimate_enl(np.full((100, 100), np.nan)) is None
    assert estimate_enl(np.full((100, 100), 0.1)) is None  # no variance: no speckle to measure


# --- measure_domain --------------------------------------------------------------------------------------------


def two_band_windows(seed: int = 0) -> list[np.ndarray]:
    """Two windows of (VV, VH) linear power with nodata (NaN) and swath fill (exact zeros)."""
    rng = np.random.default_rng(seed)
    windows = []
    for shape in ((70, 91), (63, 56)):
        vv = parcel_scene(4.4, size=max(shape), seed=seed)[: shape[0], : shape[1]]
        data = np.stack([vv, vv * 10 ** rng.uniform(-0.9, -0.5, shape)])
        data[:, :5, :] = np.nan
        data[:, -3:, :7] = 0.0
        windows.append(data)
    return windows


def test_percentiles_are_numpys_on_the_valid_non_zero_values_in_db():
    windows = two_band_windows()
    stats = domain.measure_domain(windows, ["VV", "VH"], ["linear", "linear"], 10.0)
    for b, name in enumerate(["VV", "VH"]):
        values = np.concatenate([w[b].ravel() for w in windows])
        values = values[np.isfinite(values) & (values != 0)]
        expected = np.percentile(10 * np.log10(values), [2, 50, 98])
        np.testing.assert_allclose(stats.percentiles_db[name], expected, atol=1e-4)
    assert stats.pixel_size_m == 10.0
    # The same values given in dB measure the same.
    in_db = [np.where(np.isfinite(w) & (w > 0), 10 * np.log10(np.where(w > 0, w, 1.0)), w) for w in windows]
    from_db = domain.measure_domain(in_db, ["VV", "VH"], ["dB", "dB"])
    for name in ("VV", "VH"):
        np.testing.assert_allclose(from_db.percentiles_db[name], stats.percentiles_db[name], atol=1e-4)
    assert from_db.enl == pytest.approx(stats.enl, rel=1e-3)


def test_enl_pools_the_cells_of_every_window():
    image = parcel_scene(4.4, size=378, seed=4)  # 54 x 54 cells
    quarters = [image[None, r : r + 189, c : c + 189] for r in (0, 189) for c in (0, 189)]
    stats = domain.measure_domain(quarters, ["VV"], ["linear"])
    assert stats.enl == pytest.approx(estimate_enl(image), rel=1e-12)


def test_measured_as_averaged_is_the_block_mean_in_linear_power():
    single_look = parcel_scene(1.0, size=512, textured=0.0, seed=6)[None]
    averaged = single_look[0].reshape(256, 2, 256, 2).mean(axis=(1, 3))
    stats = domain.measure_averaged(single_look, ["VV"], ["linear"], 5.0, 10.0)
    assert stats.pixel_size_m == 10.0
    np.testing.assert_allclose(
        stats.percentiles_db["VV"], np.percentile(10 * np.log10(averaged), [2, 50, 98]), atol=1e-4
    )
    assert stats.enl == pytest.approx(estimate_enl(averaged), rel=1e-12)
    assert stats.enl == pytest.approx(4.0, rel=0.2)  # four single looks averaged
    # 7 m to 10 m: no whole block to average, the ENL is scaled by the area ratio.
    native = domain.measure_domain(single_look, ["VV"], ["linear"], 7.0)
    scaled = domain.measure_averaged(single_look, ["VV"], ["linear"], 7.0, 10.0)
    assert scaled.enl == pytest.approx(native.enl * (10 / 7) ** 2, rel=1e-12)


# --- The envelope ----------------------------------------------------------------------------------------------

STATS = [
    DomainStats(4.1, {"VV": (-21.0, -11.0, -1.0), "VH": (-26.0, -17.0, -7.0)}, 10.0),
    DomainStats(1.2, {"VV": (-24.5, -12.5, 0.5), "VH": (-27.5, -18.0, -6.0)}, 20.0),
    DomainStats(25.0, {"VV": (-19.0, -9.5, -2.0)}, 40.0),
]


def test_envelope_is_the_json_the_model_metadata_records():
    envelope = envelope_from_stats(STATS, ["VV", "VH"], enl_range=(1.0, 30.0), pixel_size_range=(10.0, 40.0))
    assert envelope == {
        "enl": [1.0, 30.0],
        "pixel_size_m": [10.0, 40.0],
        "db_percentiles": {
            "levels": [2, 50, 98],
            "bands": {
                "VV": [[-25.5, -18.0], [-13.5, -8.5], [-3.0, 1.5]],  # range over the stats, 1 dB each side
                "VH": [[-28.5, -25.0], [-19.0, -16.0], [-8.0, -5.0]],
            },
        },
    }
    assert json.loads(json.dumps(envelope)) == envelope
    measured = envelope_from_stats(STATS, ["VV", "VH", "HH"], margin_db=0.0)
    assert measured["enl"] == [1.2, 25.0] and measured["pixel_size_m"] == [10.0, 40.0]
    assert measured["db_percentiles"]["bands"]["VV"][1] == [-12.5, -9.5]
    assert "HH" not in measured["db_percentiles"]["bands"]  # no stats measured it


META = ModelMetadata(
    task="segmentation",
    name="envelope test",
    input_bands=("VV", "VH"),
    input_units=("dB", "dB"),
    normalization=Normalization(mean=(-12.0, -19.0), std=(5.0, 4.0)),
    tile_size=64,
    tile_overlap=16,
    output_kind="classes",
    class_names=("water", "land"),
    class_colors=("#1f78b4", "#33a02c"),
    pixel_size_m=10.0,
)


def test_model_metadata_carries_and_validates_the_envelope():
    envelope = envelope_from_stats(STATS, ["VV", "VH"], enl_range=(1.0, 30.0), pixel_size_range=(10.0, 40.0))
    with_envelope = replace(META, training={"data": "synthetic", "input_domain": envelope})
    meta = metadata_from_props(metadata_to_props(with_envelope))
    assert meta.input_domain == envelope
    assert metadata_from_props(metadata_to_props(META)).input_domain is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"enl": [30.0, 1.0]}, r"input_domain\.enl' must be \[low, high\]"),
        ({"pixel_size_m": [0.0, 10.0]}, r"input_domain\.pixel_size_m'"),
        ({"db_percentiles": {"levels": [5, 50, 95], "bands": {}}}, r"db_percentiles' must be like"),
        ({"db_percentiles": {"levels": [2, 50, 98], "bands": {"HH": [[0, 1]] * 3}}}, "not an input band"),
        ({"db_percentiles": {"levels": [2, 50, 98], "bands": {"VV": [[0, 1]] * 2}}}, "one \\[low, high\\] per level"),
        ({"db_percentiles": {"levels": [2, 50, 98], "bands": {"VV": [[0, 1], [2, 1], [0, 1]]}}}, "pairs of dB"),
        ({"looks": [1, 2]}, "unknown keys"),
    ],
)
def test_a_malformed_envelope_refuses_the_model(change, match):
    envelope = envelope_from_stats(STATS, ["VV", "VH"], enl_range=(1.0, 30.0), pixel_size_range=(10.0, 40.0))
    training = {"input_domain": {**envelope, **change}}
    props = {**metadata_to_props(META), "sarseg.training": json.dumps(training)}
    with pytest.raises(MetadataFieldError, match=match) as err:
        metadata_from_props(props, "bad.onnx")
    assert err.value.field == "training" and "'sarseg.training'" in str(err.value)
    with pytest.raises(SarSegError, match=match):
        domain.validate_envelope(training["input_domain"], ["VV", "VH"])


# --- check_domain ----------------------------------------------------------------------------------------------

ENVELOPE = {
    "enl": [2.0, 30.0],
    "pixel_size_m": [10.0, 40.0],
    "db_percentiles": {
        "levels": [2, 50, 98],
        "bands": {
            "VV": [[-26.0, -17.0], [-18.0, -4.0], [-5.0, 5.0]],
            "VH": [[-30.0, -20.0], [-24.0, -12.0], [-11.0, -1.0]],
        },
    },
}
INSIDE = DomainStats(4.3, {"VV": (-21.0, -11.2, 0.0), "VH": (-25.0, -17.0, -6.0)}, 10.0)


def with_percentile(band: str, level: int, value: float) -> DomainStats:
    p = dict(INSIDE.percentiles_db)
    values = list(p[band])
    values[domain.PERCENTILE_LEVELS.index(level)] = value
    p[band] = tuple(values)
    return DomainStats(INSIDE.enl, p, INSIDE.pixel_size_m)


def test_inside_the_envelope_gives_no_message():
    assert check_domain(INSIDE, ENVELOPE) == []
    # At the ends, within the ENL estimate's and the pixel-size tolerance.
    assert check_domain(DomainStats(1.7, INSIDE.percentiles_db, 9.2), ENVELOPE) == []
    assert check_domain(DomainStats(35.0, INSIDE.percentiles_db, 43.0), ENVELOPE) == []


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (
            DomainStats(1.05, INSIDE.percentiles_db, 10.0),
            [
                "Input ENL about 1.1 (single look?), below the 2-30 the model was trained on",
                "sarseg:speckle_filter",
                "multilook",
                "fine-tune",
            ],
        ),
        (DomainStats(1.5, INSIDE.percentiles_db, 10.0), ["Input ENL about 1.5, below the 2-30"]),
        (
            DomainStats(domain.MAX_ENL, INSIDE.percentiles_db, 10.0),
            ["Input ENL about 1000 or more (speckle-filtered or multilooked?), above the 2-30"],
        ),
        (
            DomainStats(150.0, INSIDE.percentiles_db, 10.0),
            ["Input ENL about 150 (speckle-filtered or multilooked?), above the 2-30 the model was trained on"],
        ),
        (
            with_percentile("VV", 50, -31.0),
            [
                "The VV median is -31.0 dB, below the -18.0..-4.0 dB of training scenes",
                "calibrated sigma0",
                "'Input units'",
            ],
        ),
        (with_percentile("VH", 50, -9.0), ["The VH median is -9.0 dB, above the -24.0..-12.0 dB"]),
        (with_percentile("VH", 98, 3.0), ["The VH 98th percentile is 3.0 dB, above the -11.0..-1.0 dB", "brighter"]),
        (with_percentile("VV", 2, -29.5), ["The VV 2nd percentile is -29.5 dB, below the -26.0..-17.0 dB", "darker"]),
        (
            DomainStats(4.3, INSIDE.percentiles_db, 80.0),
            ["Input pixel size about 80 m, coarser than the 10-40 m the model was trained on", "fine-tune"],
        ),
        (
            DomainStats(4.3, INSIDE.percentiles_db, 5.0),
            ["Input pixel size about 5 m, finer than the 10-40 m", "'Resample to the model's pixel size'"],
        ),
    ],
)
def test_each_thing_outside_gives_one_message_with_numbers_and_a_remedy(stats, expected):
    messages = check_domain(stats, ENVELOPE)
    assert len(messages) == 1, messages
    for text in expected:
        assert text in messages[0]


def test_one_message_per_thing_outside_and_parts_not_recorded_are_not_checked():
    shifted = DomainStats(1.0, {"VV": (-40.0, -31.0, -20.0), "VH": (-45.0, -38.0, -25.0)}, 80.0)
    messages = check_domain(shifted, ENVELOPE)
    assert len(messages) == 4  # ENL, pixel size, VV median, VH median (the tails are not repeated)
    assert check_domain(shifted, {"enl": [2.0, 30.0]}) == [messages[0]]
    assert check_domain(shifted, {}) == []
    assert check_domain(DomainStats(None, {}, None), ENVELOPE) == []


def test_check_outcome_in_log_lines_and_metadata():
    outside = DomainCheck("outside", DomainStats(1.04, {"VV": (-30.0, -20.04, -10.0)}, 10.0), ("a", "b"))
    assert outside.summary() == (
        "Input domain: ENL about 1, VV median -20.0 dB, pixel size 10 m: outside the model's training envelope "
        "(2 warnings)"
    )
    assert outside.metadata() == {
        "SARSEG_INPUT_DOMAIN": "outside",
        "SARSEG_INPUT_ENL": "1.04",
        "SARSEG_INPUT_DB_PERCENTILES": "VV -30.0/-20.0/-10.0",
        "SARSEG_DOMAIN_WARNINGS": "a | b",
    }
    logs, warns = [], []
    outside.tell(logs.append, warns.append)
    assert logs == [outside.summary()] and warns == ["a", "b"]
    unchecked = DomainCheck("unchecked", note="the model records no input envelope")
    assert unchecked.summary() == "Input domain: not checked (the model records no input envelope)"
    assert unchecked.metadata() == {"SARSEG_INPUT_DOMAIN": "unchecked"}


# --- segment_raster --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envelope_model():
    pytest.importorskip("onnxruntime")
    from sar_seg_plugin.models.registry import load_model

    return load_model(str(TEST_MODELS / "conv_2to5_envelope.onnx"), "cpu")


@pytest.fixture(scope="module")
def single_look_sar(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample scene (seed 7) with single-look speckle instead of 4.4 looks."""
    out = tmp_path_factory.mktemp("single_look")
    synthetic.write_series(synthetic.generate_series(size=160, days=2, seed=7, n_communes=4, looks=1.0), out)
    return str(out / "sar_20260301.tif")


def shifted_copy(src: str, dst: Path, db: float) -> str:
    """``src`` (linear power, nodata 0) with every valid value shifted by ``db`` dB."""
    gdal.Translate(str(dst), src)
    ds = gdal.Open(str(dst), gdal.GA_Update)
    for b in range(ds.RasterCount):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(band.ReadAsArray() * np.float32(10 ** (db / 10)))
    ds = band = None
    return str(dst)


UNSURE = "The model is unsure on "


def metadata_of(path: Path) -> dict[str, str]:
    ds = gdal.Open(str(path))
    md = ds.GetMetadata()
    ds = None
    return md


def run(model, src: str, folder: Path, **kwargs) -> tuple[dict, list[str], list[str], Path, Path]:
    from sar_seg_plugin.core.inference import segment_raster

    logs: list[str] = []
    warns: list[str] = []
    classes, probabilities = folder / "classes.tif", folder / "probabilities.tif"
    result = segment_raster(
        src, str(classes), model, probabilities_path=str(probabilities), log=logs.append, warn=warns.append, **kwargs
    )
    # The tiny test model is unsure of most pixels, which its own warning says; the input-domain ones are kept.
    return result, logs, [w for w in warns if not w.startswith(UNSURE)], classes, probabilities


def test_inside_the_envelope_no_warning_and_outputs_say_inside(envelope_model, sample_dir, tmp_path):
    sar = str(sample_dir / "sar_20260301.tif")
    result, logs, warns, classes, probabilities = run(envelope_model, sar, tmp_path)
    assert warns == []
    summary = [line for line in logs if line.startswith("Input domain: ENL about")]
    assert len(summary) == 1 and summary[0].endswith("inside the model's training envelope"), logs
    confidence = next(line for line in logs if line.startswith("Confidence (probability"))
    assert "outside the model's training envelope" not in confidence
    checked = result["input_domain"]
    assert checked["status"] == "inside" and checked["warnings"] == []
    # The sample of a small raster is the whole raster: its percentiles are numpy's on every valid pixel.
    data = read_raster(sar, dtype=np.float64)
    for b, name in enumerate(["VV", "VH"]):
        values = data[b][(data > 0).all(axis=0)]
        expected = np.percentile(10 * np.log10(values), [2, 50, 98])
        np.testing.assert_allclose(checked["stats"]["db_percentiles"]["bands"][name], expected, atol=0.01)
    assert checked["stats"]["enl"] == pytest.approx(4.4, rel=0.2)
    assert checked["stats"]["pixel_size_m"] == 10.0
    for path in (classes, probabilities):
        md = metadata_of(path)
        assert md["SARSEG_INPUT_DOMAIN"] == "inside" and "SARSEG_DOMAIN_WARNINGS" not in md
        assert float(md["SARSEG_INPUT_ENL"]) == pytest.approx(checked["stats"]["enl"], rel=0.01)
        assert "SARSEG_INPUT_SCALES" in md  # what was there before is still written


def test_values_15_db_low_warn_of_calibration(envelope_model, sample_dir, tmp_path):
    low = shifted_copy(str(sample_dir / "sar_20260301.tif"), tmp_path / "low.tif", -15.0)
    result, logs, warns, classes, probabilities = run(envelope_model, low, tmp_path)
    assert len(warns) == 2, warns
    assert warns[0].startswith("The VV median is -25.") and "below the -16.0..-6.0 dB of training scenes" in warns[0]
    assert warns[1].startswith("The VH median is -31.") and "'Input units'" in warns[1]
    assert any(line.endswith("outside the model's training envelope (2 warnings)") for line in logs), logs
    confidence = next(line for line in logs if line.startswith("Confidence (probability"))
    assert "outside the model's training envelope (see the warnings above)" in confidence
    assert result["input_domain"]["status"] == "outside" and result["input_domain"]["warnings"] == warns
    assert result["input_domain"]["stats"]["enl"] == pytest.approx(4.4, rel=0.2)  # a scale does not change the ENL
    for path in (classes, probabilities):
        md = metadata_of(path)
        assert md["SARSEG_INPUT_DOMAIN"] == "outside"
        assert md["SARSEG_DOMAIN_WARNINGS"] == " | ".join(warns)
    assert read_raster(classes).shape == (1, 160, 160)  # warned, not refused


def test_single_look_input_is_multilooked_first_and_checked_as_averaged(envelope_model, single_look_sar, tmp_path):
    result, logs, warns, classes, _ = run(envelope_model, single_look_sar, tmp_path)
    assert any(line.startswith("Resampling:") and "single-look" in line for line in logs), logs
    assert result["resampled"]["model_pixel_size_m"] == 20.0 and result["resampled"]["method"] == "average"
    assert not any(w.startswith("Input ENL about") for w in warns), warns
    # four single looks averaged; the 7 x 7 cells of 20 m pixels hold more of the scene's own variation than at 10 m
    assert 2.0 < result["input_domain"]["stats"]["enl"] < 5.0
    assert re.search(r"ENL about (0\.[89]\d*|1\.[01]\d*) at the raster's 10 m", result["input_domain"]["note"])
    assert read_raster(classes).shape == (1, 160, 160)


def test_single_look_input_on_its_own_grid_warns_to_filter_the_speckle(envelope_model, single_look_sar, tmp_path):
    result, _, warns, classes, _ = run(envelope_model, single_look_sar, tmp_path, resample=False)
    enl = [w for w in warns if w.startswith("Input ENL about")]
    assert len(enl) == 1 and "(single look?)" in enl[0] and "sarseg:speckle_filter" in enl[0], warns
    assert result["input_domain"]["stats"]["enl"] == pytest.approx(1.0, rel=0.2)
    assert metadata_of(classes)["SARSEG_INPUT_DOMAIN"] == "outside"
    assert enl[0] in metadata_of(classes)["SARSEG_DOMAIN_WARNINGS"]


def test_model_without_envelope_is_not_checked(sample_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from sar_seg_plugin.models.registry import load_model

    model = load_model(str(TEST_MODELS / "conv_2to5.onnx"), "cpu")
    low = shifted_copy(str(sample_dir / "sar_20260301.tif"), tmp_path / "low.tif", -15.0)
    result, logs, warns, classes, _ = run(model, low, tmp_path)
    assert warns == []
    assert "Input domain: not checked (the model records no input envelope)" in logs
    note = "the model records no input envelope"
    assert result["input_domain"] == {"status": "unchecked", "stats": None, "warnings": [], "note": note}
    assert metadata_of(classes)["SARSEG_INPUT_DOMAIN"] == "unchecked"


# --- Median-filtered and nearest-neighbour upsampled input ---------------------------------------------------------


def test_ties_are_the_share_of_equal_neighbour_pairs_counted_by_hand():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, (9, 11)).astype(np.float32)  # few values: many ties
    a[0, 0] = np.nan
    a[4, 5] = 0.0  # exact zeros are not data
    ok = np.ones(a.shape, bool)
    ok[8, :] = False
    same = pairs = 0
    for r in range(9):
        for c in range(11):
            for r2, c2 in ((r, c + 1), (r + 1, c)):
                if r2 < 9 and c2 < 11:
                    x, y = a[r, c], a[r2, c2]
                    if ok[r, c] and ok[r2, c2] and np.isfinite(x) and np.isfinite(y) and x != 0 and y != 0:
                        pairs += 1
                        same += int(x == y)
    values = [v for v, k in zip(a.ravel(), ok.ravel()) if k and np.isfinite(v) and v != 0]
    ties = domain.measure_ties([a], [ok], pixel_size_m=10.0)
    assert ties.pairs == pairs and ties.share == pytest.approx(same / pairs)
    assert ties.distinct == pytest.approx(len(set(values)) / len(values))
    assert ties.pixel_size_m == 10.0
    assert domain.measure_ties([np.full((5, 5), np.nan)]) is None


def _quantised(scene: np.ndarray, how: str) -> np.ndarray:
    if how == "uint16 amplitude":  # a product's DN, calibrated with one constant
        return (np.round(np.sqrt(scene) * 300.0) / 300.0) ** 2
    if how == "0.5 dB steps":
        return np.round(10 * np.log10(scene) / 0.5) * 0.5
    return scene.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_median_filter_is_told_from_other_filters_and_from_quantised_values(seed):
    scene = parcel_scene(4.4, size=256, seed=seed).astype(np.float32)
    ok = np.ones(scene.shape, bool)
    for window in (3, 5, 7, 9):
        ties = domain.measure_ties([speckle.apply_filter("median", scene, ok, window=window)])
        assert ties.median_filtered and ties.block is None, (window, ties)
    for name in ("lee", "refined_lee", "lee_sigma", "frost", "gamma_map", "kuan", "boxcar"):
        assert not domain.measure_ties([speckle.apply_filter(name, scene, ok, window=7, looks=4.4)]).median_filtered
    assert domain.measure_ties([scene]).share == 0.0
    for how in ("uint16 amplitude", "0.5 dB steps", "float16"):
        ties = domain.measure_ties([_quantised(scene, how)])
        assert ties.share > 0 and not ties.median_filtered, (how, ties)


@pytest.mark.parametrize(("k", "phase"), [(2, 0), (2, 1), (3, 0), (3, 2), (4, 3)])
def test_values_repeated_in_blocks_are_found_at_any_phase(k, phase):
    coarse = parcel_scene(4.4, size=64, seed=k).astype(np.float32)
    upsampled = np.kron(coarse, np.ones((k, k), np.float32))[phase : phase + 150, phase : phase + 170]
    ties = domain.measure_ties([upsampled, upsampled[:90, :80]], pixel_size_m=10.0)
    assert ties.block == k and not ties.median_filtered
    assert domain.measure_ties([np.full((40, 40), 0.05, np.float32)]).block is None  # a constant is no block
    assert domain.measure_ties([coarse]).block is None


def test_median_and_block_messages_say_what_was_measured_and_what_to_do():
    median = DomainStats(4.4, {"VV": (-20.0, -11.0, -3.0)}, 10.0, domain.Ties(0.17, 0.35, 1000))
    (message,) = check_domain(median, {})
    assert message.startswith("17% of neighbouring VV pixels hold the very same value, among 35% distinct values")
    assert "median-filtered" in message and "Refined Lee (sarseg:speckle_filter)" in message
    blocks = replace(median, pixel_size_m=20.0, ties=domain.Ties(0.5, 0.25, 1000, 2, 10.0))
    (message,) = check_domain(blocks, {})
    assert message.startswith("The VV values repeat in 2x2 blocks") and "(20 m, not 10 m)" in message
    assert "gdalwarp -r average" in message
    assert check_domain(replace(median, ties=domain.Ties(0.05, 0.35, 1000)), {}) == []
    assert check_domain(replace(median, ties=None), {}) == []


def median_copy(src: str, dst: Path, window: int) -> str:
    """``src`` with every band through the plugin's median filter (nodata 0 kept)."""
    gdal.Translate(str(dst), src)
    ds = gdal.Open(str(dst), gdal.GA_Update)
    for b in range(ds.RasterCount):
        band = ds.GetRasterBand(b + 1)
        data = band.ReadAsArray()
        band.WriteArray(np.nan_to_num(speckle.apply_filter("median", data, data > 0, window=window)))
    ds = band = None
    return str(dst)


def test_median_filtered_input_warns_and_is_still_segmented(envelope_model, sample_dir, tmp_path):
    filtered = median_copy(str(sample_dir / "sar_20260301.tif"), tmp_path / "median.tif", 5)
    result, _, warns, classes, _ = run(envelope_model, filtered, tmp_path)
    median = [w for w in warns if "median-filtered" in w]
    assert len(median) == 1, warns
    ties = result["input_domain"]["stats"]["ties"]
    assert ties["share"] > domain.MEDIAN_TIE_SHARE and ties["block"] is None
    assert median[0].startswith(f"{ties['share']:.0%} of neighbouring VV pixels")
    assert metadata_of(classes)["SARSEG_INPUT_DOMAIN"] == "outside"
    assert median[0] in metadata_of(classes)["SARSEG_DOMAIN_WARNINGS"]
    assert read_raster(classes).shape == (1, 160, 160)


@pytest.fixture(scope="module")
def upsampled_sar(sample_dir, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The sample scene averaged to 20 m pixels, and that 20 m raster upsampled to 10 m by nearest neighbour."""
    out = tmp_path_factory.mktemp("upsampled")
    coarse, fine = str(out / "coarse_20m.tif"), str(out / "nearest_10m.tif")
    gdal.Warp(coarse, str(sample_dir / "sar_20260301.tif"), xRes=20, yRes=20, resampleAlg="average")
    gdal.Warp(fine, coarse, xRes=10, yRes=10, resampleAlg="near")
    return coarse, fine


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the pixels classified in both that have the same class."""
    ok = (a != CLASS_NODATA) & (b != CLASS_NODATA)
    assert ok.mean() > 0.5
    return float((a[ok] == b[ok]).mean())


def test_nearest_upsampled_input_is_averaged_back_to_the_pixels_it_was_made_at(envelope_model, upsampled_sar, tmp_path):
    coarse, fine = upsampled_sar
    (tmp_path / "coarse").mkdir()
    (tmp_path / "fine").mkdir()
    _, _, _, native, _ = run(envelope_model, coarse, tmp_path / "coarse")
    result, logs, warns, classes, _ = run(envelope_model, fine, tmp_path / "fine")
    assert any(line.startswith("Resampling: the raster's values repeat in 2 x 2 blocks") for line in logs), logs
    assert result["resampled"]["model_pixel_size_m"] == 20.0 and result["resampled"]["method"] == "average"
    assert not any("blocks" in w for w in warns), warns
    # averaging the 2 x 2 copies gives the 20 m pixels back: the 20 m raster's probabilities, interpolated onto
    # the 10 m grid, and their most probable classes
    got = read_raster(classes)[0]
    assert got.shape == (160, 160)
    assert agreement(got, bilinear_classes(native.with_name("probabilities.tif"), 2)) >= 0.995
    assert agreement(got[::2, ::2], read_raster(native)[0]) >= 0.9  # the 20 m map itself, but for its boundaries


def test_nearest_upsampled_input_on_its_own_grid_warns(envelope_model, upsampled_sar, tmp_path):
    result, _, warns, classes, _ = run(envelope_model, upsampled_sar[1], tmp_path, resample=False)
    blocks = [w for w in warns if "blocks" in w]
    assert len(blocks) == 1 and "(20 m, not 10 m)" in blocks[0], warns
    assert result["input_domain"]["stats"]["ties"]["block"] == 2
    assert blocks[0] in metadata_of(classes)["SARSEG_DOMAIN_WARNINGS"]


def test_blocks_are_averaged_back_when_the_raster_is_finer_than_the_trained_range(
    envelope_model, upsampled_sar, tmp_path
):
    """20 m pixels upsampled to 5 m (outside the 10-40 m range): averaged 4 x 4 back to 20 m, not 2 x 2 to 10 m."""
    coarse, _ = upsampled_sar
    fine = str(tmp_path / "nearest_5m.tif")
    gdal.Warp(fine, coarse, xRes=5, yRes=5, resampleAlg="near")
    (tmp_path / "coarse").mkdir()
    (tmp_path / "fine").mkdir()
    _, _, _, native, _ = run(envelope_model, coarse, tmp_path / "coarse")
    result, logs, warns, classes, _ = run(envelope_model, fine, tmp_path / "fine")
    assert any(line.startswith("Resampling: the raster's values repeat in 4 x 4 blocks") for line in logs), logs
    assert result["resampled"]["model_pixel_size_m"] == 20.0 and not any("blocks" in w for w in warns), warns
    got = read_raster(classes)[0]
    assert got.shape == (320, 320)
    assert agreement(got, bilinear_classes(native.with_name("probabilities.tif"), 4)) >= 0.995
    assert agreement(got[1::4, 1::4], read_raster(native)[0]) >= 0.9
