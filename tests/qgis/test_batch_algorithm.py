"""sarseg:batch through processing.run and qgis_process: a local Dask cluster of 2 workers started from QGIS writes
the files the core writes, reports a failing input without stopping, and refuses bad arguments before starting."""

from __future__ import annotations

import csv
import filecmp
import shutil

import pytest
from qgisproc import qgis_process_env, run_algorithm

from sar_seg_plugin.core import batch
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.models.registry import fast_segmentation_model, load_checked

ALG = "sarseg:batch"
SEGMENT = batch.TOOLS.index("segment")

pytestmark = pytest.mark.slow


@pytest.fixture
def archive(sample_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(sample_dir.glob("sar_*.tif"))[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.tif").write_text("not a raster")
    return folder


def _expected(folder, tmp_path):
    model, reference, _ = load_checked(fast_segmentation_model(), "cpu")  # what sarseg:segment runs by default
    single = tmp_path / "single"
    single.mkdir()
    for p in sorted(folder.glob("sar_*.tif")):
        segment_raster(str(p), str(single / f"{p.stem}_classes.tif"), model, reference=reference)
    return single


def test_processing_run_on_a_local_cluster(sarseg, archive, tmp_path, feedback):
    import processing

    out = tmp_path / "out"
    result = processing.run(
        ALG,
        {"TOOL": SEGMENT, "INPUTS": str(archive), "OPTIONS": "threads=1", "WORKERS": 2, "OUTPUT_FOLDER": str(out)},
        feedback=feedback,
    )
    assert (result["DONE"], result["SKIPPED"], result["FAILED"]) == (3, 0, 1)
    single = _expected(archive, tmp_path)
    for p in single.iterdir():
        if p.suffix == ".tif":
            assert filecmp.cmp(p, out / p.name, shallow=False), p.name
    with open(result["SUMMARY"], newline="") as f:
        rows = list(csv.DictReader(f))
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["input"] for r in failed] == [str(archive / "broken.tif")] and "not" in failed[0]["message"]
    again = processing.run(ALG, {"TOOL": SEGMENT, "INPUTS": str(archive / "sar_*.tif"), "OPTIONS": "threads=1",
                                 "WORKERS": 2, "OUTPUT_FOLDER": str(out)})  # fmt: skip
    assert (again["DONE"], again["SKIPPED"], again["FAILED"]) == (0, 3, 0)


@pytest.mark.parametrize(
    ("inputs", "options", "message"),
    [
        ("{archive}/nothing_*.tif", "", "No file matches"),
        ("{archive}", "window=5", "not an option of segment"),
    ],
)
def test_bad_arguments_are_refused_before_a_cluster_starts(sarseg, archive, tmp_path, inputs, options, message):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=message):
        processing.run(ALG, {"TOOL": SEGMENT, "INPUTS": inputs.format(archive=archive), "OPTIONS": options,
                             "OUTPUT_FOLDER": str(tmp_path / "out")})  # fmt: skip


def test_qgis_process_runs_the_batch(archive, tmp_path):
    (archive / "broken.tif").unlink()
    out = tmp_path / "out"
    result = run_algorithm(
        ALG,
        {"TOOL": SEGMENT, "INPUTS": str(archive), "OPTIONS": "threads=1", "WORKERS": 2, "OUTPUT_FOLDER": str(out)},
        qgis_process_env(tmp_path / "profile"),
    )
    assert result["results"]["DONE"] == 3 and result["results"]["FAILED"] == 0
    single = _expected(archive, tmp_path)
    for p in single.glob("*.tif"):
        assert filecmp.cmp(p, out / p.name, shallow=False), p.name


def test_cancel_stops_the_batch_and_a_rerun_finishes_it_whole(sarseg, sample_dir, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        for p in sorted(sample_dir.glob("sar_*.tif")):
            shutil.copy(p, folder / f"{p.stem}_{k}.tif")  # 24 inputs

    class CancelAfterFirst(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 - QGIS API name
            super().setProgress(progress)
            if progress > 0:
                self.cancel()

    out = tmp_path / "out"
    params = {"TOOL": SEGMENT, "INPUTS": str(folder), "OPTIONS": "threads=1", "WORKERS": 2, "OUTPUT_FOLDER": str(out)}
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(ALG, params, feedback=CancelAfterFirst())
    finished = sorted(out.glob("*_classes.tif"))
    assert 1 <= len(finished) < 24
    again = processing.run(ALG, params)
    assert again["SKIPPED"] >= len(finished) and again["DONE"] + again["SKIPPED"] == 24 and again["FAILED"] == 0
    model, reference, _ = load_checked(fast_segmentation_model(), "cpu")
    for p in sorted(sample_dir.glob("sar_*.tif")):
        segment_raster(str(p), str(tmp_path / "single.tif"), model, reference=reference)
        for k in range(6):  # every output whole and right
            assert filecmp.cmp(tmp_path / "single.tif", out / f"{p.stem}_{k}_classes.tif", shallow=False)
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]
