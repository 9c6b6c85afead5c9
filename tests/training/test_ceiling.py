"""Ceilings of the evaluation-only generator: features against brute-force formulas, the oracles against cases whose
answer is known (separable classes, indistinguishable classes), majority voting by hand, written scenes the trainer
accepts."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from sar_seg_plugin.core.evaluation import metrics_from_matrix
from sar_seg_plugin.models.registry import default_segmentation_model, resolve_model
from training import ceiling, evalgen
from training.data import find_scenes
from training.domain_eval import EVALUATION_ONLY, evaluate_grid
from training.train_segmentation import base_looks


def iou_of(confusion: np.ndarray) -> np.ndarray:
    return metrics_from_matrix(confusion)["iou"]


def hand_scene(sigma0: np.ndarray, labels: np.ndarray, objects: np.ndarray) -> evalgen.EvalScene:
    valid = labels != evalgen.LABEL_NODATA
    return evalgen.EvalScene(
        sigma0=sigma0.astype(np.float32),
        labels=labels.astype(np.uint8),
        pixel_size_m=10.0,
        valid=valid,
        domain=evalgen.BASELINE,
        objects=objects.astype(np.int32),
        incidence_deg=37.0,
    )


def test_object_samples_are_the_means_and_spread_of_each_object() -> None:
    rng = np.random.default_rng(1)
    sigma0 = rng.gamma(4.0, 0.25, (2, 6, 8)) * np.array([0.1, 0.01])[:, None, None]
    objects = np.zeros((6, 8), int)
    objects[:, 5:] = 2  # object 1 is never used: ids need not be contiguous
    labels = np.where(objects == 2, evalgen.FOREST, evalgen.WATER)
    labels[0, 0] = evalgen.LABEL_NODATA  # left out of object 0
    objects[0, 0] = -1
    rows = ceiling.object_samples(hand_scene(sigma0, labels, objects))
    assert rows.y.tolist() == [evalgen.WATER, evalgen.FOREST]
    assert rows.w.tolist() == [6 * 5 - 1, 6 * 3]
    for row, mask in zip(rows.x, (objects == 0, objects == 2)):
        vv, vh = sigma0[0][mask], sigma0[1][mask]
        expected = [
            10 * np.log10(vv.mean()),
            10 * np.log10(vh.mean()),
            10 * np.log10(vv.mean()) - 10 * np.log10(vh.mean()),
            vv.std() / vv.mean(),
            vh.std() / vh.mean(),
            np.log(vv.size),
            37.0,
        ]
        np.testing.assert_allclose(row, expected, rtol=1e-6)


def test_local_features_match_a_brute_force_window() -> None:
    rng = np.random.default_rng(2)
    sigma0 = rng.gamma(2.0, 0.05, (2, 40, 40))
    valid = np.ones((40, 40), bool)
    features = ceiling.local_features(sigma0, valid, window=5)
    r, c = 17, 23
    box = sigma0[:, r - 2 : r + 3, c - 2 : c + 3].reshape(2, -1)
    db = 10 * np.log10(box.mean(axis=1))
    cv = box.std(axis=1) / box.mean(axis=1)
    np.testing.assert_allclose(features[r, c], [db[0], db[1], db[0] - db[1], cv[0], cv[1]], rtol=1e-6)


def test_the_oracle_separates_separable_classes_and_not_indistinguishable_ones() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 200)
    levels = np.stack([y * 3.0 + rng.normal(0, 0.3, y.size), rng.normal(0, 1, y.size)], 1)
    predict = ceiling.fit(ceiling.Samples(levels, y, np.ones(y.size)))
    fresh = np.stack([y * 3.0 + rng.normal(0, 0.3, y.size), rng.normal(0, 1, y.size)], 1)
    iou = iou_of(ceiling.weighted_confusion(y, predict(fresh), np.ones(y.size)))
    assert iou.min() > 0.99
    # the same features for every class: on new draws nothing beats guessing (mIoU of 5 balanced classes ~ 1/9)
    noise = ceiling.Samples(rng.normal(0, 1, (y.size, 2)), y, np.ones(y.size))
    predict = ceiling.fit(noise)
    fresh = rng.normal(0, 1, (y.size, 2))
    assert iou_of(ceiling.weighted_confusion(y, predict(fresh), np.ones(y.size))).mean() < 0.25


def test_object_majority_votes_inside_each_true_object() -> None:
    objects = np.array([[0, 0, 0, 0], [1, 1, 1, -1]])
    labels = np.array([[1, 1, 1, 1], [4, 4, 4, 255]])
    pred = np.array([[1, 1, 2, 255], [0, 0, 4, 3]])  # 255: no prediction; (1, 3) is outside every object
    voted = ceiling.object_majority(pred, hand_scene(np.ones((2, 2, 4)), labels, objects))
    assert voted.x[:, 0].tolist() == [1, 0]
    assert voted.y.tolist() == [1, 4]
    assert voted.w.tolist() == [3, 3]


def test_measure_reads_the_scenes_it_is_fitted_on_far_better_than_chance(tmp_path) -> None:  # noqa: ANN001
    """Features, labels and weights kept in step: misaligned, every oracle would score about chance (5 classes of
    unequal shares: mIoU under 0.15). The model's figure is the model card grid's for the same scene."""
    model = resolve_model(default_segmentation_model())
    result = ceiling.measure(evalgen.BASELINE, model, fit_seeds=range(101, 109), test_seeds=(203,), size=96)
    oracles = {"object oracle, means", "object oracle, means and texture", "local oracle"}
    assert set(result.iou) == oracles | {"model", "model, voted per true object"}
    for name in oracles:
        assert result.miou(name) > 0.4, name
    grid = evaluate_grid({"m": model}, [evalgen.BASELINE], scene_seeds=(203,), size=96, workdir=tmp_path)
    cell = grid[EVALUATION_ONLY][evalgen.BASELINE.name]["m"]
    assert result.miou("model") == pytest.approx(cell["miou"], abs=1e-9)


def test_written_scenes_are_accepted_by_domain_randomised_training(tmp_path) -> None:  # noqa: ANN001
    paths = ceiling.write_scenes(tmp_path, count=2, size=64)
    scenes = find_scenes(tmp_path)
    assert sorted(s.image for s in scenes) == sorted(paths)
    assert base_looks(scenes) == ceiling.WRITE_LOOKS
    ds = gdal.Open(str(paths[0]))
    data = ds.ReadAsArray()
    ds = None
    # the image is the generator's scene of the first seed at 100 looks, nothing changed on the way
    scene = evalgen.make_scene(60000, 64, evalgen.EvalDomain(name="x", enl=ceiling.WRITE_LOOKS), layout="procedural")
    np.testing.assert_allclose(data, scene.sigma0, rtol=1e-6)


def test_fit_and_test_seeds_must_not_overlap(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ceiling.main(["--fit-seeds", "10:5", "--test-seeds", "14:3"])
    assert "overlap" in capsys.readouterr().err


def test_ceiling_miou_leaves_out_classes_neither_present_nor_predicted_like_the_project_metrics() -> None:
    from training.metrics import segmentation_metrics
    from training.synthetic import CLASS_NAMES

    cm = np.array([[8, 2, 0, 0, 0], [1, 5, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 3, 1], [0, 0, 0, 0, 4]])
    result = ceiling.Ceiling("x", {"r": iou_of(cm)})
    expected = np.mean([8 / 11, 5 / 8, 3 / 4, 4 / 5])
    assert result.miou("r") == pytest.approx(expected)
    assert result.miou("r") == pytest.approx(segmentation_metrics(cm, CLASS_NAMES)["miou"])
