"""The plugin object QGIS loads: registers the ``sarseg`` Processing provider and the forecast dock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .processing.provider import SarSegProvider

ICON = Path(__file__).resolve().parent / "icons" / "sarseg.svg"
MENU = "&SAR Seg"


class SarSegPlugin:
    """Registers the Processing provider in ``initProcessing`` (so ``qgis_process`` sees it too); in the desktop,
    adds the "SAR Seg forecast" dock, opened from the plugin menu and toolbar."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: SarSegProvider | None = None
        self.dock = None
        self.action: QAction | None = None
        self.context_actions: list = []

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        if self.provider is None:
            provider = SarSegProvider()
            # The registry refuses (and deletes) a second provider with the same id.
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "SAR Seg forecast", self.iface.mainWindow())
        self.action.setObjectName("SarSegForecastAction")
        self.action.setCheckable(True)
        self.action.setToolTip("Step through a forecast (t0 to t+3) with a slider tied to the temporal controller")
        self.action.toggled.connect(self.show_dock)
        self.iface.addPluginToMenu(MENU, self.action)
        self.iface.addToolBarIcon(self.action)
        # Right-click on a shipped workflow in the toolbox: edit a copy in the Model Designer.
        from processing.gui.ProviderActions import ProviderContextMenuActions

        from .ui.edit_workflow import EditWorkflowCopyAction

        self.context_actions = [EditWorkflowCopyAction()]
        ProviderContextMenuActions.registerProviderContextMenuActions(self.context_actions)

    def show_dock(self, visible: bool = True) -> None:
        """Open (creating it the first time) or hide the forecast dock."""
        if self.dock is None and visible:
            from .ui.forecast_dock import ForecastDock

            self.dock = ForecastDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._dock_visibility)
        if self.dock is not None:
            self.dock.setVisible(visible)
            if visible:
                self.dock.refresh()

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.disconnect_project()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action = None
        if self.context_actions:
            from processing.gui.ProviderActions import ProviderContextMenuActions

            ProviderContextMenuActions.deregisterProviderContextMenuActions(self.context_actions)
            self.context_actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
