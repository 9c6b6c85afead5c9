"""The headless command line users script with: qgis_process --json run sarseg:..."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from osgeo import gdal
from qgisproc import qgis_process_env, run_algorithm
from rasters import partial_files, write_raster

from sar_seg_plugin.core import speckle
from training import synthetic


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return qgis_process_env(tmp_path_factory.mktemp("qgis-profile"))


def test_qgis_process_json_run_speckle_filter(env, sample_dir, tmp_path):
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    src = sample_dir / manifest["files"][0]["sar"]
    out = tmp_path / "frost.tif"
    result = run_algorithm(
        "sarseg:speckle_filter", {"INPUT": src, "FILTER": 3, "WINDOW": 5, "DAMPING": 1.5, "OUTPUT": out}, env
    )
    assert result["algorithm_details"]["id"] == "sarseg:speckle_filter"
    assert result["results"]["OUTPUT"] == str(out)
    ds = gdal.Open(str(src))
    x = ds.GetRasterBand(2).ReadAsArray().astype(np.float64)
    valid = x != synthetic.SAR_NODATA
    out_ds = gdal.Open(str(out))
    got = out_ds.GetRasterBand(2).ReadAsArray()
    np.testing.assert_allclose(got[valid], speckle.frost_filter(x, 5, 1.5, valid)[valid], rtol=2e-6)


def test_qgis_process_reports_bad_input_and_exits_non_zero(env, sample_dir, tmp_path):
    with pytest.raises(RuntimeError, match="is not a raster file"):
        run_algorithm("sarseg:convert_db", {"INPUT": sample_dir / "communes.gpkg", "OUTPUT": tmp_path / "x.tif"}, env)
    assert not (tmp_path / "x.tif").exists()


def test_enabling_the_plugin_twice_in_one_profile_is_fine(tmp_path):
    """make demo run twice reuses its profile, where the plugin is already enabled."""
    first = qgis_process_env(tmp_path / "profile")
    second = qgis_process_env(tmp_path / "profile")
    assert first["QGIS_CUSTOM_CONFIG_PATH"] == second["QGIS_CUSTOM_CONFIG_PATH"]


def test_qgis_process_json_run_segment_with_the_default_model(env, sample_dir, sample_series, tmp_path):
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    out = tmp_path / "classes.tif"
    result = run_algorithm("sarseg:segment", {"INPUT": sample_dir / manifest["files"][0]["sar"], "OUTPUT": out}, env)
    assert result["results"]["OUTPUT"] == str(out)
    ds = gdal.Open(str(out))
    predicted = ds.GetRasterBand(1).ReadAsArray()
    truth = sample_series.labels[0]
    valid = truth != synthetic.LABEL_NODATA
    assert np.all(predicted[~sample_series.valid] == 255)
    # Pixel accuracy against the generator's truth (the model card reports about 0.92 on held-out scenes).
    assert (predicted[valid] == truth[valid]).mean() > 0.85


def _segment_command(src, out_dir) -> list[str]:
    return ["qgis_process", "run", "sarseg:segment", "--", f"INPUT={src}", f"OUTPUT={out_dir / 'classes.tif'}",
            f"OUTPUT_PROBABILITIES={out_dir / 'probabilities.tif'}"]  # fmt: skip


def _start_until_temporaries(command: list[str], env: dict, folder) -> subprocess.Popen:
    """Start a qgis_process run and return once its temporary outputs exist in ``folder`` (the run is working)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # Not the write probe (.partial.probe, created and removed at once while destinations are checked): an output.
    while not [name for name in partial_files(folder) if not name.endswith(".probe")]:
        assert proc.poll() is None, f"the run ended before writing anything: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory):
    """A 2048 x 2048 VV/VH scene: segmenting it takes seconds, time enough to stop the run."""
    rng = np.random.default_rng(5)
    data = (0.05 * rng.gamma(4.4, 1 / 4.4, (2, 2048, 2048))).astype(np.float32)
    return write_raster(tmp_path_factory.mktemp("large") / "large.tif", data, descriptions=["VV", "VH"],
                        units=["linear", "linear"])  # fmt: skip


def test_sigterm_during_segment_leaves_no_temporary(env, large_scene, tmp_path):
    """What timeout, systemd and batch schedulers send: was leaving .o.*.partial.tif files behind."""
    proc = _start_until_temporaries(_segment_command(large_scene, tmp_path), env, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # ended by the signal, as the sender meant
    assert list(tmp_path.iterdir()) == []


def test_the_next_run_removes_what_a_killed_run_left(env, large_scene, sample_dir, tmp_path):
    """kill -9 cannot be caught: its temporaries stay until the next run that writes in the folder removes them."""
    proc = _start_until_temporaries(_segment_command(large_scene, tmp_path), env, tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    left = partial_files(tmp_path)
    assert left
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    args = ["qgis_process", "run", "sarseg:convert_db", "--", f"INPUT={sample_dir / manifest['files'][0]['sar']}",
            f"OUTPUT={tmp_path / 'db.tif'}"]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"temporary file(s) left in '{tmp_path}' by an interrupted run" in run.stdout
    assert partial_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.tif"]
