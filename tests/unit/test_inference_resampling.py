"""Resampling to the model's pixel size in core.inference: 20 m and EPSG:4326 inputs with the bundled default model."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import leftovers, read_raster, write_raster

from sar_seg_plugin.core.class_rasters import CLASS_NODATA
from sar_seg_plugin.core.errors import CancelledError
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.core.raster_io import read_info
from sar_seg_plugin.core.resampling import SINGLE_LOOK_ENL, raster_pixel_size_m, resampling_plan
from sar_seg_plugin.models.registry import load_model
from training import synthetic

pytest.importorskip("onnxruntime")

MIN_AGREEMENT = 0.85  # the target; the domain-randomised bundled model gives 0.91 (20 m) and 0.90 (EPSG:4326)
SANITY_AGREEMENT = 0.5  # far above what a shifted or flipped grid gives
SAR = "sar_20260301.tif"


@pytest.fixture(scope="module")
def model():
    """The bundled model, taken as recording no input envelope: the tests below it are about resampling to the
    model's own pixel size (those with a trained pixel-size range use ``envelope_model``)."""
    loaded = load_model("sarseg_unet_vvvh", "cpu")
    training = {k: v for k, v in loaded.metadata.training.items() if k != "input_domain"}
    return dataclasses.replace(loaded, metadata=dataclasses.replace(loaded.metadata, training=training))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, str]:
    """The sample at 10 m, a 20 m copy (averaged in linear power), a 20 m dB copy and a copy in EPSG:4326."""
    folder = tmp_path_factory.mktemp("resampling_inputs")
    sar = str(sample_dir / SAR)
    coarse = str(folder / "sar_20m.tif")
    gdal.Translate(coarse, sar, width=80, height=80, resampleAlg="average")
    ds = gdal.Open(coarse, gdal.GA_Update)
    for b in (1, 2):
        ds.GetRasterBand(b).SetUnitType("linear")  # gdal.Translate drops the unit when resizing
    ds = None
    linear = read_raster(coarse, dtype=np.float64)
    db = np.where(linear > 0, 10 * np.log10(np.maximum(linear, 1e-30)), -9999.0)
    ref = gdal.Open(coarse)
    coarse_db = write_raster(
        folder / "sar_20m_db.tif", db, nodata=-9999.0, geotransform=ref.GetGeoTransform(), units=["dB", "dB"]
    )
    ref = None
    geographic = str(folder / "sar_4326.tif")
    gdal.Warp(geographic, sar, dstSRS="EPSG:4326", resampleAlg="bilinear")
    return {"sar": sar, "coarse": coarse, "coarse_db": coarse_db, "geographic": geographic}


@pytest.fixture(scope="module")
def reference(model, work, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 10 m sample segmented on its own grid (no resampling needed)."""
    out = str(tmp_path_factory.mktemp("reference") / "classes_10m.tif")
    logs: list[str] = []
    segment_raster(work["sar"], out, model, log=logs.append)
    assert any("No resampling" in line for line in logs)
    return out


def warp_nearest_like(src: str, like: str, out: str) -> np.ndarray:
    """``src`` warped with nearest neighbour onto the exact grid of ``like``."""
    ds = gdal.Open(like)
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    bounds = (gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3])
    gdal.Warp(
        out, src, dstSRS=ds.GetProjection(), outputBounds=bounds, width=w, height=h, resampleAlg="near",
        srcNodata=CLASS_NODATA, dstNodata=CLASS_NODATA,
    )  # fmt: skip
    ds = None
    return read_raster(out)[0]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    ok = (a != CLASS_NODATA) & (b != CLASS_NODATA)
    assert ok.mean() > 0.8
    return float((a[ok] == b[ok]).mean())


def same_grid(a: str, b: str) -> None:
    da, db = gdal.Open(a), gdal.Open(b)
    assert (da.RasterXSize, da.RasterYSize) == (db.RasterXSize, db.RasterYSize)
    assert da.GetGeoTransform() == db.GetGeoTransform()
    assert da.GetProjection() == db.GetProjection()


def test_pixel_size_in_metres(work):
    sx, sy, geographic = raster_pixel_size_m(gdal.Open(work["coarse"]))
    assert (sx, sy, geographic) == (20.0, 20.0, False)
    sx, sy, geographic = raster_pixel_size_m(gdal.Open(work["geographic"]))
    assert geographic and 7.0 < sx < 14.0 and 7.0 < sy < 14.0  # about 10 m either way at the sample's latitude


def test_20m_raster_is_resampled_to_10m_and_back(model, work, reference, tmp_path):
    out, probs, conf = tmp_path / "classes.tif", tmp_path / "probs.tif", tmp_path / "conf.tif"
    logs: list[str] = []
    result = segment_raster(
        work["coarse"], str(out), model, probabilities_path=str(probs), confidence_path=str(conf), log=logs.append
    )
    assert any("Resampling" in line and "20 x 20 m" in line for line in logs), logs
    assert result["resampled"]["grid"] == [160, 160]
    assert (result["width"], result["height"]) == (80, 80)
    for path in (out, probs, conf):
        same_grid(str(path), work["coarse"])
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == CLASS_NODATA
    assert band.GetCategoryNames()[:5] == ["water", "vegetation", "forest", "built-up", "bare soil"]
    assert band.GetColorTable() is not None and band.GetColorTable().GetColorEntry(0)[:3] == (0x1F, 0x78, 0xB4)
    ds = band = None

    predicted = read_raster(out)[0]
    expected = warp_nearest_like(reference, work["coarse"], str(tmp_path / "reference_20m.tif"))
    score = agreement(predicted, expected)
    print(f"20 m vs 10 m agreement {score:.3f}")
    assert score >= SANITY_AGREEMENT
    input_nodata = (read_raster(work["coarse"]) == 0).any(axis=0)
    assert input_nodata.any() and (predicted[input_nodata] == CLASS_NODATA).all()
    assert sum(result["class_pixels"].values()) + result["nodata_pixels"] == 80 * 80
    p = read_raster(probs, dtype=np.float64)
    assert p.shape == (5, 80, 80) and np.isnan(p[:, input_nodata]).all()
    classified = predicted != CLASS_NODATA
    # the classes and the confidence are those of the probabilities written, not warped on their own
    assert np.array_equal(predicted[classified], p.argmax(axis=0)[classified])
    assert np.allclose(read_raster(conf, dtype=np.float64)[0][classified], p.max(axis=0)[classified])
    assert leftovers(tmp_path, keep=["classes.tif", "classes.tif.aux.xml", "probs.tif", "conf.tif"]) == [
        "reference_20m.tif"
    ]


def test_db_raster_is_resampled_in_linear_power(model, work, tmp_path):
    logs: list[str] = []
    linear_out, db_out = tmp_path / "linear.tif", tmp_path / "db.tif"
    segment_raster(work["coarse"], str(linear_out), model)
    segment_raster(work["coarse_db"], str(db_out), model, log=logs.append)
    assert any("linear power for resampling" in line for line in logs), logs
    same_grid(str(db_out), work["coarse_db"])
    assert agreement(read_raster(db_out)[0], read_raster(linear_out)[0]) >= 0.99


def test_geographic_raster_runs_in_utm_and_comes_back(model, work, reference, tmp_path):
    out = tmp_path / "classes.tif"
    logs: list[str] = []
    segment_raster(work["geographic"], str(out), model, log=logs.append)
    assert any("geographic" in line and "EPSG:32631" in line for line in logs), logs
    same_grid(str(out), work["geographic"])
    ds = gdal.Open(str(out))
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "4326"
    ds = None
    predicted = read_raster(out)[0]
    expected = warp_nearest_like(reference, work["geographic"], str(tmp_path / "reference_4326.tif"))
    score = agreement(predicted, expected)
    print(f"EPSG:4326 vs projected agreement {score:.3f}")
    assert score >= SANITY_AGREEMENT


@pytest.mark.parametrize("name", ["coarse", "geographic"])
def test_agreement_target_with_the_10m_result(model, work, reference, tmp_path, name):
    out = tmp_path / "classes.tif"
    segment_raster(work[name], str(out), model)
    expected = warp_nearest_like(reference, work[name], str(tmp_path / "reference.tif"))
    assert agreement(read_raster(out)[0], expected) >= MIN_AGREEMENT


def test_pixel_size_within_tolerance_is_not_resampled(model, work, tmp_path):
    near = tmp_path / "sar_10_5m.tif"
    gdal.Translate(str(near), work["sar"])
    ds = gdal.Open(str(near), gdal.GA_Update)
    gt = list(ds.GetGeoTransform())
    gt[1], gt[5] = 10.5, -10.5
    ds.SetGeoTransform(gt)
    ds = None
    plan, reason = resampling_plan(gdal.Open(str(near)), model.metadata)
    assert plan is None and "No resampling" in reason and "within 10%" in reason
    logs: list[str] = []
    result = segment_raster(str(near), str(tmp_path / "c.tif"), model, log=logs.append)
    assert "resampled" not in result
    assert any("No resampling" in line for line in logs)
    assert not any(line.startswith("Resampl") for line in logs)


def test_resample_off_segments_on_the_raster_grid(model, work, tmp_path):
    logs: list[str] = []
    result = segment_raster(work["coarse"], str(tmp_path / "c.tif"), model, resample=False, log=logs.append)
    assert "resampled" not in result and (result["width"], result["height"]) == (80, 80)
    assert any("turned off" in line for line in logs)


@pytest.mark.parametrize("after", [1, 3, 6])
def test_cancel_while_resampling_leaves_nothing(model, work, tmp_path, after):
    calls = 0

    def is_canceled() -> bool:
        nonlocal calls
        calls += 1
        return calls > after

    with pytest.raises(CancelledError):
        segment_raster(
            work["coarse"], str(tmp_path / "c.tif"), model, probabilities_path=str(tmp_path / "p.tif"),
            is_canceled=is_canceled,
        )  # fmt: skip
    assert leftovers(tmp_path) == []  # no output, no .partial file, no .sarseg-resample-* folder


# --- Models that record the pixel sizes they were trained on (10-40 m) -----------------------------------------

ENVELOPE_MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "conv_2to5_envelope.onnx"


@pytest.fixture(scope="module")
def envelope_model():
    return load_model(str(ENVELOPE_MODEL), "cpu")


@pytest.fixture(scope="module")
def sizes(work, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The sample at 5 m and 80 m (same extent), and in EPSG:4326 at about 5 m."""
    folder = tmp_path_factory.mktemp("range_inputs")
    fine, coarse, geographic = str(folder / "fine.tif"), str(folder / "coarse.tif"), str(folder / "fine_4326.tif")
    gdal.Translate(fine, work["sar"], width=320, height=320, resampleAlg="near")
    gdal.Translate(coarse, work["sar"], width=20, height=20, resampleAlg="average")
    gdal.Warp(geographic, work["sar"], dstSRS="EPSG:4326", xRes=4.5e-5, yRes=4.5e-5, resampleAlg="near")
    return {"fine": fine, "coarse": coarse, "geographic": geographic}


def test_pixel_sizes_inside_the_trained_range_are_not_resampled(envelope_model, work, tmp_path):
    for name in ("sar", "coarse"):  # 10 m and 20 m
        plan, reason = resampling_plan(gdal.Open(work[name]), envelope_model.metadata)
        assert plan is None and "No resampling" in reason and "inside the 10-40 m the model was trained on" in reason
    logs: list[str] = []
    result = segment_raster(work["coarse"], str(tmp_path / "c.tif"), envelope_model, log=logs.append)
    assert "resampled" not in result and (result["width"], result["height"]) == (80, 80)
    assert not any(line.startswith("Resampling") for line in logs)
    # Without the envelope the same model warps the 20 m raster to its 10 m pixel size, as before.
    bare = dataclasses.replace(envelope_model.metadata, training={})
    plan, reason = resampling_plan(gdal.Open(work["coarse"]), bare)
    assert plan is not None and plan.resolution == 10.0 and plan.method == "bilinear" and "differs" in reason


def test_finer_rasters_are_averaged_to_the_finest_trained_size(envelope_model, sizes):
    plan, reason = resampling_plan(gdal.Open(sizes["fine"]), envelope_model.metadata)
    assert (plan.resolution, plan.pixel_size_m, plan.method) == (10.0, 10.0, "average")
    assert "(5 x 5 m) is finer than the 10-40 m the model was trained on" in reason and "multilooking" in reason


def test_coarser_rasters_are_interpolated_to_the_coarsest_trained_size(envelope_model, sizes):
    plan, reason = resampling_plan(gdal.Open(sizes["coarse"]), envelope_model.metadata)
    assert (plan.resolution, plan.pixel_size_m, plan.method) == (40.0, 40.0, "bilinear")
    assert "(80 x 80 m) is coarser than the 10-40 m" in reason


def test_geographic_rasters_go_to_utm_at_their_own_size_clamped_into_the_range(envelope_model, work, sizes):
    ds = gdal.Open(work["geographic"])
    sx, sy, _ = raster_pixel_size_m(ds)
    plan, reason = resampling_plan(ds, envelope_model.metadata)
    assert "EPSG:32631" in reason and "its own pixel size" in reason
    assert 10.0 < (sx * sy) ** 0.5 < 12.0 < max(sx, sy) + 0.1  # about 8.7 x 12.0 m: inside the range
    assert plan.resolution == pytest.approx((sx * sy) ** 0.5) and plan.method == "bilinear"
    sx, sy, _ = raster_pixel_size_m(gdal.Open(sizes["geographic"]))
    assert sx < 10.0 and sy < 10.0
    plan, reason = resampling_plan(gdal.Open(sizes["geographic"]), envelope_model.metadata)
    assert (plan.resolution, plan.method) == (10.0, "average") and "clamped into the 10-40 m" in reason


@pytest.fixture(scope="module")
def single_look_5m(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A synthetic scene with single-look speckle on 5 m pixels: four looks once averaged to 10 m."""
    folder = tmp_path_factory.mktemp("single_look_5m")
    synthetic.write_series(synthetic.generate_series(size=320, days=2, seed=7, n_communes=4, looks=1.0), folder)
    path = str(folder / SAR)
    ds = gdal.Open(path, gdal.GA_Update)
    gt = list(ds.GetGeoTransform())
    gt[1], gt[5] = 5.0, -5.0
    ds.SetGeoTransform(gt)
    ds = None
    return path


def test_fine_single_look_raster_is_multilooked_and_checked_as_the_model_sees_it(
    envelope_model, single_look_5m, tmp_path
):
    logs: list[str] = []
    warns: list[str] = []
    out = tmp_path / "classes.tif"
    result = segment_raster(single_look_5m, str(out), envelope_model, log=logs.append, warn=warns.append)
    assert result["resampled"]["method"] == "average" and result["resampled"]["grid"] == [160, 160]
    same_grid(str(out), single_look_5m)
    checked = result["input_domain"]
    assert not any("ENL" in w or "pixel size" in w for w in warns), warns
    assert checked["stats"]["pixel_size_m"] == 10.0
    assert checked["stats"]["enl"] == pytest.approx(4.0, rel=0.25)  # four single looks averaged
    assert re.fullmatch(
        r"checked as averaged to 10 m pixels; ENL about (0\.[89]\d*|1\.[01]\d*) at the raster's 5 m", checked["note"]
    ), checked["note"]
    assert any(line.startswith("Input domain:") and "at the raster's 5 m" in line for line in logs), logs

    # Segmented on its own 5 m grid, the same raster is single look and too fine: both are said.
    warns = []
    result = segment_raster(
        single_look_5m, str(tmp_path / "own_grid.tif"), envelope_model, resample=False, warn=warns.append
    )
    assert result["input_domain"]["stats"]["enl"] == pytest.approx(1.0, rel=0.2)
    assert any(re.match(r"Input ENL about (0\.[89]\d*|1\.[01]\d*) \(single look\?\)", w) for w in warns), warns
    assert any(w.startswith("Input pixel size about 5 m, finer than the 10-40 m") for w in warns), warns


# --- Single-look input inside the trained range: averaged 2 x 2 first ---------------------------------------------


def test_single_look_plans(envelope_model, work, sizes):
    meta = envelope_model.metadata
    plan, reason = resampling_plan(gdal.Open(work["sar"]), meta, enl=0.93)  # 10 m, single look
    assert (plan.resolution, plan.pixel_size_m, plan.method) == (20.0, 20.0, "average")
    assert "single-look (ENL about 0.93, measured on a sample)" in reason
    assert "Turn 'Resample to the model's pixel size' off" in reason
    assert resampling_plan(gdal.Open(work["sar"]), meta, enl=SINGLE_LOOK_ENL)[0] is None  # not under the bound
    assert resampling_plan(gdal.Open(work["sar"]), meta, enl=4.4)[0] is None
    # 20 m: 40 m is still inside the 10-40 m range
    assert resampling_plan(gdal.Open(work["coarse"]), meta, enl=0.9)[0].pixel_size_m == 40.0
    # 5 m single look: averaged to 10 m as any finer raster (four looks), not to 10 m x 2
    plan, _ = resampling_plan(gdal.Open(sizes["fine"]), meta, enl=0.9)
    assert (plan.pixel_size_m, plan.method) == (10.0, "average")
    # geographic, about 10 m: to UTM at twice its pixel size
    ds = gdal.Open(work["geographic"])
    sx, sy, _ = raster_pixel_size_m(ds)
    plan, reason = resampling_plan(ds, meta, enl=0.9)
    assert plan.method == "average" and plan.pixel_size_m == pytest.approx(2 * (sx * sy) ** 0.5)
    assert "twice its pixel size, inside the 10-40 m" in reason


def test_single_look_raster_too_coarse_to_double_stays_on_its_grid(envelope_model, work, tmp_path):
    path = str(tmp_path / "sar_30m.tif")
    gdal.Translate(path, work["sar"], width=53, height=53, resampleAlg="average")
    plan, reason = resampling_plan(gdal.Open(path), envelope_model.metadata, enl=0.95)
    assert plan is None
    assert "single-look (ENL about 0.95" in reason and "twice its pixel size would be beyond that range" in reason


def scene_miou(classes: np.ndarray, truth: np.ndarray) -> float:
    from training.metrics import confusion_matrix, segmentation_metrics

    return segmentation_metrics(confusion_matrix(classes, truth, 5), synthetic.CLASS_NAMES)["miou"]


def test_single_look_scenes_are_multilooked_and_segmented_better(tmp_path):
    """Evaluation-only single-look scenes (a generator the bundled model was not trained on): the default run
    averages 2 x 2, says so, writes on the raster's own grid, and scores above the run on the raster's own grid."""
    from training import evalgen
    from training.domain_eval import evaluation_only_scene

    model = load_model("sarseg_unet_vvvh", "cpu")
    single = evalgen.domain_by_name("ENL 1")
    scores: dict[str, list[float]] = {"default": [], "own grid": []}
    for seed in (9001, 9002, 9003):
        scene = evaluation_only_scene(seed, 256, single)
        image = tmp_path / f"sar_{seed}.tif"
        evalgen.write_scene(scene, image, tmp_path / f"labels_{seed}.tif")
        logs: list[str] = []
        out = tmp_path / f"default_{seed}.tif"
        result = segment_raster(str(image), str(out), model, log=logs.append)
        assert result["resampled"]["method"] == "average" and result["resampled"]["model_pixel_size_m"] == 20.0
        assert any("single-look" in line and "averaging 2 x 2 pixels" in line for line in logs), logs
        same_grid(str(out), str(image))
        assert result["input_domain"]["status"] == "inside"  # checked as averaged: about 4 looks
        ds = gdal.Open(str(out))
        assert ds.GetMetadataItem("SARSEG_INPUT_DOMAIN") == "inside"
        ds = None
        scores["default"].append(scene_miou(read_raster(str(out))[0], scene.labels))
        own = tmp_path / f"own_{seed}.tif"
        segment_raster(str(image), str(own), model, resample=False)
        scores["own grid"].append(scene_miou(read_raster(str(own))[0], scene.labels))
    assert np.mean(scores["default"]) > np.mean(scores["own grid"]) + 0.02, scores


def test_resampled_outputs_keep_the_runs_metadata(envelope_model, sizes, tmp_path):
    """The results warped back onto the raster's grid carry the run's metadata (input units, the domain check),
    not the temporary model-grid files'."""
    warns: list[str] = []
    paths = [tmp_path / "classes.tif", tmp_path / "probabilities.tif"]
    result = segment_raster(
        sizes["coarse"], str(paths[0]), envelope_model, probabilities_path=str(paths[1]), warn=warns.append
    )
    assert result["resampled"]["model_pixel_size_m"] == 40.0 and result["input_domain"]["status"] == "outside"
    domain_warnings = [w for w in warns if w.startswith("Input pixel size")]
    assert domain_warnings, warns
    for path in paths:
        ds = gdal.Open(str(path))
        md = ds.GetMetadata()
        ds = None
        assert md["SARSEG_INPUT_DOMAIN"] == "outside"
        assert domain_warnings[0] in md["SARSEG_DOMAIN_WARNINGS"]
        assert '"band": 1' in md["SARSEG_INPUT_SCALES"]


# --- projections that stretch lengths (Web Mercator) ---------------------------------------------------------------

E2 = 0.00669437999014  # WGS 84 first eccentricity squared


def _mercator_scale(lat_deg: float) -> float:
    """Ground metres per EPSG:3857 metre at a latitude: Web Mercator puts WGS 84 latitudes and longitudes on a
    sphere of the ellipsoid's equatorial radius, so east-west it covers cos / sqrt(1 - e² sin²) and north-south
    (1 - e²) cos / (1 - e² sin²)^1.5 of the ellipsoid; their geometric mean (one number per raster)."""
    phi = np.radians(lat_deg)
    w = 1 - E2 * np.sin(phi) ** 2
    return float(np.sqrt(np.cos(phi) / np.sqrt(w) * (1 - E2) * np.cos(phi) / w**1.5))


def _mercator_origin(lat_deg: float) -> tuple[float, float]:
    """EPSG:3857 coordinates of (2 E, lat): the spherical formula the projection uses."""
    r = 6378137.0
    return r * np.radians(2.0), r * np.log(np.tan(np.pi / 4 + np.radians(lat_deg) / 2))


@pytest.mark.parametrize("lat", [0.0, 30.0, 48.0, 60.0])
def test_web_mercator_pixels_are_measured_on_the_ground(lat):
    """A Web Mercator metre covers :func:`_mercator_scale` m of the WGS 84 ellipsoid (computed here); UTM metres are
    taken as they are."""
    from osgeo import osr

    from sar_seg_plugin.core.resampling import ground_pixel_size_m

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y = _mercator_origin(lat)
    ground = 15.0 * _mercator_scale(lat)
    # the pixel's centre is the grid's: a 1 x 1 grid whose corner sits half a pixel up and left of (x, y)
    sx, sy, geographic = ground_pixel_size_m((x - 7.5, 15.0, 0.0, y + 7.5, 0.0, -15.0), srs, 1, 1)
    assert not geographic
    if abs(ground / 15.0 - 1) <= 0.01:
        assert (sx, sy) == (15.0, 15.0)
    else:
        assert sx == pytest.approx(ground, rel=2e-4) and sy == pytest.approx(ground, rel=2e-4)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    assert ground_pixel_size_m((250000.0, 10.0, 0.0, 5300000.0, 0.0, -10.0), utm, 100, 100) == (10.0, 10.0, False)


def test_a_web_mercator_raster_is_planned_in_ground_metres_and_its_areas_are_ground_areas(envelope_model, tmp_path):
    """5 m on the ground at 48° N in EPSG:3857 (7.47 CRS metres): averaged to 10 ground metres, not to 10 CRS
    metres (6.7 on the ground); a flood map's and a forecast's pixel area is the ground area."""
    from sar_seg_plugin.core.flood import pixel_area_m2
    from sar_seg_plugin.core.forecast import pixel_area_km2
    from sar_seg_plugin.core.timeseries import Grid

    k = _mercator_scale(48.0)  # ground metres per CRS metre
    x, y = _mercator_origin(48.0)
    step = 5.0 / k
    data = np.random.default_rng(0).gamma(4.4, 0.02 / 4.4, (2, 64, 64))
    path = write_raster(tmp_path / "mercator.tif", data, epsg=3857, nodata=0.0, descriptions=["VV", "VH"],
                        geotransform=(x - 32 * step, step, 0.0, y + 32 * step, 0.0, -step))  # fmt: skip
    ds = gdal.Open(path)
    sx, sy, _ = raster_pixel_size_m(ds)
    assert sx == pytest.approx(5.0, rel=1e-3) and sy == pytest.approx(5.0, rel=1e-3)
    plan, reason = resampling_plan(ds, envelope_model.metadata)
    assert plan.method == "average" and plan.pixel_size_m == 10.0
    assert plan.resolution == pytest.approx(10.0 / k, rel=1e-3)  # in CRS units
    assert "(5 x 5 m) is finer than" in reason
    assert pixel_area_km2(ds) == pytest.approx(25e-6, rel=2e-3)
    assert pixel_area_m2(Grid.of(read_info(ds))) == pytest.approx(25.0, rel=2e-3)
    ds = None
    # class polygons: a 10 x 20 px block is 50 m x 100 m on the ground
    from osgeo import ogr

    from sar_seg_plugin.core.vectors import polygonize_classes

    classes = np.zeros((64, 64), np.uint8)
    classes[10:20, 5:25] = 1
    cls = write_raster(tmp_path / "classes.tif", classes, epsg=3857, nodata=255,
                       geotransform=(x - 32 * step, step, 0.0, y + 32 * step, 0.0, -step))  # fmt: skip
    polygonize_classes(cls, str(tmp_path / "classes.gpkg"), {0: "a", 1: "b"})
    layer_ds = ogr.Open(str(tmp_path / "classes.gpkg"))
    areas = {f.GetField("name"): f.GetField("area_km2") for f in layer_ds.GetLayer()}
    layer_ds = None
    assert areas["b"] == pytest.approx(5000e-6, rel=2e-3)


@pytest.mark.parametrize("as_db", [False, True])
def test_gamma0_is_brought_to_sigma0_on_the_resampled_path_too(model, work, tmp_path, as_db):
    """The 20 m sample warped to the model's 10 m: the warped copy is read with the raster's gamma0 conversion."""
    sigma0 = read_raster(work["coarse"], dtype=np.float64)
    gamma0 = sigma0 / np.cos(np.radians(35.0))
    if as_db:
        gamma0 = np.where(gamma0 > 0, 10 * np.log10(np.maximum(gamma0, 1e-30)), -9999.0)
    ref = gdal.Open(work["coarse"])
    common = {"geotransform": ref.GetGeoTransform(), "nodata": -9999.0 if as_db else 0.0,
              "units": ["dB", "dB"] if as_db else ["linear", "linear"]}  # fmt: skip
    ref = None
    named = write_raster(tmp_path / "gamma0.tif", gamma0, descriptions=["Gamma0_VV", "Gamma0_VH"], **common)
    ds = gdal.Open(named, gdal.GA_Update)
    ds.SetMetadata({"INCIDENCE_ANGLE": "35"})
    ds = None
    unnamed = write_raster(tmp_path / "plain.tif", gamma0, descriptions=["VV", "VH"], **common)
    runs = {}
    for name, src in (("sigma0", work["coarse"]), ("gamma0", named), ("plain", unnamed)):
        logs: list[str] = []
        result = segment_raster(src, str(tmp_path / f"{name}_classes.tif"), model, log=logs.append)
        assert result["resampled"]
        runs[name] = (read_raster(tmp_path / f"{name}_classes.tif")[0], logs)
    assert agreement(runs["gamma0"][0], runs["sigma0"][0]) > 0.999
    assert any("The raster holds gamma0" in line and "-0.87 dB" in line for line in runs["gamma0"][1])
    assert agreement(runs["plain"][0], runs["sigma0"][0]) < 0.99  # read as sigma0, 0.87 dB too bright


def test_a_resampled_run_with_probabilities_prints_no_gdal_errors(model, work, tmp_path, capfd):
    """Was: a libtiff error per tile ("Bad value 4 for ExtraSamples") while the 5-band probabilities were read back
    across several tiles to mask the input's nodata (GDAL 3.6 decodes such reads on worker threads)."""
    linear = np.tile(read_raster(work["coarse"]), (1, 8, 8))[:, :600, :600]  # 600 px at 20 m: several output tiles
    src = write_raster(tmp_path / "big_20m.tif", linear, pixel=20.0, nodata=0.0, units=["linear", "linear"],
                       descriptions=["VV", "VH"])  # fmt: skip
    capfd.readouterr()
    result = segment_raster(src, str(tmp_path / "c.tif"), model, probabilities_path=str(tmp_path / "p.tif"))
    assert result["resampled"]
    err = capfd.readouterr().err
    assert "ExtraSamples" not in err and "ERROR" not in err, err[:500]
    probabilities = read_raster(tmp_path / "p.tif")
    valid = np.isfinite(probabilities).all(axis=0)
    assert probabilities.shape == (5, 600, 600) and valid.mean() > 0.9
    np.testing.assert_allclose(probabilities.sum(axis=0)[valid], 1.0, atol=1e-3)  # the values read back are right
