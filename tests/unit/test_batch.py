"""Batch runs on a local Dask cluster of 2 workers: the same files as one process, failures kept local, resume after
an interruption, a killed worker's task run again, one raster split across workers."""

from __future__ import annotations

import csv
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import partial_files, read_raster, write_raster

from sar_seg_plugin.core import batch
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.preprocess import SpeckleSettings, speckle_filter_raster
from sar_seg_plugin.core.tiling import strip_rows, tile_starts
from sar_seg_plugin.models.registry import fast_segmentation_model, load_checked, load_model

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)  # fmt: skip
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def model():
    return load_model("sarseg_unet_vvvh", "cpu", 1)


@pytest.fixture(scope="module")
def checked():
    """The default model as sarseg:segment runs it: the int8 copy and the float32 model it is checked against."""
    fast, reference, _ = load_checked(fast_segmentation_model(), "cpu", 1)
    assert reference is not None and reference.path.stem == "sarseg_unet_vvvh"
    return fast, reference


@pytest.fixture
def archive(sample_dir, tmp_path):
    """Four rasters of the sample series and one file that is not a raster."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(sample_dir.glob("sar_*.tif")):
        shutil.copy(p, folder / p.name)
    (folder / "broken.tif").write_text("not a raster")
    return folder


def _band(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def _tall_raster(sample_dir, path) -> str:
    """A 1024 x 480 px VV/VH raster (the sample's first day, repeated): three tile rows of the bundled model (384 px
    tiles, 32 px overlap), the last cut to 320 px."""
    ds = gdal.Open(str(sorted(sample_dir.glob("sar_*.tif"))[0]))
    data = ds.ReadAsArray()
    tall = np.tile(data, (1, -(-1024 // data.shape[1]), -(-480 // data.shape[2])))[:, :1024, :480]
    tall[:, :5] = 0  # a nodata margin on top
    return write_raster(path, tall, nodata=0, descriptions=["VV", "VH"], units=["linear", "linear"])


# --- planning (no cluster) ----------------------------------------------------------------------------------------


def test_inputs_from_a_folder_a_glob_and_a_csv(archive, tmp_path):
    by_folder = [Path(r["input"]).name for r in batch.find_inputs(str(archive), "segment")]
    assert by_folder == sorted(p.name for p in archive.iterdir())
    by_glob = [Path(r["input"]).name for r in batch.find_inputs(str(archive / "sar_*.tif"), "segment")]
    assert by_glob == [n for n in by_folder if n.startswith("sar_")]
    listing = tmp_path / "list.csv"
    listing.write_text("input,pre,output\nin/sar_20260302.tif,in/sar_20260301.tif,maps/flood.tif\n\n")
    (row,) = batch.find_inputs(str(listing), "flood_map")
    assert row == {"input": str(archive / "sar_20260302.tif"), "pre": str(archive / "sar_20260301.tif"),
                   "output": str(tmp_path / "maps" / "flood.tif")}  # fmt: skip
    (task,) = batch.plan_tasks("flood_map", [row], str(tmp_path / "out"), batch.parse_options("flood_map", []))
    assert task.output == row["output"] and task.pre == row["pre"]


def test_bad_batch_arguments_are_refused_with_what_to_do(archive, tmp_path):
    with pytest.raises(SarSegError, match="no 'input' column"):
        (tmp_path / "l.csv").write_text("path\nx.tif\n")
        batch.find_inputs(str(tmp_path / "l.csv"), "segment")
    with pytest.raises(SarSegError, match="No file matches"):
        batch.find_inputs(str(tmp_path / "nothing_*.tif"), "segment")
    with pytest.raises(SarSegError, match="holds no .zip or .SAFE"):
        batch.find_inputs(str(archive), "import_sentinel1")
    with pytest.raises(SarSegError, match="not an option of segment"):
        batch.parse_options("segment", ["window=5"])
    with pytest.raises(SarSegError, match="takes a int"):
        batch.parse_options("speckle_filter", ["window=five"])
    assert batch.parse_options("speckle_filter", ["window=5", "filter=frost"])["window"] == 5
    (a, b) = (tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif")
    with pytest.raises(SarSegError, match="would both write"):
        batch.plan_tasks("segment", [{"input": str(a)}, {"input": str(b)}], str(tmp_path), {})


@pytest.mark.parametrize("multiple", [None, 16])
@pytest.mark.parametrize("height", [100, 256, 300, 480, 641, 2000])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_strips_cover_the_raster_once_and_read_every_tile_their_core_needs(height, parts, multiple):
    tile, overlap = 256, 32
    ys = tile_starts(height, tile, tile - overlap, multiple)
    ends = {y: y + min(tile, height - y) for y in ys}  # every tile row ends on the raster or a tile below its start
    strips = strip_rows(height, tile, overlap, parts, multiple)
    assert [s.core[0] for s in strips] == [0] + [s.core[1] for s in strips[:-1]] and strips[-1].core[1] == height
    for s in strips:
        touching = [y for y in ys if y < s.core[1] and ends[y] > s.core[0]]  # every tile a core pixel is blended from
        assert [s.read[0] + y for y in s.rows.starts] == touching
        assert s.read == (touching[0], ends[touching[-1]])
        assert s.rows.open_top == (s.read[0] > 0) and s.rows.open_bottom == (s.read[1] < height)


def test_a_strip_segmented_alone_gives_the_whole_runs_pixels(sample_dir, model, tmp_path):
    src = _tall_raster(sample_dir, tmp_path / "tall.tif")
    segment_raster(src, str(tmp_path / "whole.tif"), model, confidence_path=str(tmp_path / "whole_conf.tif"))
    whole, conf = _band(tmp_path / "whole.tif"), _band(tmp_path / "whole_conf.tif")
    meta = model.metadata
    strips = strip_rows(1024, meta.tile_size, meta.tile_overlap, 3, meta.size_multiple)
    assert len(strips) == 3
    for s in strips:
        gdal.Translate(str(tmp_path / "s.vrt"), src, format="VRT", srcWin=[0, s.read[0], 480, s.read[1] - s.read[0]])
        segment_raster(str(tmp_path / "s.vrt"), str(tmp_path / "s.tif"), model, tile_rows=s.rows,
                       confidence_path=str(tmp_path / "s_conf.tif"), input_scale="linear")  # fmt: skip
        lo, hi = s.core[0] - s.read[0], s.core[1] - s.read[0]
        assert np.array_equal(_band(tmp_path / "s.tif")[lo:hi], whole[s.core[0] : s.core[1]])
        assert np.array_equal(_band(tmp_path / "s_conf.tif")[lo:hi], conf[s.core[0] : s.core[1]], equal_nan=True)
        if s.rows.open_top:  # the halo really differs: without the whole raster's layout it would be wrong
            assert not np.array_equal(_band(tmp_path / "s_conf.tif")[:8], conf[s.read[0] : s.read[0] + 8])


def test_a_large_raster_runs_the_int8_copy_checked_as_sarseg_segment_does(sample_dir, checked, tmp_path):
    """16 tiles (1120 x 1120 px): enough for the int8 copy's check, which a batch task runs as sarseg:segment does,
    writing the same file; a strip runs the float32 model (one model for every strip of a raster)."""
    ds = gdal.Open(str(sorted(sample_dir.glob("sar_*.tif"))[0]))
    data = ds.ReadAsArray()
    ds = None
    big = np.tile(data, (1, -(-1120 // data.shape[1]), -(-1120 // data.shape[2])))[:, :1120, :1120]
    src = write_raster(tmp_path / "big.tif", big, nodata=0, descriptions=["VV", "VH"], units=["linear", "linear"])
    (task,) = batch.plan_tasks("segment", [{"input": src}], str(tmp_path / "out"),
                               batch.parse_options("segment", ["threads=1"]))  # fmt: skip
    assert task.options["model"] == "sarseg_unet_vvvh_int8"
    record = batch.run_task(task)
    assert record.status == batch.DONE, record
    note = gdal.Open(task.output).GetMetadataItem("SARSEG_MODEL_CHECK")
    assert note and "spread over the raster" in note, note
    single = tmp_path / "single.tif"
    result = segment_raster(src, str(single), checked[0], reference=checked[1])
    assert result["model_check"]["note"] == note
    assert filecmp.cmp(single, task.output, shallow=False)
    assert batch._strip_model(task.options).path.stem == "sarseg_unet_vvvh"


# --- on a local cluster of 2 workers ------------------------------------------------------------------------------


def test_outputs_equal_a_single_process_run_and_one_bad_input_fails_alone(archive, client, checked, tmp_path):
    out = tmp_path / "out"
    tasks = batch.plan_tasks("segment", batch.find_inputs(str(archive), "segment"), str(out),
                             batch.parse_options("segment", ["threads=1"]))  # fmt: skip
    seen = []
    records = batch.run_batch(tasks, client, progress=lambda done, total, r: seen.append((done, total, r.status)))
    assert [d for d, _, _ in seen] == [1, 2, 3, 4, 5] and all(t == 5 for _, t, _ in seen)
    by_name = {Path(r.input).name: r for r in records}
    assert by_name["broken.tif"].status == batch.FAILED and "could not be opened as a raster" in by_name[
        "broken.tif"].message  # fmt: skip
    good = [r for r in records if r.status == batch.DONE]
    assert len(good) == 4 and len({r.worker for r in good}) == 2  # both workers took inputs
    for r in good:  # byte for byte what one process writes with sarseg:segment's default model
        single = tmp_path / "single" / Path(r.output).name
        single.parent.mkdir(exist_ok=True)
        segment_raster(r.input, str(single), checked[0], reference=checked[1])
        assert filecmp.cmp(single, r.output, shallow=False), r.output
    assert not (out / "broken_classes.tif").exists() and partial_files(out) == []


def test_speckle_filter_and_flood_map_on_the_cluster(sample_dir, client, tmp_path):
    days = sorted(sample_dir.glob("sar_*.tif"))
    settings = SpeckleSettings("refined_lee", 5, 4.4)
    tasks = batch.plan_tasks("speckle_filter", [{"input": str(p)} for p in days], str(tmp_path / "f"),
                             batch.parse_options("speckle_filter", ["filter=refined_lee", "window=5"]))  # fmt: skip
    listing = tmp_path / "pairs.csv"
    listing.write_text(f"input,pre\n{days[-1]},{days[0]}\n")
    tasks += batch.plan_tasks("flood_map", batch.find_inputs(str(listing), "flood_map"), str(tmp_path / "fl"),
                              batch.parse_options("flood_map", []))  # fmt: skip
    records = batch.run_batch(tasks, client)
    assert [r.status for r in records] == [batch.DONE] * len(tasks)
    for p, r in zip(days, records):
        speckle_filter_raster(str(p), str(tmp_path / "one.tif"), settings)
        assert filecmp.cmp(tmp_path / "one.tif", r.output, shallow=False)
    from sar_seg_plugin.core.flood import flood_map

    flood_map(str(days[-1]), str(tmp_path / "flood_one.tif"), pre=str(days[0]))
    assert np.array_equal(_band(tmp_path / "flood_one.tif"), _band(records[-1].output))


def test_a_killed_workers_task_runs_again_on_a_worker_that_lives(archive, client, tmp_path):
    from batch_helpers import die_once

    shutil.copy(archive / "sar_20260301.tif", archive / "kill_me.tif")
    rows = [r for r in batch.find_inputs(str(archive), "segment") if "broken" not in r["input"]]
    tasks = batch.plan_tasks("segment", rows, str(tmp_path / "out"), batch.parse_options("segment", ["threads=1"]))
    records = batch.run_batch(tasks, client, runner=die_once)
    assert [r.status for r in records] == [batch.DONE] * len(tasks)
    killed = next(r for r in records if "kill_me" in r.input)
    died_pid = (tmp_path / "out" / "kill_me_classes.tif.died").read_text()
    assert killed.worker.split(":")[1] != died_pid  # another process ran it
    assert np.array_equal(_band(killed.output), _band(tmp_path / "out" / "sar_20260301_classes.tif"))


def test_one_raster_split_across_workers_equals_the_whole_run(sample_dir, client, model, tmp_path):
    src = _tall_raster(sample_dir, tmp_path / "tall.tif")
    segment_raster(src, str(tmp_path / "whole.tif"), model)
    (task,) = batch.plan_tasks("segment", [{"input": src}], str(tmp_path / "out"),
                               batch.parse_options("segment", ["threads=1"]))  # fmt: skip
    (record,) = batch.run_batch([task], client, split=3)
    assert record.status == batch.DONE and record.message == "3 strips on 2 worker(s)", record
    whole, split = gdal.Open(str(tmp_path / "whole.tif")), gdal.Open(task.output)
    assert np.array_equal(whole.ReadAsArray(), split.ReadAsArray())
    assert split.GetGeoTransform() == whole.GetGeoTransform() and split.GetProjection() == whole.GetProjection()
    band = split.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6 reads the category names after the metadata
    assert band.GetCategoryNames() == list(model.metadata.class_names) and band.GetNoDataValue() == 255
    assert sorted(os.listdir(tmp_path / "out")) == ["tall_classes.tif", "tall_classes.tif.aux.xml"]


def test_the_command_line_resumes_after_being_killed(sample_dir, checked, tmp_path):
    """Killed (SIGKILL, the whole process group) once the first output appears; the rerun skips what was
    finished, writes the rest, and every output is whole."""
    archive = tmp_path / "in"
    archive.mkdir()
    _tall_raster(sample_dir, archive / "area_0.tif")
    for k in range(1, 6):
        shutil.copy(archive / "area_0.tif", archive / f"area_{k}.tif")
    segment_raster(str(archive / "area_0.tif"), str(tmp_path / "single.tif"), checked[0], reference=checked[1])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sar_seg_plugin.batch", "segment", str(archive), "--out", str(out),
               "--workers", "2", "--progress", "lines", "-o", "threads=1"]  # fmt: skip
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.glob("*_classes.tif")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = sorted(p.name for p in out.glob("*_classes.tif"))
    assert 1 <= len(finished) < 6, finished
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Dask dashboard: http" in rerun.stdout
    with open(out / "batch_summary.csv", newline="") as f:
        rows = {Path(r["output"]).name: r for r in csv.DictReader(f)}
    assert len(rows) == 6
    assert sorted(n for n, r in rows.items() if r["status"] == batch.SKIPPED) == finished
    assert all(r["status"] == batch.DONE for n, r in rows.items() if n not in finished)
    for name in rows:  # every output whole and right, none half-written
        assert filecmp.cmp(tmp_path / "single.tif", out / name, shallow=False), name
    assert partial_files(out) == []


def test_the_command_line_says_what_is_wrong_and_exits_2(tmp_path):
    command = [sys.executable, "-m", "sar_seg_plugin.batch", "segment", str(tmp_path / "none_*.tif"), "--out", "o"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "No file matches" in done.stderr


def test_forecast_per_area_folder_on_the_cluster(sample_dir, client, tmp_path):
    from sar_seg_plugin.core.forecast import forecast_rasters
    from sar_seg_plugin.models.registry import load_forecaster

    areas = tmp_path / "areas"
    for area in ("north", "south"):
        (areas / area).mkdir(parents=True)
        for p in sorted(sample_dir.glob("labels_*.tif")):
            shutil.copy(p, areas / area / p.name)
    tasks = batch.plan_tasks("forecast", batch.find_inputs(str(areas), "forecast"), str(tmp_path / "out"),
                             batch.parse_options("forecast", ["threads=1"]))  # fmt: skip
    assert [Path(t.output).name for t in tasks] == ["north", "south"]
    records = batch.run_batch(tasks, client)
    assert [r.status for r in records] == [batch.DONE, batch.DONE], records
    forecaster = load_forecaster("sarseg_convlstm_classes", "cpu", 1)
    (tmp_path / "one").mkdir()
    forecast_rasters(batch.forecast_items(str(areas / "north")), forecaster, str(tmp_path / "one"), confidence=True)
    maps = sorted(p.name for p in (tmp_path / "one").glob("forecast_t*.tif"))
    assert len(maps) == 2 * (1 + len(forecaster.metadata.horizons)) - 1  # t0, each horizon and its confidence
    for name in maps:
        for area in ("north", "south"):
            assert np.array_equal(_band(tmp_path / "one" / name), _band(tmp_path / "out" / area / name), equal_nan=True)
    again = batch.run_batch(tasks, client)  # resume: the forecasts are there
    assert [r.status for r in again] == [batch.SKIPPED, batch.SKIPPED]
    shutil.copy(areas / "south" / p.name, areas / "south" / "notes.tif")  # a map without a date: refused, not used
    with pytest.raises(SarSegError, match="without a date"):
        batch.forecast_items(str(areas / "south"))


def test_sentinel1_products_on_the_cluster_and_a_corrupt_one_reported(client, tmp_path):
    s1_product = pytest.importorskip("s1_product")
    if not s1_product.available():
        pytest.skip("Sentinel-1 test metadata missing: run make setup")
    from sar_seg_plugin.core.sentinel1 import import_product, open_product

    products = tmp_path / "products"
    products.mkdir()
    good = s1_product.write_product(products, 20, zip_it=True)
    (products / "S1A_IW_GRDH_1SDV_corrupt.zip").write_bytes(b"PK\x03\x04 not a zip")
    options = batch.parse_options("import_sentinel1", ["pixel_size=800"])
    tasks = batch.plan_tasks(
        "import_sentinel1", batch.find_inputs(str(products), "import_sentinel1"), str(tmp_path / "out"), options
    )
    records = {Path(r.input).name: r for r in batch.run_batch(tasks, client)}
    assert records["S1A_IW_GRDH_1SDV_corrupt.zip"].status == batch.FAILED
    assert records["S1A_IW_GRDH_1SDV_corrupt.zip"].message
    done = records[Path(good).name]
    assert done.status == batch.DONE and done.output.endswith("_sigma0.tif")
    import_product(open_product(str(good)), str(tmp_path / "one.tif"), pixel_size=800)
    assert np.array_equal(read_raster(tmp_path / "one.tif"), read_raster(done.output), equal_nan=True)


def test_a_split_raster_with_an_undeclared_fill_takes_the_whole_runs_decision(sample_dir, client, model, tmp_path):
    """Zero fill (no nodata declared) at the top and in the bottom strip: every strip reads the raster as the whole
    run decided from its sample of the whole raster (SplitPlan.fill), not as its own sample would."""
    tall = gdal.Open(_tall_raster(sample_dir, tmp_path / "declared.tif")).ReadAsArray()
    tall[:, 900:, :120] = 0.0  # the swath's edge, in the last strip (and the top margin of 5 rows at 0)
    src = write_raster(tmp_path / "tall.tif", tall, descriptions=["VV", "VH"], units=["linear", "linear"])
    lines = []
    segment_raster(src, str(tmp_path / "whole.tif"), model, log=lines.append)
    (task,) = batch.plan_tasks("segment", [{"input": src}], str(tmp_path / "out"),
                               batch.parse_options("segment", ["threads=1"]))  # fmt: skip
    plan = batch.plan_split(task, 3)
    assert plan.fill == 0.0 and any("hold 0 in every band read" in line for line in lines)
    (record,) = batch.run_batch([task], client, split=3)
    assert record.status == batch.DONE, record
    whole = gdal.Open(str(tmp_path / "whole.tif")).ReadAsArray()
    assert np.array_equal(whole, gdal.Open(task.output).ReadAsArray())
    assert (whole[900:, :120] == 255).all() and (whole[:5] == 255).all()
