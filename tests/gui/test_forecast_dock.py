"""The SAR Seg forecast dock in a QGIS with its GUI (Xvfb): slider <-> temporal controller, layers removed."""

from __future__ import annotations

import datetime as dt
import gc
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def collect_garbage():
    yield
    gc.collect()


def settle() -> None:
    from qgis.core import QgsApplication

    for _ in range(5):
        QgsApplication.processEvents()


@pytest.fixture
def forecast_project(sarseg, sample_dir, tmp_path):
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    files = [str(sample_dir / e["labels"]) for e in manifest["files"]]
    result = sarseg.runAndLoadResults("sarseg:forecast", {"INPUTS": files, "DEVICE": 1, "OUTPUT_FOLDER": str(tmp_path)})
    yield project, result
    project.clear()


def test_slider_and_temporal_controller_move_each_other(qgis_iface, forecast_project, tmp_path):
    from sar_seg_plugin.ui.forecast_dock import ForecastDock

    project, result = forecast_project
    days = [dt.date.fromisoformat(d) for d in result["DATES_OUT"].split(",")]
    dock = ForecastDock(qgis_iface)
    dock.show()
    settle()
    assert [dock.run_box.itemText(i) for i in range(dock.run_box.count())] == [result["GROUP"]]
    assert dock.slider.maximum() == 3
    nav = dock.controller()

    dock.slider.setValue(2)  # slider -> controller
    assert nav.currentFrameNumber() == 2
    span = nav.dateTimeRangeForFrameNumber(2)
    assert span.begin().date().toPyDate() == days[2] and span.end().date().toPyDate() == days[3]
    assert qgis_iface.mapCanvas().temporalRange().begin().date().toPyDate() == days[2]
    assert "t+2" in dock.date_label.text()
    assert dock.chart.rows and abs(sum(v for _, v, _ in dock.chart.rows) - 160 * 160 * 1e-4) < 0.3  # km², nodata aside

    nav.setCurrentFrameNumber(3)  # controller -> slider
    settle()
    assert dock.slider.value() == 3 and "t+3" in dock.date_label.text()
    nav.setCurrentFrameNumber(0)
    settle()
    assert dock.slider.value() == 0

    dock.play_button.setChecked(True)  # play advances one day per tick, wrapping at the end
    dock._advance()
    assert dock.slider.value() == 1 and nav.currentFrameNumber() == 1
    dock.play_button.setChecked(False)
    assert not dock.timer.isActive()

    dock.resize(380, 460)
    settle()
    shot = dock.grab().toImage()
    path = tmp_path / "forecast_dock.png"
    assert shot.save(str(path))
    pixels = np.array([shot.pixel(x, y) for x in range(0, shot.width(), 7) for y in range(0, shot.height(), 7)])
    assert len(np.unique(pixels)) > 5, "the dock draws its slider, labels and bars"
    dock.disconnect_project()
    dock.deleteLater()
    settle()


def test_dock_survives_layers_removed_and_project_closed(qgis_iface, forecast_project):
    from sar_seg_plugin.ui.forecast_dock import ForecastDock

    project, result = forecast_project
    dock = ForecastDock(qgis_iface)
    settle()
    run = dock.current_run()
    assert run is not None and len(run.steps) == 4
    project.removeMapLayer(run.steps[1].layer_id)  # t+1 gone: the run keeps its other days
    settle()
    assert [s.step for s in dock.current_run().steps] == [0, 2, 3] and dock.slider.maximum() == 2
    dock.slider.setValue(2)
    assert "t+3" in dock.date_label.text()
    for step in dock.current_run().steps:
        project.removeMapLayer(step.layer_id)
    settle()
    assert dock.run_box.count() == 0 and dock.current_run() is None and not dock.slider.isEnabled()
    project.clear()  # closing the project: no exception, still empty
    settle()
    assert dock.run_box.count() == 0
    dock.disconnect_project()
    dock.deleteLater()
    settle()


def test_plugin_menu_action_opens_the_dock(qgis_iface):
    from sar_seg_plugin.plugin import SarSegPlugin

    plugin = SarSegPlugin(qgis_iface)
    plugin.initGui()
    try:
        plugin.action.setChecked(True)
        assert plugin.dock is not None and plugin.dock.windowTitle() == "SAR Seg forecast"
    finally:
        plugin.unload()
    assert plugin.dock is None


def test_dock_shows_the_hindcast_and_the_confident_change(qgis_iface, sarseg, tmp_path):
    from qgis.core import QgsProject, QgsVectorLayer
    from rasters import read_raster, write_raster

    from sar_seg_plugin.ui.forecast_dock import ForecastDock
    from training import synthetic

    project = QgsProject.instance()
    project.clear()
    series = synthetic.generate_series(size=64, days=8, seed=20013, n_communes=4)
    files = [
        write_raster(tmp_path / f"labels_{series.dates[t]:%Y%m%d}.tif", day, nodata=255)
        for t, day in enumerate(series.labels)
    ]
    result = sarseg.runAndLoadResults(
        "sarseg:forecast",
        {"INPUTS": files, "OUTPUT_FOLDER": str(tmp_path / "out"), "OUTPUT_HINDCAST": str(tmp_path / "hc.gpkg")},
    )
    table = QgsVectorLayer(result["OUTPUT_HINDCAST"], "hindcast", "ogr")
    skills = {f["horizon"]: f["skill"] for f in table.getFeatures() if f["method"] == "model"}
    dock = ForecastDock(qgis_iface)
    settle()
    text = dock.hindcast_label.text()
    assert text.startswith("On this area, over the last 3 day(s): model ")
    for h, value in skills.items():
        assert f"{value:+.2f} at t+{h}" in text
    assert ("not better than persistence" in text) == any(v <= 0 for v in skills.values())
    dock.slider.setValue(3)
    t0, t3 = (read_raster(p)[0] for p in (result["OUTPUT_LAYERS"][0], result["OUTPUT_LAYERS"][3]))
    conf = read_raster(result["OUTPUT_LAYERS"][3][: -len(".tif")] + "_confidence.tif", dtype=np.float64)[0]
    valid = t0 != 255
    share = ((t3 != t0) & valid & (conf >= 0.8)).sum() / valid.sum()
    assert dock.change_label.text().startswith(f"{share:.1%} of the area changes class from t0")
    dock.slider.setValue(0)
    assert dock.change_label.text() == ""
    dock.disconnect_project()
    dock.deleteLater()
    settle()
    project.clear()


def test_a_shipped_workflow_opens_as_an_unsaved_copy_in_the_model_designer(qgis_iface, monkeypatch):
    """The toolbox's right-click action the plugin adds: offered on SAR Seg's shipped models only, it opens the
    model with its four steps in the Model Designer, without the plugin's file as its source."""
    from processing.gui.ProviderActions import ProviderContextMenuActions
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QSize

    # pytest-qgis's stand-in iface lacks the default of QgisInterface.iconSize(dockedToolbar=False) that the
    # Model Designer calls.
    monkeypatch.setattr(qgis_iface, "iconSize", lambda dockedToolbar=False: QSize(24, 24))

    from sar_seg_plugin.plugin import SarSegPlugin
    from sar_seg_plugin.ui.edit_workflow import EditWorkflowCopyAction

    plugin = SarSegPlugin(qgis_iface)
    plugin.initGui()
    try:
        action = next(a for a in ProviderContextMenuActions.actions if isinstance(a, EditWorkflowCopyAction))
        registry = QgsApplication.processingRegistry()
        workflow = registry.providerById("sarseg").algorithm("Sentinel-1 product to land cover")
        action.setData(registry.algorithmById("sarseg:segment"), None)
        assert not action.isEnabled()
        action.setData(workflow, None)
        assert action.isEnabled()
        action.execute()
        settle()
        model = action.dialog.model()
        assert model.name() == workflow.name() and model.sourceFilePath() == ""
        assert sorted(model.childAlgorithms()) == ["import", "segment", "speckle", "to_db"]
        model.removeChildAlgorithm("segment")  # an edit in the designer leaves the shipped model as it was
        assert "segment" in workflow.childAlgorithms()
        action.dialog.hide()
        action.dialog.deleteLater()  # not close(): that would ask whether to save the changed copy
        settle()
    finally:
        plugin.unload()
    assert not any(isinstance(a, EditWorkflowCopyAction) for a in ProviderContextMenuActions.actions)
