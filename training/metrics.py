"""Segmentation metrics for training, on the plugin's own formulas (``sar_seg_plugin.core.evaluation``).

The confusion matrix (truth in rows, predictions in columns) and the per-class IoU, Dice, precision and recall
are the ones ``sarseg:evaluate_segmentation`` reports, so a figure from training and a figure from the tool agree.
What training adds: a strict check of class ids, a matrix accumulated batch by batch (:class:`ConfusionMatrix`),
and the metrics as a plain dict for JSON logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sar_seg_plugin.core import evaluation

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
    return evaluation.confusion_matrix(truth, pred, n_classes)


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


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Per-class IoU, Dice (F1), precision, recall and support, plus overall accuracy, mIoU and macro Dice, from
    :func:`sar_seg_plugin.core.evaluation.metrics_from_matrix`.

    A class whose denominator is zero gets NaN for that metric and is left out of the means: ``miou`` and
    ``macro_dice`` average over the classes present in the truth or in the prediction (a class absent from both
    says nothing about the model), as ``sklearn.metrics.jaccard_score`` / ``f1_score`` with ``average="macro"``
    do with their default labels. ``macro_precision`` and ``macro_recall`` average the non-NaN values.

    Returns ``{"overall_accuracy", "miou", "macro_dice", "macro_precision", "macro_recall", "pixels",
    "per_class": {name: {"iou", "dice", "precision", "recall", "support"}}}``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class confusion matrix")
    m = evaluation.metrics_from_matrix(cm)
    per_class = {
        name: {
            "iou": float(m["iou"][i]),
            "dice": float(m["dice"][i]),
            "precision": float(m["precision"][i]),
            "recall": float(m["recall"][i]),
            "support": int(m["support"][i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "overall_accuracy": m["overall_accuracy"],
        "miou": m["mean_iou"],
        "macro_dice": m["mean_dice"],
        "macro_precision": _nanmean(m["precision"]),
        "macro_recall": _nanmean(m["recall"]),
        "pixels": int(cm.sum()),
        "per_class": per_class,
    }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan
