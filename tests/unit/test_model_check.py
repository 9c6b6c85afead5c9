"""A fast model copy checked against its reference on tiles spread over the raster (core.model_check,
segment_raster's ``reference``), with small ONNX convolutions whose agreement is known."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rasters import read_raster, write_raster

from sar_seg_plugin.core import model_check
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.model_check import CHECK_KEY, ModelCheck, spread_tiles, unlike_first
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
        # a copy whose vegetation logit drifted: the same classes where one class leads by far (dark water),
        # other classes on about 7 % of varied pixels
        "drift": conv(folder / "drift.onnx", WEIGHT, BIAS + np.float32([0.0, 1.5, 0.0, 0.0, 0.0])),
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
    assert "fast segments the raster" in check.describe()


def test_one_tile_under_the_floor_hands_the_raster_to_the_reference_whatever_the_pooled_share():
    ref = np.zeros((1, 10, 10), np.int64)
    off = ref.copy()
    off[0, 0, :5] = 1  # 95 of 100 pixels the same
    check = ModelCheck("fast", "ref", min_pixels=1000, min_agreement=0.9, tile_floor=0.97, min_tile_pixels=50)
    for _ in range(3):
        check.add(_logits(ref), _logits(ref), [np.ones((10, 10), bool)])
    assert check.pending and check.worst == 1.0
    check.add(_logits(off), _logits(ref), [np.ones((10, 10), bool)])  # 395 / 400 pooled, but this tile 95 %
    assert check.keep_fast is False and check.refused and check.worst == 0.95 and check.agreement > 0.98
    assert check.describe().endswith(
        "(95.00% on the tile where they agreed least), under the 97% each tile must keep: ref segments the raster"
    )
    # a tile holding fewer pixels of data than min_tile_pixels is pooled but not judged alone
    few = ModelCheck("fast", "ref", min_pixels=300, min_agreement=0.9, tile_floor=0.97, min_tile_pixels=50)
    edge = np.zeros((10, 10), bool)
    edge[:4] = True  # 40 pixels of data, 5 of them off: 87.5 %
    few.add(_logits(off), _logits(ref), [edge])
    assert few.pending and np.isnan(few.worst)
    for _ in range(3):
        few.add(_logits(ref), _logits(ref), [np.ones((10, 10), bool)])
    assert few.keep_fast and few.worst == 1.0 and few.agreement == pytest.approx(335 / 340)


def test_check_keeps_the_reference_below_the_agreement_and_on_a_raster_too_small():
    low = ModelCheck("fast", "ref", min_pixels=64, min_agreement=0.99)
    ref = np.zeros((1, 8, 8), np.int64)
    fast = ref.copy()
    fast[0, 0, 0] = 2  # 63 / 64 = 98.4 %
    low.add(_logits(fast), _logits(ref), [np.ones((8, 8), bool)])
    assert low.keep_fast is False and "under the 99% it must keep: ref segments the raster" in low.describe()

    small = ModelCheck("fast", "ref", min_pixels=1000)
    small.add(_logits(ref), _logits(ref), [np.ones((5, 6), bool)])  # a tile cut to 5 x 6 raster pixels
    assert small.pending and small.pixels == 30
    small.finish()
    assert small.keep_fast is False and "fewer than the 1,000 it is judged on: ref segments" in small.describe()
    with pytest.raises(ValueError, match="one shape"):
        small.add(_logits(ref), _logits(ref)[:, :, :4], [np.ones((8, 8), bool)])


# --- Through segment_raster -----------------------------------------------------------------------------------


def _run(tmp_path: Path, src: str, name: str, model, reference=None) -> tuple[np.ndarray, dict, list, list]:
    logs: list[str] = []
    warnings: list[str] = []
    out = tmp_path / f"{name}.tif"
    result = segment_raster(src, str(out), model, reference=reference, log=logs.append, warn=warnings.append)
    return read_raster(out, dtype=np.int64)[0], result, logs, warnings


def test_spread_tiles_cover_the_grid_evenly_and_are_distinct():
    cells = spread_tiles(10, 10, 12)
    assert len(set(cells)) == 12 and all(0 <= r < 10 and 0 <= c < 10 for r, c in cells)
    # the first three in three rows and three columns, none on the edge of the grid (where fill is most likely)
    assert len({r for r, _ in cells[:3]}) == len({c for _, c in cells[:3]}) == 3
    assert all(0 < r < 9 and 0 < c < 9 for r, c in cells[:3])
    assert {(r // 5, c // 5) for r, c in cells[:5]} == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every quadrant
    assert sorted(spread_tiles(2, 3, 50)) == [(r, c) for r in range(2) for c in range(3)]  # all, none twice
    assert spread_tiles(1, 40, 3) == spread_tiles(1, 40, 3) and len({c // 14 for _, c in spread_tiles(1, 40, 3)}) == 3
    assert spread_tiles(0, 5, 3) == []


def test_unlike_tiles_come_first():
    sea = [np.array([-2.0, -1.8, -1.6]) + 0.01 * k for k in range(6)]
    land = [np.array([0.5, 1.0, 1.6]), np.array([0.6, 1.1, 1.5])]
    order = unlike_first(sea + land)
    assert sorted(order) == list(range(8))
    assert {order[0], order[1]} & {6, 7} and {order[0], order[1]} & set(range(6))  # both kinds among the first two
    town = np.array([2.5, 3.0, 4.0])
    assert unlike_first([*sea, town])[0] == 6  # the odd one out first
    assert unlike_first([]) == []


def test_tile_features_are_percentiles_of_the_pixels_holding_data():
    rng = np.random.default_rng(7)
    tile = rng.normal(size=(2, 48, 48)).astype(np.float32)
    valid = np.zeros((40, 48), bool)  # a tile cut to 40 raster rows, padded to 48 for the model
    valid[5:30, 10:] = True
    found = model_check.tile_features(tile, valid)
    for band in range(2):
        expected = np.percentile(tile[band, :40][valid], (10, 50, 90))
        assert np.allclose(found[3 * band : 3 * band + 3], expected)
    assert model_check.tile_features(tile, np.zeros((40, 48), bool)) is None


def test_a_raster_mostly_of_sea_is_judged_on_its_land_too(models, tmp_path, monkeypatch):
    """Calm sea over the top three quarters: the first three tiles of the spread all fall on it. Taken in their
    spread order the copy would pass; taken most unlike first, a land tile is among them and the copy does not."""
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 3000)  # three tiles of 32 px
    db = scene(200, seed=4)
    db[0, :152], db[1, :152] = -25.0, -32.0  # tile rows 0-5 (32 px tiles, 24 px apart): dark water
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    assert all(r <= 5 for r, _ in spread_tiles(8, 8, 3))  # the first three of the spread: sea only
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    with monkeypatch.context() as m:
        m.setattr(model_check, "unlike_first", lambda features: list(range(len(features))))
        _, spread, _, _ = _run(tmp_path, src, "spread_order", models["drift"], models["reference"])
    assert spread["model_check"]["fast_kept"] and spread["model_check"]["agreement"] == 1.0
    checked, result, _, warnings = _run(tmp_path, src, "checked", models["drift"], models["reference"])
    assert result["model_check"]["fast_kept"] is False and result["model_check"]["worst_tile"] < 0.97
    assert result["model_check"]["tiles"] <= 2  # the land met at once
    assert (checked == reference).all() and len(warnings) == 1 and "each tile must keep" in warnings[0]


def test_a_close_copy_segments_the_raster(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)  # about 4 tiles of 32 px
    db = scene(200)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    alone, _, _, _ = _run(tmp_path, src, "near_alone", models["near"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    runs = {"near": [], "reference": []}
    for name in runs:
        run = models[name].run
        monkeypatch.setattr(
            models[name], "run", lambda tiles, run=run, name=name: runs[name].append(len(tiles)) or run(tiles)
        )
    checked, result, logs, warnings = _run(tmp_path, src, "checked", models["near"], models["reference"])
    # every tile through the copy once (the checked ones are not run again), the checked ones through the reference
    assert sum(runs["near"]) == result["tiles"] and sum(runs["reference"]) == result["model_check"]["tiles"] >= 3
    # the copy's own agreement with the reference, computed independently over the whole raster
    agreement = (whole_classes(models["weights"]["near"], db) == whole_classes(WEIGHT, db)).mean()
    assert 0.98 < agreement < 0.9995
    check = result["model_check"]
    assert check["fast_kept"] and check["pixels"] >= 4000 and abs(check["agreement"] - agreement) < 0.01
    assert not warnings and any(line.startswith("Model check: near gave the class of reference") for line in logs)
    assert (checked == alone).all() and (alone != reference).any()  # the copy's map, every tile
    from osgeo import gdal

    assert "near segments the raster" in gdal.Open(str(tmp_path / "checked.tif")).GetMetadataItem(CHECK_KEY)


def test_a_copy_that_disagrees_hands_the_raster_to_the_reference(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)
    db = scene(150, seed=1)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    checked, result, _, warnings = _run(tmp_path, src, "checked", models["off"], models["reference"])
    assert (checked == reference).all()  # every tile: the reference's output
    assert result["model_check"]["fast_kept"] is False and result["model_check"]["agreement"] < 0.5
    assert len(warnings) == 1 and "off segments" not in warnings[0] and "reference segments the raster" in warnings[0]


def test_a_raster_that_begins_with_easy_pixels_is_judged_on_all_of_it(models, tmp_path, monkeypatch):
    """Open water along the top of the raster, where the drifted copy gives the reference's class everywhere, and
    varied ground below, where it does not: checked on its first tiles the copy would pass; checked on tiles
    spread over the raster it does not."""
    monkeypatch.setattr(model_check, "CHECK_PIXELS", 4000)
    db = scene(200, seed=3)
    db[0, :56], db[1, :56] = -25.0, -32.0  # the first two tile rows (32 px tiles, 24 px apart): dark water
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"])
    drift = BIAS + np.float32([0.0, 1.5, 0.0, 0.0, 0.0])
    ref_classes = whole_classes(WEIGHT, db)
    x = np.pad(META.normalization.apply(db).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    drift_classes = (  # the drifted copy in numpy: the reference's logits plus the bias change
        np.stack([np.einsum("ob,bhw->ohw", WEIGHT[:, :, dy, dx], x[:, dy : dy + 200, dx : dx + 200])
                  for dy in range(3) for dx in range(3)]).sum(axis=0) + drift[:, None, None]
    ).argmax(axis=0)  # fmt: skip
    assert (drift_classes[:50] == ref_classes[:50]).all()  # the easy rows: the same classes
    assert (drift_classes[80:] == ref_classes[80:]).mean() < 0.95  # the rest: not

    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    with monkeypatch.context() as m:  # judged on the first tile row only, as a check of the first tiles would be
        m.setattr(model_check, "spread_tiles", lambda rows, cols, n: [(0, c) for c in range(min(n, cols))])
        _, first, _, _ = _run(tmp_path, src, "first_tiles", models["drift"], models["reference"])
    assert first["model_check"]["fast_kept"] and first["model_check"]["agreement"] == 1.0
    checked, result, _, warnings = _run(tmp_path, src, "checked", models["drift"], models["reference"])
    assert result["model_check"]["fast_kept"] is False and result["model_check"]["agreement"] < 0.98
    assert (checked == reference).all() and len(warnings) == 1 and "reference segments the raster" in warnings[0]


def test_tiles_without_data_are_not_run_and_too_few_pixels_leave_the_raster_to_the_reference(
    models, tmp_path, monkeypatch
):
    """A swath covering a corner: tiles of fill are skipped; when the tiles tried hold fewer pixels than the
    check is judged on, the reference segments the raster (nothing to judge the copy by)."""
    db = scene(200, seed=2)
    db[:, 40:, :] = np.nan  # data in the top 40 rows only (nan: no data)
    src = write_raster(tmp_path / "db.tif", db, descriptions=["VV", "VH"], units=["dB", "dB"], nodata=np.nan)
    reference, _, _, _ = _run(tmp_path, src, "reference_alone", models["reference"])
    runs = []
    run = models["near"].run
    monkeypatch.setattr(models["near"], "run", lambda tiles: runs.append(len(tiles)) or run(tiles))
    checked, result, logs, warnings = _run(tmp_path, src, "checked", models["near"], models["reference"])
    check = result["model_check"]
    tried = model_check.spread_tiles(8, 8, model_check.MAX_CHECK_TILES)  # 8 x 8 tiles of 32 px, 24 px apart
    holding = [cell for cell in tried if cell[0] * 24 < 40]
    assert check["tiles"] == len(holding) == len(runs) > 0  # only the tiles holding data ran through the copy
    assert check["pixels"] == sum(min(40 - r * 24, 32) * 32 for r, _ in holding)
    assert check["fast_kept"] is False and (checked == reference).all() and not warnings
    assert any(f"fewer than the {model_check.CHECK_PIXELS:,} it is judged on" in line for line in logs)


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
    assert any(
        f"tiles are fewer than {model_check.MIN_TILES}, too few for off to win back its check: reference runs" in x
        for x in logs
    )


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
    assert result["model_check"]["fast_kept"] and note.endswith("near segments the raster")
    assert [line for line in logs if line.startswith("Model check: ")] == [f"Model check: {note}"]
    for path in (out, probs):
        ds = gdal.Open(str(path))
        assert (ds.RasterXSize, ds.RasterYSize) == (100, 100) and ds.GetMetadataItem(CHECK_KEY) == note
