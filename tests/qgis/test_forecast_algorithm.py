"""sarseg:forecast through Processing: temporal layers in a group, dates, areas table, bad sequences, qgis_process."""

from __future__ import annotations

import datetime as dt
import gc
import json
import shutil

import numpy as np
import pytest
from qgisproc import qgis_process_env, run_algorithm
from rasters import read_raster, write_raster

from training import synthetic

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def collect_garbage():
    yield
    gc.collect()


def label_files(sample_dir) -> list[str]:  # noqa: ANN001
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    return [str(sample_dir / entry["labels"]) for entry in manifest["files"]]


def test_forecast_loads_dated_layers_in_one_group(sarseg, sample_dir, sample_series, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayerTemporalProperties, QgsVectorLayer

    from sar_seg_plugin.processing.forecast_layers import forecast_runs

    project = QgsProject.instance()
    project.clear()
    files = label_files(sample_dir)
    result = sarseg.runAndLoadResults(
        "sarseg:forecast",
        {
            "INPUTS": files[::-1],  # reversed: sorted by the dates in the file names
            "DEVICE": 1,
            "PREFIX": "flood",
            "OUTPUT_FOLDER": str(tmp_path),
            "OUTPUT_CHANGE": str(tmp_path / "change.tif"),
            "OUTPUT_AREAS": "TEMPORARY_OUTPUT",
        },
    )
    t0 = sample_series.dates[-1].date() if hasattr(sample_series.dates[-1], "date") else sample_series.dates[-1]
    days = [t0 + dt.timedelta(days=k) for k in range(4)]
    assert result["DATES_OUT"].split(",") == [d.isoformat() for d in days]
    assert result["GROUP"] == f"flood {t0.isoformat()}"

    group = project.layerTreeRoot().findGroup(result["GROUP"])
    assert group is not None, "the maps are loaded in a group named after the run"
    layers = [node.layer() for node in group.findLayers()]
    assert len(layers) == 4
    by_day = {}
    for layer in layers:
        props = layer.temporalProperties()
        assert props.isActive() and props.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange
        span = props.fixedTemporalRange()
        begin, end = span.begin().toPyDateTime(), span.end().toPyDateTime()
        assert begin.time() == dt.time(0) and end - begin == dt.timedelta(days=1) and not span.includeEnd()
        by_day[begin.date()] = layer
        classes = layer.renderer().classes()  # the five classes only, not the 256 entries of the GeoTIFF palette
        assert [c.label for c in classes] == list(synthetic.CLASS_NAMES)
        assert [c.color.name() for c in classes] == [c.lower() for c in synthetic.CLASS_COLORS]
    assert sorted(by_day) == days, "each map covers exactly its own day"
    # t0 is the last input date's map
    t0_layer = by_day[days[0]]
    assert (read_raster(t0_layer.source())[0] == sample_series.labels[-1]).all()

    runs = forecast_runs(project)
    assert [r.name for r in runs] == [result["GROUP"]] and [s.step for s in runs[0].steps] == [0, 1, 2, 3]
    assert runs[0].dates == days

    # the areas table: one row per class and step, area = pixels x 1e-4 km² (10 m pixels)
    table = result["OUTPUT_AREAS"]
    if not isinstance(table, QgsVectorLayer):
        table = project.mapLayer(table) or QgsVectorLayer(table, "areas", "ogr")
    rows = [f.attributes() for f in table.getFeatures()]
    assert len(rows) == 4 * 5
    names = [f.name() for f in table.fields()]
    for step, path in enumerate(result["OUTPUT_LAYERS"]):
        classes = read_raster(path)[0]
        counts = np.bincount(classes[classes != 255], minlength=5)
        got = {r[names.index("class")]: r for r in rows if r[names.index("step")] == step}
        for c, name in enumerate(synthetic.CLASS_NAMES):
            assert got[name][names.index("pixels")] == counts[c]
            assert got[name][names.index("area_km2")] == pytest.approx(counts[c] * 1e-4)
    project.clear()


def test_dates_from_the_parameter_and_from_temporal_properties(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsRasterLayer

    from sar_seg_plugin.processing.forecast_layers import day_range

    files = label_files(sample_dir)
    result = sarseg.run(
        "sarseg:forecast",
        {
            "INPUTS": files,
            "DATES": "2025-06-01, 2025-06-02, 2025-06-03, 2025-06-04",
            "OUTPUT_FOLDER": str(tmp_path / "a"),
        },
    )
    assert result["DATES_OUT"].startswith("2025-06-04,2025-06-05")
    # names without dates: the layers' temporal properties give them
    layers = []
    for k, path in enumerate(files):
        copy = tmp_path / f"map_{'abcd'[k]}.tif"
        shutil.copy(path, copy)
        layer = QgsRasterLayer(str(copy), f"map {k}")
        props = layer.temporalProperties()
        props.setIsActive(True)
        props.setFixedTemporalRange(day_range(dt.date(2024, 2, 27) + dt.timedelta(days=k)))
        layers.append(layer)
    result = sarseg.run("sarseg:forecast", {"INPUTS": layers, "OUTPUT_FOLDER": str(tmp_path / "b")})
    assert result["DATES_OUT"] == "2024-03-01,2024-03-02,2024-03-03,2024-03-04"  # through the leap day


@pytest.mark.parametrize(
    ("dates", "match"),
    [
        ("2025-06-01, 2025-06-02, 2025-06-02, 2025-06-03", "same date 2025-06-02"),
        ("2025-06-01, 2025-06-02", "2 date\\(s\\) given for 4 rasters"),
    ],
)
def test_bad_dates_are_refused(sarseg, sample_dir, tmp_path, dates, match):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=match):
        sarseg.run(
            "sarseg:forecast", {"INPUTS": label_files(sample_dir), "DATES": dates, "OUTPUT_FOLDER": str(tmp_path)}
        )
    assert list(tmp_path.iterdir()) == []


def test_too_short_a_sequence_is_refused(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="needs a sequence of 4 daily rasters; 3 given"):
        sarseg.run("sarseg:forecast", {"INPUTS": label_files(sample_dir)[:3], "OUTPUT_FOLDER": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


def test_sar_images_are_refused_by_a_class_forecaster(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProcessingException

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    sar = [str(sample_dir / e["sar"]) for e in manifest["files"]]
    with pytest.raises(QgsProcessingException, match="takes class maps .* or class probabilities"):
        sarseg.run("sarseg:forecast", {"INPUTS": sar, "OUTPUT_FOLDER": str(tmp_path)})


def test_qgis_process_json_run_forecast(sample_dir, sample_series, tmp_path):
    env = qgis_process_env(tmp_path / "profile")
    out = tmp_path / "out"
    out.mkdir()
    result = run_algorithm("sarseg:forecast", {"INPUTS": label_files(sample_dir), "OUTPUT_FOLDER": out}, env)
    paths = result["results"]["OUTPUT_LAYERS"]
    assert len(paths) == 4 and all(p.startswith(str(out)) for p in paths)
    assert (read_raster(paths[0])[0] == sample_series.labels[-1]).all()
    horizon = read_raster(paths[1])[0]
    valid = sample_series.labels[-1] != 255
    # one day ahead the map mostly persists: the forecaster keeps most pixels and marks nodata alike
    assert (horizon[valid] == sample_series.labels[-1][valid]).mean() > 0.8 and (horizon[~valid] == 255).all()


def test_hindcast_table_baseline_method_and_confidence(sarseg, tmp_path):
    """Eight daily maps: the hindcast replays the forecasts from days 4, 5 and 6 (0-based) and scores them against
    days 5..7; persistence's accuracy is recomputed here from the true maps. METHOD persistence writes t0 again."""
    from qgis.core import QgsVectorLayer

    series = synthetic.generate_series(size=64, days=8, seed=20013, n_communes=4)
    files = []
    for t, day in enumerate(series.labels):
        files.append(write_raster(tmp_path / f"labels_{series.dates[t]:%Y%m%d}.tif", day, nodata=255))
    result = sarseg.run(
        "sarseg:forecast",
        {
            "INPUTS": files,
            "METHOD": 1,  # persistence
            "OUTPUT_FOLDER": str(tmp_path / "out"),
            "OUTPUT_HINDCAST": "TEMPORARY_OUTPUT",
        },
    )
    table = result["OUTPUT_HINDCAST"]
    if not isinstance(table, QgsVectorLayer):
        table = QgsVectorLayer(table, "hindcast", "ogr")
    names = [f.name() for f in table.fields()]
    rows = {(f["method"], f["horizon"]): f for f in table.getFeatures()}
    assert sorted(rows) == sorted((m, h) for m in ("model", "persistence", "trend") for h in (1, 2, 3))
    valid = series.labels[0] != 255
    pairs = {1: [(4, 5), (5, 6), (6, 7)], 2: [(4, 6), (5, 7)], 3: [(4, 7)]}
    for h, ks in pairs.items():
        right = sum(int((series.labels[o][valid] == series.labels[t][valid]).sum()) for o, t in ks)
        row = rows["persistence", h]
        assert row["pairs"] == len(ks) and row["pixels"] == len(ks) * valid.sum()
        assert row["accuracy"] == pytest.approx(right / (len(ks) * valid.sum()))
        assert row["skill"] == pytest.approx(0.0)
        model = rows["model", h]
        assert model["skill"] == pytest.approx(1 - (1 - model["accuracy"]) / (1 - row["accuracy"]))
    assert "origins" in names and table.getFeature(1)["observed"].split(",")[0] == series.dates[5].isoformat()
    maps = [read_raster(p)[0] for p in result["OUTPUT_LAYERS"]]
    assert all((m == maps[0]).all() for m in maps[1:]), "persistence repeats t0"
    for path in result["OUTPUT_LAYERS"][1:]:
        conf = read_raster(path[: -len(".tif")] + "_confidence.tif", dtype=np.float64)[0]
        assert (conf[valid] == 1.0).all() and np.isnan(conf[~valid]).all()  # a one-hot map repeated: certain


def test_best_on_the_hindcast_through_processing(sarseg, tmp_path, feedback):
    """METHOD 3 ('best on the hindcast'): the log gives each method's mean skill and the one written; the maps
    carry it (METHOD, METHOD_CHOSEN_BY) and equal a run with that method."""
    from osgeo import gdal

    series = synthetic.generate_series(size=64, days=8, seed=20013, n_communes=4)
    files = [
        write_raster(tmp_path / f"labels_{series.dates[t]:%Y%m%d}.tif", day, nodata=255)
        for t, day in enumerate(series.labels)
    ]
    best = sarseg.run(
        "sarseg:forecast", {"INPUTS": files, "METHOD": 3, "OUTPUT_FOLDER": str(tmp_path / "best")}, feedback=feedback
    )
    note = next(line for line in feedback.lines if line.startswith("Method 'best on the hindcast'"))
    chosen = gdal.Open(best["OUTPUT_LAYERS"][1]).GetMetadataItem("METHOD")
    assert gdal.Open(best["OUTPUT_LAYERS"][1]).GetMetadataItem("METHOD_CHOSEN_BY") == "hindcast"
    written = "the model's forecast" if chosen == "model" else f"the {chosen} forecast"
    assert f"Written: {written}" in note, note
    index = ("model", "persistence", "trend").index(chosen)
    alone = sarseg.run("sarseg:forecast", {"INPUTS": files, "METHOD": index, "OUTPUT_FOLDER": str(tmp_path / "alone")})
    for a, b in zip(best["OUTPUT_LAYERS"], alone["OUTPUT_LAYERS"]):
        assert np.array_equal(read_raster(a), read_raster(b))


def test_backscatter_forecaster_end_to_end(sarseg, tmp_path):
    """VV/VH in linear power (unit "linear") for 8 days of a scene from the evaluation-only generator (its own
    layout and radiometry; land cover unchanged, speckle drawn anew each day) -> dB forecasts of the next 3 days by
    the bundled backscatter forecaster; t+1 is scored here against day 8 and beats persistence in RMSE; the
    hindcast reports RMSE for the model and both baselines."""
    from qgis.core import QgsVectorLayer

    from training.evalgen import backscatter_series

    sigma0, valid = backscatter_series(20020, 64, 9, 4.4)
    assert not valid.all()  # a swath edge: nodata stays nodata
    day0 = dt.date(2026, 5, 1)
    sar = [
        write_raster(tmp_path / f"sar_{day0 + dt.timedelta(days=t):%Y%m%d}.tif", day, nodata=0.0,
                     units=["linear", "linear"], descriptions=["VV", "VH"])
        for t, day in enumerate(sigma0)
    ]  # fmt: skip
    result = sarseg.run(
        "sarseg:forecast",
        {
            "INPUTS": sar[:8],
            "MODEL": 1,  # sarseg_convlstm_db
            "OUTPUT_FOLDER": str(tmp_path / "out"),
            "OUTPUT_HINDCAST": "TEMPORARY_OUTPUT",
        },
    )
    t1 = read_raster(result["OUTPUT_LAYERS"][1], dtype=np.float64)
    t0 = read_raster(result["OUTPUT_LAYERS"][0], dtype=np.float64)
    truth = 10 * np.log10(np.maximum(sigma0[8].astype(np.float64), 1e-12))
    last = 10 * np.log10(np.maximum(sigma0[7].astype(np.float64), 1e-12))
    np.testing.assert_allclose(t0[:, valid], last[:, valid], atol=1e-3)  # t0: the last input, in dB
    assert np.isnan(t1[:, ~valid]).all()
    model = np.sqrt(np.mean((t1[:, valid] - truth[:, valid]) ** 2))
    persistence = np.sqrt(np.mean((last[:, valid] - truth[:, valid]) ** 2))
    assert model < 0.9 * persistence, f"RMSE {model:.2f} dB vs persistence {persistence:.2f} dB"
    table = result["OUTPUT_HINDCAST"]
    if not isinstance(table, QgsVectorLayer):
        table = QgsVectorLayer(table, "hindcast", "ogr")
    rows = {(f["method"], f["horizon"]): f for f in table.getFeatures()}
    assert len(rows) == 9 and all(f["rmse"] > 0 for f in rows.values())
    assert rows["model", 1]["skill"] == pytest.approx(1 - rows["model", 1]["rmse"] / rows["persistence", 1]["rmse"])


def test_backscatter_forecast_reads_undeclared_zero_fill_as_no_data(sarseg, tmp_path):
    """The same swath edge, 0 with no nodata declared: the forecasts equal those of the declared series (before,
    the fill was forecast as backscatter at the -35 dB floor)."""
    from training.evalgen import backscatter_series

    sigma0, valid = backscatter_series(20020, 64, 9, 4.4)
    assert (sigma0[:, :, ~valid] == 0).all()
    day0 = dt.date(2026, 5, 1)
    outputs = {}
    for name, nodata in (("declared", 0.0), ("undeclared", None)):
        folder = tmp_path / name
        folder.mkdir()
        sar = [
            write_raster(folder / f"sar_{day0 + dt.timedelta(days=t):%Y%m%d}.tif", day, nodata=nodata,
                         units=["linear", "linear"], descriptions=["VV", "VH"])
            for t, day in enumerate(sigma0[:8])
        ]  # fmt: skip
        result = sarseg.run("sarseg:forecast", {"INPUTS": sar, "MODEL": 1, "OUTPUT_FOLDER": str(folder / "out")})
        outputs[name] = [read_raster(p, dtype=np.float64) for p in result["OUTPUT_LAYERS"]]
    for a, b in zip(outputs["declared"], outputs["undeclared"]):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(outputs["undeclared"][1][:, ~valid]).all()


def test_the_dock_line_says_when_the_maps_come_from_the_method_chosen_on_the_hindcast():
    from sar_seg_plugin.processing.forecast_layers import ForecastRun, hindcast_text

    hindcast = {
        "observed": ["2026-03-06", "2026-03-07", "2026-03-08"],
        "rows": [{"method": "model", "horizon": h, "pixels": 10, "skill": s} for h, s in ((1, -0.2), (2, 0.1))],
    }
    chosen = ForecastRun("run", method="persistence", chosen_by="hindcast", hindcast=hindcast)
    assert hindcast_text(chosen) == (
        "On this area, over the last 3 day(s): model -0.20 at t+1, +0.10 at t+2 vs persistence (not better than "
        "persistence at t+1); maps from the persistence baseline, chosen as it did clearly better than the model here"
    )
    asked = ForecastRun("run", method="persistence", hindcast=hindcast)
    assert hindcast_text(asked).endswith("maps from the persistence baseline")
    kept = ForecastRun("run", chosen_by="hindcast", hindcast=hindcast)
    assert hindcast_text(kept).endswith("(not better than persistence at t+1); the model's maps, as no baseline did "
                                        "clearly better here")  # fmt: skip
