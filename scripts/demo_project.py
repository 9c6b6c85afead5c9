"""Write the demo's QGIS project: the sample scene, its segmentation and the forecast, ready for the slider.

    .venv/bin/python scripts/demo_project.py --out demo_output

Loads the forecast maps of ``demo_output/forecast`` in one group with their days as fixed temporal ranges (as
sarseg:forecast does when run from the toolbox), the segmentation outputs and the first SAR scene, sets the
project's time range to the forecast days, and saves ``demo_output/demo.qgz`` (paths relative to it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="the demo's output folder")
    args = parser.parse_args()
    out = Path(args.out).resolve()

    from qgis.core import QgsApplication, QgsDateTimeRange, QgsProject, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    try:
        from sar_seg_plugin.core.forecast import change_classes
        from sar_seg_plugin.models.registry import load_forecaster
        from sar_seg_plugin.processing.forecast_layers import (
            day_range,
            file_forecast_info,
            forecast_runs,
            mark_forecast_layer,
        )
        from sar_seg_plugin.processing.styling import cluster_renderer, paletted_renderer

        project = QgsProject.instance()
        project.clear()
        manifest = json.loads((out / "data" / "manifest.json").read_text())
        root = project.layerTreeRoot()
        maps = [p for p in (out / "forecast").glob("*_t*_*.tif") if file_forecast_info(str(p))]  # not companions
        forecasts = sorted(maps, key=lambda p: int(file_forecast_info(str(p))["step"]))
        if not forecasts:
            raise SystemExit(f"no forecast maps in {out / 'forecast'}: run make demo first")
        group = root.addGroup(file_forecast_info(str(forecasts[0]))["run"])
        for path in forecasts:
            info = file_forecast_info(str(path))
            layer = QgsRasterLayer(str(path), f"{info['label']} {info['date']}")
            mark_forecast_layer(layer, info)
            project.addMapLayer(layer, False)
            group.addLayer(layer)
        change = out / "forecast" / "change.tif"
        if change.exists():
            layer = QgsRasterLayer(str(change), "change t0 -> t+3")
            paletted_renderer(layer, change_classes(load_forecaster("sarseg_convlstm_classes", "cpu").metadata))
            project.addMapLayer(layer)
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
        for path, name in (
            (out / "segmentation" / "classes.tif", "segmentation (default model)"),
            (out / "data" / manifest["files"][0]["sar"], "SAR VV/VH (sample scene)"),
        ):
            layer = QgsRasterLayer(str(path), name)
            if path.name == "classes.tif":
                colours = file_forecast_info(str(forecasts[0]))["colors"]
                paletted_renderer(layer, [(i, n, c) for i, (n, c) in enumerate(colours.items())])
            project.addMapLayer(layer)
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
        clustered = out / "clustering" / "communes_clustered.gpkg"
        if clustered.exists():
            layer = QgsVectorLayer(str(clustered), "communes by cluster")
            k = max((f["cluster"] for f in layer.getFeatures() if f["cluster"]), default=0)
            cluster_renderer(layer, int(k))
            layer.setOpacity(0.55)
            project.addMapLayer(layer)
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
        runs = forecast_runs(project)
        days = runs[0].dates
        span = QgsDateTimeRange(day_range(days[0]).begin(), day_range(days[-1]).end(), True, False)
        project.timeSettings().setTemporalRange(span)
        target = out / "demo.qgz"
        if not project.write(str(target)):
            raise SystemExit(f"could not write {target}: {project.error()}")
        print(f"    QGIS project: {target} ({len(days)} days {days[0]} .. {days[-1]} on the temporal controller)")
        project.clear()
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
