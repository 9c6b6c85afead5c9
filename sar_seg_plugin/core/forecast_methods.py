"""Reference forecasts and forecast scores: persistence, a per-pixel trend, skill. Pure numpy, no qgis import.

A forecaster is only worth running where it beats doing nothing. Two baselines answer "doing nothing" and "doing
the obvious", on the same inputs the model takes (one-hot class maps or class probabilities, or continuous values
such as backscatter in dB), shaped ``(n, T, C, h, w)``:

* **persistence**: tomorrow = today, the last input map repeated for every horizon;
* **trend**: the mean of each channel (class share, or dB) in the pixel's neighbourhood (5 x 5 px) is fitted by
  a least-squares line over the input dates and extended: ``mean at t0 + k * slope`` at horizon k. Class shares
  are clipped to 0..1 and renormalised, ties go to the last observed class, and a pixel whose neighbourhood does
  not change at all keeps its last value (persistence). The neighbourhood is what lets it move a front: a pixel's
  own one-hot history cannot say that the water next to it is spreading, the share of water around it can (and
  for backscatter it averages speckle out of the forecast).

The same functions score the model card (``training``) and the hindcast of ``sarseg:forecast`` on a user's own
series, so the figures a user reads in the log are computed as the card's are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import SarSegError
from .evaluation import confusion_matrix, metrics_from_matrix

MODEL, PERSISTENCE, TREND = "model", "persistence", "trend"
METHODS: tuple[str, ...] = (MODEL, PERSISTENCE, TREND)
#: The method chosen on the user's own series: the model, unless a baseline did clearly better on the hindcast
#: (:func:`best_method`).
BEST = "best on the hindcast"
#: How much better a baseline must have done than the model on the hindcast (mean over the horizons) for
#: :data:`BEST` to write it instead: class accuracy higher by this much, or RMSE lower by this share.
CHOICE_MARGIN_ACCURACY = 0.02
CHOICE_MARGIN_RMSE = 0.1
#: What ``sarseg:forecast`` offers: the scored methods, and the best of them on the hindcast.
CHOICES: tuple[str, ...] = (*METHODS, BEST)
BASELINES: tuple[str, ...] = (PERSISTENCE, TREND)
#: Probability above which a forecast class counts as confident (the dock's "changes with high confidence").
HIGH_CONFIDENCE = 0.8
#: Radius in pixels of the neighbourhood whose trend the trend baseline extrapolates (a 5 x 5 px window).
TREND_RADIUS = 2
_TIE_BREAK = 1e-4  # weight of the last observation in the trend's class probabilities: ties go to persistence


def _check(sequence: np.ndarray) -> np.ndarray:
    seq = np.asarray(sequence, dtype=np.float32)
    if seq.ndim != 5 or seq.shape[1] < 1:
        raise SarSegError(f"a forecast input is (n, dates, channels, h, w); got shape {seq.shape}")
    return seq


def persistence(sequence: np.ndarray, horizons: int) -> np.ndarray:
    """Tomorrow = today: (n, T, C, h, w) -> (n, horizons, C, h, w), the last date repeated."""
    seq = _check(sequence)
    return np.repeat(seq[:, -1:], horizons, axis=1)


def trend_slope(sequence: np.ndarray) -> np.ndarray:
    """Least-squares slope per unit date of every pixel and channel over the dates: (n, T, C, h, w) -> (n, C, h, w).

    One date has no trend (slope 0)."""
    seq = _check(sequence)
    steps = seq.shape[1]
    if steps < 2:
        return np.zeros_like(seq[:, 0])
    t = np.arange(steps, dtype=np.float32) - (steps - 1) / 2.0
    return np.tensordot(t / float((t**2).sum()), seq, axes=([0], [1]))


def neighbourhood_mean(sequence: np.ndarray, radius: int = TREND_RADIUS) -> np.ndarray:
    """Mean of every date and channel over the (2 radius + 1)² window around each pixel; the border is extended
    by its nearest pixel (so a block read with a halo of ``radius`` gives what the whole raster gives)."""
    seq = _check(sequence)
    if radius <= 0:
        return seq
    size = (1, 1, 1, 2 * radius + 1, 2 * radius + 1)
    return ndimage.uniform_filter(seq, size=size, mode="nearest").astype(np.float32, copy=False)


def trend(sequence: np.ndarray, horizons: int, classes: bool = True, radius: int = TREND_RADIUS) -> np.ndarray:
    """Linear trend of the neighbourhood: (n, T, C, h, w) -> (n, horizons, C, h, w).

    Horizon k is ``m + k * slope``, ``m`` the :func:`neighbourhood_mean` at the last date and ``slope`` its
    least-squares slope (``radius`` 0: the pixel alone); pixels whose neighbourhood has no slope in any channel
    keep their last value. ``classes``: the channels are class probabilities (one-hot maps included); each
    horizon is clipped to 0..1 and renormalised, ties go to the last class, pixels without any class (nodata, all
    zeros) stay all zeros. Otherwise values are extrapolated as they are (e.g. dB)."""
    seq = _check(sequence)
    local = neighbourhood_mean(seq, radius)
    last, mean, slope = seq[:, -1], local[:, -1], trend_slope(local)
    moving = (np.abs(slope) > 1e-6).any(axis=1, keepdims=True)
    out = np.empty((seq.shape[0], horizons, *last.shape[1:]), np.float32)
    for k in range(horizons):
        values = np.where(moving, mean + (k + 1) * slope, last)
        if classes:
            # rounded: shares that are equal in exact arithmetic stay equal (argmax picks the first class)
            values = np.round(np.clip(values, 0.0, 1.0), 5) + _TIE_BREAK * last
            values = np.where(last.any(axis=1, keepdims=True), values, 0.0)
            total = values.sum(axis=1, keepdims=True)
            values = np.where(total > 0, values / np.maximum(total, 1e-12), 0.0)
        out[:, k] = values
    return out


def baseline(method: str, sequence: np.ndarray, horizons: int, classes: bool = True) -> np.ndarray:
    """The forecast of a baseline by name ("persistence" or "trend")."""
    if method == PERSISTENCE:
        return persistence(sequence, horizons)
    if method == TREND:
        return trend(sequence, horizons, classes)
    raise SarSegError(f"unknown baseline '{method}': expected one of {', '.join(BASELINES)}")


class BaselineForecaster:
    """A baseline with the interface of an opened forecaster (``registry.LoadedForecaster``), so the forecast
    streaming code runs it like a model. It takes the model's metadata (dates, horizons, classes or bands)."""

    state_stride = 1
    device_used = "cpu"

    def __init__(self, method: str, model: Any) -> None:
        if method not in BASELINES:
            raise SarSegError(f"unknown baseline '{method}': expected one of {', '.join(BASELINES)}")
        self.method = method
        self.halo = TREND_RADIUS if method == TREND else 0  # context read around each block
        self.metadata = model.metadata
        self.input_kind = model.input_kind
        self.architecture = f"{method} baseline"
        self.name = method

    def run(self, sequence: np.ndarray, horizons: int) -> np.ndarray:
        """(n, T, C, h, w) -> (n, horizons, C, h, w), like the model."""
        return baseline(self.method, sequence, horizons, self.metadata.output_kind == "classes")


def skill(error: float, reference_error: float) -> float:
    """Skill score ``1 - error / reference_error``: 1 perfect, 0 as good as the reference, below 0 worse.

    A perfect reference gives 0 when the forecast is perfect too, else -inf."""
    if reference_error == 0:
        return 0.0 if error == 0 else -math.inf
    return 1.0 - error / reference_error


def confusion(predicted: np.ndarray, observed: np.ndarray, valid: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts [observed, predicted] over ``valid`` pixels whose observed class is a class
    (:func:`.evaluation.confusion_matrix`, the matrix ``sarseg:evaluate_segmentation`` reports)."""
    return confusion_matrix(observed, predicted, classes, valid)


def class_scores(matrix: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and mean IoU (classes present in observation or prediction) of a confusion matrix, as
    :func:`.evaluation.metrics_from_matrix` computes them."""
    m = metrics_from_matrix(matrix)
    return {"accuracy": m["overall_accuracy"], "miou": m["mean_iou"]}


@dataclass
class ScoreRow:
    """The score of one method at one horizon: class accuracy / mIoU, or RMSE for continuous forecasts."""

    method: str
    horizon: int
    pairs: int  # forecast dates scored (origins whose date + horizon was observed)
    pixels: int
    accuracy: float = math.nan
    miou: float = math.nan
    rmse: float = math.nan
    skill: float = math.nan  # against persistence: accuracy (error 1 - accuracy) or RMSE

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "horizon": self.horizon,
            "pairs": self.pairs,
            "pixels": self.pixels,
            "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "miou": None if math.isnan(self.miou) else self.miou,
            "rmse": None if math.isnan(self.rmse) else self.rmse,
            "skill": self.skill if math.isfinite(self.skill) else None,  # -inf: persistence exact, this not
        }


class ScoreBoard:
    """Running scores of several methods per horizon, filled block by block (memory: one matrix per cell)."""

    def __init__(self, methods: tuple[str, ...], horizons: list[int], classes: int, kind: str = "classes") -> None:
        self.methods, self.horizons, self.classes, self.kind = methods, list(horizons), classes, kind
        self.matrices = {(m, h): np.zeros((classes, classes), np.int64) for m in methods for h in self.horizons}
        self.squares = {(m, h): [0.0, 0] for m in methods for h in self.horizons}
        self.pairs = {h: set() for h in self.horizons}

    def add(self, method: str, horizon: int, pair: Any, predicted: np.ndarray, observed: np.ndarray,
            valid: np.ndarray) -> None:  # fmt: skip
        """Score one forecast: class ids (h, w) or values (C, h, w) against the observed ones over ``valid``."""
        self.pairs[horizon].add(pair)
        if self.kind == "classes":
            self.matrices[method, horizon] += confusion(predicted, observed, valid, self.classes)
        else:
            diff = (np.asarray(predicted, np.float64) - observed)[:, valid]
            diff = diff[np.isfinite(diff)]
            cell = self.squares[method, horizon]
            cell[0] += float((diff**2).sum())
            cell[1] += int(diff.size)

    def rows(self) -> list[ScoreRow]:
        """One row per method and horizon, skill against persistence (absent persistence: NaN)."""
        out = []
        for h in self.horizons:
            cells = {}
            for m in self.methods:
                if self.kind == "classes":
                    matrix = self.matrices[m, h]
                    s = class_scores(matrix)
                    cells[m] = ScoreRow(m, h, len(self.pairs[h]), int(matrix.sum()), s["accuracy"], s["miou"])
                else:
                    total, count = self.squares[m, h]
                    rmse = math.sqrt(total / count) if count else math.nan
                    cells[m] = ScoreRow(m, h, len(self.pairs[h]), count, rmse=rmse)
            ref = cells.get(PERSISTENCE)
            for row in cells.values():
                if ref is not None and row.pixels:
                    if self.kind == "classes":
                        row.skill = skill(1.0 - row.accuracy, 1.0 - ref.accuracy)
                    else:
                        row.skill = skill(row.rmse, ref.rmse)
                out.append(row)
        return out


def best_method(rows: list[ScoreRow]) -> tuple[str, dict[str, float]]:
    """The method to write, from the hindcast ``rows`` (:meth:`ScoreBoard.rows`), and each method's mean error
    over the horizons (1 - accuracy for class forecasts, RMSE for values).

    The model, unless a baseline's mean error is clearly below the model's: by more than
    :data:`CHOICE_MARGIN_ACCURACY` of accuracy, or :data:`CHOICE_MARGIN_RMSE` of the model's RMSE. A hindcast of
    a few days is noisy, and choosing on small differences picked the worse method about as often as the better
    one; a model that does clearly worse than doing nothing on the user's own last dates is not written. The
    baseline is persistence unless the trend is clearly better than it, by the same margin."""
    errors: dict[str, float] = {}
    for method in METHODS:
        cells = [r for r in rows if r.method == method and r.pixels]
        values = [1.0 - r.accuracy if math.isnan(r.rmse) else r.rmse for r in cells]
        values = [v for v in values if not math.isnan(v)]
        if values:
            errors[method] = float(np.mean(values))
    continuous = any(not math.isnan(r.rmse) for r in rows)

    def clearly_below(a: str, b: str) -> bool:  # a's error clearly below b's
        if a not in errors or b not in errors:
            return False
        if continuous:
            return errors[a] < errors[b] * (1.0 - CHOICE_MARGIN_RMSE)
        return errors[a] < errors[b] - CHOICE_MARGIN_ACCURACY

    baseline_best = TREND if clearly_below(TREND, PERSISTENCE) else PERSISTENCE
    return (baseline_best if clearly_below(baseline_best, MODEL) else MODEL), errors
