"""QGIS tier: a real QGIS (pytest-qgis) with Processing and the sarseg provider (fixture ``sarseg`` in
../conftest.py)."""
