"""Builds the graphical models shipped with the plugin (sar_seg_plugin/workflows/*.model3), listed by the sarseg
provider under "Workflows". Run with the project's venv after changing an algorithm's parameters:
.venv/bin/python scripts/make_workflows.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, "/usr/share/qgis/python/plugins")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessing,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
)

FOLDER = Path(__file__).resolve().parents[1] / "sar_seg_plugin" / "workflows"
GROUP = "Workflows"


def _child(alg: str, child_id: str, description: str, sources: dict) -> QgsProcessingModelChildAlgorithm:
    child = QgsProcessingModelChildAlgorithm(alg)
    child.setChildId(child_id)
    child.setDescription(description)
    for name, source in sources.items():
        child.addParameterSources(name, [source])
    return child


def _output(child: QgsProcessingModelChildAlgorithm, outputs: dict[str, tuple[str, str]]) -> None:
    """Model outputs of a step: {model output name: (the step's output, description)}."""
    made = {}
    for name, (child_output, description) in outputs.items():
        out = QgsProcessingModelOutput(name, description)
        out.setChildOutputName(child_output)
        made[name] = out
    child.setModelOutputs(made)


def sentinel1_to_land_cover() -> QgsProcessingModelAlgorithm:
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    model_param = QgsProcessingModelChildParameterSource.fromModelParameter
    output_of = QgsProcessingModelChildParameterSource.fromChildOutput
    model = QgsProcessingModelAlgorithm("Sentinel-1 product to land cover", GROUP)
    model.setHelpContent(
        {
            "ALG_DESC": "A Sentinel-1 IW GRD product (.zip, .SAFE or manifest.safe) to a land-cover map: import "
            "(sigma0, thermal noise removed, 10 m UTM, the area of interest only), Lee 7x7 speckle filter with "
            "the looks estimated, dB, segmentation with the bundled model.",
        }
    )
    model.addModelParameter(
        QgsProcessingParameterFile("product", "Sentinel-1 product (.zip, .SAFE folder or manifest.safe)"),
        QgsProcessingModelParameter("product"),
    )
    model.addModelParameter(
        QgsProcessingParameterFeatureSource(
            "aoi", "Area of interest (polygons)", [QgsProcessing.TypeVectorPolygon], optional=True
        ),
        QgsProcessingModelParameter("aoi"),
    )
    model.addChildAlgorithm(
        _child(
            "sarseg:import_sentinel1",
            "import",
            "Import Sentinel-1",
            {"INPUT": model_param("product"), "AOI": model_param("aoi")},
        )  # fmt: skip
    )
    model.addChildAlgorithm(
        _child(
            "sarseg:speckle_filter",
            "speckle",
            "Lee 7x7",
            {
                "INPUT": output_of("import", "OUTPUT"),
                "FILTER": static(0),
                "WINDOW": static(7),
                "ESTIMATE_LOOKS": static(True),
            },
        )  # fmt: skip
    )
    to_db = _child("sarseg:convert_db", "to_db", "To dB", {"INPUT": output_of("speckle", "OUTPUT"),
                   "DIRECTION": static(0)})  # fmt: skip
    _output(to_db, {"backscatter_db": ("OUTPUT", "Filtered backscatter (dB)")})
    model.addChildAlgorithm(to_db)
    segment = _child("sarseg:segment", "segment", "Segment", {"INPUT": output_of("to_db", "OUTPUT")})
    _output(segment, {"land_cover": ("OUTPUT", "Land cover")})
    model.addChildAlgorithm(segment)
    return model


def sentinel1_flood_per_commune() -> QgsProcessingModelAlgorithm:
    model_param = QgsProcessingModelChildParameterSource.fromModelParameter
    output_of = QgsProcessingModelChildParameterSource.fromChildOutput
    model = QgsProcessingModelAlgorithm("Sentinel-1 flood per commune", GROUP)
    model.setHelpContent(
        {
            "ALG_DESC": "Two Sentinel-1 IW GRD products of the same orbit, one before the flood and one during it, to "
            "a flood map and the flooded area of every commune: each product imported over the communes' extent "
            "(sigma0, thermal noise removed, 10 m UTM), then the flood map (split-based thresholds, change "
            "detection, permanent water) with its polygons, the communes with flooded km² and % and a report.",
        }
    )
    for name, description in (
        ("pre_product", "Sentinel-1 product before the flood (.zip, .SAFE or manifest.safe)"),
        ("post_product", "Sentinel-1 product during the flood (.zip, .SAFE or manifest.safe)"),
    ):
        model.addModelParameter(QgsProcessingParameterFile(name, description), QgsProcessingModelParameter(name))
    model.addModelParameter(
        QgsProcessingParameterFeatureSource("communes", "Communes (polygons)", [QgsProcessing.TypeVectorPolygon]),
        QgsProcessingModelParameter("communes"),
    )
    for child_id, product in (("import_pre", "pre_product"), ("import_post", "post_product")):
        model.addChildAlgorithm(
            _child(
                "sarseg:import_sentinel1",
                child_id,
                f"Import {product.split('_')[0]}-event product",
                {"INPUT": model_param(product), "AOI": model_param("communes")},
            )  # fmt: skip
        )
    flood = _child(
        "sarseg:flood_map", "flood", "Flood map",
        {"POST": output_of("import_post", "OUTPUT"), "PRE": output_of("import_pre", "OUTPUT"),
         "COMMUNES": model_param("communes")},
    )  # fmt: skip
    _output(
        flood,
        {
            "flood_classes": ("OUTPUT", "Flood classes"),
            "flood_polygons": ("OUTPUT_POLYGONS", "Flood polygons"),
            "communes_flooded": ("OUTPUT_COMMUNES", "Communes with flooded area"),
        },
    )
    model.addChildAlgorithm(flood)
    return model


MODELS = {
    "sentinel1_to_land_cover.model3": sentinel1_to_land_cover,
    "sentinel1_flood_per_commune.model3": sentinel1_flood_per_commune,
}


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    FOLDER.mkdir(exist_ok=True)
    for name, build in MODELS.items():
        target = FOLDER / name
        if not build().toFile(str(target)):
            sys.exit(f"could not write {target}")
        print(f"wrote {target}")
