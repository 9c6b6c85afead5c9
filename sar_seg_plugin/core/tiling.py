"""Tile geometry and blending: where tiles go, how their probabilities are weighted and summed, and the batches
of tiles read for the model. Tiles run in rows, batches of tiles left to right; only the pixels later tiles can
still touch are held (see :class:`Blender`). No qgis import."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models.metadata import ModelMetadata
from . import raster_io
from .class_rasters import CLASS_NODATA, ConfidenceTally, RowStager, argmax_and_max, confidence_of
from .errors import CancelledError
from .raster_io import RasterInfo, Window
from .units import ModelInput


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


def tile_starts(length: int, tile: int, stride: int, multiple: int | None = None) -> list[int]:
    """Tile offsets covering ``length`` pixels, the first at 0 and the last ending on the border (no padding
    unless the raster is smaller than a tile); each tile is :func:`tile_extent` long.

    Without ``multiple`` (a model that only takes its own tile size) every tile is whole and they are evenly spread,
    at most ``stride`` apart: neighbours overlap by at least ``tile - stride`` pixels and, on long axes, hardly
    more, so the rows two tile rows share stay close to the model's overlap (shifting only the last tile back would
    make them up to a tile). With ``multiple`` (the model takes any size that is a multiple of it), tiles are
    ``stride`` apart and the last one is cut to what is left, rounded up to ``multiple`` and at least half a tile
    (the context its own pixels need): the model reads the raster with the overlap it needs and no more.
    """
    if length <= tile:
        return [0]
    if multiple is None or tile % multiple:
        gaps = math.ceil((length - tile) / stride)
        return [round(i * (length - tile) / gaps) for i in range(gaps + 1)]
    starts = [0]
    while starts[-1] + stride + tile < length:
        starts.append(starts[-1] + stride)
    rest = length - (starts[-1] + stride)  # what the last tile must cover, overlapping the previous one
    least = math.ceil(tile / 2 / multiple) * multiple
    starts.append(length - min(tile, max(least, math.ceil(rest / multiple) * multiple)))
    return starts


def tile_extent(start: int, length: int, tile: int) -> int:
    """Pixels of the raster a tile at ``start`` covers: a tile, or what is left of a shorter axis."""
    return min(tile, length - start)


def model_extent(extent: int, tile: int, multiple: int | None) -> int:
    """The size a tile covering ``extent`` pixels is given to the model: its extent rounded up to ``multiple``,
    or the whole tile (reflect-padded) for a model that only takes its tile size."""
    return tile if multiple is None else max(multiple, math.ceil(extent / multiple) * multiple)


@dataclass(frozen=True)
class TileRows:
    """The tile rows of a strip cut from a taller raster, laid as in the whole raster (:func:`strip_rows`).

    ``starts``: the rows' offsets in the strip; ``open_top`` / ``open_bottom``: the raster goes on above / below
    the strip, so its first / last tile row blends as an inner one. The strip's rows whose every tile lies inside
    it (its core) come out exactly as in a run over the whole raster; the others are a halo to crop."""

    starts: tuple[int, ...]
    open_top: bool
    open_bottom: bool


@dataclass(frozen=True)
class Strip:
    """Rows ``core`` (start, end) of a raster, computed from rows ``read`` (start, end) with ``rows``' layout."""

    index: int
    read: tuple[int, int]
    core: tuple[int, int]
    rows: TileRows


def strip_rows(height: int, tile: int, overlap: int, parts: int, multiple: int | None = None) -> list[Strip]:
    """Cut a raster ``height`` rows high into at most ``parts`` strips that a tiled model (``tile`` px, ``overlap``,
    sizes a multiple of ``multiple``, see :func:`tile_starts`) can segment one by one, each giving its core rows
    exactly as a run over the whole raster does: the cores cover the raster once, and each strip reads every tile
    row that touches its core (the model's halo)."""
    ys = tile_starts(height, tile, tile - overlap, multiple)
    parts = max(1, min(parts, len(ys)))
    cuts = [round(k * height / parts) for k in range(parts + 1)]
    strips = []
    for k in range(parts):
        lo, hi = cuts[k], cuts[k + 1]
        needed = [y for y in ys if y < hi and y + tile_extent(y, height, tile) > lo]
        y0, y1 = needed[0], needed[-1] + tile_extent(needed[-1], height, tile)
        rows = TileRows(tuple(y - y0 for y in needed), y0 > 0, y1 < height)
        strips.append(Strip(k, (y0, y1), (lo, hi), rows))
    return strips


def _pad_to(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad a (bands, h, w) array to (bands, height, width); 'edge' when an axis is a single pixel."""
    ph, pw = height - data.shape[1], width - data.shape[2]
    if ph == 0 and pw == 0:
        return data
    mode = "reflect" if min(data.shape[1], data.shape[2]) > 1 else "edge"
    return np.pad(data, ((0, 0), (0, ph), (0, pw)), mode=mode)


@dataclass
class Batch:
    """Tiles of one tile row read and normalised for the model, with what blending them needs."""

    row: int  # index into the tile row starts
    first: int  # index of the first tile in the column starts
    xs: list[int]  # column starts of the batch's tiles (all of one width)
    tiles: np.ndarray  # (n, bands, model height, model width) float32, the model's input (see model_extent)
    valid: np.ndarray  # (tile rows, batch columns) bool: input pixels holding data in every band


def batch_columns(widths: list[int], batch_size: int) -> list[tuple[int, int]]:
    """The (first, end) column indices of a tile row's batches: up to ``batch_size`` neighbouring tiles of one
    width (the model takes a batch as one array; only the last column's tile may be narrower)."""
    batches, first = [], 0
    while first < len(widths):
        end = first + 1
        while end < len(widths) and end - first < batch_size and widths[end] == widths[first]:
            end += 1
        batches.append((first, end))
        first = end
    return batches


def read_batches(
    src: Any,
    info: RasterInfo,
    meta: ModelMetadata,
    model_input: ModelInput,
    ys: list[int],
    xs: list[int],
    batch_size: int,
    is_canceled: Callable[[], bool] | None,
) -> Iterator[Batch]:
    """Read the model's bands tile row by tile row, a batch of tiles at a time, converted and normalised. A batch
    holds tiles of one width (see :func:`tile_starts`: only the last column's may differ)."""
    nodata = [info.nodata[b - 1] for b in model_input.bands]
    tile, multiple = meta.tile_size, meta.size_multiple
    widths = [tile_extent(x0, info.width, tile) for x0 in xs]
    batches = batch_columns(widths, batch_size)
    # Tiled input: drop its blocks after each batch; striped input (blocks span the width): after each tile row.
    tiled_input = src.GetRasterBand(1).GetBlockSize()[0] < info.width
    for k, y0 in enumerate(ys):
        th = tile_extent(y0, info.height, tile)
        mh = model_extent(th, tile, multiple)
        for first, end in batches:
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            batch_xs, tw = xs[first:end], widths[first]
            mw = model_extent(tw, tile, multiple)
            bx0, bx1 = batch_xs[0], batch_xs[-1] + tw
            data = raster_io.read_window(src, Window(bx0, y0, bx1 - bx0, th), model_input.bands)
            if tiled_input:
                src.FlushCache()
            valid = raster_io.valid_mask(data, nodata).all(axis=0)
            data = meta.normalization.apply(model_input.apply(data))
            data[:, ~(valid[None] & np.isfinite(data)).all(axis=0)] = 0.0  # nodata -> the training mean
            tiles = np.stack([_pad_to(data[:, :, x0 - bx0 : x0 - bx0 + tw], mh, mw) for x0 in batch_xs])
            yield Batch(k, first, batch_xs, np.ascontiguousarray(tiles, dtype=np.float32), valid)
        if not tiled_input:
            src.FlushCache()  # rows above are not read again


class Blender:
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
        stagers: list[RowStager],
        probabilities: bool,
        confidence: str | None,
        open_top: bool = False,
        open_bottom: bool = False,
    ) -> None:
        self.classes = len(meta.class_names)
        self.tile, self.overlap = meta.tile_size, meta.tile_overlap
        self.width, self.height, self.ys, self.xs = width, height, ys, xs
        self.widths = [tile_extent(x0, width, self.tile) for x0 in xs]
        self.stagers, self.probabilities, self.confidence = stagers, probabilities, confidence
        self.open_top, self.open_bottom = open_top, open_bottom  # a strip of a taller raster (TileRows)
        self.nodata_pixels = 0
        self.tally = ConfidenceTally(self.classes)
        self._windows: dict[tuple[int, int, bool, bool, bool, bool], np.ndarray] = {}
        self.carry_p = np.zeros((self.classes, 0, width), np.float32)
        self.carry_w = np.zeros((0, width), np.float32)
        self._start_row(0)

    @property
    def class_pixels(self) -> np.ndarray:
        """Pixels written per class (nodata left out)."""
        return self.tally.pixels

    def _start_row(self, k: int) -> None:
        self.k = k
        if k >= len(self.ys):
            return
        y0 = self.ys[k]
        self.th = tile_extent(y0, self.height, self.tile)
        self.final = self.ys[k + 1] if k + 1 < len(self.ys) else self.height  # rows above: done after this row
        shared = y0 + self.th - self.final
        self.next_p = np.zeros((self.classes, shared, self.width), np.float32)
        self.next_w = np.zeros((shared, self.width), np.float32)
        self.c_lo = 0  # raster column of the accumulators' first column
        self.acc_p = np.zeros((self.classes, self.th, 0), np.float32)
        self.acc_w = np.zeros((self.th, 0), np.float32)
        self.valid = np.zeros((self.th, 0), bool)

    def add(self, batch: Batch, probs: np.ndarray) -> None:
        """Blend a batch's (n, classes, tile, tile) probabilities (overwritten: they are weighted in place); write
        out the pixels it finishes."""
        if batch.row != self.k:
            raise AssertionError(f"tile row {batch.row} blended while row {self.k} is open")
        th, tw, c_lo, y0 = self.th, self.widths[batch.first], self.c_lo, self.ys[self.k]
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
        top, bottom = y0 > 0 or self.open_top, y0 + th < self.height or self.open_bottom
        for i, x0 in enumerate(batch.xs):
            w = self._window(th, tw, top, bottom, x0 > 0, x0 + tw < self.width)
            cs = slice(x0 - c_lo, x0 - c_lo + tw)
            p = probs[i, :, :th, :tw]
            p *= w  # in place: the batch's probabilities are the blender's to use up
            acc_p[:, :, cs] += p
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

    def _window(self, th: int, tw: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
        """The blending weights of a tile covering ``th`` x ``tw`` raster pixels, made once per size and combination
        of raster sides. A tile shorter than the model's is cropped from its far end, which lies on the raster
        border (the last tile of a row or column, or a raster smaller than a tile), so no ramp is lost."""
        key = (th, tw, top, bottom, left, right)
        w = self._windows.get(key)
        if w is None:
            w = blend_window(self.tile, self.overlap, top=top, bottom=bottom, left=left, right=right)
            w = self._windows[key] = np.ascontiguousarray(w[:th, :tw])
        return w

    def _emit(self, row: int, col: int, acc_p: np.ndarray, acc_w: np.ndarray, ok: np.ndarray) -> None:
        # The blend weights are positive, so the most probable class is the largest blended sum.
        classes, top = argmax_and_max(acc_p)
        classes[~ok] = CLASS_NODATA
        self.nodata_pixels += int((~ok).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            top /= acc_w  # probability of the chosen class
        self.tally.add(classes, top, ok)  # also the class counts
        outputs = [classes]
        if self.probabilities or self.confidence:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = acc_p / acc_w
            if self.probabilities:
                outputs.append(np.where(ok[None], p, np.nan))
            if self.confidence:
                conf = top if self.confidence == "max" else confidence_of(p, self.confidence)
                outputs.append(np.where(ok, conf, np.nan))
        for stager, out in zip(self.stagers, outputs):
            stager.put(row, col, out)
