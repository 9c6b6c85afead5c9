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
