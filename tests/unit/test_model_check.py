"""A fast model copy checked against its reference on the first tiles (core.model_check, segment_raster's
``reference``), with small ONNX convolutions whose agreement is known."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rasters import read_raster, write_raster

from sar_seg_plugin.core import model_check
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.model_check import CHECK_KEY, ModelCheck
from sar_seg_plugin.models.metadata import ModelMetadata

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from tiny_models import CONV_META, conv3x3_model  # noqa: E402

META = CONV_META
WEIGHT = np.random.default_rng(3).normal(scale=0.6, size=(5, 2, 3, 3)).astype(np.float32)
BIAS = np.random.default_rng(4).normal(size=5).astype(np.float32)


def conv(path: Path, weight: np.ndarray, bias: np.ndarray = BIAS, meta: ModelMetadata = META):
    return conv3x3_model(path, meta, weight, bias)


def whole_classes(weight: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Classes of the 3x3 convolution over the whole normalised raster, in numpy (zero padding)."""
    x = np.pad(META.normalization.apply(db).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    h, w = db.shape[1:]
    logits = np.tile(BIAS.astype(np.float64)[:, None, None], (1, h, w))
    for dy in range(3):
        for dx in range(3):
            logits += np.einsum("ob,bhw->ohw", weight[:, :, dy, dx], x[:, dy : dy + h, dx : dx + w])
    return logits.argmax(axis=0)


def scene(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = rng.normal(-12, 6, size=(size, size))
    return np.stack([vv, vv - 7 + rng.normal(0, 2, size=(size, size))]).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("models")
    near = WEIGHT + np.random.default_rng(5).normal(scale=0.02, size=WEIGHT.shape).astype(np.float32)
    return {
        "reference": conv(folder / "reference.onnx", WEIGHT),
        "near": conv(folder / "near.onnx", near),  # a copy within a few per mille of the reference's classes
        "off": conv(folder / "off.onnx", -WEIGHT),  # a copy that disagrees on most pixels
        "weights": {"reference": WEIGHT, "near": near, "off": -WEIGHT},
    }


# --- ModelCheck alone -----------------------------------------------------------------------------------------


def _logits(classes: np.ndarray) -> np.ndarray:
    """(n, 5, h, w) logits whose argmax is ``classes`` (n, h, w)."""
    return np.moveaxis(np.eye(5, dtype=np.float32)[classes], -1, 1)


def test_check_counts_only_pixels_holding_data_and_decides_once_enough_are_seen():
    check = ModelCheck("fast", "ref", min_pixels=100, min_agreement=0.9)
    ref = np.zeros((1, 8, 8), np.int64)
    fast = ref.copy()
    fast[0, 0, :4] = 1  # 4 of 64 pixels differ...
    valid = np.ones((8, 8), bool)
    valid[0, :2] = False  # ...2 of them where the tile holds no data
    check.add(_logits(fast), _logits(ref), [valid])
    assert check.pending and check.pixels == 62 and check.same == 60
    check.add(_logits(fast), _logits(ref), [valid])
    assert not check.pending and check.keep_fast  # 120 / 124 = 96.8 % >= 90 %
    assert check.agreement == pytest.approx(120 / 124)
    check.add(_logits(1 - ref), _logits(ref), [valid])  # after the decision: counted, decision kept
    assert check.keep_fast and check.pixels == 186 and check.tiles == 3
    assert "fast runs the rest" in check.describe()


def test_check_keeps_the_reference_below_the_agreement_and_on_a_raster_too_small():
    low = ModelCheck("fast", "ref", min_pixels=64, min_agreement=0.99)
    ref = np.zeros((1, 8, 8), np.int64)
    fast = ref.copy()
    fast[0, 0, 0] = 2  # 63 / 64 = 98.4 %
    low.add(_logits(fast), _logits(ref), [np.ones((8, 8), bool)])
    assert low.keep_fast is False and "under the 99% it must keep: ref runs the rest" in low.describe()

    small = ModelCheck("fast", "ref", min_pixels=1000)
    small.add(_logits(ref), _logits(ref), [np.ones((5, 6), bool)])  # a tile cut to 5 x 6 raster pixels
    assert small.pending and small.pixels == 30
    small.finish()
    assert small.keep_fast is False and "the classes written are all ref's" in small.describe()
    with pytest.raises(ValueError, match="one shape"):
        small.add(_logits(ref), _logits(ref)[:, :, :4], [np.ones((8, 8), bool)])


# --- Through segment_raster -----------------------------------------------------------------------------------


def _run(tmp_path: Path, src: str, name: str, model, reference=None) -> tuple[np.ndarray, dict, list, list]:
    logs: list[str] = []
    warnings: list[str] = []
    out = tmp_path / f"{name}.tif"
    result = segment_raster(src, str(out), model, reference=reference, log=logs.append, warn=warnings.append)
    return read_raster(out, dtype=np.int64)[0], result, logs, warnings


def test_a_close_copy_runs_after_the_first_tiles(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)  # about the first 5 tiles of 32 px
    db = scene(200)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    alone, _, _, _ = _run(tmp_path, src, "near_alone", models["near"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    checked, result, logs, warnings = _run(tmp_path, src, "checked", models["near"], models["reference"])
    # the copy's own agreement with the reference, computed independently over the whole raster
    agreement = (whole_classes(models["weights"]["near"], db) == whole_classes(WEIGHT, db)).mean()
    assert 0.98 < agreement < 0.9995
    check = result["model_check"]
    assert check["fast_kept"] and check["pixels"] >= 4000 and abs(check["agreement"] - agreement) < 0.01
    assert not warnings and any(line.startswith("Model check: near gave the class of reference") for line in logs)
    # the first tile row came from the reference (the checked tiles), the bottom rows from the copy
    assert (checked[:16, :16] == reference[:16, :16]).all()
    assert (checked[120:] == alone[120:]).all()
    assert (alone != reference).any()
    from osgeo import gdal

    assert "near runs the rest" in gdal.Open(str(tmp_path / "checked.tif")).GetMetadataItem(CHECK_KEY)


def test_a_copy_that_disagrees_hands_the_raster_to_the_reference(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)
    db = scene(150, seed=1)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    checked, result, _, warnings = _run(tmp_path, src, "checked", models["off"], models["reference"])
    assert (checked == reference).all()  # every tile: the reference's output
    assert result["model_check"]["fast_kept"] is False and result["model_check"]["agreement"] < 0.5
    assert len(warnings) == 1 and "off runs" not in warnings[0] and "reference runs the rest" in warnings[0]


def test_a_raster_smaller_than_the_check_is_all_the_references(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "MIN_TILES", 1)  # checked however few its tiles
    db = scene(70, seed=2)  # 4,900 pixels: fewer than CHECK_PIXELS
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    checked, result, logs, warnings = _run(tmp_path, src, "checked", models["near"], models["reference"])
    assert (checked == reference).all() and not warnings
    assert result["model_check"]["pixels"] == result["tiles"] * 32 * 32  # every tile whole: 3 x 3 tiles of 32 px
    assert any("the classes written are all reference's" in line for line in logs)


def test_a_raster_of_few_tiles_runs_on_the_reference_alone(models, tmp_path, monkeypatch):
    """Fewer tiles than MIN_TILES: no tile runs through the fast copy (its check would cost more than it saves)."""
    db = scene(70, seed=2)  # 3 x 3 tiles of 32 px
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    calls = []
    run = models["off"].run
    monkeypatch.setattr(models["off"], "run", lambda tiles: calls.append(1) or run(tiles))
    checked, result, logs, warnings = _run(tmp_path, src, "checked", models["off"], models["reference"])
    assert (checked == reference).all() and not calls and not warnings  # "off" would differ on most pixels
    assert result["tiles"] == 9 and result["model_check"]["pixels"] == 0
    assert any("tiles are fewer than 12, too few for off to win back its check: reference runs" in x for x in logs)


def test_a_reference_of_other_classes_is_refused(models, tmp_path):
    other = conv(tmp_path / "other.onnx", WEIGHT, meta=dataclasses.replace(META, tile_size=48))
    src = write_raster(tmp_path / "db.tif", scene(40), descriptions=["VV", "VH"], units=["dB", "dB"])
    with pytest.raises(SarSegError, match="cannot be checked against a model whose tile_size differ"):
        segment_raster(src, str(tmp_path / "c.tif"), models["near"], reference=other)
    assert not (tmp_path / "c.tif").exists()


def test_a_resampled_run_records_the_check_in_the_final_outputs(tmp_path, monkeypatch):
    """A raster warped to the model's pixel size is segmented on the model's grid: the check is made there, and
    the outputs on the raster's own grid carry its record."""
    from osgeo import gdal

    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)
    meta = dataclasses.replace(META, pixel_size_m=10.0)
    near = WEIGHT + np.random.default_rng(5).normal(scale=0.02, size=WEIGHT.shape).astype(np.float32)
    fast, reference = conv(tmp_path / "near.onnx", near, meta=meta), conv(tmp_path / "ref.onnx", WEIGHT, meta=meta)
    src = write_raster(tmp_path / "db.tif", scene(100), descriptions=["VV", "VH"], units=["dB", "dB"], pixel=20.0)
    out, probs = tmp_path / "classes.tif", tmp_path / "probs.tif"
    logs: list[str] = []
    result = segment_raster(src, str(out), fast, probabilities_path=str(probs), reference=reference, log=logs.append)
    assert result["resampled"]["grid"] == [200, 200]  # checked on the model's 10 m grid
    note = result["model_check"]["note"]
    assert result["model_check"]["fast_kept"] and note.endswith("near runs the rest of the raster")
    assert [line for line in logs if line.startswith("Model check: ")] == [f"Model check: {note}"]
    for path in (out, probs):
        ds = gdal.Open(str(path))
        assert (ds.RasterXSize, ds.RasterYSize) == (100, 100) and ds.GetMetadataItem(CHECK_KEY) == note
