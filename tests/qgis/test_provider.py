"""The plugin loads like QGIS loads it and registers its algorithms with help."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "sar_seg_plugin"
_KEEP: list[object] = []  # Python references keep provider wrappers alive
EXPECTED = {
    "sarseg:speckle_filter": "Preprocessing",
    "sarseg:convert_db": "Preprocessing",
    "sarseg:normalize": "Preprocessing",
    "sarseg:extract_patches": "Preprocessing",
    "sarseg:stack_time_series": "Preprocessing",
    "sarseg:segment": "Segmentation",
    "sarseg:evaluate_segmentation": "Segmentation",
    "sarseg:forecast": "Forecasting",
    "sarseg:cluster_communes": "Clustering",
    "sarseg:batch": "Batch",
}


def test_class_factory_registers_and_unload_removes_the_provider(qgis_app, qgis_iface, qgis_processing):
    from qgis.core import QgsApplication

    import sar_seg_plugin

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("sarseg")
    if existing is not None:
        registry.removeProvider(existing)
    try:
        plugin = sar_seg_plugin.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("sarseg") is not None
        assert {a.id() for a in registry.providerById("sarseg").algorithms()} >= set(EXPECTED)
        plugin.unload()
        assert registry.providerById("sarseg") is None
    finally:
        if existing is not None:  # removing deleted it: register a new one for the other tests
            from sar_seg_plugin.processing.provider import SarSegProvider

            _KEEP.append(SarSegProvider())
            registry.addProvider(_KEEP[-1])


def test_algorithms_have_groups_help_and_stable_ids(sarseg):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("sarseg")
    algorithms = {a.id(): a for a in provider.algorithms()}
    assert set(algorithms) >= set(EXPECTED)
    for alg_id in EXPECTED:
        alg = algorithms[alg_id]
        assert alg.group() == EXPECTED[alg_id] and alg.groupId() == EXPECTED[alg_id].lower()
        help_text = alg.shortHelpString()
        # Every visible input parameter is explained in the help.
        for param in alg.parameterDefinitions():
            if param.isDestination():
                continue
            label = param.description().split(" (")[0].split(":")[0]
            assert label.lower()[:12] in help_text.lower(), f"{alg_id}: '{label}' not explained in the help"
    assert not provider.icon().isNull()


def test_metadata_follows_the_plugin_repository_rules():
    meta = configparser.ConfigParser()
    meta.read(PLUGIN / "metadata.txt")
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
                "tracker"):  # fmt: skip
        assert general.get(key), f"metadata.txt lacks {key}"
    assert general["hasProcessingProvider"] == "yes"
    assert (PLUGIN / general["icon"]).exists()
    assert (PLUGIN / "LICENSE").exists()
    assert "GNU GENERAL PUBLIC LICENSE" in (PLUGIN / "LICENSE").read_text()


@pytest.mark.parametrize("name", [alg_id.split(":")[1] for alg_id in EXPECTED])
def test_each_algorithm_creates_fresh_instances(sarseg, name):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(f"sarseg:{name}")
    assert alg is not None and alg.name() == name
    assert alg.createInstance() is not alg
