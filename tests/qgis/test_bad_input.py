"""Bad input: a clear QgsProcessingException, inputs untouched, nothing half-written left behind."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasters
from rasters import file_digest, partial_files

write_raster = functools.partial(rasters.write_raster, nodata=0.0)


def speckled(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).gamma(4.4, 1 / 4.4, size=shape)).astype(np.float32)


def assert_fails(sarseg, algorithm: str, params: dict, *fragments: str, inputs=(), out_dir: Path | None = None):
    from qgis.core import QgsProcessingException

    digests = {p: file_digest(p) for p in inputs}
    before = sorted(p.name for p in out_dir.iterdir()) if out_dir else []
    with pytest.raises(QgsProcessingException) as error:
        sarseg.run(algorithm, params)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, f"'{fragment}' not in: {message}"
    for path, digest in digests.items():
        assert file_digest(path) == digest, f"{path} was modified"
    if out_dir is not None:
        assert sorted(p.name for p in out_dir.iterdir()) == before, "a failed run left files behind"
        assert partial_files(out_dir) == []
    return message


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_raster(tmp_path / "scene_20260301.tif", speckled((2, 64, 64)))


def test_vector_file_as_raster_input(sarseg, sample_dir, tmp_path):
    gpkg = sample_dir / "communes.gpkg"
    assert_fails(sarseg, "sarseg:speckle_filter", {"INPUT": str(gpkg), "OUTPUT": str(tmp_path / "o.tif")},
                 "is not a raster file", inputs=[gpkg], out_dir=tmp_path)  # fmt: skip


def test_corrupt_raster_file(sarseg, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x13" * 500)
    out = tmp_path / "out"
    out.mkdir()
    assert_fails(sarseg, "sarseg:convert_db", {"INPUT": str(bad), "OUTPUT": str(out / "o.tif")},
                 "is not a raster file", inputs=[bad], out_dir=out)  # fmt: skip


def test_all_nodata_raster(sarseg, tmp_path):
    empty = write_raster(tmp_path / "empty.tif", np.zeros((2, 40, 40), np.float32), nodata=0.0)
    assert_fails(sarseg, "sarseg:speckle_filter", {"INPUT": str(empty), "OUTPUT": str(tmp_path / "o.tif")},
                 "no valid pixel", inputs=[empty], out_dir=tmp_path)  # fmt: skip


def test_output_path_is_the_input(sarseg, scene, tmp_path):
    assert_fails(sarseg, "sarseg:speckle_filter", {"INPUT": str(scene), "OUTPUT": str(scene)},
                 "is the input raster", inputs=[scene], out_dir=tmp_path)  # fmt: skip


def test_convert_db_output_is_the_input(sarseg, scene, tmp_path):
    assert_fails(sarseg, "sarseg:convert_db", {"INPUT": str(scene), "OUTPUT": str(scene)},
                 "is the input raster", inputs=[scene], out_dir=tmp_path)  # fmt: skip


def test_even_window_size(sarseg, scene, tmp_path):
    assert_fails(sarseg, "sarseg:speckle_filter", {"INPUT": str(scene), "WINDOW": 6, "OUTPUT": str(tmp_path / "o.tif")},
                 "odd number", inputs=[scene], out_dir=tmp_path)  # fmt: skip


def test_refined_lee_window_too_small(sarseg, scene, tmp_path):
    assert_fails(sarseg, "sarseg:speckle_filter",
                 {"INPUT": str(scene), "FILTER": 1, "WINDOW": 3, "OUTPUT": str(tmp_path / "o.tif")},
                 ">= 5", inputs=[scene], out_dir=tmp_path)  # fmt: skip


def test_cancel_mid_run_leaves_no_output(sarseg, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    big = write_raster(tmp_path / "big.tif", speckled((1, 1300, 1300)))
    existing = tmp_path / "filtered.tif"
    shutil.copy(big, existing)  # an earlier result at the destination must survive a cancelled run
    digest = file_digest(existing)
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda _p: feedback.cancel())
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        sarseg.run(
            "sarseg:speckle_filter", {"INPUT": str(big), "FILTER": 0, "OUTPUT": str(existing)}, feedback=feedback
        )
    assert file_digest(existing) == digest
    assert partial_files(tmp_path) == []


def test_stack_duplicate_dates(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260301.tif", speckled((2, 32, 32), 2))
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(tmp_path / "s.tif")},
                 "same date 2026-03-01", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_rasters_that_do_not_overlap(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260302.tif", speckled((2, 32, 32), 2), origin=(700000.0, 4800000.0))
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(tmp_path / "s.tif")},
                 "does not overlap", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_raster_without_crs(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260302.tif", speckled((2, 32, 32), 2), epsg=None)
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(tmp_path / "s.tif")},
                 "no valid coordinate reference system", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_different_band_counts(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260302.tif", speckled((1, 32, 32), 2))
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(tmp_path / "s.tif")},
                 "same bands", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_without_dates(sarseg, tmp_path):
    a = write_raster(tmp_path / "a.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b.tif", speckled((2, 32, 32), 2))
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(tmp_path / "s.tif")},
                 "No date found", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_wrong_number_of_dates(sarseg, tmp_path):
    a = write_raster(tmp_path / "a.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b.tif", speckled((2, 32, 32), 2))
    assert_fails(sarseg, "sarseg:stack_time_series",
                 {"INPUTS": [str(a), str(b)], "DATES": "2026-03-01", "OUTPUT": str(tmp_path / "s.tif")},
                 "1 date(s) given for 2 rasters", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_normalize_statistics_for_other_bands(sarseg, scene, tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"method": "zscore", "bands": [
        {"name": "HH", "mean": 0.0, "std": 1.0, "low": 0.0, "high": 1.0, "low_percentile": 2.0,
         "high_percentile": 98.0, "sample_size": 10}]}))  # fmt: skip
    params = {"INPUT": str(scene), "STATS_FILE": str(stats), "OUTPUT": str(tmp_path / "n.tif")}
    assert_fails(sarseg, "sarseg:normalize", params,
                 "describes 1 band(s) (HH) but the raster has 2", inputs=[scene, stats], out_dir=tmp_path)  # fmt: skip


def test_normalize_statistics_file_not_json(sarseg, scene, tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text("not json")
    params = {"INPUT": str(scene), "STATS_FILE": str(stats), "OUTPUT": str(tmp_path / "n.tif")}
    assert_fails(sarseg, "sarseg:normalize", params,
                 "not a SAR Seg normalisation JSON", inputs=[scene, stats], out_dir=tmp_path)  # fmt: skip


def test_patches_larger_than_the_raster(sarseg, scene, tmp_path):
    out = tmp_path / "patches"
    assert_fails(sarseg, "sarseg:extract_patches", {"INPUT": str(scene), "PATCH_SIZE": 128, "OUTPUT": str(out)},
                 "larger than the raster", inputs=[scene], out_dir=tmp_path)  # fmt: skip


def test_patches_aoi_outside_the_raster(sarseg, scene, tmp_path):
    from qgis.core import QgsFeature, QgsGeometry, QgsRectangle, QgsVectorLayer

    aoi = QgsVectorLayer("Polygon?crs=EPSG:32631", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(0, 0, 1000, 1000)))
    aoi.dataProvider().addFeatures([feature])
    out = tmp_path / "patches"
    out.mkdir()
    assert_fails(sarseg, "sarseg:extract_patches",
                 {"INPUT": str(scene), "AOI": aoi, "PATCH_SIZE": 16, "STRIDE": 16, "OUTPUT": str(out)},
                 "The area of interest does not overlap the image raster", inputs=[scene], out_dir=out)  # fmt: skip


def test_stack_output_is_an_input(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260302.tif", speckled((2, 32, 32), 2))
    assert_fails(sarseg, "sarseg:stack_time_series", {"INPUTS": [str(a), str(b)], "OUTPUT": str(b)},
                 "is the input raster", inputs=[a, b], out_dir=tmp_path)  # fmt: skip


def test_stack_output_is_the_reference_grid(sarseg, tmp_path):
    a = write_raster(tmp_path / "a_20260301.tif", speckled((2, 32, 32), 1))
    b = write_raster(tmp_path / "b_20260302.tif", speckled((2, 32, 32), 2))
    ref = write_raster(tmp_path / "grid.tif", speckled((1, 16, 16), 3), pixel=20.0)
    assert_fails(sarseg, "sarseg:stack_time_series",
                 {"INPUTS": [str(a), str(b)], "REFERENCE": str(ref), "OUTPUT": str(ref)},
                 "is the input raster", inputs=[a, b, ref], out_dir=tmp_path)  # fmt: skip


def test_patches_output_folder_with_files_of_the_user(sarseg, scene, tmp_path):
    out = tmp_path / "mywork"
    (out / "train").mkdir(parents=True)
    notes = out / "train" / "notes.txt"
    notes.write_text("field notes")
    message = assert_fails(sarseg, "sarseg:extract_patches",
                           {"INPUT": str(scene), "PATCH_SIZE": 16, "STRIDE": 16, "OUTPUT": str(out)},
                           "Choose an empty folder", inputs=[scene, notes], out_dir=out)  # fmt: skip
    assert "train/" in message
    assert sorted(p.name for p in (out / "train").iterdir()) == ["notes.txt"]


def test_patches_label_value_too_large_for_8_bits(sarseg, scene, tmp_path):
    classes = np.ones((64, 64), np.uint16)
    classes[5, 7] = 300
    labels = write_raster(tmp_path / "labels.tif", classes, nodata=65535, dtype=np.uint16)
    out = tmp_path / "patches"
    assert_fails(sarseg, "sarseg:extract_patches",
                 {"INPUT": str(scene), "LABELS": str(labels), "PATCH_SIZE": 16, "STRIDE": 16, "OUTPUT": str(out)},
                 "holds the value 300", "from 0 to 254", inputs=[scene, labels], out_dir=tmp_path)  # fmt: skip
    assert not out.exists()


def test_patches_image_without_crs_with_labels(sarseg, tmp_path):
    image = write_raster(tmp_path / "image.tif", speckled((2, 64, 64)), epsg=None)
    labels = write_raster(tmp_path / "labels.tif", np.ones((32, 32), np.uint8), pixel=20.0)
    out = tmp_path / "patches"
    params = {"INPUT": str(image), "LABELS": str(labels), "PATCH_SIZE": 16, "STRIDE": 16, "OUTPUT": str(out)}
    fragment = "no valid coordinate reference system"
    message = assert_fails(sarseg, "sarseg:extract_patches", params, fragment, inputs=[image, labels], out_dir=tmp_path)
    assert "image.tif" in message and "Corrupt data" not in message
    assert not out.exists()


def test_patches_validation_split_that_would_be_empty(sarseg, scene, tmp_path):
    out = tmp_path / "patches"
    assert_fails(sarseg, "sarseg:extract_patches",
                 {"INPUT": str(scene), "PATCH_SIZE": 16, "STRIDE": 16, "VAL_FRACTION": 0.5, "SPLIT_BLOCK": 64,
                  "OUTPUT": str(out)},
                 "'Split block size' below 64 pixels", inputs=[scene], out_dir=tmp_path)  # fmt: skip
    assert not out.exists()


def test_normalize_statistics_file_is_the_input(sarseg, scene, tmp_path):
    params = {"INPUT": str(scene), "OUTPUT": str(tmp_path / "n.tif"), "OUTPUT_STATS": str(scene)}
    assert_fails(sarseg, "sarseg:normalize", params, "is the input raster", inputs=[scene], out_dir=tmp_path)


def test_segment_all_nodata_raster(sarseg, tmp_path):
    empty = write_raster(tmp_path / "empty.tif", np.zeros((2, 64, 64), np.float32), nodata=0.0)
    assert_fails(sarseg, "sarseg:segment", {"INPUT": str(empty), "OUTPUT": str(tmp_path / "classes.tif")},
                 "no valid pixel", inputs=[empty], out_dir=tmp_path)  # fmt: skip
