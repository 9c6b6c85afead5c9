"""Runs as the dialog makes them: every output a temporary layer, opened after running. Each layer QGIS is told to
open must exist (a queued name that no layer has ends the dialog's run in a 'could not be found' error)."""

from __future__ import annotations

import json

import pytest


def _run_as_the_dialog(algorithm: str, params: dict, temporary: list[str]) -> tuple[dict, list[str], list[bool]]:
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingOutputLayerDefinition, QgsProcessingUtils, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    for name in temporary:
        params[name] = QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", QgsProject.instance())
    out = processing.run(algorithm, params, context=context)
    returned = {value.id(): value for value in out.values() if hasattr(value, "id")}  # memory layers handed over
    queued = list(context.layersToLoadOnCompletion())
    return out, queued, [key in returned or QgsProcessingUtils.mapLayerFromString(key, context) is not None
                         for key in queued]  # fmt: skip


@pytest.fixture
def sample(sample_dir):  # noqa: ANN001, ANN201
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    return {
        "communes": str(sample_dir / manifest["communes_file"]),
        "sar": str(sample_dir / manifest["files"][0]["sar"]),
        "labels": [str(sample_dir / f["labels"]) for f in manifest["files"]],
    }


def test_cluster_communes(sarseg, sample, tmp_path):
    out, queued, found = _run_as_the_dialog(
        "sarseg:cluster_communes",
        {"INPUT": sample["communes"], "RASTER": sample["sar"], "CLASS_RASTER": sample["labels"][0],
         "OUTPUT_REPORT": str(tmp_path / "report.html")},
        ["OUTPUT", "OUTPUT_SIMILAR"],
    )  # fmt: skip
    assert len(queued) == 2 and all(found), queued
    assert {out["OUTPUT"].id(), out["OUTPUT_SIMILAR"].id()} == set(queued)


def test_forecast(sarseg, sample, tmp_path):
    out, queued, found = _run_as_the_dialog(
        "sarseg:forecast",
        {"INPUTS": sample["labels"], "DEVICE": 1, "OUTPUT_FOLDER": str(tmp_path)},
        ["OUTPUT_CHANGE", "OUTPUT_AREAS", "OUTPUT_HINDCAST"],
    )
    assert all(found), queued
    assert out["OUTPUT_AREAS"].id() in queued and not any(key.startswith("memory:") for key in queued)
