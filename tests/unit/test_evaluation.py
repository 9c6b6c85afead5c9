"""Segmentation metrics: hand-computed confusion matrix, streaming == whole array, alignment, nodata, writers."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from rasters import write_raster

from sar_seg_plugin.core import evaluation
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.evaluation import (
    confusion_matrix,
    evaluate_rasters,
    metrics_from_matrix,
    write_html_report,
    write_table,
)

# 3 classes, 10 pixels. Reference (rows) vs predicted (columns):
REFERENCE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], np.uint8).reshape(2, 5)
PREDICTED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0], np.uint8).reshape(2, 5)
EXPECTED_MATRIX = [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
# class 0: TP 3, FP 1, FN 1 -> IoU 3/5, Dice 6/8, precision 3/4, recall 3/4
# class 1: TP 2, FP 1, FN 1 -> IoU 2/4, Dice 4/6, precision 2/3, recall 2/3
# class 2: TP 2, FP 1, FN 1 -> IoU 2/4, Dice 4/6, precision 2/3, recall 2/3
EXPECTED_IOU = [0.6, 0.5, 0.5]
EXPECTED_DICE = [0.75, 2 / 3, 2 / 3]
EXPECTED_PRECISION = [0.75, 2 / 3, 2 / 3]
EXPECTED_RECALL = [0.75, 2 / 3, 2 / 3]
EXPECTED_OA = 0.7  # 7 of 10 on the diagonal
EXPECTED_MIOU = (0.6 + 0.5 + 0.5) / 3
EXPECTED_MDICE = (0.75 + 2 / 3 + 2 / 3) / 3


def test_hand_computed_three_classes():
    matrix = confusion_matrix(REFERENCE, PREDICTED, 3)
    assert matrix.tolist() == EXPECTED_MATRIX
    m = metrics_from_matrix(matrix)
    np.testing.assert_allclose(m["iou"], EXPECTED_IOU)
    np.testing.assert_allclose(m["dice"], EXPECTED_DICE)
    np.testing.assert_allclose(m["precision"], EXPECTED_PRECISION)
    np.testing.assert_allclose(m["recall"], EXPECTED_RECALL)
    assert m["support"].tolist() == [4, 3, 3]
    assert m["overall_accuracy"] == pytest.approx(EXPECTED_OA)
    assert m["mean_iou"] == pytest.approx(EXPECTED_MIOU)
    assert m["mean_dice"] == pytest.approx(EXPECTED_MDICE)


def test_absent_class_is_nan_and_left_out_of_means():
    m = metrics_from_matrix(np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]))
    assert math.isnan(m["iou"][2]) and math.isnan(m["precision"][2]) and math.isnan(m["recall"][2])
    assert m["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_raster_example_with_names(tmp_path):
    pred = write_raster(tmp_path / "pred.tif", PREDICTED, nodata=255)
    ref = write_raster(tmp_path / "ref.tif", REFERENCE, nodata=255)
    result = evaluate_rasters(pred, ref, ["water", "forest", "urban"])
    assert result.matrix.tolist() == EXPECTED_MATRIX
    assert result.class_names == ["water", "forest", "urban"]
    assert [c.iou for c in result.classes] == pytest.approx(EXPECTED_IOU)
    assert result.overall_accuracy == pytest.approx(EXPECTED_OA)
    assert result.mean_iou == pytest.approx(EXPECTED_MIOU)
    assert not result.reference_aligned


def _random_maps(shape, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.7, ref, rng.integers(0, 4, shape)).astype(np.uint8)
    return ref, pred


def test_streaming_equals_whole_array(tmp_path):
    ref, pred = _random_maps((70, 53))
    ref[:5, :7] = 255  # nodata in the reference
    pred[60:, 40:] = 255  # nodata in the prediction
    pred_path = write_raster(tmp_path / "pred.tif", pred, nodata=255)
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=255)
    calls = []
    result = evaluate_rasters(pred_path, ref_path, block_size=16, progress=calls.append)
    assert len(calls) == 5 * 4  # ceil(70/16) x ceil(53/16) blocks
    valid = (ref != 255) & (pred != 255)
    whole = confusion_matrix(ref, pred, 4, valid)
    np.testing.assert_array_equal(result.matrix, whole)
    assert result.ignored_pixels == int((~valid).sum())
    assert result.mean_iou == pytest.approx(metrics_from_matrix(whole)["mean_iou"])
    assert result.class_names == ["class 0", "class 1", "class 2", "class 3"]


def test_coarser_reference_is_aligned_nearest(tmp_path):
    ref_coarse, _ = _random_maps((10, 12), seed=3)
    _, pred = _random_maps((20, 24), seed=4)
    pred_path = write_raster(tmp_path / "pred.tif", pred, pixel=10.0, nodata=255)
    ref_path = write_raster(tmp_path / "ref.tif", ref_coarse, pixel=20.0, nodata=255)
    result = evaluate_rasters(pred_path, ref_path, block_size=7)
    assert result.reference_aligned
    ref_fine = np.repeat(np.repeat(ref_coarse, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(result.matrix, confusion_matrix(ref_fine, pred, 4))
    assert result.ignored_pixels == 0


def test_nodata_ignored_and_unknown_class_counted(tmp_path):
    ref = np.array([[0, 1, 255], [7, 1, 0]], np.uint8)
    pred = np.array([[0, 255, 1], [7, 1, 1]], np.uint8)
    pred_path = write_raster(tmp_path / "pred.tif", pred, nodata=255)
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=255)
    result = evaluate_rasters(pred_path, ref_path, ["a", "b", "c"])
    # pixels (0,1) and (0,2) are nodata in one raster; class 7 has no name but is counted
    assert result.class_values == [0, 1, 2, 7]
    assert result.class_names == ["a", "b", "c", "class 7"]
    assert result.matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert result.ignored_pixels == 2
    assert result.valid_pixels == 4
    assert result.present_classes == [0, 1, 7]  # c is absent: NaN, not in the means
    assert math.isnan(result.classes[2].iou)
    assert result.mean_iou == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_all_nodata_refused(tmp_path):
    pred_path = write_raster(tmp_path / "pred.tif", np.full((4, 4), 255, np.uint8), nodata=255)
    ref_path = write_raster(tmp_path / "ref.tif", np.zeros((4, 4), np.uint8), nodata=255)
    with pytest.raises(SarSegError, match="No pixel holds a class"):
        evaluate_rasters(pred_path, ref_path)


def test_non_overlapping_refused(tmp_path):
    pred_path = write_raster(tmp_path / "pred.tif", PREDICTED)
    ref_path = write_raster(tmp_path / "ref.tif", REFERENCE, origin=(900000.0, 4800000.0))
    with pytest.raises(SarSegError, match="does not overlap the predicted raster"):
        evaluate_rasters(pred_path, ref_path)


def test_missing_crs_refused_when_grids_differ(tmp_path):
    pred_path = write_raster(tmp_path / "pred.tif", PREDICTED)
    ref_path = write_raster(tmp_path / "ref.tif", REFERENCE, epsg=None, pixel=20.0)
    with pytest.raises(SarSegError, match="no valid coordinate reference system"):
        evaluate_rasters(pred_path, ref_path)


@pytest.fixture
def example_result(tmp_path):
    pred = write_raster(tmp_path / "pred.tif", PREDICTED, nodata=255)
    ref = write_raster(tmp_path / "ref.tif", REFERENCE, nodata=255)
    return evaluate_rasters(pred, ref, ["water", "forest", "urban & <built>"])


def test_json_round_trip(example_result, tmp_path):
    path = write_table(example_result, tmp_path / "metrics.json")
    data = json.loads(path.read_text())
    assert data["confusion_matrix"]["counts"] == EXPECTED_MATRIX
    assert data["confusion_matrix"]["class_names"] == ["water", "forest", "urban & <built>"]
    assert [c["iou"] for c in data["classes"]] == pytest.approx(EXPECTED_IOU)
    assert [c["dice"] for c in data["classes"]] == pytest.approx(EXPECTED_DICE)
    assert [c["precision"] for c in data["classes"]] == pytest.approx(EXPECTED_PRECISION)
    assert [c["recall"] for c in data["classes"]] == pytest.approx(EXPECTED_RECALL)
    assert [c["support"] for c in data["classes"]] == [4, 3, 3]
    assert data["overall_accuracy"] == pytest.approx(EXPECTED_OA)
    assert data["mean_iou"] == pytest.approx(EXPECTED_MIOU)
    assert data["mean_dice"] == pytest.approx(EXPECTED_MDICE)


def test_csv_round_trip(example_result, tmp_path):
    path = write_table(example_result, tmp_path / "metrics.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes, mean = rows[:3], rows[3]
    assert [r["class_name"] for r in classes] == ["water", "forest", "urban & <built>"]
    assert [float(r["iou"]) for r in classes] == pytest.approx(EXPECTED_IOU)
    assert [float(r["dice"]) for r in classes] == pytest.approx(EXPECTED_DICE)
    assert [float(r["precision"]) for r in classes] == pytest.approx(EXPECTED_PRECISION)
    assert [float(r["recall"]) for r in classes] == pytest.approx(EXPECTED_RECALL)
    assert [[int(r[f"ref_vs_pred_{v}"]) for v in range(3)] for r in classes] == EXPECTED_MATRIX
    assert mean["class_name"] == "mean"
    assert float(mean["iou"]) == pytest.approx(EXPECTED_MIOU)
    assert float(mean["dice"]) == pytest.approx(EXPECTED_MDICE)
    assert float(mean["overall_accuracy"]) == pytest.approx(EXPECTED_OA)
    assert int(mean["support"]) == 10


def test_table_needs_csv_or_json(example_result, tmp_path):
    with pytest.raises(SarSegError, match=r"\.csv or \.json"):
        write_table(example_result, tmp_path / "metrics.txt")
    assert list(tmp_path.glob("metrics*")) == []


def test_html_contains_the_values(example_result, tmp_path):
    text = write_html_report(example_result, tmp_path / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text and "http" not in text
    assert "urban &amp; &lt;built&gt;" in text  # names escaped
    for value in ("0.6000", "0.5000", "0.7500", "0.6667", f"{EXPECTED_MIOU:.4f}", "0.7000"):
        assert value in text
    # the confusion matrix row of class 0: 3 on the diagonal, 1 predicted as forest, 0 as urban, total 4
    assert "<th class='name'>water</th><td class='diag'>3</td><td>1</td><td>0</td><td>4</td>" in text
    assert str(example_result.predicted_path) in text and str(example_result.reference_path) in text
    assert list(tmp_path.glob("*.partial")) == []


def test_cancel_stops_the_run(tmp_path):
    from sar_seg_plugin.core.errors import CancelledError

    pred = write_raster(tmp_path / "pred.tif", PREDICTED, nodata=255)
    ref = write_raster(tmp_path / "ref.tif", REFERENCE, nodata=255)
    with pytest.raises(CancelledError):
        evaluate_rasters(pred, ref, block_size=2, is_canceled=lambda: True)


# --- class values recoded by name --------------------------------------------------------------------------------

NAMES = ["water", "vegetation", "forest", "built-up", "bare soil"]


@pytest.mark.parametrize(
    ("source", "lut_pairs", "fragment"),
    [
        (NAMES, None, None),  # the same classes at the same values
        (["Water", "Vegetation"], None, None),  # fewer, same values, other case
        (["water", "vegetation", "forest", "urban"], None, "3 'urban' ('built-up' there); compared by value"),
        (NAMES[::-1], {0: 4, 1: 3, 3: 1, 4: 0, 2: 2}, "0 -> 4 (bare soil), 1 -> 3 (built-up)"),
        (["", "bare_soil", "water", "cloud"], {1: 4, 2: 0}, "3 (cloud) match no class there and are left out"),
        (["urban", "crops"], None, "none of them is a class of"),
        ([], None, None),
    ],
)
def test_recode_by_names(source, lut_pairs, fragment):
    recode = evaluation.recode_by_names(source, NAMES, "The reference", "the predicted classes")
    if lut_pairs is None:
        assert recode.lut is None
    else:
        expected = np.full(256, 255)
        for i, j in lut_pairs.items():
            expected[i] = j
        np.testing.assert_array_equal(recode.lut, expected)
    assert (recode.note is None) == (fragment is None)
    if fragment:
        assert fragment in recode.note


def test_a_reference_coded_in_another_order_is_scored_by_its_class_names(tmp_path):
    from osgeo import gdal

    rng = np.random.default_rng(11)
    truth = rng.integers(0, 5, size=(40, 50)).astype(np.uint8)
    predicted = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 5, truth.shape)).astype(np.uint8)
    pred = write_raster(tmp_path / "pred.tif", predicted, nodata=255)
    ref = write_raster(tmp_path / "ref.tif", (4 - truth).astype(np.uint8), nodata=255)  # water coded 4, ...
    for path, names in ((pred, NAMES), (ref, NAMES[::-1])):
        ds = gdal.Open(path, gdal.GA_Update)
        ds.GetRasterBand(1).SetCategoryNames(names)
        ds = None
    result = evaluation.evaluate_rasters(pred, ref)
    assert result.overall_accuracy == pytest.approx((predicted == truth).mean())  # computed here
    assert any("recoded by name" in note for note in result.notes)
