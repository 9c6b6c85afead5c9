"""Segmentation accuracy: a predicted class raster against a reference (ground truth) class raster.

The confusion matrix is accumulated block by block (memory is bounded by the block, not the raster); the
metrics (IoU, Dice, precision, recall, overall accuracy, mIoU) are computed from the matrix alone. Rows of the
matrix are reference classes, columns predicted classes. Pixels that are nodata in either raster are ignored.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CancelledError, SarSegError
from .html_report import fmt, table, write_page
from .outputs import OutputSet, write_text
from .raster_io import (
    DEFAULT_BLOCK,
    CancelFn,
    ProgressFn,
    category_names,
    iter_blocks,
    open_raster,
    read_info,
    read_window,
    valid_mask,
)
from .timeseries import Grid, aligned, release

#: Class values 0..MAX_CLASS are counted; 255 is the usual nodata of Byte class maps.
MAX_CLASS = 254
TABLE_FORMATS = (".csv", ".json")


def confusion_matrix(
    reference: np.ndarray, predicted: np.ndarray, num_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are reference classes, columns predicted classes.

    Pixels outside ``valid`` (when given) or with a value outside 0..num_classes-1 in either array are ignored.
    """
    ref = np.asarray(reference).ravel()
    pred = np.asarray(predicted).ravel()
    keep = (ref >= 0) & (ref < num_classes) & (pred >= 0) & (pred < num_classes)
    if valid is not None:
        keep &= np.asarray(valid, bool).ravel()
    index = ref[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_matrix(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class IoU, Dice, precision, recall and support, plus overall accuracy, mIoU and macro Dice.

    A class absent from both reference and prediction has NaN metrics and is left out of the means; precision
    is NaN for a class never predicted, recall for a class absent from the reference.
    """
    m = np.asarray(matrix, np.float64)
    tp = np.diag(m)
    support = m.sum(axis=1)  # reference pixels of each class
    predicted = m.sum(axis=0)
    fp, fn = predicted - tp, support - tp
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    present = (support + predicted) > 0
    total = m.sum()
    return {
        "iou": iou,
        "dice": dice,
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "overall_accuracy": float(tp.sum() / total) if total else math.nan,
        "mean_iou": float(iou[present].mean()) if present.any() else math.nan,
        "mean_dice": float(dice[present].mean()) if present.any() else math.nan,
    }


@dataclass
class ClassMetrics:
    """Accuracy of one class; NaN where undefined (see :func:`metrics_from_matrix`)."""

    value: int
    name: str
    iou: float
    dice: float
    precision: float
    recall: float
    support: int  # reference pixels of the class
    predicted: int  # pixels predicted as the class


@dataclass
class EvaluationResult:
    """The confusion matrix (rows reference, columns predicted, over ``class_values``) and its metrics."""

    predicted_path: str
    reference_path: str
    class_values: list[int]
    class_names: list[str]
    matrix: np.ndarray
    classes: list[ClassMetrics]
    overall_accuracy: float
    mean_iou: float
    mean_dice: float
    valid_pixels: int
    ignored_pixels: int  # nodata in either raster, or a value outside 0..MAX_CLASS
    reference_aligned: bool  # True when the reference was resampled onto the predicted grid
    notes: list[str] = field(default_factory=list)

    @property
    def present_classes(self) -> list[int]:
        """Values of the classes found in the reference or the prediction (those the means are taken over)."""
        return [c.value for c in self.classes if c.support + c.predicted > 0]


def result_from_matrix(
    full_matrix: np.ndarray,
    class_names: Sequence[str] = (),
    *,
    predicted_path: str = "",
    reference_path: str = "",
    ignored_pixels: int = 0,
    reference_aligned: bool = False,
) -> EvaluationResult:
    """An :class:`EvaluationResult` from a matrix over values 0..n-1: keeps the named classes plus any other
    class value seen; unnamed classes are called 'class N'."""
    full = np.asarray(full_matrix, np.int64)
    seen = np.flatnonzero(full.sum(axis=0) + full.sum(axis=1))
    values = sorted(set(range(min(len(class_names), full.shape[0]))) | {int(v) for v in seen})
    matrix = full[np.ix_(values, values)]
    names = [class_names[v] if v < len(class_names) and class_names[v] else f"class {v}" for v in values]
    stats = metrics_from_matrix(matrix)
    classes = [
        ClassMetrics(
            value=v,
            name=names[i],
            iou=float(stats["iou"][i]),
            dice=float(stats["dice"][i]),
            precision=float(stats["precision"][i]),
            recall=float(stats["recall"][i]),
            support=int(stats["support"][i]),
            predicted=int(stats["predicted"][i]),
        )
        for i, v in enumerate(values)
    ]
    return EvaluationResult(
        predicted_path=predicted_path,
        reference_path=reference_path,
        class_values=values,
        class_names=names,
        matrix=matrix,
        classes=classes,
        overall_accuracy=float(stats["overall_accuracy"]),
        mean_iou=float(stats["mean_iou"]),
        mean_dice=float(stats["mean_dice"]),
        valid_pixels=int(matrix.sum()),
        ignored_pixels=int(ignored_pixels),
        reference_aligned=reference_aligned,
    )


def raster_class_names(ds: object) -> list[str]:
    """Category names of a dataset's first band (trailing empty names dropped); [] when it has none."""
    names = category_names(ds.GetRasterBand(1))  # type: ignore[attr-defined]
    while names and not names[-1]:
        names.pop()
    return names[: MAX_CLASS + 1]


def _name_key(name: str) -> str:
    """A class name compared loosely: case, spaces, '_' and '-' do not count ("Bare_soil" = "bare soil")."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


@dataclass(frozen=True)
class ClassRecode:
    """How the class values of a raster that names its classes map onto a list of class names.

    ``lut`` (256 entries, unnamed or unmatched values -> 255) when the raster names the same classes at other
    values; None when values can be taken as they are (same names at the same values) or when the names cannot
    say (none given, or no name in common: then ``note`` says so)."""

    lut: np.ndarray | None
    note: str | None


def recode_by_names(source: Sequence[str], target: Sequence[str], what: str, into: str) -> ClassRecode:
    """Match the category names of ``what`` (``source``, by class value) with the class names of ``into``
    (``target``). Names are compared loosely (:func:`_name_key`); empty names do not count."""
    keys = {_name_key(n): j for j, n in enumerate(target) if n}
    pairs = {i: keys[_name_key(n)] for i, n in enumerate(source) if n and _name_key(n) in keys}
    named = [i for i, n in enumerate(source) if n]
    if not named or not keys:
        return ClassRecode(None, None)
    if not pairs:
        listed = ", ".join(f"{i} {source[i]}" for i in named[:8])
        return ClassRecode(
            None,
            f"{what} names its classes {listed}{', ...' if len(named) > 8 else ''}: none of them is a class of {into} "
            f"({', '.join(target)}), so its values are taken as they are. Check that they code the same classes.",
        )
    if all(i == j for i, j in pairs.items()):  # the names it shares are at the same values: no recoding
        other = [f"{i} {source[i]!r} ({target[i]!r} there)" for i in named if i not in pairs and i < len(target)]
        if not other:
            return ClassRecode(None, None)
        return ClassRecode(
            None, f"{what} names some classes otherwise than {into}: {', '.join(other)}; compared by value."
        )
    lut = np.full(256, 255, np.uint8)
    for i, j in pairs.items():
        lut[i] = j
    moved = ", ".join(f"{i} -> {j} ({target[j]})" for i, j in pairs.items() if i != j)
    left = [f"{i} ({source[i]})" for i in named if i not in pairs]
    note = f"{what} names its classes in another order than {into}: its values are recoded by name, {moved}"
    if left:
        note += f"; {', '.join(left)} match no class there and are left out"
    return ClassRecode(lut, note + "; values it does not name are left out.")


def _class_values(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer class values and a mask of pixels usable as classes (valid, whole numbers in 0..MAX_CLASS)."""
    with np.errstate(invalid="ignore"):
        usable = valid & (data >= 0) & (data <= MAX_CLASS) & (np.floor(data) == data)
    return np.where(usable, data, 0).astype(np.int64), usable


def evaluate_rasters(
    predicted_path: str,
    reference_path: str,
    class_names: Sequence[str] | None = None,
    *,
    block_size: int = DEFAULT_BLOCK,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
) -> EvaluationResult:
    """Compare a predicted class raster with a reference class raster (first band of each), block by block.

    A reference on another grid is resampled (nearest neighbour) onto the predicted grid; rasters that do not
    overlap, or that differ in grid and lack a CRS, are refused. Nodata in either raster is ignored, as are values
    that cannot be classes (outside 0..254 or not whole numbers). Class names come from ``class_names``, else
    the predicted raster's category names, else 'class N'.
    """
    predicted_path, reference_path = str(predicted_path), str(reference_path)
    pred_ds = open_raster(predicted_path)
    pred_info = read_info(pred_ds)
    names = list(class_names) if class_names else raster_class_names(pred_ds)
    pred_grid = Grid.of(pred_info)
    ref_src = open_raster(reference_path)
    reference_aligned = not Grid.of(read_info(ref_src)).same_as(pred_grid)
    recode = recode_by_names(raster_class_names(ref_src), names, "The reference", "the predicted classes")
    ref_src = None
    ref_ds = aligned(reference_path, pred_grid, "nearest", role="predicted raster")
    try:
        ref_info = read_info(ref_ds)
        size = MAX_CLASS + 1
        counts = np.zeros(size * size, np.int64)
        ignored = 0
        blocks = iter_blocks(pred_info.width, pred_info.height, block_size)
        row = 0
        for n, block in enumerate(blocks, start=1):
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            if block.core.y != row:  # rows above are not read again: free their tiles from GDAL's cache
                pred_ds.FlushCache()
                ref_ds.FlushCache()
                row = block.core.y
            pred = read_window(pred_ds, block.core, [1], np.float64)
            ref = read_window(ref_ds, block.core, [1], np.float64)
            pred_cls, pred_ok = _class_values(pred[0], valid_mask(pred, pred_info.nodata[:1])[0])
            ref_cls, ref_ok = _class_values(ref[0], valid_mask(ref, ref_info.nodata[:1])[0])
            if recode.lut is not None:
                ref_cls = recode.lut[np.minimum(ref_cls, 255)].astype(np.int64)
                ref_ok &= ref_cls != 255
            keep = pred_ok & ref_ok
            ignored += int(keep.size - keep.sum())
            counts += np.bincount(ref_cls[keep] * size + pred_cls[keep], minlength=size * size)
            if progress:
                progress(100.0 * n / len(blocks))
    finally:
        release(ref_ds)
        ref_ds = None
    full = counts.reshape(size, size)
    if full.sum() == 0:
        raise SarSegError(
            f"No pixel holds a class in both '{Path(predicted_path).name}' and '{Path(reference_path).name}' "
            "(all nodata, or no overlap of their valid areas). Give class rasters (values 0..254) that cover "
            "the same area."
        )
    result = result_from_matrix(
        full,
        names,
        predicted_path=predicted_path,
        reference_path=reference_path,
        ignored_pixels=ignored,
        reference_aligned=reference_aligned,
    )
    if pred_info.band_count > 1 or ref_info.band_count > 1:
        result.notes.append("Only the first band of each raster was compared.")
    if reference_aligned:
        result.notes.append("The reference was resampled (nearest neighbour) onto the grid of the predicted raster.")
    if recode.note:
        result.notes.append(recode.note)
    unnamed = [v for v in result.class_values if v >= len(names)] if names else []
    if unnamed:
        result.notes.append(f"Class values without a name: {', '.join(map(str, unnamed))}.")
    return result


# --- writers -------------------------------------------------------------------------------------------------


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def result_to_dict(result: EvaluationResult) -> dict[str, object]:
    """A JSON-ready dict of the result (NaN as null)."""
    return {
        "predicted": result.predicted_path,
        "reference": result.reference_path,
        "reference_aligned": result.reference_aligned,
        "overall_accuracy": _number(result.overall_accuracy),
        "mean_iou": _number(result.mean_iou),
        "mean_dice": _number(result.mean_dice),
        "valid_pixels": result.valid_pixels,
        "ignored_pixels": result.ignored_pixels,
        "classes": [
            {
                "value": c.value,
                "name": c.name,
                "iou": _number(c.iou),
                "dice": _number(c.dice),
                "precision": _number(c.precision),
                "recall": _number(c.recall),
                "support": c.support,
                "predicted": c.predicted,
            }
            for c in result.classes
        ],
        "confusion_matrix": {
            "rows": "reference",
            "columns": "predicted",
            "class_values": result.class_values,
            "class_names": result.class_names,
            "counts": result.matrix.tolist(),
        },
        "notes": result.notes,
    }


CSV_COLUMNS = ("class_value", "class_name", "iou", "dice", "precision", "recall", "support", "predicted")


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def write_table(result: EvaluationResult, path: str | os.PathLike, outputs: OutputSet | None = None) -> Path:
    """Write the metrics as JSON (``.json``) or CSV (``.csv``).

    CSV: one row per class (metrics, then its confusion-matrix row as ``ref_vs_pred_<value>`` columns), then a
    ``mean`` row with mIoU, macro Dice / precision / recall, the valid pixel count and ``overall_accuracy``.
    Undefined values are empty cells.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return write_text(path, json.dumps(result_to_dict(result), indent=2) + "\n", outputs)
    if suffix != ".csv":
        raise SarSegError(f"The table '{path}' must end in .csv or .json.")
    matrix_columns = [f"ref_vs_pred_{v}" for v in result.class_values]
    rows = [[*CSV_COLUMNS, "overall_accuracy", *matrix_columns]]
    for i, c in enumerate(result.classes):
        metrics = [_cell(x) for x in (c.iou, c.dice, c.precision, c.recall)]
        rows.append([str(c.value), c.name, *metrics, str(c.support), str(c.predicted), "", *map(str, result.matrix[i])])
    present = [c for c in result.classes if c.support + c.predicted > 0]
    macro_p = np.nanmean([c.precision for c in present]) if any(math.isfinite(c.precision) for c in present) else None
    macro_r = np.nanmean([c.recall for c in present]) if any(math.isfinite(c.recall) for c in present) else None
    rows.append(
        [
            "",
            "mean",
            _cell(result.mean_iou),
            _cell(result.mean_dice),
            _cell(macro_p),
            _cell(macro_r),
            str(result.valid_pixels),
            str(result.valid_pixels),
            _cell(result.overall_accuracy),
            *[""] * len(matrix_columns),
        ]
    )
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return write_text(path, buffer.getvalue(), outputs)


def write_html_report(result: EvaluationResult, path: str | os.PathLike, outputs: OutputSet | None = None) -> Path:
    """A self-contained HTML page: summary, per-class metrics, the confusion matrix and the inputs."""
    e = html.escape
    summary = [
        ("Overall accuracy", fmt(result.overall_accuracy, 4)),
        ("Mean IoU (mIoU)", fmt(result.mean_iou, 4)),
        ("Mean Dice", fmt(result.mean_dice, 4)),
        ("Pixels compared", f"{result.valid_pixels}"),
        ("Pixels ignored (nodata or not a class)", f"{result.ignored_pixels}"),
        ("Classes in the means", ", ".join(e(c.name) for c in result.classes if c.support + c.predicted > 0)),
    ]
    per_class = [
        [str(c.value), (e(c.name), "name"), *(fmt(v, 4) for v in (c.iou, c.dice, c.precision, c.recall))]
        + [str(c.support), str(c.predicted)]
        for c in result.classes
    ]
    matrix = [
        [(e(name), "name"), *((str(n), "diag") if i == j else str(n) for j, n in enumerate(result.matrix[i]))]
        + [str(int(result.matrix[i].sum()))]
        for i, name in enumerate(result.class_names)
    ]
    matrix.append([("Total", "name"), *(str(int(n)) for n in result.matrix.sum(axis=0)), str(result.valid_pixels)])
    inputs = [
        [("Predicted raster", "name"), e(str(result.predicted_path))],
        [("Reference raster", "name"), e(str(result.reference_path))],
    ]
    parts = [
        "<h2>Summary</h2>",
        table([], [[(e(k), "name"), v] for k, v in summary], "left", row_heads=True),
        "<h2>Per class</h2>",
        table(
            ["Value", ("Class", "name"), "IoU", "Dice", "Precision", "Recall", "Support (reference pixels)"]
            + ["Predicted pixels"],
            per_class,
        ),
        "<h2>Confusion matrix</h2><p>Rows: reference classes; columns: predicted classes (pixels).</p>",
        table(
            [("reference \\ predicted", "name"), *(e(n) for n in result.class_names), "Total"], matrix, row_heads=True
        ),
        "<h2>Inputs</h2>",
        table([], inputs, "left", row_heads=True),
    ]
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result.notes) + "</ul>")
    parts.append(
        "<p>IoU = TP / (TP + FP + FN); Dice = 2 TP / (2 TP + FP + FN); precision = TP / predicted; "
        "recall = TP / reference. Means are over the classes present in the reference or the prediction.</p>"
    )
    return write_page(path, "Segmentation accuracy", parts, outputs)
