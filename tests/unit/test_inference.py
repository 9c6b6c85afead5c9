"""Tiled, blended inference (core.inference) against single-pass inference of the whole raster."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import read_raster, write_raster
from tiny_models import CONV_META, conv3x3_model

from sar_seg_plugin.core import inference, raster_io
from sar_seg_plugin.core.class_rasters import argmax_and_max
from sar_seg_plugin.core.errors import CancelledError, SarSegError
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.tiling import batch_columns, blend_window, model_extent, tile_extent, tile_starts
from sar_seg_plugin.models.metadata import ModelMetadata, Normalization

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TILE, OVERLAP = CONV_META.tile_size, CONV_META.tile_overlap
WIDTH, HEIGHT = 70, 53  # not multiples of the tile
NAMES = CONV_META.class_names
META = CONV_META  # tiles of TILE px, overlap OVERLAP


#: The same model declaring that its graph takes any tile size that is a multiple of 8 (tiles of the last row and
#: column cut to what is left).
META_CUT = dataclasses.replace(META, training={"size_multiple": 8})


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory: pytest.TempPathFactory):
    """A 3x3 convolution (zero padding, dynamic size) 2 -> 5 channels, small enough to run on a whole raster."""
    return _conv_model(tmp_path_factory.mktemp("models") / "conv3x3.onnx", META)


@pytest.fixture(scope="module")
def cut_model(tmp_path_factory: pytest.TempPathFactory):
    """:func:`conv_model` with :data:`META_CUT`."""
    return _conv_model(tmp_path_factory.mktemp("models") / "conv3x3_cut.onnx", META_CUT)


def _conv_model(path: Path, meta: ModelMetadata):
    rng = np.random.default_rng(3)
    weight = rng.normal(scale=0.6, size=(5, 2, 3, 3)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    return conv3x3_model(path, meta, weight, bias)


def db_scene(seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = rng.normal(-12, 6, size=(height, width))
    vh = vv - 7 + rng.normal(0, 2, size=(height, width))
    return np.stack([vv, vh]).astype(np.float32)


def whole_raster_probabilities(model, db: np.ndarray) -> np.ndarray:
    """Reference: one pass of the model over the whole (normalised) raster, softmax over classes."""
    logits = model.run(META.normalization.apply(db)[None])[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def test_blend_window_covers_every_pixel():
    w = blend_window(TILE, OVERLAP)
    assert w.shape == (TILE, TILE) and w.max() == 1.0
    assert w[0].max() == 0.0 and w[:, -1].max() == 0.0  # ramped sides start at 0 ...
    assert (w[1:-1, 1:-1] > 0).all()  # ... and are positive everywhere inside the tile
    assert (w[OVERLAP:-OVERLAP, OVERLAP:-OVERLAP] == 1.0).all()
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    flat = blend_window(TILE, OVERLAP, top=False, bottom=False, left=False, right=False)
    assert (flat == 1.0).all()
    for length in (32, 33, 53, 70, 100):
        starts = tile_starts(length, TILE, TILE - OVERLAP)
        total = np.zeros(length)
        for s in starts:
            ramp = blend_window(TILE, OVERLAP, top=s > 0, bottom=s + TILE < length)[:, OVERLAP]
            total[s : s + TILE] += ramp
        assert starts[-1] + TILE == length and (total > 0).all(), length


def test_argmax_and_max_equals_numpy_ties_included():
    rng = np.random.default_rng(3)
    p = rng.random((5, 37, 41)).astype(np.float32)
    p[:, :5] = np.round(p[:, :5] * 2) / 2  # many ties: numpy gives them to the first class
    p[:, 5] = 0.25  # all five equal
    classes, top = argmax_and_max(p)
    assert classes.dtype == np.uint8 and top.dtype == np.float32
    np.testing.assert_array_equal(classes, np.argmax(p, axis=0))
    np.testing.assert_array_equal(top, p.max(axis=0))
    assert (classes[5] == 0).all()


def test_softmax_of_logits_matches_scipy():
    from scipy.special import softmax

    rng = np.random.default_rng(4)
    logits = (rng.normal(0, 8, (2, 5, TILE, TILE))).astype(np.float32)
    logits[0, :, 0, 0] = [300.0, 299.0, -300.0, 0.0, 1.0]  # exp overflows without the shift
    probs = inference._Probabilities(META)(logits.copy(), (TILE, TILE))
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64), axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_fixture", ["conv_model", "cut_model"])
@pytest.mark.parametrize(
    ("width", "height", "batch", "finish_chunk"),
    [
        (WIDTH, HEIGHT, 2, 2048),
        (WIDTH, HEIGHT, 1, 16),  # finished block rows written in column chunks
        (97, 600, 3, 2048),  # several 256-row output blocks: rows wait in the stager across tile rows
    ],
)
def test_tiled_blended_equals_whole_raster_inference(
    request, tmp_path, monkeypatch, model_fixture, width, height, batch, finish_chunk
):
    conv_model = request.getfixturevalue(model_fixture)
    multiple = conv_model.metadata.size_multiple
    monkeypatch.setattr("sar_seg_plugin.core.class_rasters.FINISH_CHUNK", finish_chunk)
    db = db_scene(width=width, height=height)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    out, probs, conf = tmp_path / "classes.tif", tmp_path / "probs.tif", tmp_path / "conf.tif"
    result = segment_raster(
        src, str(out), conv_model, probabilities_path=str(probs), confidence_path=str(conf), batch_size=batch
    )
    expected = whole_raster_probabilities(conv_model, db)
    got = read_raster(probs, dtype=np.float64)
    assert got.shape == (5, height, width)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # right and bottom edges (covered by shifted last tiles) included explicitly
    np.testing.assert_allclose(got[:, :, -3:], expected[:, :, -3:], atol=1e-5)
    np.testing.assert_allclose(got[:, -3:, :], expected[:, -3:, :], atol=1e-5)
    classes = read_raster(out, dtype=np.int64)[0]
    assert (classes == expected.argmax(axis=0)).mean() > 0.999  # ties at 1e-5 aside
    np.testing.assert_allclose(read_raster(conf, dtype=np.float64)[0], expected.max(axis=0), atol=1e-5)
    assert result["tiles"] == len(tile_starts(height, TILE, 24, multiple)) * len(tile_starts(width, TILE, 24, multiple))
    assert sum(result["class_pixels"].values()) == width * height and result["device"] == "cpu"


def test_entropy_confidence_is_normalised_shannon_entropy(conv_model, tmp_path):
    db = db_scene(4)
    src = write_raster(tmp_path / "db.tif", db, units=["dB", "dB"])
    conf = tmp_path / "entropy.tif"
    segment_raster(src, str(tmp_path / "c.tif"), conv_model, confidence_path=str(conf), confidence="entropy")
    p = whole_raster_probabilities(conv_model, db)
    expected = -(p * np.log(p)).sum(axis=0) / np.log(5)
    got = read_raster(conf, dtype=np.float64)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert gdal.Open(str(conf)).GetRasterBand(1).GetDescription() == "entropy"
    with pytest.raises(SarSegError, match="confidence measure 'gini'.*max, entropy"):
        segment_raster(src, str(tmp_path / "d.tif"), conv_model, confidence_path=str(conf), confidence="gini")


def test_cut_tiles_are_stride_apart_and_the_last_covers_what_is_left():
    stride = TILE - OVERLAP
    for length in (33, 40, 41, 56, 57, 70, 100, 257, 1000, 4096, 4097):
        starts = tile_starts(length, TILE, stride, 8)
        extents = [tile_extent(s, length, TILE) for s in starts]
        assert starts[0] == 0 and starts[-1] + extents[-1] == length and np.all(np.diff(starts) > 0)
        assert all(e == TILE for e in extents[:-1]) and np.all(np.diff(starts[:-1]) == stride)
        last = extents[-1]
        assert last % 8 == 0 and TILE // 2 <= last <= TILE  # whole multiples, at least half a tile of context
        if len(starts) > 1:
            assert starts[-2] + TILE - starts[-1] >= OVERLAP  # overlaps its neighbour by the model's overlap ...
            assert last < max(TILE // 2, length - starts[-2] - stride) + 8  # ... and covers no more than it needs
        # never more pixels through the model than whole tiles spread evenly
        assert sum(extents) <= len(tile_starts(length, TILE, stride)) * TILE
    assert (
        tile_starts(20, TILE, stride, 8) == [0]
        and model_extent(20, TILE, 8) == 24
        and model_extent(20, TILE, None) == TILE
    )
    # 4096 px with 384 px tiles, overlap 32: 11 whole tiles and one of 224 px instead of 12 whole ones
    starts = tile_starts(4096, 384, 352, 16)
    assert len(starts) == 12 and tile_extent(starts[-1], 4096, 384) == 224


def test_cut_tiles_reach_the_model_at_their_own_size(cut_model, tmp_path):
    """The model is run on the cut tiles' own sizes (a multiple of 8, no padding) and never on more pixels than
    the whole-tile layout gives it."""
    width, height = 70, 53
    db = db_scene(width=width, height=height)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    shapes: list[tuple[int, ...]] = []

    class Recording:
        def __init__(self, model) -> None:
            self.model, self.metadata = model, model.metadata
            self.device_used, self.threads = model.device_used, model.threads

        def run(self, x: np.ndarray) -> np.ndarray:
            shapes.append(x.shape)
            return self.model.run(x)

    segment_raster(src, str(tmp_path / "c.tif"), Recording(cut_model), batch_size=2)
    stride = TILE - OVERLAP
    ys, xs = tile_starts(height, TILE, stride, 8), tile_starts(width, TILE, stride, 8)
    expected = [(tile_extent(y, height, TILE), tile_extent(x, width, TILE)) for y in ys for x in xs]
    got = [s[2:] for s in shapes for _ in range(s[0])]
    assert got == expected and all(h % 8 == 0 and w % 8 == 0 for h, w in got)
    assert all(s[0] <= 2 and s[1] == 2 for s in shapes)
    # batches never mix widths: the narrower last tile of a row goes alone
    assert batch_columns([32, 32, 32, 24], 2) == [(0, 2), (2, 3), (3, 4)]
    assert batch_columns([32, 32, 24], 4) == [(0, 2), (2, 3)] and batch_columns([32], 3) == [(0, 1)]
    whole = len(tile_starts(height, TILE, stride)) * len(tile_starts(width, TILE, stride)) * TILE * TILE
    assert sum(h * w for h, w in got) < whole


def test_tile_starts_are_evenly_spread():
    for length in (33, 100, 257, 1000, 4097):
        starts = tile_starts(length, TILE, TILE - OVERLAP)
        gaps = np.diff(starts)
        assert starts[0] == 0 and starts[-1] + TILE == length
        assert gaps.max() <= TILE - OVERLAP  # neighbours overlap by at least the model's overlap ...
        assert gaps.max() - gaps.min() <= 1  # ... and evenly, so no pair overlaps by nearly a tile
        assert len(starts) == int(np.ceil((length - TILE) / (TILE - OVERLAP))) + 1


def test_class_raster_has_colours_names_and_georeferencing(conv_model, tmp_path):
    src = write_raster(tmp_path / "db.tif", db_scene(1), units=["dB", "dB"])
    out = tmp_path / "classes.tif"
    segment_raster(src, str(out), conv_model)
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 255
    assert band.GetCategoryNames()[:5] == list(NAMES)
    ct = band.GetColorTable()
    assert ct.GetColorEntry(0)[:3] == (0x1F, 0x78, 0xB4) and ct.GetColorEntry(3)[:3] == (0xE3, 0x1A, 0x1C)
    assert ds.GetGeoTransform() == gdal.Open(src).GetGeoTransform()


def test_small_raster_is_reflect_padded(conv_model, tmp_path):
    db = db_scene(2, width=20, height=11)  # smaller than a tile in both directions
    src = write_raster(tmp_path / "small.tif", db, units=["dB", "dB"])
    out, probs = tmp_path / "c.tif", tmp_path / "p.tif"
    segment_raster(src, str(out), conv_model, probabilities_path=str(probs))
    padded = np.pad(db, ((0, 0), (0, TILE - 11), (0, TILE - 20)), mode="reflect")
    expected = whole_raster_probabilities(conv_model, padded)[:, :11, :20]
    np.testing.assert_allclose(read_raster(probs, dtype=np.float64), expected, atol=1e-5)


def test_nodata_becomes_255_and_nan(conv_model, tmp_path):
    db = db_scene(3)
    nodata = np.zeros((HEIGHT, WIDTH), bool)
    nodata[:10, :15] = True
    nodata[40, 60] = True
    db[1][nodata] = -9999.0  # one band missing is enough
    src = write_raster(tmp_path / "nd.tif", db, nodata=-9999.0, units=["dB", "dB"])
    out, probs, conf = tmp_path / "c.tif", tmp_path / "p.tif", tmp_path / "conf.tif"
    result = segment_raster(src, str(out), conv_model, probabilities_path=str(probs), confidence_path=str(conf))
    classes = read_raster(out, dtype=np.int64)[0]
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 5).all()
    assert np.isnan(read_raster(probs, dtype=np.float64)[:, nodata]).all()
    assert np.isfinite(read_raster(conf, dtype=np.float64)[0][~nodata]).all()
    assert result["nodata_pixels"] == nodata.sum()


def test_linear_input_is_converted_to_db(conv_model, tmp_path):
    db = db_scene(4)
    linear = (10.0 ** (db / 10.0)).astype(np.float32)
    linear[0, 5, 5] = 1e-9  # below the -50 dB floor
    src = write_raster(tmp_path / "lin.tif", linear, units=["linear", "linear"])
    probs = tmp_path / "p.tif"
    result = segment_raster(src, str(tmp_path / "c.tif"), conv_model, probabilities_path=str(probs))
    reference_db = 10.0 * np.log10(np.maximum(linear.astype(np.float64), 1e-5))
    expected = whole_raster_probabilities(conv_model, reference_db.astype(np.float32))
    np.testing.assert_allclose(read_raster(probs, dtype=np.float64), expected, atol=1e-5)
    assert result["converted_to_db"] == [1, 2]


@pytest.mark.parametrize(
    "bands,units,match",
    [
        (1, ["dB"], "expects 2 bands"),
        (2, ["reflectance", "reflectance"], "in reflectance, not dB"),
    ],
)
def test_rasters_that_do_not_fit_are_refused(conv_model, tmp_path, bands, units, match):
    src = write_raster(tmp_path / "bad.tif", db_scene(5)[:bands], units=units)
    out = tmp_path / "c.tif"
    with pytest.raises(SarSegError, match=match) as err:
        segment_raster(src, str(out), conv_model)
    assert "VV (dB), VH (dB)" in str(err.value)
    assert not out.exists()


def test_cancel_leaves_nothing(conv_model, tmp_path):
    src = write_raster(tmp_path / "db.tif", db_scene(6), units=["dB", "dB"])
    before = set(tmp_path.iterdir())
    calls = {"n": 0}

    def cancel_on_third() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    outputs = [tmp_path / "c.tif", tmp_path / "p.tif", tmp_path / "conf.tif"]
    with pytest.raises(CancelledError):
        segment_raster(
            src,
            str(outputs[0]),
            conv_model,
            probabilities_path=str(outputs[1]),
            confidence_path=str(outputs[2]),
            batch_size=1,
            is_canceled=cancel_on_third,
        )
    assert set(tmp_path.iterdir()) == before, "a cancelled run must leave no file behind"


def _peak_python_memory(conv_model, tmp_path, width: int, height: int, batch: int) -> tuple[int, list]:
    """Peak bytes numpy allocates while segmenting a width x height raster, and the windows read."""
    src = write_raster(tmp_path / f"w{width}.tif", db_scene(7, width=width, height=height), units=["dB", "dB"])
    windows: list[raster_io.Window] = []
    real_read = raster_io.read_window

    def recording_read(ds, window, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if len(args) < 2 and "dtype" not in kwargs:  # the tiles (the nodata check's samples are read as float64)
            windows.append(window)
        return real_read(ds, window, *args, **kwargs)

    real_check = inference.check_has_data

    def check_then_reset_peak(*args, **kwargs):  # noqa: ANN002, ANN003
        result = real_check(*args, **kwargs)
        tracemalloc.reset_peak()  # the nodata check's sample is not the tiling's memory
        return result

    progress: list[float] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inference.raster_io, "read_window", recording_read)
        mp.setattr(inference, "check_has_data", check_then_reset_peak)
        tracemalloc.start()
        try:
            segment_raster(src, str(tmp_path / f"c{width}.tif"), conv_model, batch_size=batch, progress=progress.append)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert progress[-1] == pytest.approx(100.0) and progress == sorted(progress)
    return peak, windows


def test_memory_is_a_few_tiles_plus_a_few_bytes_per_column(conv_model, tmp_path):
    height, batch = 300, 2
    stride = TILE - OVERLAP
    peak_narrow, _ = _peak_python_memory(conv_model, tmp_path, 1000, height, batch)
    peak_wide, windows = _peak_python_memory(conv_model, tmp_path, 9000, height, batch)
    # Reads are one batch of tiles: a tile high, the batch's tiles wide; every tile row read left to right.
    assert all(w.height == TILE and w.width <= TILE + (batch - 1) * stride for w in windows)
    ys = tile_starts(height, TILE, stride)
    assert sorted({w.y for w in windows}) == ys
    per_row = len(tile_starts(9000, TILE, stride)) // batch + 1
    assert len(windows) <= len(ys) * per_row
    # What grows with the width: the rows two tile rows share (5 classes + weights, float32; at most the
    # overlap plus what spreading the tiles evenly adds) and the class rows waiting for a 256-row block (uint8).
    carried_rows = max(a + TILE - b for a, b in zip(ys, ys[1:]))
    assert carried_rows < OVERLAP + stride / (len(ys) - 1) + 1
    per_column = (5 + 1) * 4 * carried_rows + 1 * (256 + stride)
    growth = (peak_wide - peak_narrow) / 8000
    # Holding two tile rows of the width, as a row-band design does, would cost (5 + 1) * 4 * 2 * TILE = 1536
    # bytes per column; the slack (1.5x) is below that.
    assert growth <= 1.5 * per_column, (growth, per_column)


def test_not_a_segmentation_model_is_refused(tmp_path):
    class Fake:
        metadata = ModelMetadata(
            task="encoder",
            name="enc",
            input_bands=("VV",),
            input_units=("dB",),
            normalization=Normalization(),
            tile_size=32,
            tile_overlap=0,
            output_kind="continuous",
            embedding_size=8,
        )
        device_used = "cpu"

    with pytest.raises(SarSegError, match="choose a segmentation model"):
        segment_raster(str(tmp_path / "x.tif"), str(tmp_path / "y.tif"), Fake())


def test_confidence_summary_matches_the_whole_raster_probabilities(conv_model, tmp_path):
    """The run's mean confidence, per-class means and unsure share equal those of the probabilities it wrote
    (which equal a single pass over the whole raster, see above), nodata pixels left out; the log says them and
    warns past 25 % unsure."""
    db = db_scene(5)
    db[:, :4, :] = np.nan  # a nodata strip
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"], nodata=np.nan)
    logs, warnings = [], []
    probs = tmp_path / "p.tif"
    result = segment_raster(
        src, str(tmp_path / "c.tif"), conv_model, probabilities_path=str(probs), log=logs.append, warn=warnings.append
    )
    p = read_raster(probs, dtype=np.float64)
    assert np.isnan(p[:, :4]).all() and np.isfinite(p[:, 4:]).all()
    p = p[:, 4:]
    top, chosen = p.max(axis=0), p.argmax(axis=0)
    summary = result["confidence"]
    assert summary["pixels"] == top.size
    assert summary["mean"] == pytest.approx(top.mean(), abs=1e-5)
    assert summary["unsure_share"] == pytest.approx((top < 0.5).mean(), abs=2 / top.size)
    for k, name in enumerate(NAMES):
        mask = chosen == k
        expected = top[mask].mean() if mask.any() else None
        assert summary["per_class"][name] == (pytest.approx(expected, abs=1e-5) if mask.any() else None)
    line = next(m for m in logs if m.startswith("Confidence"))
    assert f"mean {top.mean():.2f}" in line and f"{(top < 0.5).mean():.1%} of the pixels under 0.5" in line
    unsure = [w for w in warnings if w.startswith("The model is unsure")]
    assert bool(unsure) == ((top < 0.5).mean() > 0.25)


def test_describe_confidence_warns_and_quotes_the_models_own_gap():
    from sar_seg_plugin.core.class_rasters import ConfidenceTally, describe_confidence

    tally = ConfidenceTally(3)
    classes = np.array([[0, 0, 1, 2]])
    tally.add(classes, np.array([[0.9, 0.7, 0.4, np.nan]]), np.array([[True, True, True, True]]))
    tally.add(classes, np.array([[0.3, 0.3, 0.3, 0.3]]), np.array([[False, False, False, False]]))
    summary = tally.summary(["a", "b", "c"])
    assert summary["pixels"] == 3 and summary["mean"] == pytest.approx((0.9 + 0.7 + 0.4) / 3)
    assert summary["per_class"] == {"a": pytest.approx(0.8), "b": pytest.approx(0.4), "c": None}
    assert summary["unsure_share"] == pytest.approx(1 / 3)
    reference = {"where": "test scenes", "mean_confidence": 0.8, "overall_accuracy": 0.71}
    line, warning = describe_confidence(summary, reference)
    assert "mean 0.67" in line and "33.3 %" not in line and "33.3% of the pixels under 0.5" in line
    assert line.split("per class: ")[1].split(". On ")[0] == "a 0.80, b 0.40"  # c: no pixel, left out
    assert "On test scenes" in line and "0.80" in line and "71% of the pixels were right" in line
    assert warning is not None and "unsure on 33% of the pixels" in warning
    tally.add(np.array([[1] * 9]), np.full((1, 9), 0.95), np.ones((1, 9), bool))
    line, warning = describe_confidence(tally.summary(["a", "b", "c"]))
    assert warning is None and "On " not in line and "8.3% of the pixels under 0.5" in line
    assert describe_confidence(ConfidenceTally(2).summary(["a", "b"]))[0] == "Confidence: no pixel was classified"
