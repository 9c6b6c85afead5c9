"""scripts/flood_eval.py: the scores it prints, against hand counts and against the core run directly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasters import write_raster

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import flood_eval  # noqa: E402

from sar_seg_plugin.core import flood  # noqa: E402
from training.evalflood import flood_sar_pair, write_flood_pair  # noqa: E402


def test_flood_scores_by_hand():
    truth = np.array([[1, 1, 1, 0, 2, 255]], np.uint8)
    got = np.array([[1, 1, 0, 1, 1, 1]], np.uint8)
    # over the five pixels with data: 2 flooded in both, union 5 (three true, two more mapped); 4 mapped / 3 true
    iou, error = flood_eval.flood_scores(got, truth)
    assert iou == pytest.approx(2 / 5) and error == pytest.approx(4 / 3 - 1)


def test_seed_lists():
    assert flood_eval.parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]


def test_a_pair_scores_what_the_core_maps(tmp_path):
    (score,) = flood_eval.score_pair(1, 4.4, ["auto"], 256, tmp_path / "eval")
    pair = flood_sar_pair(1, 256, 4.4)
    paths = write_flood_pair(pair, str(tmp_path / "own"))
    flood.flood_map(paths["post"], str(tmp_path / "own.tif"), pre=paths["pre"])
    got = gdal.Open(str(tmp_path / "own.tif")).ReadAsArray()
    both = (got == flood.FLOODED) & (pair.truth == flood.FLOODED)
    either = ((got == flood.FLOODED) | (pair.truth == flood.FLOODED)) & (pair.truth != 255)
    assert score.iou == pytest.approx(both.sum() / either.sum()) and score.iou > 0.8
    assert score.bands == "co+cross" and not list((tmp_path / "eval").glob("flood_*.tif"))


def test_flooded_area_per_square_commune_by_hand(tmp_path):
    truth = flood_sar_pair(1, 240, 4.4).truth  # communes of 80 x 80 px; six hold more than 500 px of flood
    classes = truth.copy()
    top = classes[:40, 80:160]  # the upper half of the second commune: its flood missed
    top[top == flood.FLOODED] = flood.DRY
    bottom = classes[160:, 80:160]  # the eighth commune: flooded all over
    bottom[bottom == flood.DRY] = flood.FLOODED
    path = write_raster(tmp_path / "classes.tif", classes, nodata=255, pixel=10.0)
    expected = []
    for r in range(3):
        for c in range(3):
            cells = (slice(80 * r, 80 * r + 80), slice(80 * c, 80 * c + 80))
            true, got = ((a[cells] == flood.FLOODED).sum() for a in (truth, classes))
            if true > 500:  # 0.05 km² of 10 m pixels
                expected.append(got / true - 1)
    assert len(expected) == 6 and expected[0] < -0.2 and expected[-1] > 0.2 and expected[1:-1] == [0, 0, 0, 0]
    assert flood_eval.commune_errors(path, truth) == pytest.approx(expected)
