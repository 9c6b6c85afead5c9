"""Forecast layers in a QGIS project: their day as a fixed temporal range, and finding the runs again.

A forecast output raster carries, in its GDAL metadata, the run it belongs to, its step (0 = t0, 1..3 = the
horizons), its date and the class areas of every step (written by ``core.forecast``). Loading it with
:func:`mark_forecast_layer` turns that into the layer's temporal properties (the whole day) and a custom property,
which the forecast dock reads back with :func:`forecast_runs`. Only qgis.core is used (headless-safe).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from osgeo import gdal
from qgis.core import (
    QgsDateTimeRange,
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime

from ..core.forecast import FORECAST_KEY
from .styling import paletted_renderer

PROPERTY = "sarseg/forecast"
AREA_KEYS = ("SARSEG_AREAS_KM2", "SARSEG_AREAS_PIXELS")


def day_range(date: dt.date) -> QgsDateTimeRange:
    """The whole day: [date 00:00, next day 00:00), end excluded, so consecutive days do not overlap."""
    begin = QDateTime(QDate(date.year, date.month, date.day), QTime(0, 0))
    return QgsDateTimeRange(begin, begin.addDays(1), True, False)


def file_forecast_info(path: str) -> dict[str, Any] | None:
    """The forecast description stored in a raster's metadata (run, step, label, date, areas), or None."""
    ds = gdal.OpenEx(path, gdal.OF_RASTER) if path else None
    if ds is None:
        return None
    try:
        raw = ds.GetMetadataItem(FORECAST_KEY)
        if not raw:
            return None
        info = json.loads(raw)
        for key in AREA_KEYS:
            areas = ds.GetMetadataItem(key)
            if areas:
                info["areas"] = json.loads(areas)
                info["area_unit"] = "km²" if key.endswith("KM2") else "pixels"
        return info
    except (ValueError, RuntimeError):
        return None
    finally:
        ds = None


def mark_forecast_layer(layer: QgsMapLayer, info: dict[str, Any] | None = None) -> bool:
    """Give a forecast raster layer its day as a fixed temporal range and remember its forecast description.

    ``info`` defaults to what the layer's file says; returns False (layer untouched) for other layers.
    """
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return False
    info = info or file_forecast_info(layer.source().split("|")[0])
    if not info or "date" not in info:
        return False
    props = layer.temporalProperties()
    props.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
    props.setFixedTemporalRange(day_range(dt.date.fromisoformat(info["date"])))
    props.setIsActive(True)
    layer.setCustomProperty(PROPERTY, json.dumps(info))
    colours = info.get("colors")
    if isinstance(colours, dict) and layer.bandCount() == 1:
        paletted_renderer(layer, [(i, name, colour) for i, (name, colour) in enumerate(colours.items())])
    return True


def layer_forecast_info(layer: QgsMapLayer) -> dict[str, Any] | None:
    """The forecast description of a marked layer, else None."""
    raw = layer.customProperty(PROPERTY) if layer is not None else None
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) and "date" in info and "step" in info else None


@dataclass
class ForecastStepLayer:
    step: int
    label: str
    date: dt.date
    layer_id: str
    changed_confident: float | None = None  # share of the area changing class from t0 with high confidence


@dataclass
class ForecastRun:
    """A group of the layer tree holding the layers of one forecast, t0 first."""

    name: str
    steps: list[ForecastStepLayer] = field(default_factory=list)
    areas: dict[str, dict[str, float]] = field(default_factory=dict)
    area_unit: str = "km²"
    colours: dict[str, str] = field(default_factory=dict)
    method: str = "model"
    chosen_by: str = ""  # "hindcast" when the method was chosen on the hindcast
    hindcast: dict[str, Any] | None = None
    high_confidence: float = 0.8

    @property
    def dates(self) -> list[dt.date]:
        return [s.date for s in self.steps]


def forecast_runs(project: QgsProject) -> list[ForecastRun]:
    """Every layer-tree group holding marked forecast layers, in layer-tree order; steps sorted, one per step."""
    runs: list[ForecastRun] = []

    def visit(group: QgsLayerTreeGroup) -> None:
        run = ForecastRun(group.name())
        seen = set()
        for child in group.children():
            if isinstance(child, QgsLayerTreeGroup):
                visit(child)
            elif isinstance(child, QgsLayerTreeLayer):
                layer = child.layer()
                info = layer_forecast_info(layer)
                if info is None or info["step"] in seen:
                    continue
                seen.add(info["step"])
                run.steps.append(
                    ForecastStepLayer(
                        int(info["step"]),
                        info.get("label", ""),
                        dt.date.fromisoformat(info["date"]),
                        layer.id(),
                        info.get("changed_confident"),
                    )
                )
                run.method = str(info.get("method", run.method))
                run.chosen_by = str(info.get("method_chosen_by") or run.chosen_by)
                run.high_confidence = float(info.get("high_confidence", run.high_confidence))
                if isinstance(info.get("hindcast"), dict) and run.hindcast is None:
                    run.hindcast = info["hindcast"]
                if isinstance(info.get("colors"), dict) and not run.colours:
                    run.colours = info["colors"]
                if info.get("areas") and not run.areas:
                    run.areas = info["areas"]
                    run.area_unit = info.get("area_unit", "km²")
        if run.steps and group.parent() is not None:
            run.steps.sort(key=lambda s: s.step)
            runs.append(run)

    visit(project.layerTreeRoot())
    return runs


def hindcast_text(run: ForecastRun) -> str:
    """One line on how far to trust a forecast: the model's hindcast skill against persistence on this area."""
    summary = run.hindcast
    if not summary or not summary.get("rows"):
        return "No hindcast: give the forecast at least one more date than it takes to score it on this area."
    rows = [r for r in summary["rows"] if r.get("method") == "model" and r.get("pixels")]
    if not rows:
        return "No hindcast score on this area (no valid pixels in common)."
    days = len(summary.get("observed", []))
    parts, losing = [], []
    for r in sorted(rows, key=lambda r: r["horizon"]):
        skill = r.get("skill")
        parts.append(f"{skill:+.2f} at t+{r['horizon']}" if skill is not None else f"worse at t+{r['horizon']}")
        if skill is None or not skill > 0:
            losing.append(f"t+{r['horizon']}")
    text = f"On this area, over the last {days} day(s): model {', '.join(parts)} vs persistence"
    if losing:
        text += f" (not better than persistence at {', '.join(losing)})"
    if run.method != "model":
        text += f"; maps from the {run.method} baseline"
        if run.chosen_by == "hindcast":
            text += ", chosen as it did clearly better than the model here"
    elif run.chosen_by == "hindcast":
        text += "; the model's maps, as no baseline did clearly better here"
    return text
