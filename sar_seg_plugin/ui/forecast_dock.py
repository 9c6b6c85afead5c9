"""The "SAR Seg forecast" dock: step through t0..t+3 of a forecast with a slider tied to QGIS's temporal controller."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from qgis.core import Qgis, QgsDateTimeRange, QgsInterval, QgsProject, QgsTemporalNavigationObject
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QDate, QDateTime, QRectF, Qt, QTime, QTimer
from qgis.PyQt.QtGui import QColor, QPainter
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..models.metadata import LAND_COVER_COLOURS
from ..processing.forecast_layers import ForecastRun, forecast_runs, hindcast_text

PLAY_INTERVAL_MS = 1200


def _qdatetime(date: dt.date) -> QDateTime:
    return QDateTime(QDate(date.year, date.month, date.day), QTime(0, 0))


class AreaChart(QWidget):
    """Horizontal bars: the area of each class at the current step (longest bar = largest area of the run)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, float, QColor]] = []
        self.maximum = 1.0
        self.unit = "km²"
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_areas(self, areas: dict[str, float], maximum: float, unit: str, colours: dict[str, str]) -> None:
        self.rows = [
            (name, float(value), QColor(colours.get(name, LAND_COVER_COLOURS[i % len(LAND_COVER_COLOURS)])))
            for i, (name, value) in enumerate(areas.items())
        ]
        self.maximum, self.unit = max(maximum, 1e-12), unit
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        if not self.rows:
            painter.drawText(self.rect(), Qt.AlignCenter, self.tr("No class areas"))
            return
        metrics = painter.fontMetrics()
        label_w = max(metrics.horizontalAdvance(name) for name, _, _ in self.rows) + 8
        value_w = metrics.horizontalAdvance(f"00000.00 {self.unit}") + 8
        row_h = max(metrics.height() + 4, (self.height() - 4) / len(self.rows))
        bar_w = max(10, self.width() - label_w - value_w - 8)
        for k, (name, value, colour) in enumerate(self.rows):
            y = 2 + k * row_h
            painter.setPen(self.palette().windowText().color())
            painter.drawText(QRectF(0, y, label_w - 4, row_h), Qt.AlignRight | Qt.AlignVCenter, name)
            painter.fillRect(QRectF(label_w, y + 3, bar_w * value / self.maximum, row_h - 6), colour)
            text = f"{value:.2f} {self.unit}" if self.unit != "pixels" else f"{value:.0f} px"
            painter.drawText(QRectF(label_w + bar_w + 4, y, value_w, row_h), Qt.AlignLeft | Qt.AlignVCenter, text)
        painter.end()


class ForecastDock(QgsDockWidget):
    """Pick a forecast group of the project; a slider over its days drives (and follows) the temporal controller."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("SAR Seg forecast", parent)
        self.setObjectName("SarSegForecastDock")
        self.iface = iface
        self.project = QgsProject.instance()
        self.runs: list[ForecastRun] = []

        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.run_box = QComboBox(body)
        self.run_box.setToolTip(self.tr("Forecast results in this project (layer groups made by sarseg:forecast)"))
        layout.addWidget(self.run_box)
        row = QHBoxLayout()
        self.play_button = QToolButton(body)
        self.play_button.setCheckable(True)
        self.play_button.setText("▶")
        self.play_button.setToolTip(self.tr("Play / pause: step through the days"))
        row.addWidget(self.play_button)
        self.slider = QSlider(Qt.Horizontal, body)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setTickInterval(1)
        self.slider.setPageStep(1)
        row.addWidget(self.slider, 1)
        layout.addLayout(row)
        self.ticks = QHBoxLayout()
        layout.addLayout(self.ticks)
        self.date_label = QLabel(body)
        self.date_label.setAlignment(Qt.AlignCenter)
        layout.addWidget(self.date_label)
        self.hindcast_label = QLabel(body)
        self.hindcast_label.setWordWrap(True)
        self.hindcast_label.setToolTip(
            self.tr(
                "Hindcast: the forecast replayed from earlier dates of the input series and compared with what was "
                "observed; skill = 1 - error / error of persistence (tomorrow = today), above 0 = better"
            )
        )
        layout.addWidget(self.hindcast_label)
        self.change_label = QLabel(body)
        self.change_label.setWordWrap(True)
        layout.addWidget(self.change_label)
        self.chart = AreaChart(body)
        layout.addWidget(self.chart, 1)
        self.setWidget(body)

        self.timer = QTimer(self)
        self.timer.setInterval(PLAY_INTERVAL_MS)
        self.timer.timeout.connect(self._advance)
        self.play_button.toggled.connect(self._play)
        self.run_box.currentIndexChanged.connect(self._run_changed)
        self.slider.valueChanged.connect(self._slider_moved)

        # Refresh when layers or groups come and go, and when the project is closed or another one opened.
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.timeout.connect(self.refresh)
        self.project.layersRemoved.connect(self._schedule_refresh)
        self.project.layersAdded.connect(self._schedule_refresh)
        self.project.cleared.connect(self._schedule_refresh)
        self.project.readProject.connect(self._schedule_refresh)
        root = self.project.layerTreeRoot()
        root.addedChildren.connect(self._schedule_refresh)
        root.removedChildren.connect(self._schedule_refresh)
        root.nameChanged.connect(self._schedule_refresh)
        self.controller().updateTemporalRange.connect(self._controller_moved)
        self.refresh()

    # --- temporal controller ---------------------------------------------------------------------------

    def controller(self) -> QgsTemporalNavigationObject:
        """QGIS's temporal navigation (the map canvas's), or one made for the canvas when it has none."""
        canvas = self.iface.mapCanvas()
        current = canvas.temporalController()
        if isinstance(current, QgsTemporalNavigationObject):
            return current
        # The canvas keeps a pointer: the new controller belongs to the canvas, so it outlives this dock.
        controller = QgsTemporalNavigationObject(canvas)
        canvas.setTemporalController(controller)
        return controller

    def current_run(self) -> ForecastRun | None:
        index = self.run_box.currentIndex()
        return self.runs[index] if 0 <= index < len(self.runs) else None

    def _apply_to_controller(self, step: int) -> None:
        run = self.current_run()
        if run is None:
            return
        nav = self.controller()
        extent = QgsDateTimeRange(
            _qdatetime(run.dates[0]), _qdatetime(run.dates[-1] + dt.timedelta(days=1)), True, False
        )
        if nav.navigationMode() != QgsTemporalNavigationObject.Animated:
            nav.setNavigationMode(QgsTemporalNavigationObject.Animated)
        if nav.temporalExtents() != extent:
            nav.setTemporalExtents(extent)
        one_day = QgsInterval(1, Qgis.TemporalUnit.Days)
        if nav.frameDuration() != one_day:
            nav.setFrameDuration(one_day)
        # Frames count days from the first one; days missing between steps are skipped by the slider.
        frame = (run.dates[step] - run.dates[0]).days
        if nav.currentFrameNumber() != frame:
            nav.setCurrentFrameNumber(frame)
        self.iface.mapCanvas().setTemporalRange(nav.dateTimeRangeForFrameNumber(frame))

    def _controller_moved(self, span: QgsDateTimeRange) -> None:
        run = self.current_run()
        if run is None or not span.begin().isValid():
            return
        day = span.begin().date().toPyDate()
        if day in run.dates:
            step = run.dates.index(day)
            if step != self.slider.value():
                self.slider.blockSignals(True)
                self.slider.setValue(step)
                self.slider.blockSignals(False)
            self._show_step(step)

    # --- widgets -----------------------------------------------------------------------------------------

    def _schedule_refresh(self, *args: Any) -> None:
        self._refresh_timer.start(0)

    def refresh(self) -> None:
        """Re-read the forecast groups of the project; keep the selected one when it is still there."""
        previous = self.current_run().name if self.current_run() else None
        self.runs = forecast_runs(self.project)
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for run in self.runs:
            self.run_box.addItem(run.name)
        names = [r.name for r in self.runs]
        self.run_box.setCurrentIndex(names.index(previous) if previous in names else (0 if names else -1))
        self.run_box.blockSignals(False)
        self._run_changed()

    def _run_changed(self, *args: Any) -> None:
        run = self.current_run()
        enabled = run is not None
        for widget in (self.slider, self.play_button):
            widget.setEnabled(enabled)
        while self.ticks.count():
            item = self.ticks.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        if not enabled:
            self.play_button.setChecked(False)
            self.date_label.setText(self.tr("No forecast in this project: run SAR Seg > Forecast land cover"))
            self.hindcast_label.setText("")
            self.change_label.setText("")
            self.chart.set_areas({}, 1.0, "km²", {})
            return
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(run.steps) - 1)
        self.slider.setValue(min(self.slider.value(), len(run.steps) - 1))
        self.slider.blockSignals(False)
        self.hindcast_label.setText(hindcast_text(run))
        for step in run.steps:
            label = QLabel(f"{step.label}\n{step.date:%d %b}", self)
            label.setAlignment(Qt.AlignCenter)
            self.ticks.addWidget(label, 1)
        self._slider_moved(self.slider.value())

    def _slider_moved(self, step: int) -> None:
        if self.current_run() is None:
            return
        self._show_step(step)
        self._apply_to_controller(step)

    def _show_step(self, step: int) -> None:
        run = self.current_run()
        if run is None or not 0 <= step < len(run.steps):
            return
        s = run.steps[step]
        self.date_label.setText(f"<b>{s.label}</b> — {s.date:%A %d %B %Y}")
        if s.changed_confident is None:
            self.change_label.setText("")
        else:
            self.change_label.setText(
                self.tr("{share} of the area changes class from t0 with a probability of {p} or more").format(
                    share=f"{s.changed_confident:.1%}", p=f"{run.high_confidence:.0%}"
                )
            )
        areas = run.areas.get(s.label) or {}
        maximum = max((v for a in run.areas.values() if a for v in a.values()), default=1.0)
        self.chart.set_areas(areas, maximum, run.area_unit, run.colours)

    def _play(self, playing: bool) -> None:
        self.play_button.setText("⏸" if playing else "▶")
        if playing:
            self.timer.start()
        else:
            self.timer.stop()

    def _advance(self) -> None:
        if self.current_run() is None:
            self.play_button.setChecked(False)
            return
        self.slider.setValue((self.slider.value() + 1) % (self.slider.maximum() + 1))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API name
        self.play_button.setChecked(False)
        super().closeEvent(event)

    def disconnect_project(self) -> None:
        """Stop listening to the project and the controller (before the dock is deleted)."""
        self.timer.stop()
        root = self.project.layerTreeRoot()
        for signal, slot in (
            (self.project.layersRemoved, self._schedule_refresh),
            (self.project.layersAdded, self._schedule_refresh),
            (self.project.cleared, self._schedule_refresh),
            (self.project.readProject, self._schedule_refresh),
            (root.addedChildren, self._schedule_refresh),
            (root.removedChildren, self._schedule_refresh),
            (root.nameChanged, self._schedule_refresh),
            (self.controller().updateTemporalRange, self._controller_moved),
        ):
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
