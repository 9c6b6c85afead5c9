"""Segmentation and forecast metrics on numpy arrays (no torch needed, so the plugin can share the formulas).

Segmentation metrics come from a confusion matrix with truth in rows and predictions in columns, accumulated
batch by batch with :class:`ConfusionMatrix` so a whole validation set never has to sit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore: int | None = IGNORE_INDEX
) -> np.ndarray:
    """(n_classes, n_classes) int64 pixel counts, rows = truth, cols = prediction.

    Pixels where the truth or the prediction equals ``ignore`` (label nodata, or no prediction) are left out;
    any other value outside ``0..n_classes-1`` raises ``ValueError``.
    """
    pred = np.asarray(pred).ravel()
    truth = np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction has {pred.size} pixels but truth has {truth.size}")
    if ignore is not None:
        keep = (pred != ignore) & (truth != ignore)
        pred, truth = pred[keep], truth[keep]
    pred = pred.astype(np.int64, copy=False)
    truth = truth.astype(np.int64, copy=False)
    for name, values in (("prediction", pred), ("truth", truth)):
        bad = (values < 0) | (values >= n_classes)
        if bad.any():
            raise ValueError(f"{name} holds class {int(values[bad][0])}, outside 0..{n_classes - 1}")
    counts = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


class ConfusionMatrix:
    """A confusion matrix accumulated over batches (rows = truth, cols = prediction)."""

    def __init__(self, n_classes: int, ignore: int | None = IGNORE_INDEX) -> None:
        self.n_classes = n_classes
        self.ignore = ignore
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add the pixels of one batch (any shape; CPU torch tensors work too)."""
        self.matrix += confusion_matrix(pred, truth, self.n_classes, self.ignore)

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self.matrix[:] = 0

    def metrics(self, class_names: Sequence[str]) -> dict:
        """:func:`segmentation_metrics` of the pixels seen so far."""
        return segmentation_metrics(self.matrix, class_names)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Per-class IoU, Dice (F1), precision, recall and support, plus overall accuracy, mIoU and macro Dice.

    A class whose denominator is zero gets NaN for that metric and is left out of the means. IoU and Dice share
    the denominator TP + FP + FN, so ``miou`` and ``macro_dice`` average over the classes present in the truth
    or in the prediction: a class absent from both says nothing about the model and must not count as 0 (nor
    as a perfect 1). This is what ``sklearn.metrics.jaccard_score`` / ``f1_score`` with ``average="macro"``
    do with their default labels. ``macro_precision`` and ``macro_recall`` average the non-NaN values.

    Returns ``{"overall_accuracy", "miou", "macro_dice", "macro_precision", "macro_recall", "pixels",
    "per_class": {name: {"iou", "dice", "precision", "recall", "support"}}}``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class confusion matrix")
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # truth pixels per class
    predicted = cm.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    total = int(cm.sum())
    per_class = {
        name: {
            "iou": float(iou[i]),
            "dice": float(dice[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "overall_accuracy": float(tp.sum() / total) if total else math.nan,
        "miou": _nanmean(iou),
        "macro_dice": _nanmean(dice),
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(recall),
        "pixels": total,
        "per_class": per_class,
    }


def _errors(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """pred - truth over valid, finite pixels (float64)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    keep = np.isfinite(pred) & np.isfinite(truth)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    return pred[keep] - truth[keep]


def rmse(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Root mean square error over the finite (and ``valid``) pixels; NaN when there are none."""
    err = _errors(pred, truth, valid)
    return float(np.sqrt(np.mean(err**2))) if err.size else math.nan


def mae(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean absolute error over the finite (and ``valid``) pixels; NaN when there are none."""
    err = _errors(pred, truth, valid)
    return float(np.mean(np.abs(err))) if err.size else math.nan


def skill(error_model: float, error_persistence: float) -> float:
    """Skill score against persistence: ``1 - model / persistence`` (1 perfect, 0 no better, < 0 worse).

    NaN when the persistence error is 0 (the reference is already perfect; no ratio is meaningful).
    """
    if error_persistence == 0 or not math.isfinite(error_persistence) or not math.isfinite(error_model):
        return math.nan
    return 1.0 - float(error_model) / float(error_persistence)
