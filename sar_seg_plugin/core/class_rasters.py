"""Class rasters a model writes: the uint8 class map with its palette, float probability and confidence rasters,
and the stager that writes finished rows in whole GeoTIFF block rows. No qgis import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack

import numpy as np

from ..models.metadata import ModelMetadata, hex_rgba
from .errors import SarSegError
from .outputs import OutputSet
from .raster_io import GeoTiffWriter, RasterInfo, Window

CLASS_NODATA = 255
#: Columns of finished block rows written at a time (a multiple of the 256-px output blocks).
FINISH_CHUNK = 2048
#: Confidence outputs: probability of the chosen class, or normalised Shannon entropy of the probabilities.
CONFIDENCE_MEASURES = ("max", "entropy")


def class_palette(meta: ModelMetadata) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of a class raster: the model's class colours only. Nodata (255) is left out: an entry there
    would make a 256-entry table, which QGIS lists whole (250 black legend entries)."""
    return {i: hex_rgba(c) for i, c in enumerate(meta.class_colors)}


def class_writer(
    path: str,
    width: int,
    height: int,
    geotransform: Sequence[float] | None,
    projection: str,
    meta: ModelMetadata,
    metadata: dict[str, str] | None = None,
    outputs: OutputSet | None = None,
) -> GeoTiffWriter:
    """A uint8 class raster (nodata 255) with the model's colours and class names, so it loads paletted."""
    return GeoTiffWriter(
        path,
        width,
        height,
        1,
        np.uint8,
        geotransform,
        projection,
        nodata=CLASS_NODATA,
        descriptions=["class"],
        metadata={"MODEL": meta.name, "CLASS_NAMES": ",".join(meta.class_names), **(metadata or {})},
        color_table=class_palette(meta),
        category_names=list(meta.class_names),
        outputs=outputs,
    )


def open_writers(
    stack: ExitStack,
    info: RasterInfo,
    meta: ModelMetadata,
    paths: Sequence[str | None],
    confidence: str,
    outputs: OutputSet | None,
    metadata: dict[str, str],
) -> tuple[GeoTiffWriter, GeoTiffWriter | None, GeoTiffWriter | None]:
    """The class, probability and confidence writers of a run (None when not asked for), entered in ``stack``.

    ``paths`` are the class, probability and confidence destinations; ``metadata`` goes to each file."""
    dst_path, probabilities_path, confidence_path = paths
    geotransform = info.geotransform if info.georeferenced else None
    classes = stack.enter_context(
        class_writer(dst_path, info.width, info.height, geotransform, info.projection, meta, metadata, outputs)
    )

    def float_writer(path: str | None, names: Sequence[str]) -> GeoTiffWriter | None:
        if not path:
            return None
        writer = GeoTiffWriter(
            path, info.width, info.height, len(names), np.float32, geotransform, info.projection,
            nodata=float("nan"), descriptions=list(names), metadata={"MODEL": meta.name, **metadata}, outputs=outputs,
        )  # fmt: skip
        return stack.enter_context(writer)

    return (
        classes,
        float_writer(probabilities_path, meta.class_names),
        float_writer(confidence_path, [_confidence_name(confidence)]),
    )


class RowStager:
    """Finished output rows held until whole block rows of the GeoTIFF are complete, then written block-aligned.

    Tile rows finish bands of rows that do not line up with the output's 256-row blocks; writing them as they
    come would compress and flush half-empty blocks and rewrite them later. Memory: one block row plus one band
    of finished rows, times the raster width, in the output's own data type (1 byte per pixel for classes).
    """

    def __init__(self, writer: GeoTiffWriter, width: int, height: int, max_band_rows: int, fill: float) -> None:
        self.writer, self.width, self.height = writer, width, height
        self.block_rows = writer.ds.GetRasterBand(1).GetBlockSize()[1]
        self.buffer = np.full((writer.band_count, self.block_rows + max_band_rows, width), fill, writer.dtype)
        self.top = 0  # raster row of buffer row 0

    def put(self, row: int, col: int, array: np.ndarray) -> None:
        """Store a (bands, rows, cols) piece of finished output whose top-left pixel is (row, col)."""
        if array.ndim == 2:
            array = array[None]
        r = row - self.top
        self.buffer[:, r : r + array.shape[1], col : col + array.shape[2]] = array

    def complete(self, row: int) -> None:
        """Every pixel above raster row ``row`` has been put: write the whole block rows among them."""
        end = row if row >= self.height else (row // self.block_rows) * self.block_rows
        n = end - self.top
        if n <= 0:
            return
        for c0 in range(0, self.width, FINISH_CHUNK):
            c1 = min(self.width, c0 + FINISH_CHUNK)
            self.writer.write(Window(c0, self.top, c1 - c0, n), self.buffer[:, :n, c0:c1])
            self.writer.release_cache()
        rest = row - end
        self.buffer[:, :rest] = self.buffer[:, n : n + rest]
        self.top = end


def _confidence_name(measure: str) -> str:
    return "entropy" if measure == "entropy" else "confidence"


def confidence_of(p: np.ndarray, measure: str) -> np.ndarray:
    """Per-pixel confidence of (classes, ...) probabilities: "max" (probability of the chosen class) or
    "entropy" (Shannon entropy divided by log(classes): 0 = certain, 1 = all classes equally likely)."""
    if measure == "max":
        return p.max(axis=0)
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p), 0.0)
        return (-terms.sum(axis=0) / math.log(max(p.shape[0], 2))).astype(np.float32)
    raise SarSegError(f"unknown confidence measure '{measure}': expected one of {', '.join(CONFIDENCE_MEASURES)}")


def argmax_and_max(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(np.argmax(p, axis=0) as uint8, p.max(axis=0))`` of a (classes, ...) float array in one pass over the
    classes (ties go to the first class, like ``np.argmax``; at most 255 classes): about 1.4x faster than the two
    reductions along the leading axis."""
    best = p[0].copy()
    classes = np.zeros(p.shape[1:], np.uint8)
    for c in range(1, p.shape[0]):
        higher = p[c] > best
        classes[higher] = c
        np.maximum(best, p[c], out=best)
    return classes, best


#: A pixel whose chosen class has a probability under this is "unsure" (with 5 classes: less than an even bet).
UNSURE_BELOW = 0.5
#: Share of unsure pixels above which a run warns that much of the map is unreliable.
UNSURE_WARN_SHARE = 0.25


class ConfidenceTally:
    """Running totals of the probability of the chosen class over the pixels of a class map, per class: what the
    model itself says of how much of its map to trust (the mean confidence of a calibrated model is the share of
    pixels it expects to have right, on data like its training data)."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.pixels = np.zeros(classes, np.int64)
        self.total = np.zeros(classes, np.float64)
        self.unsure = 0

    def add(self, classes: np.ndarray, top: np.ndarray, ok: np.ndarray) -> None:
        """Count the pixels ``ok`` of a block: chosen ``classes`` and their probability ``top``."""
        ok = ok & np.isfinite(top)
        c, t = (classes.ravel(), top.ravel()) if ok.all() else (classes[ok], top[ok])
        self.pixels += np.bincount(c, minlength=self.classes)[: self.classes]
        self.total += np.bincount(c, weights=t, minlength=self.classes)[: self.classes]
        self.unsure += int((t < UNSURE_BELOW).sum())

    def summary(self, class_names: Sequence[str]) -> dict:
        """Mean confidence overall and per class (None where no pixel), share of unsure pixels, pixels counted."""
        n = int(self.pixels.sum())
        return {
            "mean": float(self.total.sum() / n) if n else None,
            "unsure_share": self.unsure / n if n else None,
            "per_class": {
                name: (float(s / p) if p else None) for name, s, p in zip(class_names, self.total, self.pixels)
            },
            "pixels": n,
        }


def describe_confidence(summary: dict, reference: dict | None = None, outside: bool = False) -> tuple[str, str | None]:
    """The log line of a run's :meth:`ConfidenceTally.summary`, and a warning when more than
    :data:`UNSURE_WARN_SHARE` of the pixels are unsure (else None). ``reference``: the model's mean confidence and
    pixel accuracy measured on scenes it was not trained on (``{"mean_confidence", "overall_accuracy", "where"}``),
    quoted so the figure is read for what it is. ``outside``: the input-domain check found the input outside the
    model's training envelope, where a model can be confidently wrong (a scene 10 dB too dark is segmented with
    a higher mean confidence than the same scene calibrated): the line says so."""
    if summary.get("mean") is None:
        return "Confidence: no pixel was classified", None
    per_class = ", ".join(f"{name} {v:.2f}" for name, v in summary["per_class"].items() if v is not None)
    line = (
        f"Confidence (probability of the chosen class): mean {summary['mean']:.2f}, "
        f"{summary['unsure_share']:.1%} of the pixels under {UNSURE_BELOW:g}; per class: {per_class}"
    )
    if reference:
        line += (
            f". On {reference['where']}, never trained on, the model's mean confidence was "
            f"{reference['mean_confidence']:.2f} and {reference['overall_accuracy']:.0%} of the pixels were right: "
            "on data unlike its training, read the confidence as an upper bound"
        )
    if outside:
        line += (
            ". The input lies outside the model's training envelope (see the warnings above): there a high "
            "confidence does not mean a right class"
        )
    warning = None
    if summary["unsure_share"] > UNSURE_WARN_SHARE:
        warning = (
            f"The model is unsure on {summary['unsure_share']:.0%} of the pixels (probability of the chosen class "
            f"under {UNSURE_BELOW:g}): the map is unreliable there. Check the input's units, calibration and "
            "speckle (the input-domain check above), write the confidence output to see where, or fine-tune the "
            "model on a few labelled polygons of this area (sarseg:extract_patches, then "
            "training.train_segmentation --init bundled)"
        )
    return line, warning
