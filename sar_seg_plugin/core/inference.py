"""Tiled segmentation of a raster with an ONNX model: overlapping tiles, smooth blending, streamed.

Tiles run in rows, batches of tiles left to right. Per-class probabilities and blend weights are accumulated only
for the pixels later tiles can still touch: the columns the next batch shares, and the rows the next tile row
shares (about the model's overlap). Finished pixels leave at once and are written in whole GeoTIFF blocks. Memory
is a few tiles plus a few bytes per raster column, whatever the raster size. No qgis import: plain pytest covers it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal, osr

from ..models.metadata import ModelMetadata
from . import domain, raster_io
from .errors import CancelledError, SarSegError
from .outputs import OutputSet, check_destinations, remove_folder, temporary_folder
from .preprocess import check_has_data
from .raster_io import GeoTiffWriter, RasterInfo, Window
from .units import AUTO, DB, LINEAR, TO_DB, ModelInput, convert_scale, plan_model_input

CLASS_NODATA = 255
#: Columns of finished block rows written at a time (a multiple of the 256-px output blocks).
FINISH_CHUNK = 2048
#: Confidence outputs: probability of the chosen class, or normalised Shannon entropy of the probabilities.
CONFIDENCE_MEASURES = ("max", "entropy")
LogFn = Callable[[str], None]


def blend_window(
    tile: int, overlap: int, *, top: bool = True, bottom: bool = True, left: bool = True, right: bool = True
) -> np.ndarray:
    """(tile, tile) float32 blending weights: 1 in the middle, a sin² ramp over ``overlap`` pixels on each side.

    A side flag set to False means the side lies on the raster border, where no other tile helps: it keeps weight 1.
    A ramped side starts at exactly 0 on the tile's outermost pixel (the pixel a convolution sees with padding,
    hence the least reliable) and reaches 1 ``overlap - 1`` pixels in. Neighbouring tiles overlap by at least
    ``overlap`` pixels, so every raster pixel gets a positive total weight, including right and bottom edges.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile {tile}, overlap {overlap}")

    def ramp_1d(start: bool, end: bool) -> np.ndarray:
        w = np.ones(tile, dtype=np.float64)
        if overlap >= 2:
            ramp = np.sin(0.5 * np.pi * np.arange(overlap) / (overlap - 1)) ** 2
            if start:
                w[:overlap] = np.minimum(w[:overlap], ramp)
            if end:
                w[tile - overlap :] = np.minimum(w[tile - overlap :], ramp[::-1])
        return w

    return np.outer(ramp_1d(top, bottom), ramp_1d(left, right)).astype(np.float32)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``length`` pixels, evenly spread: at most ``stride`` apart, the first at 0 and the
    last ending on the border (no padding unless the raster is smaller than a tile).

    Neighbours overlap by at least ``tile - stride`` pixels and, on long axes, hardly more, so the rows two tile
    rows share stay close to the model's overlap (shifting only the last tile back would make them up to a tile).
    """
    if length <= tile:
        return [0]
    gaps = math.ceil((length - tile) / stride)
    return [round(i * (length - tile) / gaps) for i in range(gaps + 1)]


def _pad_to(data: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad a (bands, h, w) array to (bands, size, size); 'edge' when an axis is a single pixel."""
    ph, pw = size - data.shape[1], size - data.shape[2]
    if ph == 0 and pw == 0:
        return data
    mode = "reflect" if min(data.shape[1], data.shape[2]) > 1 else "edge"
    return np.pad(data, ((0, 0), (0, ph), (0, pw)), mode=mode)


class _Probabilities:
    """Model output (n, c, h, w) -> per-class probabilities (n, classes, h, w), shape checked.

    Whether the model outputs logits (softmax applied) or probabilities (kept as they are) is decided on the first
    batch; a single sigmoid channel (a Deepness binary model) becomes background/object.
    """

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.classes = len(meta.class_names)
        self.already_probabilities: bool | None = None

    def __call__(self, out: np.ndarray, tile: int) -> np.ndarray:
        out = out.astype(np.float32, copy=False)
        sigmoid = out.ndim == 4 and out.shape[1] == 1 and self.classes == 2
        if out.ndim != 4 or (out.shape[1] != self.classes and not sigmoid) or out.shape[2:] != (tile, tile):
            raise SarSegError(
                f"model '{self.meta.name}' returned shape {tuple(out.shape)} for a {tile}x{tile} tile; "
                f"expected {self.classes} class channels of the tile size"
            )
        if self.already_probabilities is None:
            in_unit_range = bool(out.min() >= 0 and out.max() <= 1)
            self.already_probabilities = in_unit_range and (sigmoid or np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
        if sigmoid:
            p = out if self.already_probabilities else 1.0 / (1.0 + np.exp(-out))
            return np.concatenate([1.0 - p, p], axis=1)
        if self.already_probabilities:
            return out
        e = out - out.max(axis=1, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=1, keepdims=True)
        return e


def _hex_rgba(colour: str) -> tuple[int, int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), 255


def class_palette(meta: ModelMetadata) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of a class raster: the model's class colours only. Nodata (255) is left out: an entry there
    would make a 256-entry table, which QGIS lists whole (250 black legend entries)."""
    return {i: _hex_rgba(c) for i, c in enumerate(meta.class_colors)}


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


def _open_writers(
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


class _RowStager:
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


def segment_raster(
    src_path: str,
    dst_path: str,
    model: Any,
    *,
    probabilities_path: str | None = None,
    confidence_path: str | None = None,
    batch_size: int = 1,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    resample: bool = True,
    confidence: str = "max",
    input_scale: str = AUTO,
    warn: LogFn | None = None,
) -> dict[str, Any]:
    """Segment ``src_path`` with ``model`` (a ``registry.LoadedModel``) into a uint8 class raster at ``dst_path``.

    Optional outputs: float32 per-class probabilities and a confidence raster, ``confidence`` "max" (probability of
    the chosen class) or "entropy" (normalised entropy, 0 = certain, 1 = uniform; see :func:`confidence_of`).
    Input nodata pixels (any band the model reads) become class 255 / NaN.

    The model's bands are found by name where the raster names them (VV, VH, ...), else taken in order; each band's
    scale (dB or linear power) is decided by the rule of :mod:`.units` (``input_scale`` overrides it) and converted
    to the model's unit. What was decided is said in ``log`` (``warn`` when a band's unit and values disagree) and
    written to the outputs' metadata. The outputs appear together or not at all. Returns counts and timing; raises
    CancelledError (nothing written) when ``is_canceled`` turns true.

    With ``resample`` (the default), a raster whose pixel size differs from the model's ``pixel_size_m`` by more
    than 10 %, or whose CRS is geographic (degrees), is warped to the model's pixel size (bilinear, in linear
    power; in the local UTM zone for geographic input), segmented, and the results are warped back onto the
    raster's exact grid (classes nearest, probabilities and confidence bilinear). A model that records the pixel
    sizes it was trained on resamples only outside that range. See :func:`resampling_plan`.

    When the model records the envelope of its training inputs, the raster's ENL, per-band dB percentiles and
    pixel size are measured on the sample its units are decided from (before any resampling) and compared with
    it (:mod:`.domain`): each way it lies outside is a ``warn`` message, a summary goes to ``log``, and the
    outcome is written to every output's metadata (``SARSEG_INPUT_DOMAIN`` and related items) and returned under
    ``"input_domain"``. The run goes on either way.
    """
    started = time.perf_counter()
    meta: ModelMetadata = model.metadata
    if meta.task != "segmentation" or meta.output_kind != "classes":
        raise SarSegError(
            f"model '{meta.name}' is a {meta.task} model with '{meta.output_kind}' output; "
            "choose a segmentation model that outputs classes"
        )
    if batch_size < 1:
        raise SarSegError(f"batch size must be at least 1, got {batch_size}")
    if confidence not in CONFIDENCE_MEASURES:
        raise SarSegError(
            f"unknown confidence measure '{confidence}': expected one of {', '.join(CONFIDENCE_MEASURES)}"
        )
    outputs = [dst_path, probabilities_path, confidence_path]
    given = [p for p in outputs if p]
    for out in given:
        raster_io.check_not_same_file([src_path], out)
    if len(set(given)) != len(given):
        raise SarSegError("the class, probability and confidence outputs must be different files")

    src = raster_io.open_raster(src_path)
    try:
        info = raster_io.read_info(src)
        windows = raster_io.read_spread_windows(src)  # a bounded sample spread over the raster, every band
        samples = check_has_data(src, info, windows=windows)  # an all-nodata raster is refused before any output
        model_input = plan_model_input(meta, info, samples, input_scale)
        model_input.tell(log, warn)
        sizes = [np.uint8, np.float32, np.float32]
        bands = [1, len(meta.class_names), 1]
        check_destinations(
            [(p, raster_io.raster_bytes(info, t, n)) for p, t, n in zip(outputs, sizes, bands) if p], log
        )
        plan = None
        if resample:
            plan, reason = resampling_plan(src, meta)
            if log:
                log(reason)
        elif log:
            log("Resampling to the model's pixel size is turned off: the raster is segmented on its own grid")
        checked = check_input_domain(src, meta, model_input, windows, plan)
        windows = samples = None
        checked.tell(log, warn)
        metadata = {**model_input.metadata(), **checked.metadata()}
        with OutputSet() as run_outputs:
            common = (model_input, (dst_path, probabilities_path, confidence_path), model, batch_size, progress,
                      is_canceled, log, run_outputs, started, confidence, metadata)  # fmt: skip
            result = _segment_resampled(src, plan, *common) if plan else _segment_open_raster(src, *common)
        result["input_domain"] = checked.to_json()
        return result
    except (SarSegError, CancelledError) as err:
        # A traceback keeps the GDAL dataset alive in a reference cycle that a later garbage collection frees,
        # possibly after GDAL has shut down (a crash): drop the frames that hold it.
        raise err.with_traceback(None) from None
    finally:
        src = None


@dataclass
class _Batch:
    """Tiles of one tile row read and normalised for the model, with what blending them needs."""

    row: int  # index into the tile row starts
    first: int  # index of the first tile in the column starts
    xs: list[int]  # column starts of the batch's tiles
    tiles: np.ndarray  # (n, bands, tile, tile) float32, the model's input
    valid: np.ndarray  # (tile rows, batch columns) bool: input pixels holding data in every band


def _read_batches(
    src: Any,
    info: RasterInfo,
    meta: ModelMetadata,
    model_input: ModelInput,
    ys: list[int],
    xs: list[int],
    batch_size: int,
    is_canceled: Callable[[], bool] | None,
) -> Iterator[_Batch]:
    """Read the model's bands tile row by tile row, a batch of tiles at a time, converted and normalised."""
    nodata = [info.nodata[b - 1] for b in model_input.bands]
    tile = meta.tile_size
    th, tw = min(tile, info.height), min(tile, info.width)
    # Tiled input: drop its blocks after each batch; striped input (blocks span the width): after each tile row.
    tiled_input = src.GetRasterBand(1).GetBlockSize()[0] < info.width
    for k, y0 in enumerate(ys):
        for b0 in range(0, len(xs), batch_size):
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            batch_xs = xs[b0 : b0 + batch_size]
            bx0, bx1 = batch_xs[0], batch_xs[-1] + tw
            data = raster_io.read_window(src, Window(bx0, y0, bx1 - bx0, th), model_input.bands)
            if tiled_input:
                src.FlushCache()
            valid = raster_io.valid_mask(data, nodata).all(axis=0)
            data = meta.normalization.apply(model_input.apply(data))
            data[:, ~(valid[None] & np.isfinite(data)).all(axis=0)] = 0.0  # nodata -> the training mean
            tiles = np.stack([_pad_to(data[:, :, x0 - bx0 : x0 - bx0 + tw], tile) for x0 in batch_xs])
            yield _Batch(k, b0, batch_xs, np.ascontiguousarray(tiles, dtype=np.float32), valid)
        if not tiled_input:
            src.FlushCache()  # rows above are not read again


class _Blender:
    """Blends tile probabilities into the raster and hands finished pixels to the output stagers.

    Batches must come in reading order (tile rows top to bottom, batches left to right). Held: the columns the
    current batch shares with the next one (a tile row high), and the rows the current tile row shares with the
    next (``carry``, the raster width wide, about the model's overlap high).
    """

    def __init__(
        self,
        meta: ModelMetadata,
        width: int,
        height: int,
        ys: list[int],
        xs: list[int],
        stagers: list[_RowStager],
        probabilities: bool,
        confidence: str | None,
    ) -> None:
        self.classes = len(meta.class_names)
        self.tile, self.overlap = meta.tile_size, meta.tile_overlap
        self.width, self.height, self.ys, self.xs = width, height, ys, xs
        self.th, self.tw = min(self.tile, height), min(self.tile, width)
        self.stagers, self.probabilities, self.confidence = stagers, probabilities, confidence
        self.class_pixels = np.zeros(self.classes, dtype=np.int64)
        self.nodata_pixels = 0
        self.carry_p = np.zeros((self.classes, 0, width), np.float32)
        self.carry_w = np.zeros((0, width), np.float32)
        self._start_row(0)

    def _start_row(self, k: int) -> None:
        self.k = k
        if k >= len(self.ys):
            return
        y0 = self.ys[k]
        self.final = self.ys[k + 1] if k + 1 < len(self.ys) else self.height  # rows above: done after this row
        shared = y0 + self.th - self.final
        self.next_p = np.zeros((self.classes, shared, self.width), np.float32)
        self.next_w = np.zeros((shared, self.width), np.float32)
        self.c_lo = 0  # raster column of the accumulators' first column
        self.acc_p = np.zeros((self.classes, self.th, 0), np.float32)
        self.acc_w = np.zeros((self.th, 0), np.float32)
        self.valid = np.zeros((self.th, 0), bool)

    def add(self, batch: _Batch, probs: np.ndarray) -> None:
        """Blend a batch's (n, classes, tile, tile) probabilities; write out the pixels it finishes."""
        if batch.row != self.k:
            raise AssertionError(f"tile row {batch.row} blended while row {self.k} is open")
        th, tw, c_lo, y0 = self.th, self.tw, self.c_lo, self.ys[self.k]
        bx0, bx1 = batch.xs[0], batch.xs[-1] + tw
        # Grow the accumulators to the batch's right edge; new columns start from the carried rows.
        old_hi = c_lo + self.acc_w.shape[1]
        extra = bx1 - old_hi
        n_carry = self.carry_w.shape[0]
        new_p = np.zeros((self.classes, th, extra), np.float32)
        new_w = np.zeros((th, extra), np.float32)
        new_p[:, :n_carry] = self.carry_p[:, :, old_hi:bx1]
        new_w[:n_carry] = self.carry_w[:, old_hi:bx1]
        acc_p = np.concatenate([self.acc_p, new_p], axis=2)
        acc_w = np.concatenate([self.acc_w, new_w], axis=1)
        valid = np.concatenate([self.valid, np.zeros((th, extra), bool)], axis=1)
        valid[:, bx0 - c_lo :] = batch.valid
        top, bottom = y0 > 0, y0 + th < self.height
        for i, x0 in enumerate(batch.xs):
            w = blend_window(self.tile, self.overlap, top=top, bottom=bottom, left=x0 > 0, right=x0 + tw < self.width)
            w = w[:th, :tw]  # a cropped axis spans the raster alone, so its weights are flat
            cs = slice(x0 - c_lo, x0 - c_lo + tw)
            acc_p[:, :, cs] += probs[i, :, :th, :tw] * w
            acc_w[:, cs] += w

        # Columns left of the next tile are finished in this tile row: rows above `final` go out, the rows the
        # next tile row shares are carried down.
        last = batch.first + len(batch.xs)
        done_col = self.xs[last] if last < len(self.xs) else self.width
        n, done_rows = done_col - c_lo, self.final - y0
        self._emit(y0, c_lo, acc_p[:, :done_rows, :n], acc_w[:done_rows, :n], valid[:done_rows, :n])
        self.next_p[:, :, c_lo:done_col] = acc_p[:, done_rows:, :n]
        self.next_w[:, c_lo:done_col] = acc_w[done_rows:, :n]
        self.acc_p, self.acc_w, self.valid = acc_p[:, :, n:].copy(), acc_w[:, n:].copy(), valid[:, n:].copy()
        self.c_lo = done_col
        if last >= len(self.xs):  # end of the tile row
            for stager in self.stagers:
                stager.complete(self.final)
            self.carry_p, self.carry_w = self.next_p, self.next_w
            self._start_row(self.k + 1)

    def _emit(self, row: int, col: int, acc_p: np.ndarray, acc_w: np.ndarray, ok: np.ndarray) -> None:
        # The blend weights are positive, so the most probable class is the largest blended sum.
        classes = np.argmax(acc_p, axis=0).astype(np.uint8)
        classes[~ok] = CLASS_NODATA
        self.class_pixels += np.bincount(classes[ok], minlength=self.classes)[: self.classes]
        self.nodata_pixels += int((~ok).sum())
        outputs = [classes]
        if self.probabilities or self.confidence:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = acc_p / acc_w
            if self.probabilities:
                outputs.append(np.where(ok[None], p, np.nan))
            if self.confidence:
                outputs.append(np.where(ok, confidence_of(p, self.confidence), np.nan))
        for stager, out in zip(self.stagers, outputs):
            stager.put(row, col, out)


def _segment_open_raster(
    src: Any,
    model_input: ModelInput,
    paths: Sequence[str | None],
    model: Any,
    batch_size: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
    log: LogFn | None,
    outputs: OutputSet | None,
    started: float,
    confidence: str = "max",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Tiles in rows, batches left to right; finished columns of each tile row leave the accumulators at once.

    ``paths``: the class, probability and confidence destinations (written as part of ``outputs``), each given
    ``metadata`` (by default how the input bands were read).
    Held in memory: the tiles of the current batch and the columns they still share with the next one; the
    rows the next tile row overlaps (about ``overlap`` rows of the raster width, see :func:`tile_starts`); and
    the output rows waiting for a whole block row (:class:`_RowStager`).
    """
    meta: ModelMetadata = model.metadata
    info = raster_io.read_info(src)
    probabilities_path, confidence_path = paths[1], paths[2]
    tile, overlap = meta.tile_size, meta.tile_overlap
    stride = tile - overlap
    width, height = info.width, info.height
    ys, xs = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    total_tiles = len(ys) * len(xs)
    if log:
        threads = getattr(model, "threads", 0)
        log(
            f"Model '{meta.name}' running on {model.device_used.upper()}"
            + (
                f" with {threads} CPU thread{'s' if threads != 1 else ''}"
                if threads and model.device_used == "cpu"
                else ""
            )
        )
        log(f"{total_tiles} tiles of {tile} px (overlap {overlap}) in {len(ys)} rows, batch size {batch_size}")

    band_rows = max([b - a for a, b in zip(ys, ys[1:])] + [height - ys[-1]])
    done_tiles = batches = 0
    with ExitStack() as stack:
        metadata = model_input.metadata() if metadata is None else metadata
        writers = _open_writers(stack, info, meta, paths, confidence, outputs, metadata)
        stagers = [
            _RowStager(writer, width, height, band_rows, 0 if k == 0 else np.nan)
            for k, writer in enumerate(writers)
            if writer is not None
        ]
        blender = _Blender(
            meta, width, height, ys, xs, stagers, bool(probabilities_path), confidence if confidence_path else None
        )
        # The model runs on a worker thread (onnxruntime releases the GIL) while this thread blends the previous
        # batch and reads the next: reading and blending hide behind inference.
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="sarseg-model"))
        to_probabilities = _Probabilities(meta)
        waiting: tuple[_Batch, Future] | None = None
        batches_iter = _read_batches(src, info, meta, model_input, ys, xs, batch_size, is_canceled)
        while True:
            batch = next(batches_iter, None)
            running = (batch, pool.submit(model.run, batch.tiles)) if batch is not None else None
            if waiting is not None:
                done, future = waiting
                blender.add(done, to_probabilities(future.result(), tile))
                batches += 1
                done_tiles += len(done.xs)
                if progress:
                    progress(100.0 * done_tiles / total_tiles)
            if running is None:
                break
            waiting = running
    class_pixels, nodata_pixels = blender.class_pixels, blender.nodata_pixels

    seconds = time.perf_counter() - started
    if log:
        log(f"Segmented {width}x{height} px in {seconds:.1f} s ({total_tiles} tiles, {batches} batches)")
    return {
        "width": width,
        "height": height,
        "tiles": total_tiles,
        "batches": batches,
        "seconds": seconds,
        "device": model.device_used,
        "class_pixels": {name: int(c) for name, c in zip(meta.class_names, class_pixels)},
        "nodata_pixels": nodata_pixels,
        **_input_summary(model_input),
    }


def _input_summary(model_input: ModelInput) -> dict[str, Any]:
    """What a run's result says of how the raster was read: bands used, their scales, bands converted to dB."""
    return {
        "bands": list(model_input.bands),
        "scales": [s.scale for s in model_input.scales],
        "converted_to_db": [b for b, c in zip(model_input.bands, model_input.conversions) if c == TO_DB],
    }


# --- Input domain ---------------------------------------------------------------------------------------------


def check_input_domain(
    src: Any,
    meta: ModelMetadata,
    model_input: ModelInput,
    windows: Sequence[np.ndarray],
    plan: ResamplePlan | None,
) -> domain.DomainCheck:
    """Compare the raster with the model's training envelope (:mod:`.domain`), from ``windows``: the sample
    :func:`raster_io.read_spread_windows` read of every band of ``src``, in the raster's own units.

    The ENL is measured on the first backscatter band the model reads, the percentiles on each of them, both on
    the raster's native pixels; the pixel size is the raster's (geometric mean of x and y). When ``plan``
    averages the raster to coarser pixels (multilooking), what is checked is the sample averaged the same way
    (:func:`domain.measure_averaged`): what the model sees; the native ENL is still reported.
    """
    envelope = meta.input_domain
    if envelope is None:
        return domain.DomainCheck("unchecked", note="the model records no input envelope")
    sar = [i for i, unit in enumerate(meta.input_units) if unit in (DB, LINEAR)]
    if not sar or len(model_input.scales) != len(sar):
        return domain.DomainCheck("unchecked", note="the model reads no backscatter band")
    size = raster_pixel_size_m(src)
    sample = [w[[model_input.bands[i] - 1 for i in sar]] for w in windows]
    names, scales = [meta.input_bands[i] for i in sar], [s.scale for s in model_input.scales]
    native = None if size is None else math.sqrt(size[0] * size[1])
    stats = domain.measure_domain(sample, names, scales, native)
    if stats.enl is None and not stats.percentiles_db:
        return domain.DomainCheck("unchecked", note="the sampled windows hold no valid pixel")
    note = ""
    if stats.enl is None:
        note = f"too few whole {domain.ENL_WINDOW}x{domain.ENL_WINDOW} cells of data to measure the ENL"
    if plan is not None and plan.method == "average" and native is not None:
        measured = stats.enl
        stats = domain.measure_averaged(sample, names, scales, native, plan.pixel_size_m)
        note = f"checked as averaged to {plan.pixel_size_m:.3g} m pixels" + (
            f"; ENL about {measured:.2g} at the raster's {native:.3g} m" if measured is not None else ""
        )
    warnings = domain.check_domain(stats, envelope)
    status = "outside" if warnings else "inside"
    return domain.DomainCheck(status, stats, tuple(warnings), note)


# --- Resampling to the model's pixel size ------------------------------------------------------------------------

RESAMPLE_TOLERANCE = 0.10  # relative pixel-size difference accepted without resampling
METRES_PER_DEGREE_LAT = 110574.0
METRES_PER_DEGREE_LON_EQUATOR = 111320.0


@dataclass
class ResamplePlan:
    """Where and how to warp the input before segmenting it."""

    dst_wkt: str  # the projected CRS the model runs in
    resolution: float  # the pixel size the model runs at, in units of dst_wkt
    reason: str
    pixel_size_m: float = 0.0  # the same pixel size in metres
    method: str = "bilinear"  # GDAL resampling of the input (in linear power): "bilinear" or "average"


def _raster_srs(ds: Any) -> osr.SpatialReference | None:
    wkt = ds.GetProjection() or ""
    if not wkt:
        return None
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(wkt) != 0:
        return None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def raster_pixel_size_m(ds: Any) -> tuple[float, float, bool] | None:
    """(x, y) pixel size of an open raster in metres and whether its CRS is geographic; None when unknown
    (no geotransform, no CRS, or a CRS neither projected nor geographic).

    Projected CRS: geotransform units times the CRS linear unit. Geographic CRS: degrees converted at the
    raster's centre latitude (111320 m x cos(latitude) per degree of longitude, 110574 m per degree of latitude).
    """
    gt = raster_io._geotransform(ds)
    srs = _raster_srs(ds)
    if gt is None or srs is None:
        return None
    size_x, size_y = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    if srs.IsProjected():
        unit = srs.GetLinearUnits()
        return size_x * unit, size_y * unit, False
    if srs.IsGeographic():
        to_degrees = srs.GetAngularUnits() * 180.0 / math.pi
        _, lat = _centre(ds, gt)
        lat_deg = lat * to_degrees
        cos_lat = max(math.cos(math.radians(lat_deg)), 1e-6)
        return (
            size_x * to_degrees * METRES_PER_DEGREE_LON_EQUATOR * cos_lat,
            size_y * to_degrees * METRES_PER_DEGREE_LAT,
            True,
        )
    return None


def _centre(ds: Any, gt: Sequence[float]) -> tuple[float, float]:
    col, row = ds.RasterXSize / 2.0, ds.RasterYSize / 2.0
    return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]


def _utm_wkt(ds: Any, srs: osr.SpatialReference) -> tuple[str, str]:
    """WKT and a label of the WGS 84 UTM zone holding the raster centre (geographic raster)."""
    gt = raster_io._geotransform(ds)
    lon, lat = _centre(ds, gt)
    to_degrees = srs.GetAngularUnits() * 180.0 / math.pi
    lon, lat = lon * to_degrees, lat * to_degrees
    zone = int(math.floor(((lon + 180.0) % 360.0) / 6.0)) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(epsg)
    return utm.ExportToWkt(), f"EPSG:{epsg} (UTM zone {zone}{'N' if lat >= 0 else 'S'})"


def resampling_plan(ds: Any, meta: ModelMetadata) -> tuple[ResamplePlan | None, str]:
    """Whether the raster must be warped to the model's pixel size, and a log line saying what and why.

    A model that records the range of pixel sizes it was trained on (its input-domain envelope) is given the
    raster as it is inside that range, averaged (multilooked in linear power) to the range's lower end when the
    raster is finer, bilinearly warped to its upper end when coarser (see :func:`_range_plan`). Other models get
    their ``pixel_size_m`` (bilinear) unless the raster is within 10 % of it.
    """
    trained = domain.trained_pixel_sizes(meta.input_domain)
    if trained is not None:
        return _range_plan(ds, trained)
    if meta.pixel_size_m is None:
        return None, "No resampling: the model does not state a pixel size"
    size = raster_pixel_size_m(ds)
    if size is None:
        return None, "No resampling: the raster has no usable CRS/georeferencing, so its pixel size is unknown"
    sx, sy, geographic = size
    model_m = float(meta.pixel_size_m)
    described = f"{sx:.3g} x {sy:.3g} m"
    srs = _raster_srs(ds)
    if geographic:
        dst_wkt, label = _utm_wkt(ds, srs)
        return _with_reason(
            ResamplePlan(
                dst_wkt,
                model_m,
                f"Resampling: the raster's CRS is geographic (degrees, about {described} pixels at its centre); "
                f"warping to {model_m:g} m pixels in {label} for the model (bilinear, linear power), "
                "results are warped back to the raster's grid",
                model_m,
            ),
        )
    differs = max(abs(sx / model_m - 1.0), abs(sy / model_m - 1.0))
    if differs <= RESAMPLE_TOLERANCE:
        return None, (
            f"No resampling: the raster's pixel size ({described}) is within {RESAMPLE_TOLERANCE:.0%} "
            f"of the model's ({model_m:g} m)"
        )
    return _with_reason(
        ResamplePlan(
            srs.ExportToWkt(),
            model_m / srs.GetLinearUnits(),
            f"Resampling: the raster's pixel size ({described}) differs from the model's ({model_m:g} m) by "
            f"{differs:.0%}; warping to {model_m:g} m pixels for the model (bilinear, linear power), "
            "results are warped back to the raster's grid",
            model_m,
        ),
    )


def _range_plan(ds: Any, trained: tuple[float, float]) -> tuple[ResamplePlan | None, str]:
    """The resampling of a model trained on pixel sizes ``trained`` (low, high metres).

    Inside the range (10 % tolerance at its ends), a projected raster is segmented on its own grid. Outside it,
    the raster is warped to the nearest end: averaged in linear power when that is coarser than the raster
    (multilooking: the speckle is reduced as in the coarser products the model saw), bilinear when finer
    (detail is not restored; the input-domain check warns). A geographic raster is warped to the local UTM zone
    at its own pixel size clamped into the range, averaged when that is coarser than the raster.
    """
    size = raster_pixel_size_m(ds)
    if size is None:
        return None, "No resampling: the raster has no usable CRS/georeferencing, so its pixel size is unknown"
    sx, sy, geographic = size
    lo, hi = trained
    described, trained_text = f"{sx:.3g} x {sy:.3g} m", f"{lo:g}-{hi:g} m"
    srs = _raster_srs(ds)
    native = math.sqrt(sx * sy)
    target = min(max(native, lo), hi)
    method = "average" if target > max(sx, sy) else "bilinear"
    how = "averaging in linear power (multilooking)" if method == "average" else "bilinear interpolation, linear power"
    back = "results are warped back to the raster's grid"
    if geographic:
        dst_wkt, label = _utm_wkt(ds, srs)
        fits = "its own pixel size" if target == native else f"its pixel size clamped into the {trained_text}"
        return _with_reason(
            ResamplePlan(
                dst_wkt,
                target,
                f"Resampling: the raster's CRS is geographic (degrees, about {described} pixels at its centre); "
                f"warping to {target:.3g} m pixels in {label} ({fits} the model was trained on; {how}), {back}",
                target,
                method,
            )
        )
    tol = RESAMPLE_TOLERANCE
    if all(lo * (1.0 - tol) <= v <= hi * (1.0 + tol) for v in (sx, sy)):
        return None, (
            f"No resampling: the raster's pixel size ({described}) is inside the {trained_text} the model was "
            "trained on"
        )
    side = "finer than" if native < lo else "coarser than" if native > hi else "partly outside"
    return _with_reason(
        ResamplePlan(
            srs.ExportToWkt(),
            target / srs.GetLinearUnits(),
            f"Resampling: the raster's pixel size ({described}) is {side} the {trained_text} the model was "
            f"trained on; warping to {target:.3g} m pixels ({how}), {back}",
            target,
            method,
        )
    )


def _with_reason(plan: ResamplePlan) -> tuple[ResamplePlan, str]:
    return plan, plan.reason


def _check_warp(result: Any, what: str, is_canceled: Callable[[], bool] | None) -> Any:
    if is_canceled and is_canceled():
        raise CancelledError("Cancelled by the user.")
    if not result:
        raise SarSegError(f"Resampling {what} failed: {gdal.GetLastErrorMsg() or 'unknown GDAL error'}")
    return result


def _warp(dst: Any, src: Any, what: str, is_canceled: Callable[[], bool] | None, **options: Any) -> Any:
    """gdal.Warp with errors as SarSegError and cancel as CancelledError, whether GDAL exceptions are on or not."""

    def callback(_complete: float, _message: str, _data: object) -> int:
        return 0 if (is_canceled and is_canceled()) else 1

    try:
        result = gdal.Warp(dst, src, options=gdal.WarpOptions(callback=callback, **options))
    except RuntimeError as err:
        if is_canceled and is_canceled():
            raise CancelledError("Cancelled by the user.") from None
        raise SarSegError(f"Resampling {what} failed: {err}") from None
    return _check_warp(result, what, is_canceled)


def _linear_copy(src: Any, path: str, model_input: ModelInput, is_canceled: Callable[[], bool] | None) -> None:
    """Stream a float32 copy of the model's bands of ``src`` (in the model's order), dB bands converted to linear
    power; nodata -> NaN."""
    info = raster_io.read_info(src)
    dbs = [s.scale == DB for s in model_input.scales]

    def func(data: np.ndarray, valid: np.ndarray, _block: object) -> np.ndarray:
        out = data.astype(np.float32, copy=True)
        for b, is_db in enumerate(dbs):
            if is_db:
                with np.errstate(over="ignore"):
                    out[b] = convert_scale(out[b], DB, LINEAR)
        out[~valid] = np.nan
        return out

    names = [info.descriptions[b - 1] for b in model_input.bands]
    bands = len(model_input.bands)
    geotransform = info.geotransform if info.georeferenced else None
    with GeoTiffWriter(path, info.width, info.height, bands, np.float32, geotransform, info.projection,
                       nodata=float("nan"), descriptions=names) as writer:  # fmt: skip
        raster_io.map_blocks(src, writer, func, bands=model_input.bands, is_canceled=is_canceled)


def _mask_input_nodata(
    src: Any, bands: Sequence[int], writers: list[tuple[GeoTiffWriter, float]], class_count: int
) -> tuple[Any, int]:
    """Set the outputs to nodata where the input's ``bands`` are nodata (the warps smear nodata edges); count
    classes."""
    info = raster_io.read_info(src)
    nodata = [info.nodata[b - 1] for b in bands]
    class_pixels = np.zeros(class_count, dtype=np.int64)
    nodata_pixels = 0
    for block in raster_io.iter_blocks(info.width, info.height):
        w = block.core
        ok = raster_io.valid_mask(raster_io.read_window(src, w, bands), nodata).all(axis=0)
        for k, (writer, value) in enumerate(writers):
            data = raster_io.read_window(writer.ds, w, dtype=writer.dtype)
            data[:, ~ok] = value
            if k == 0:
                classes = data[0]
                valid = classes != CLASS_NODATA
                class_pixels += np.bincount(classes[valid], minlength=class_count)[:class_count]
                nodata_pixels += int((~valid).sum())
            writer.write(w, data)
            writer.release_cache()
        src.FlushCache()
    return class_pixels, nodata_pixels


def _segment_resampled(
    src: Any,
    plan: ResamplePlan,
    model_input: ModelInput,
    paths: Sequence[str | None],
    model: Any,
    batch_size: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
    log: LogFn | None,
    outputs: OutputSet,
    started: float,
    confidence: str = "max",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Warp the input to the model's grid, segment it into temporary files and warp the results back."""
    meta: ModelMetadata = model.metadata
    info = raster_io.read_info(src)
    # Intensities are interpolated in linear power: the model's bands go through a temporary copy in linear power
    # (in the model's band order) when any is in dB, else through a band selection when the raster's bands are
    # not the model's in order. The warped bands, all linear, are converted to the model's units when read.
    any_db = any(s.scale == DB for s in model_input.scales)
    warped_input = ModelInput(
        bands=tuple(range(1, len(model_input.bands) + 1)),
        conversions=tuple(TO_DB if u == DB else "" for u in meta.input_units),
        scales=model_input.scales,
        notes=[],
        warnings=[],
    )
    class_count = len(meta.class_names)
    tmp_dir = None
    warped = source = tmp_ds = None
    with ExitStack() as stack:
        # The final writers first: they check the output folders before any work, and abort on failure.
        class_writer, prob_writer, conf_writer = _open_writers(
            stack, info, meta, paths, confidence, outputs, model_input.metadata() if metadata is None else metadata
        )
        try:
            tmp_dir = temporary_folder(Path(paths[0]).parent)
            source = src
            if any_db:
                linear_path = str(tmp_dir / "linear.tif")
                if log:
                    log("Converting dB bands to linear power for resampling (intensities are not averaged in dB)")
                _linear_copy(src, linear_path, model_input, is_canceled)
                source = raster_io.open_raster(linear_path)
            elif model_input.reordered:
                source = gdal.Translate("", src, format="VRT", bandList=list(model_input.bands))
            src_nodata = [source.GetRasterBand(i + 1).GetNoDataValue() for i in range(source.RasterCount)]
            has_nodata = all(nd is not None for nd in src_nodata)
            warped = _warp(
                "",
                source,
                "the input to the model's pixel size",
                is_canceled,
                format="VRT",
                dstSRS=plan.dst_wkt,
                xRes=plan.resolution,
                yRes=plan.resolution,
                resampleAlg=plan.method,
                outputType=gdal.GDT_Float32,
                workingType=gdal.GDT_Float32,
                dstNodata=src_nodata[0] if has_nodata else float("nan"),
                multithread=True,
            )
            source = None
            if log:
                size = f"{warped.RasterXSize}x{warped.RasterYSize}"
                log(f"Resampled the input from {info.width}x{info.height} to {size} px")
            tmp_paths = [
                str(tmp_dir / name) if path else None
                for path, name in zip(paths, ("classes.tif", "probabilities.tif", "confidence.tif"))
            ]
            stats = _segment_open_raster(
                warped,
                warped_input,
                tmp_paths,
                model,
                batch_size,
                (lambda p: progress(0.9 * p)) if progress else None,
                is_canceled,
                log,
                None,
                started,
                confidence=confidence,
            )
            warped = None
            back = [(tmp_paths[0], class_writer, "near", CLASS_NODATA)]
            if prob_writer:
                back.append((tmp_paths[1], prob_writer, "bilinear", float("nan")))
            if conf_writer:
                back.append((tmp_paths[2], conf_writer, "bilinear", float("nan")))
            for i, (tmp, writer, method, nodata) in enumerate(back):
                tmp_ds = raster_io.open_raster(tmp)
                _warp(
                    writer.ds,
                    tmp_ds,
                    "the results back to the raster's grid",
                    is_canceled,
                    resampleAlg=method,
                    srcNodata=nodata,
                    dstNodata=nodata,
                    warpOptions=["INIT_DEST=NO_DATA"],
                    multithread=True,
                )
                tmp_ds = None
                writer.release_cache()
                if progress:
                    progress(90.0 + 5.0 * (i + 1) / len(back))
            writers = [(class_writer, CLASS_NODATA)]
            writers += [(w, float("nan")) for w in (prob_writer, conf_writer) if w]
            class_pixels, nodata_pixels = _mask_input_nodata(src, model_input.bands, writers, class_count)
            if progress:
                progress(100.0)
        finally:
            warped = source = tmp_ds = None
            remove_folder(tmp_dir)
    seconds = time.perf_counter() - started
    if log:
        log(f"Warped the results back onto the raster's {info.width}x{info.height} px grid ({seconds:.1f} s in all)")
    grid = [stats["width"], stats["height"]]
    stats.update(
        width=info.width,
        height=info.height,
        seconds=seconds,
        class_pixels={name: int(c) for name, c in zip(meta.class_names, class_pixels)},
        nodata_pixels=nodata_pixels,
        **_input_summary(model_input),
        resampled={
            "reason": plan.reason,
            "model_pixel_size_m": plan.pixel_size_m,
            "method": plan.method,
            "grid": grid,
        },
    )
    return stats
