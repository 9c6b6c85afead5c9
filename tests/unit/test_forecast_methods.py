"""core.forecast_methods: persistence, the per-pixel trend and the scores, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.forecast_methods import (
    METHODS,
    ScoreBoard,
    class_scores,
    confusion,
    persistence,
    skill,
    trend,
    trend_slope,
)


def onehot(labels: np.ndarray, classes: int = 3) -> np.ndarray:
    """(T, h, w) class ids -> (1, T, classes, h, w) one-hot; 255 -> all zeros."""
    return np.stack([(labels == c) for c in range(classes)], axis=1)[None].astype(np.float32)


def test_persistence_repeats_the_last_date():
    seq = np.random.default_rng(0).random((2, 4, 3, 5, 6)).astype(np.float32)
    out = persistence(seq, 3)
    assert out.shape == (2, 3, 3, 5, 6)
    for k in range(3):
        np.testing.assert_array_equal(out[:, k], seq[:, -1])


def test_trend_slope_is_the_least_squares_slope():
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(1, 5, 2, 3, 4)).astype(np.float32)
    slope = trend_slope(seq)
    for c in range(2):
        for y in range(3):
            for x in range(4):
                expected = np.polyfit(np.arange(5), seq[0, :, c, y, x], 1)[0]
                assert slope[0, c, y, x] == pytest.approx(expected, abs=1e-5)
    assert (trend_slope(seq[:, :1]) == 0).all()  # one date: no trend


def test_trend_of_values_extrapolates_from_the_last_date():
    days = np.arange(4, dtype=np.float32)
    seq = np.broadcast_to((-10.0 - 0.5 * days)[None, :, None, None, None], (1, 4, 1, 2, 2)).copy()
    out = trend(seq, 3, classes=False)
    for k in range(3):
        np.testing.assert_allclose(out[0, k], -10.0 - 0.5 * (3 + k + 1), atol=1e-5)


def test_trend_of_classes_by_hand():
    # pixel a: water -> veg -> veg -> veg (stays veg); pixel b: a class rising in probability;
    # pixel c: nodata throughout; pixel d: a tie broken toward the last class.
    probs = np.zeros((1, 4, 3, 1, 4), np.float32)
    probs[0, :, :, 0, 0] = [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]]
    probs[0, :, :, 0, 1] = [[0.9, 0.1, 0], [0.7, 0.3, 0], [0.6, 0.4, 0], [0.55, 0.45, 0]]
    probs[0, :, :, 0, 3] = [[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]]
    out = trend(probs, 3, classes=True, radius=0)  # each pixel alone
    assert out.shape == (1, 3, 3, 1, 4)
    sums = out.sum(axis=2)[0, :, 0]
    np.testing.assert_allclose(sums[:, [0, 1, 3]], 1.0, atol=1e-5)  # renormalised
    assert (out[0, :, :, 0, 2] == 0).all()  # nodata stays without a class
    assert (out[0, :, :, 0, 0].argmax(axis=1) == 1).all()
    # b: slope of class 0 is -0.115/day by least squares: 0.55 - 0.115 k crosses below class 1 from t+1
    slope = np.polyfit(np.arange(4), [0.9, 0.7, 0.6, 0.55], 1)[0]
    first = 0.55 + slope
    assert first < 0.5 and out[0, 0, 1, 0, 1] > out[0, 0, 0, 0, 1]
    # d: water and vegetation both extrapolate to 0.5: the last observed class (vegetation) wins
    assert (out[0, :, :, 0, 3].argmax(axis=1) == 1).all()


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)² window of the last two axes, borders extended by edge values (by shifted sums)."""
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)], mode="edge")
    h, w = a.shape[-2:]
    total = sum(padded[..., dy : dy + h, dx : dx + w] for dy in range(2 * r + 1) for dx in range(2 * r + 1))
    return total / (2 * r + 1) ** 2


def test_the_trend_moves_a_spreading_front():
    """Water spreads one column a day from the left over vegetation, beside a static field edge: the water share
    around the front rises, so the trend floods the first dry column where persistence keeps it dry; the static
    edge keeps its classes."""
    t, h, w = 4, 8, 24
    labels = np.ones((t, h, w), np.uint8)
    labels[:, 6:, :] = 2  # a static field edge along the bottom
    for d in range(t):
        labels[d, :6, : 5 + d] = 0
    seq = onehot(labels, 3)
    out = trend(seq, 3, classes=True)
    local = box_mean(seq[0], 2)  # (T, C, h, w), independent of scipy
    slope = np.polyfit(np.arange(t), local.reshape(t, -1), 1)[0].reshape(local.shape[1:])
    moving = (np.abs(slope) > 1e-6).any(axis=0)
    for k in range(1, 4):
        expected = np.where(moving, np.round(np.clip(local[-1] + k * slope, 0, 1), 5), seq[0, -1]) + 1e-4 * seq[0, -1]
        assert (out[0, k - 1].argmax(0) == expected.argmax(0)).all()
    front = 5 + t - 1  # first dry column at t0
    assert (out[0, 0, :, :3, front].argmax(0) == 0).all(), "the first dry column floods at t+1"
    assert (out[0, :, :, :3, -1].argmax(1) == 1).all(), "far from the front nothing moves"
    assert (out[0, :, :, 7, 18:].argmax(1) == 2).all(), "the static edge far from the water keeps its class"


def test_bad_shapes_are_refused():
    with pytest.raises(SarSegError, match="dates, channels"):
        persistence(np.zeros((4, 3, 5, 5)), 3)


def test_skill_and_scores():
    assert skill(0.05, 0.10) == pytest.approx(0.5)
    assert skill(0.2, 0.1) == pytest.approx(-1.0)
    assert skill(0.0, 0.0) == 0.0 and skill(0.1, 0.0) == -math.inf
    predicted = np.array([[0, 1, 2, 2]])
    observed = np.array([[0, 1, 1, 255]])
    cm = confusion(predicted, observed, np.ones_like(predicted, bool), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    scores = class_scores(cm)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["miou"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_scoreboard_skill_against_persistence():
    board = ScoreBoard(METHODS, [1], 2)
    observed = np.array([[0, 0, 1, 1]])
    valid = np.ones_like(observed, bool)
    board.add("persistence", 1, "d1", np.array([[0, 0, 0, 0]]), observed, valid)  # 2 of 4 right
    board.add("model", 1, "d1", np.array([[0, 0, 1, 0]]), observed, valid)  # 3 of 4
    board.add("trend", 1, "d1", np.array([[1, 1, 0, 0]]), observed, valid)  # 0 of 4
    rows = {r.method: r for r in board.rows()}
    assert rows["persistence"].accuracy == 0.5 and rows["persistence"].skill == 0.0
    assert rows["model"].skill == pytest.approx(1 - 0.25 / 0.5)
    assert rows["trend"].skill == pytest.approx(1 - 1.0 / 0.5)
    assert rows["model"].pairs == 1 and rows["model"].pixels == 4

    values = ScoreBoard(METHODS, [1], 0, "continuous")
    obs = np.zeros((2, 1, 3))
    ok = np.ones((1, 3), bool)
    values.add("persistence", 1, "d1", np.full((2, 1, 3), 2.0), obs, ok)
    values.add("model", 1, "d1", np.full((2, 1, 3), 1.0), obs, ok)
    values.add("trend", 1, "d1", np.full((2, 1, 3), 2.0), obs, ok)
    rows = {r.method: r for r in values.rows()}
    assert rows["persistence"].rmse == pytest.approx(2.0) and rows["model"].skill == pytest.approx(0.5)


def test_a_perfect_persistence_leaves_no_finite_skill():
    board = ScoreBoard(METHODS, [1], 2)
    observed = np.array([[0, 1]])
    ok = np.ones_like(observed, bool)
    board.add("persistence", 1, "d", observed, observed, ok)
    board.add("model", 1, "d", np.array([[0, 0]]), observed, ok)
    board.add("trend", 1, "d", observed, observed, ok)
    rows = {r.method: r for r in board.rows()}
    assert rows["model"].skill == -math.inf and rows["model"].as_dict()["skill"] is None
    assert rows["trend"].skill == 0.0


def test_the_method_written_is_the_model_unless_a_baseline_did_clearly_better():
    from sar_seg_plugin.core.forecast_methods import CHOICE_MARGIN_ACCURACY, ScoreRow, best_method

    def rows(model: list[float], persistence: list[float], trend: list[float]) -> list[ScoreRow]:
        out = []
        for method, accuracies in (("model", model), ("persistence", persistence), ("trend", trend)):
            out += [ScoreRow(method, h, 1, 10, accuracy=a) for h, a in zip((1, 2, 3), accuracies)]
        return out

    best, errors = best_method(rows([0.90, 0.85, 0.80], [0.95, 0.91, 0.86], [0.50, 0.50, 0.50]))
    assert (
        best == "persistence"
        and errors["model"] == pytest.approx(0.15)
        and errors["persistence"] == pytest.approx(0.28 / 3)
    )
    # a baseline better by less than the margin (accuracy 0.015 higher): the model
    assert best_method(rows([0.90, 0.85, 0.80], [0.915, 0.865, 0.815], [0.5] * 3))[0] == "model"
    assert CHOICE_MARGIN_ACCURACY == 0.02
    # the trend is written only when clearly better than persistence too
    assert best_method(rows([0.80] * 3, [0.90] * 3, [0.91] * 3))[0] == "persistence"
    assert best_method(rows([0.80] * 3, [0.90] * 3, [0.95] * 3))[0] == "trend"
    # horizons without pixels do not count; no score at all: the model
    assert best_method([ScoreRow("persistence", 1, 0, 0, accuracy=1.0), ScoreRow("model", 1, 0, 0)])[0] == "model"

    # values: RMSE, a baseline written when its RMSE is at least 10 % below the model's
    def values(model: float, persistence: float) -> list[ScoreRow]:
        return [ScoreRow("model", 1, 1, 10, rmse=model), ScoreRow("persistence", 1, 1, 10, rmse=persistence),
                ScoreRow("trend", 1, 1, 10, rmse=9.0)]  # fmt: skip

    assert best_method(values(2.0, 1.7))[0] == "persistence"
    assert best_method(values(2.0, 1.9))[0] == "model"
