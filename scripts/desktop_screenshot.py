"""Screenshots of SAR Seg in the real QGIS desktop (run under Xvfb): the speckle filter dialog (or, with
SARSEG_ALGORITHM, another algorithm's dialog, its parameters from SARSEG_PARAMS (JSON) or INPUT=SARSEG_INPUT; with
SARSEG_RUN=1 too, after running it, its log), or
(with SARSEG_PROJECT set, e.g. demo_output/demo.qgz) the forecast dock over the demo project at t+2, or (with
SARSEG_PROJECT and SARSEG_CLUSTERS=1) the demo project's communes styled by cluster.

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QGIS_PLUGINPATH=$PWD PYTHONPATH=$PWD/.venv/lib/python3.11/site-packages \
        SARSEG_SHOT=docs/speckle_filter_dialog.png SARSEG_INPUT=demo_output/data/sar_20260301.tif \
        qgis --nologo --noversioncheck --profiles-path /tmp/sarseg-profile --code scripts/desktop_screenshot.py

The profile must have the plugin enabled ([PythonPlugins] sar_seg_plugin=true in QGIS/QGIS3.ini).
"""

import json
import os

import processing
from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

state = {}


def open_dialog() -> None:
    provider = QgsApplication.processingRegistry().providerById("sarseg")
    print("sarseg provider:", sorted(a.id() for a in provider.algorithms()) if provider else None, flush=True)
    iface.mainWindow().setGeometry(0, 0, 1600, 1000)
    algorithm = os.environ.get("SARSEG_ALGORITHM", "sarseg:speckle_filter")
    params = json.loads(os.environ.get("SARSEG_PARAMS") or "{}") or {"INPUT": os.environ.get("SARSEG_INPUT", "")}
    dialog = processing.createAlgorithmDialog(algorithm, params)
    dialog.setGeometry(200, 80, 900, 820)
    dialog.show()
    state["dialog"] = dialog
    if os.environ.get("SARSEG_RUN"):
        dialog.algorithmFinished.connect(lambda ok, results: finished(ok, results))
        QTimer.singleShot(2000, dialog.runAlgorithm)
    else:
        QTimer.singleShot(2500, take_shot)


def finished(ok: bool, results: dict) -> None:
    print("run finished:", ok, results, flush=True)
    print("loaded layers:", sorted(layer.source() for layer in QgsProject.instance().mapLayers().values()), flush=True)
    QTimer.singleShot(1500, take_shot)


def take_shot() -> None:
    target = os.environ.get("SARSEG_SHOT", "speckle_filter_dialog.png")
    state["dialog"].grab().save(target)
    print("saved", target, flush=True)
    state["dialog"].close()
    QgsProject.instance().removeAllMapLayers()
    iface.actionExit().trigger()


def open_dock() -> None:
    from qgis.utils import plugins

    iface.mainWindow().setGeometry(0, 0, 1600, 1000)
    QgsProject.instance().read(os.environ["SARSEG_PROJECT"])
    plugin = plugins.get("sar_seg_plugin")
    print("plugin loaded:", plugin is not None, flush=True)
    plugin.action.setChecked(True)
    dock = plugin.dock
    print("forecast runs:", [dock.run_box.itemText(i) for i in range(dock.run_box.count())], flush=True)
    iface.mapCanvas().zoomToFullExtent()
    dock.slider.setValue(2)
    state["dock"] = dock
    QTimer.singleShot(3000, take_window_shot)


def take_window_shot() -> None:
    target = os.environ.get("SARSEG_SHOT", "forecast_dock.png")
    nav = state["dock"].controller()
    print("controller frame:", nav.currentFrameNumber(), nav.dateTimeRangeForFrameNumber(nav.currentFrameNumber()))
    iface.mainWindow().grab().save(target)
    print("saved", target, flush=True)
    QgsProject.instance().clear()
    iface.actionExit().trigger()


def open_clusters() -> None:
    iface.mainWindow().setGeometry(0, 0, 1600, 1000)
    project = QgsProject.instance()
    project.read(os.environ["SARSEG_PROJECT"])
    for node in project.layerTreeRoot().children():  # only the clustered communes over the SAR scene
        node.setItemVisibilityChecked(node.name() in ("communes by cluster", "SAR VV/VH (sample scene)"))
    communes = project.mapLayersByName("communes by cluster")[0]
    iface.setActiveLayer(communes)
    iface.mapCanvas().zoomToFullExtent()
    QTimer.singleShot(1000, lambda: (iface.mapCanvas().setExtent(communes.extent()), iface.mapCanvas().refresh()))
    QTimer.singleShot(4000, take_main_window_shot)


def take_main_window_shot() -> None:
    target = os.environ.get("SARSEG_SHOT", "communes_by_cluster.png")
    iface.mainWindow().grab().save(target)
    print("saved", target, flush=True)
    QgsProject.instance().clear()
    iface.actionExit().trigger()


if os.environ.get("SARSEG_CLUSTERS"):
    QTimer.singleShot(3000, open_clusters)
else:
    QTimer.singleShot(3000, open_dock if os.environ.get("SARSEG_PROJECT") else open_dialog)
