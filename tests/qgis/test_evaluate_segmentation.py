"""sarseg:evaluate_segmentation in a real QGIS: exact confusion matrix on the sample labels, outputs, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import file_digest, partial_files, read_raster, write_raster

from sar_seg_plugin.processing.evaluate_segmentation import EvaluateSegmentationAlgorithm
from training.synthetic import CLASS_NAMES

NODATA = 255


def algorithm() -> EvaluateSegmentationAlgorithm:
    alg = EvaluateSegmentationAlgorithm()
    alg.initAlgorithm({})
    return alg


def labels_path(sample_dir: Path) -> Path:
    return sorted(sample_dir.glob("labels_*.tif"))[0]


def perturbed_copy(src: Path, dst: Path) -> np.ndarray:
    """A copy of a label raster (same grid, names, nodata) with known pixels changed; returns its values."""
    labels = read_raster(src)[0]
    changed = labels.copy()
    block = changed[20:40, 30:70]
    block[block != NODATA] = (block[block != NODATA] + 1) % len(CLASS_NAMES)  # shift the class by one
    changed[100:104, :] = NODATA  # a strip of nodata in the prediction only
    changed[120, 10:20] = 4  # a few pixels forced to 'bare soil'
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(dst), gdal.Open(str(src)))
    ds.GetRasterBand(1).WriteArray(changed)
    ds.FlushCache()
    ds = None
    return changed


def expected_matrix(reference: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """The confusion matrix counted pixel by pixel with np.add.at (independent of the plugin's bincount)."""
    ok = (reference != NODATA) & (predicted != NODATA)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (reference[ok].astype(int), predicted[ok].astype(int)), 1)
    return matrix


def test_labels_vs_perturbed_copy(sarseg, sample_dir, tmp_path):
    reference = labels_path(sample_dir)
    predicted = tmp_path / "predicted.tif"
    pred = perturbed_copy(reference, predicted)
    ref = read_raster(reference)[0]
    matrix = expected_matrix(ref, pred, len(CLASS_NAMES))
    assert matrix.sum() - np.trace(matrix) > 500  # the perturbation really changed pixels
    tp, support, predicted_count = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    iou = tp / (support + predicted_count - tp)
    digest = file_digest(reference)

    params = {
        "PREDICTED": str(predicted),
        "REFERENCE": str(reference),
        "OUTPUT_HTML": str(tmp_path / "report.html"),
        "OUTPUT_TABLE": str(tmp_path / "metrics.json"),
    }
    out = sarseg.run(algorithm(), params)

    assert out["MIOU"] == pytest.approx(iou.mean())
    assert out["OVERALL_ACCURACY"] == pytest.approx(np.trace(matrix) / matrix.sum())
    data = json.loads(Path(out["OUTPUT_TABLE"]).read_text())
    assert data["confusion_matrix"]["counts"] == matrix.tolist()
    assert data["confusion_matrix"]["class_names"] == list(CLASS_NAMES)  # from the predicted raster
    assert [c["iou"] for c in data["classes"]] == pytest.approx(iou.tolist())
    assert data["ignored_pixels"] == int(((ref == NODATA) | (pred == NODATA)).sum())
    html = Path(out["OUTPUT_HTML"]).read_text()
    assert f"{iou.mean():.4f}" in html and "bare soil" in html
    assert file_digest(reference) == digest
    assert partial_files(tmp_path) == []


def test_csv_table_and_names_from_model(sarseg, sample_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from sar_seg_plugin.models.registry import bundled_models, load_model

    name = next((n for n in bundled_models() if "unet" in n), None)
    if name is None:
        pytest.skip("no bundled segmentation model")
    model_names = list(load_model(name).metadata.class_names)
    reference = labels_path(sample_dir)
    params = {
        "PREDICTED": str(reference),
        "REFERENCE": str(reference),
        "MODEL": name,
        "OUTPUT_HTML": str(tmp_path / "report.html"),
        "OUTPUT_TABLE": str(tmp_path / "metrics.csv"),
    }
    out = sarseg.run(algorithm(), params)
    assert out["OVERALL_ACCURACY"] == pytest.approx(1.0)
    assert out["MIOU"] == pytest.approx(1.0)
    with open(out["OUTPUT_TABLE"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class_name"] for r in rows[: len(model_names)]] == model_names
    assert rows[-1]["class_name"] == "mean" and float(rows[-1]["overall_accuracy"]) == pytest.approx(1.0)


def assert_fails(sarseg, params: dict, *fragments: str, out_dir: Path) -> str:
    from qgis.core import QgsProcessingException

    before = sorted(p.name for p in out_dir.iterdir())
    with pytest.raises(QgsProcessingException) as error:
        sarseg.run(algorithm(), params)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, f"'{fragment}' not in: {message}"
    assert sorted(p.name for p in out_dir.iterdir()) == before, "a failed run left files behind"
    return message


def test_non_overlapping_rasters(sarseg, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    classes = np.arange(20, dtype=np.uint8).reshape(4, 5) % 3
    pred = write_raster(inputs / "pred.tif", classes, nodata=NODATA)
    ref = write_raster(inputs / "ref.tif", classes, nodata=NODATA, origin=(700000.0, 4800000.0))
    params = {"PREDICTED": pred, "REFERENCE": ref, "OUTPUT_HTML": str(tmp_path / "r.html")}
    assert_fails(sarseg, params, "does not overlap the predicted raster", "cover the same area", out_dir=tmp_path)


def test_vector_file_as_predicted(sarseg, sample_dir, tmp_path):
    gpkg = sample_dir / "communes.gpkg"
    params = {
        "PREDICTED": str(gpkg),
        "REFERENCE": str(labels_path(sample_dir)),
        "OUTPUT_HTML": str(tmp_path / "r.html"),
    }
    assert_fails(sarseg, params, "is not a raster file", "Predicted class raster", out_dir=tmp_path)


def test_wrong_table_extension(sarseg, sample_dir, tmp_path):
    labels = str(labels_path(sample_dir))
    params = {
        "PREDICTED": labels,
        "REFERENCE": labels,
        "OUTPUT_HTML": str(tmp_path / "r.html"),
        "OUTPUT_TABLE": str(tmp_path / "metrics.txt"),
    }
    assert_fails(sarseg, params, ".csv or .json", out_dir=tmp_path)


def test_output_is_an_input(sarseg, sample_dir, tmp_path):
    labels = tmp_path / "labels.tif"
    gdal.GetDriverByName("GTiff").CreateCopy(str(labels), gdal.Open(str(labels_path(sample_dir))))
    digest = file_digest(labels)
    params = {"PREDICTED": str(labels), "REFERENCE": str(labels), "OUTPUT_HTML": str(labels)}
    assert_fails(sarseg, params, "is the input raster", out_dir=tmp_path)
    assert file_digest(labels) == digest
