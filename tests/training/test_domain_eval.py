"""The domain grid: training-family scenes sensed as each domain says, scores through the plugin's inference."""

from __future__ import annotations

import numpy as np
import pytest

from training import evalgen
from training.calibration import reliability
from training.domain_eval import EVALUATION_ONLY, TRAINING_FAMILY, evaluate_grid, training_family_scene
from training.synthetic import LABEL_NODATA


def _interior_enl(scene: evalgen.EvalScene) -> float:
    """mean^2/var of VV over 7x7 cells lying wholly inside one class, median over cells."""
    vv, lab = scene.sigma0[0].astype(np.float64), scene.labels
    values = []
    for r in range(0, lab.shape[0] - 7, 7):
        for c in range(0, lab.shape[1] - 7, 7):
            cell = lab[r : r + 7, c : c + 7]
            if (cell == cell[0, 0]).all() and cell[0, 0] in (0, 1, 4):  # untextured classes
                x = vv[r : r + 7, c : c + 7]
                values.append(x.mean() ** 2 / x.var(ddof=1))
    return float(np.median(values))


@pytest.mark.parametrize("name", ["ENL 1", "ENL 4.4", "ENL 20"])
def test_training_family_scene_has_the_domain_enl(name: str) -> None:
    domain = evalgen.domain_by_name(name)
    scene = training_family_scene(770_016, 192, domain)
    assert scene.sigma0.shape == (2, 192, 192) and scene.pixel_size_m == 10.0
    # a small-sample median of mean^2/var sits a little below L: compare with pure Gamma speckle cells
    gamma = np.random.default_rng(0).gamma(domain.enl, 1 / domain.enl, (4000, 49))
    expected = np.median(gamma.mean(1) ** 2 / gamma.var(1, ddof=1))
    assert _interior_enl(scene) == pytest.approx(expected, rel=0.35)


@pytest.mark.parametrize("window", [3, 7])
def test_training_family_filter_runs_in_the_domains_window(window: int) -> None:
    import dataclasses

    from sar_seg_plugin.core.speckle import apply_filter

    plain = training_family_scene(770_016, 96, evalgen.domain_by_name("ENL 4.4"))
    domain = dataclasses.replace(evalgen.domain_by_name("ENL 4.4 + Median"), filter_window=window)
    filtered = training_family_scene(770_016, 96, domain)
    for b in range(2):
        expected = np.nan_to_num(apply_filter("median", plain.sigma0[b], plain.valid, window=window), nan=0.0)
        np.testing.assert_allclose(filtered.sigma0[b][plain.valid], expected[plain.valid], rtol=1e-6)


def test_training_family_20_m_is_multilooked_and_offsets_shift_the_values() -> None:
    base = training_family_scene(770_016, 128, evalgen.domain_by_name("ENL 4.4"))
    coarse = training_family_scene(770_016, 128, evalgen.domain_by_name("20 m pixels"))
    assert coarse.sigma0.shape == (2, 128, 128) and coarse.pixel_size_m == 20.0
    assert _interior_enl(coarse) > 2.5 * _interior_enl(base)
    plus = training_family_scene(770_016, 128, evalgen.domain_by_name("+2 dB offset"))
    ok = base.valid & (base.sigma0[0] > 0)
    ratio = np.median(plus.sigma0[0][ok] / base.sigma0[0][ok])
    assert 10 * np.log10(ratio) == pytest.approx(2.0, abs=0.01)
    assert np.all(base.labels[~base.valid] == LABEL_NODATA)


def test_grid_scores_match_the_written_outputs(tmp_path) -> None:
    domain = evalgen.domain_by_name("ENL 4.4")
    grid = evaluate_grid(
        {"bundled": "sar_seg_plugin/models/sarseg_unet_vvvh.onnx"},
        domains=[domain],
        seeds=1,
        size=96,
        workdir=tmp_path,
    )
    for family in (EVALUATION_ONLY, TRAINING_FAMILY):
        cell = grid[family]["ENL 4.4"]["bundled"]
        maker = {EVALUATION_ONLY: "evaluation_only_scene", TRAINING_FAMILY: "training_family_scene"}[family]
        from training import domain_eval

        scene = getattr(domain_eval, maker)(16 if family == EVALUATION_ONLY else 770_016, 96, domain)
        labelled = int((scene.labels != LABEL_NODATA).sum())
        assert cell["pixels"] <= labelled and cell["pixels"] > 0.9 * labelled
        assert 0.0 <= cell["miou"] <= 1.0 and 0.0 <= cell["ece"] <= 1.0
        bins = cell["bins"]
        assert sum(bins["count"]) == cell["pixels"]
        # ECE recomputed from the bins by the reference formula
        n = np.asarray(bins["count"], float)
        gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
        assert cell["ece"] == pytest.approx(float((n / n.sum() * gap).sum()), abs=1e-12)
    assert reliability(np.array([0.5]), np.array([True])).ece == pytest.approx(0.5)


def test_other_scene_seeds_score_other_scenes_and_the_cli_prints_them(tmp_path, capsys) -> None:
    """``scene_seeds`` picks the scenes: the grid's own seed reproduces the grid cell, another seed gives another
    scene (another pixel count); the command line prints each model's mIoU as the grid computes it."""
    from training import domain_eval

    model = {"bundled": "sar_seg_plugin/models/sarseg_unet_vvvh.onnx"}
    domain = evalgen.domain_by_name("ENL 4.4")
    only = {EVALUATION_ONLY: domain_eval.FAMILIES[EVALUATION_ONLY]}
    grid = evaluate_grid(model, [domain], only, seeds=1, size=96, workdir=tmp_path)["evaluation-only"]["ENL 4.4"]
    assert domain_eval.grid_seed(EVALUATION_ONLY, 0) == 16
    same = evaluate_grid(model, [domain], only, size=96, workdir=tmp_path, scene_seeds=[16])
    assert same[EVALUATION_ONLY]["ENL 4.4"]["bundled"]["bins"] == grid["bundled"]["bins"]
    other = evaluate_grid(model, [domain], only, size=96, workdir=tmp_path, scene_seeds=[5001])
    scene = domain_eval.evaluation_only_scene(5001, 96, domain)
    cell = other[EVALUATION_ONLY]["ENL 4.4"]["bundled"]
    assert cell["bins"] != grid["bundled"]["bins"]
    assert 0.9 * (scene.labels != LABEL_NODATA).sum() < cell["pixels"] <= (scene.labels != LABEL_NODATA).sum()
    assert (
        domain_eval.main([f"m={model['bundled']}", "--seeds", "5001:1:1", "--size", "96", "--domains", "ENL 4.4"]) == 0
    )
    out = capsys.readouterr().out
    assert "seeds [5001]" in out and f"ENL 4.4: m mIoU {cell['miou']:.3f} (ECE {cell['ece']:.3f}" in out
