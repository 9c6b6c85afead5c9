"""Toolbox context-menu action on the graphical models SAR Seg ships (group "Workflows"): open a copy in the Model
Designer. QGIS's own "Edit Model…" is offered only for the Models provider; editing the shipped file in place would
be lost at the next plugin update, so the copy has no file: *Save* asks where to put it (by default the user's
models folder, after which it is listed under Models)."""

from __future__ import annotations

from processing.gui.ContextAction import ContextAction
from qgis.core import QgsProcessingModelAlgorithm
from qgis.PyQt.QtGui import QIcon

from ..processing.base import ICON


class EditWorkflowCopyAction(ContextAction):
    def __init__(self) -> None:
        super().__init__()
        self.name = self.tr("Edit a Copy in the Model Designer…")
        self.dialog = None

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def isEnabled(self) -> bool:  # noqa: N802 - QGIS API name
        alg = self.itemData
        provider = alg.provider() if isinstance(alg, QgsProcessingModelAlgorithm) else None
        return provider is not None and provider.id() == "sarseg"

    def execute(self) -> None:
        from processing.modeler.ModelerDialog import ModelerDialog

        copy = self.itemData.create()
        copy.setSourceFilePath("")  # a new model: Save asks for a file instead of overwriting the plugin's
        self.dialog = ModelerDialog.create(copy)
        self.dialog.show()
        self.dialog.activate()
