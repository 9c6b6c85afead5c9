"""sarseg:segment through processing.run with the bundled default model on the synthetic sample scene."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import read_raster, write_raster

from training import synthetic

pytest.importorskip("onnxruntime")

MIN_MIOU = 0.75


@pytest.fixture(autouse=True)
def collect_garbage():
    """Free GDAL datasets held by exception tracebacks while GDAL is still up (QGIS exits at session end)."""
    yield
    gc.collect()


def segment_algorithm(sarseg):  # noqa: ANN001
    """The registered algorithm id when the provider lists it, else an instance (processing.run takes both)."""
    from qgis.core import QgsApplication

    if QgsApplication.processingRegistry().algorithmById("sarseg:segment") is not None:
        return "sarseg:segment"
    from sar_seg_plugin.processing.segment import SegmentAlgorithm

    algorithm = SegmentAlgorithm()
    algorithm.initAlgorithm()
    return algorithm


def sample_files(sample_dir: Path, day: int = 0) -> tuple[Path, Path]:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    entry = manifest["files"][day]
    return sample_dir / entry["sar"], sample_dir / entry["labels"]


def mean_iou(predicted: np.ndarray, reference: np.ndarray, classes: int) -> tuple[float, np.ndarray]:
    """mIoU over classes present in the reference, from a confusion matrix; pixels nodata in either are left out."""
    ok = (reference != synthetic.LABEL_NODATA) & (predicted != 255)
    confusion = np.bincount(
        reference[ok].astype(np.int64) * classes + predicted[ok].astype(np.int64), minlength=classes * classes
    ).reshape(classes, classes)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = confusion.sum(axis=1) > 0
    iou = tp[present] / union[present]
    return float(iou.mean()), iou


def test_segment_sample_scene_with_default_model(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    sar, labels = sample_files(sample_dir)
    out, probs, conf = tmp_path / "classes.tif", tmp_path / "probs.tif", tmp_path / "conf.tif"
    result = sarseg.run(
        segment_algorithm(sarseg),
        {
            "INPUT": str(sar),
            "DEVICE": 1,
            "OUTPUT": str(out),
            "OUTPUT_PROBABILITIES": str(probs),
            "OUTPUT_CONFIDENCE": str(conf),
        },
    )
    assert result["OUTPUT"] == str(out)

    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 255  # GDAL 3.6 GTiff: loads the .aux.xml (category names) only from here
    names = ["water", "vegetation", "forest", "built-up", "bare soil"]
    assert band.GetCategoryNames()[:5] == names
    table = band.GetColorTable()
    assert table is not None and table.GetColorEntry(0)[:3] == (0x1F, 0x78, 0xB4)
    assert ds.GetGeoTransform() == gdal.Open(str(sar)).GetGeoTransform()
    ds = band = table = None
    layer = QgsRasterLayer(str(out), "classes")
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer), "the class raster must load paletted"

    predicted = read_raster(out)[0]
    reference = read_raster(labels)[0]
    sar_data = read_raster(sar, dtype=np.float64)
    input_nodata = (sar_data == synthetic.SAR_NODATA).any(axis=0)
    assert input_nodata.any() and (predicted[input_nodata] == 255).all()
    assert (predicted[~input_nodata] < 5).all()

    miou, iou = mean_iou(predicted, reference, 5)
    print(f"sample scene mIoU {miou:.3f}, per class {np.round(iou, 3).tolist()}")
    assert miou >= MIN_MIOU, f"mIoU {miou:.3f} < {MIN_MIOU}"

    p = read_raster(probs, dtype=np.float64)
    assert p.shape == (5, *predicted.shape)
    valid = ~input_nodata
    np.testing.assert_allclose(p[:, valid].sum(axis=0), 1.0, atol=1e-4)
    assert (p[:, valid].argmax(axis=0) == predicted[valid]).all()
    np.testing.assert_allclose(read_raster(conf, dtype=np.float64)[0][valid], p[:, valid].max(axis=0), atol=1e-6)
    # The mean confidence output is the mean of the confidence raster; on this training-family scene, the
    # calibrated model's mean confidence is close to its pixel accuracy (whatever the model, it is an estimate).
    top = p[:, valid].max(axis=0)
    assert result["MEAN_CONFIDENCE"] == pytest.approx(top.mean(), abs=1e-4)
    assert result["UNSURE_SHARE"] == pytest.approx((top < 0.5).mean(), abs=1e-4)
    accuracy = (predicted[valid] == reference[valid]).mean()
    assert abs(result["MEAN_CONFIDENCE"] - accuracy) < 0.06, (result["MEAN_CONFIDENCE"], accuracy)


def test_entropy_confidence_through_processing(sarseg, sample_dir, tmp_path):
    sar, _ = sample_files(sample_dir)
    probs, conf = tmp_path / "probs.tif", tmp_path / "entropy.tif"
    params = {"INPUT": str(sar), "DEVICE": 1, "CONFIDENCE_MEASURE": 1, "OUTPUT": str(tmp_path / "c.tif")}
    sarseg.run(
        segment_algorithm(sarseg), {**params, "OUTPUT_PROBABILITIES": str(probs), "OUTPUT_CONFIDENCE": str(conf)}
    )
    p = read_raster(probs, dtype=np.float64)
    valid = np.isfinite(p).all(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0) / np.log(5)
    got = read_raster(conf, dtype=np.float64)[0]
    np.testing.assert_allclose(got[valid], expected[valid], atol=1e-5)
    assert np.isnan(got[~valid]).all()
    assert gdal.Open(str(conf)).GetRasterBand(1).GetDescription() == "entropy"


def test_one_band_raster_is_refused(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProcessingException

    sar, _ = sample_files(sample_dir)
    vv = read_raster(sar)[:1]
    one = write_raster(tmp_path / "vv.tif", vv, nodata=0.0, units=["linear"])
    out = tmp_path / "c.tif"
    with pytest.raises(QgsProcessingException, match=r"expects 2 bands: VV \(dB\), VH \(dB\); the raster has 1 band"):
        sarseg.run(segment_algorithm(sarseg), {"INPUT": one, "OUTPUT": str(out)})
    assert not out.exists()


def test_non_onnx_model_file_is_refused(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProcessingException

    sar, _ = sample_files(sample_dir)
    fake = tmp_path / "not_a_model.onnx"
    fake.write_text("this is not an ONNX model")
    out = tmp_path / "c.tif"
    with pytest.raises(QgsProcessingException, match="is not an ONNX model file or is corrupt"):
        sarseg.run(segment_algorithm(sarseg), {"INPUT": str(sar), "MODEL_FILE": str(fake), "OUTPUT": str(out)})
    assert not out.exists()


def test_help_explains_every_parameter():
    from sar_seg_plugin.processing.segment import SegmentAlgorithm

    algorithm = SegmentAlgorithm()
    algorithm.initAlgorithm()
    help_text = algorithm.shortHelpString()
    for definition in algorithm.parameterDefinitions():
        assert f"<b>{definition.description().split(' (')[0]}" in help_text, definition.name()


def test_default_is_the_int8_copy_checked_against_float32(sarseg, tmp_path, feedback):
    """The default bundled model is the int8 copy; the run checks it on tiles spread over the raster and says so;
    its map is the int8 copy's, the float32 model's but for near-ties, and scores as well against the labels of an
    evaluation-only scene."""
    from qgis.core import QgsProcessingFeedback

    from sar_seg_plugin.core.inference import segment_raster
    from sar_seg_plugin.models.registry import load_model
    from sar_seg_plugin.processing.segment import default_model_index, segmentation_models
    from training import evalgen
    from training.domain_eval import evaluation_only_scene

    assert segmentation_models()[:2] == ["sarseg_unet_vvvh", "sarseg_unet_vvvh_int8"]  # indexes kept
    assert default_model_index() == 1
    scene = evaluation_only_scene(71301, 1500, evalgen.domain_by_name("ENL 4.4"))  # 5 x 5 tiles of 384 px
    sar, labels = tmp_path / "scene.tif", tmp_path / "labels.tif"
    evalgen.write_scene(scene, sar, labels)
    fast, full = tmp_path / "int8.tif", tmp_path / "float32.tif"
    sarseg.run(segment_algorithm(sarseg), {"INPUT": str(sar), "DEVICE": 1, "OUTPUT": str(fast)}, feedback=feedback)
    sarseg.run(
        segment_algorithm(sarseg),
        {"INPUT": str(sar), "MODEL": 0, "DEVICE": 1, "OUTPUT": str(full)},
        feedback=QgsProcessingFeedback(),
    )
    checks = [line for line in feedback.lines if line.startswith("Model check: ")]
    assert len(checks) == 1, feedback.lines
    assert "sarseg_unet_vvvh_int8 gave the class of sarseg_unet_vvvh on " in checks[0]
    found = re.search(
        r"of the (\d+) tiles spread over the raster and run through both \(([\d.]+)% on the tile", checks[0]
    )
    assert found and 3 <= int(found[1]) <= 12 and float(found[2]) >= 97.0, checks[0]
    assert checks[0].endswith("sarseg_unet_vvvh_int8 segments the raster")
    assert gdal.Open(str(fast)).GetMetadataItem("SARSEG_MODEL_CHECK") == checks[0].removeprefix("Model check: ")
    assert gdal.Open(str(full)).GetMetadataItem("SARSEG_MODEL_CHECK") is None  # float32 chosen: unchecked
    a, b, reference = read_raster(fast)[0], read_raster(full)[0], read_raster(labels)[0]
    same = (a == b).mean()
    assert 0.98 <= same < 1.0, same  # the same map but for near-ties, and not the float32 run itself
    alone = tmp_path / "int8_alone.tif"
    segment_raster(str(sar), str(alone), load_model("sarseg_unet_vvvh_int8", "cpu"))  # the copy alone, unchecked
    assert (read_raster(alone)[0] == a).all()  # every tile the int8 copy's, the checked ones too
    miou_fast, _ = mean_iou(a, reference, 5)
    miou_full, _ = mean_iou(b, reference, 5)
    print(f"int8 checked: same class {same:.4f}, mIoU {miou_fast:.3f} against {miou_full:.3f} (float32)")
    assert abs(miou_fast - miou_full) < 0.005, (miou_fast, miou_full)


def test_the_float32_model_takes_over_where_the_int8_copy_differs(sarseg, tmp_path, feedback):
    """A scene 9 dB brighter than calibrated (the domain check warns; values beyond those the copy was quantised
    for): the int8 copy alone differs from float32 on about 5 % of the pixels, so the check hands the raster to the
    float32 model, and the map is float32's throughout."""
    from qgis.core import QgsProcessingFeedback

    from sar_seg_plugin.core.inference import segment_raster
    from sar_seg_plugin.models.registry import load_model
    from training import evalgen
    from training.domain_eval import evaluation_only_scene

    scene = evaluation_only_scene(71501, 1500, evalgen.domain_by_name("ENL 4.4"))  # 25 tiles, enough to check
    scene.sigma0[:] = scene.sigma0 * np.float32(10**0.9)
    sar, labels = tmp_path / "bright.tif", tmp_path / "labels.tif"
    evalgen.write_scene(scene, sar, labels)
    checked, full, fast = tmp_path / "checked.tif", tmp_path / "float32.tif", tmp_path / "int8.tif"
    sarseg.run(segment_algorithm(sarseg), {"INPUT": str(sar), "DEVICE": 1, "OUTPUT": str(checked)}, feedback=feedback)
    sarseg.run(
        segment_algorithm(sarseg),
        {"INPUT": str(sar), "MODEL": 0, "DEVICE": 1, "OUTPUT": str(full)},
        feedback=QgsProcessingFeedback(),
    )
    segment_raster(str(sar), str(fast), load_model("sarseg_unet_vvvh_int8", "cpu"))  # the copy alone, unchecked
    a, b, c = read_raster(checked)[0], read_raster(full)[0], read_raster(fast)[0]
    ok = b != 255
    assert (c[ok] == b[ok]).mean() < 0.98  # what the check is there for
    assert (a == b).all()
    checks = [w for w in feedback.warnings if w.startswith("Model check: ")]
    assert len(checks) == 1, feedback.warnings
    assert checks[0].endswith("under the 97% each tile must keep: sarseg_unet_vvvh segments the raster")
