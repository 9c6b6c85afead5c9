"""Builds speckle_to_db.model3: a graphical-modeler model chaining sarseg:speckle_filter and sarseg:convert_db.

Run with the project's venv: .venv/bin/python tests/data/make_model.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, "/usr/share/qgis/python/plugins")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
)


def build() -> QgsProcessingModelAlgorithm:
    model = QgsProcessingModelAlgorithm("Speckle filter to dB", "SAR Seg examples")
    model.addModelParameter(QgsProcessingParameterRasterLayer("sar", "SAR raster"), QgsProcessingModelParameter("sar"))

    speckle = QgsProcessingModelChildAlgorithm("sarseg:speckle_filter")
    speckle.setChildId("speckle")
    speckle.setDescription("Lee 5x5")
    speckle.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("sar")])
    speckle.addParameterSources("FILTER", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    speckle.addParameterSources("WINDOW", [QgsProcessingModelChildParameterSource.fromStaticValue(5)])
    speckle.addParameterSources("LOOKS", [QgsProcessingModelChildParameterSource.fromStaticValue(4.4)])
    model.addChildAlgorithm(speckle)

    to_db = QgsProcessingModelChildAlgorithm("sarseg:convert_db")
    to_db.setChildId("to_db")
    to_db.setDescription("To dB")
    to_db.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("speckle", "OUTPUT")])
    to_db.addParameterSources("DIRECTION", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    output = QgsProcessingModelOutput("filtered_db", "Filtered (dB)")
    output.setChildOutputName("OUTPUT")
    to_db.setModelOutputs({"filtered_db": output})
    model.addChildAlgorithm(to_db)
    return model


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    target = Path(__file__).with_name("speckle_to_db.model3")
    if not build().toFile(str(target)):
        sys.exit(f"could not write {target}")
    print(f"wrote {target}")
