"""QGIS tier: a real QGIS (pytest-qgis) with Processing and the sarseg provider (fixture ``sarseg`` in
../conftest.py)."""

import pytest


@pytest.fixture()
def feedback():  # noqa: ANN201
    """A QgsProcessingFeedback that keeps the log: info lines in ``lines``, warnings in ``warnings``."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []
            self.warnings: list[str] = []

        def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
            self.lines.append(info)
            super().pushInfo(info)

        def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API name
            self.warnings.append(warning)
            super().pushWarning(warning)

    return RecordingFeedback()
