"""Tiled segmentation of a raster with an ONNX model: overlapping tiles, smooth blending, streamed by tile rows.

The raster is read one band of tile rows at a time (tile height x raster width); per-class probabilities and blend
weights are accumulated only for the rows that later tiles can still touch, and finished rows are written out.
Memory is bounded by about two tile rows, whatever the raster size. No qgis import: plain pytest covers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from ..models.metadata import ModelMetadata, canonical_unit, check_raster_fits, describe_inputs
from . import raster_io
from .errors import CancelledError, SarSegError
from .radiometry import DEFAULT_FLOOR_DB, to_db
from .raster_io import GeoTiffWriter, RasterInfo, Window

CLASS_NODATA = 255
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
    """Tile offsets covering ``length`` pixels; the last tile is shifted back to end on the border (no padding
    unless the raster is smaller than a tile)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _pad_to(data: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad a (bands, h, w) array to (bands, size, size); 'edge' when an axis is a single pixel."""
    ph, pw = size - data.shape[1], size - data.shape[2]
    if ph == 0 and pw == 0:
        return data
    mode = "reflect" if min(data.shape[1], data.shape[2]) > 1 else "edge"
    return np.pad(data, ((0, 0), (0, ph), (0, pw)), mode=mode)


def _to_probabilities(out: np.ndarray, class_count: int) -> np.ndarray:
    """Model output (n, c, h, w) -> per-class probabilities: softmax of logits (kept as is when the model
    already outputs probabilities; a single sigmoid channel becomes background/object)."""
    out = out.astype(np.float32, copy=False)
    if out.shape[1] == 1 and class_count == 2:
        p = out if (out.min() >= 0 and out.max() <= 1) else 1.0 / (1.0 + np.exp(-out))
        return np.concatenate([1.0 - p, p], axis=1)
    if out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def db_conversions(meta: ModelMetadata, info: RasterInfo) -> list[bool]:
    """Which raster bands to convert from linear power to dB for the model; refuse other mismatches.

    A band with an unknown unit is taken as what the model expects.
    """
    if info.band_count != len(meta.input_bands):
        check_raster_fits(meta, info.band_count, info.units)  # raises with the band-count message
    convert = []
    units = []
    for unit, expected in zip(info.units, meta.input_units):
        actual = canonical_unit(unit)
        to_convert = actual == "linear" and expected == "dB"
        convert.append(to_convert)
        units.append(expected if to_convert else unit)
    try:
        check_raster_fits(meta, info.band_count, units)
    except SarSegError as err:
        raise SarSegError(f"{err}. The model expects {describe_inputs(meta)}") from None
    return convert


def _hex_rgba(colour: str) -> tuple[int, int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), 255


def _class_writer(path: str, info: RasterInfo, meta: ModelMetadata) -> GeoTiffWriter:
    colours = {i: _hex_rgba(c) for i, c in enumerate(meta.class_colors)}
    colours[CLASS_NODATA] = (0, 0, 0, 0)
    return GeoTiffWriter(
        path,
        info.width,
        info.height,
        1,
        np.uint8,
        info.geotransform if info.georeferenced else None,
        info.projection,
        nodata=CLASS_NODATA,
        descriptions=["class"],
        metadata={"MODEL": meta.name, "CLASS_NAMES": ",".join(meta.class_names)},
        color_table=colours,
        category_names=list(meta.class_names),
    )


def _float_writer(path: str, info: RasterInfo, names: Sequence[str], meta: ModelMetadata) -> GeoTiffWriter:
    return GeoTiffWriter(
        path,
        info.width,
        info.height,
        len(names),
        np.float32,
        info.geotransform if info.georeferenced else None,
        info.projection,
        nodata=float("nan"),
        descriptions=list(names),
        metadata={"MODEL": meta.name},
    )


def segment_raster(
    src_path: str,
    dst_path: str,
    model: Any,
    *,
    probabilities_path: str | None = None,
    confidence_path: str | None = None,
    batch_size: int = 4,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
) -> dict[str, Any]:
    """Segment ``src_path`` with ``model`` (a ``registry.LoadedModel``) into a uint8 class raster at ``dst_path``.

    Optional outputs: float32 per-class probabilities and the confidence (max probability). Input nodata pixels
    (any band) become class 255 / NaN. Linear-power bands are converted to dB (floor -50 dB) when the model wants
    dB. Returns counts and timing; raises CancelledError (nothing written) when ``is_canceled`` turns true.
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
    outputs = [p for p in (dst_path, probabilities_path, confidence_path) if p]
    for out in outputs:
        raster_io.check_not_same_file([src_path], out)
    if len(set(outputs)) != len(outputs):
        raise SarSegError("the class, probability and confidence outputs must be different files")

    src = raster_io.open_raster(src_path)
    try:
        return _segment_open_raster(
            src, dst_path, model, probabilities_path, confidence_path, batch_size, progress, is_canceled, log, started
        )
    except (SarSegError, CancelledError) as err:
        # A traceback keeps the GDAL dataset alive in a reference cycle that a later garbage collection frees,
        # possibly after GDAL has shut down (a crash): drop the frames that hold it.
        raise err.with_traceback(None) from None
    finally:
        src = None


def _segment_open_raster(
    src: Any,
    dst_path: str,
    model: Any,
    probabilities_path: str | None,
    confidence_path: str | None,
    batch_size: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
    log: LogFn | None,
    started: float,
) -> dict[str, Any]:
    meta: ModelMetadata = model.metadata
    info = raster_io.read_info(src)
    convert = db_conversions(meta, info)
    class_count = len(meta.class_names)
    tile, overlap = meta.tile_size, meta.tile_overlap
    stride = tile - overlap
    width, height = info.width, info.height
    ys, xs = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    th, tw = min(tile, height), min(tile, width)
    total_tiles = len(ys) * len(xs)
    if log:
        log(f"Model '{meta.name}' running on {model.device_used.upper()}")
        if any(convert):
            log(f"Converting linear power to dB (floor {DEFAULT_FLOOR_DB:g} dB) as the model expects dB input")
        log(f"{total_tiles} tiles of {tile} px (overlap {overlap}) in {len(ys)} rows, batch size {batch_size}")

    done_tiles = batches = 0
    class_pixels = np.zeros(class_count, dtype=np.int64)
    nodata_pixels = 0
    with ExitStack() as stack:
        class_writer = stack.enter_context(_class_writer(dst_path, info, meta))
        prob_writer = (
            stack.enter_context(_float_writer(probabilities_path, info, meta.class_names, meta))
            if probabilities_path
            else None
        )
        conf_writer = (
            stack.enter_context(_float_writer(confidence_path, info, ["confidence"], meta)) if confidence_path else None
        )
        top = 0  # first raster row held in the accumulators
        carry_p = np.zeros((class_count, 0, width), np.float32)
        carry_w = np.zeros((0, width), np.float32)
        carry_valid = np.zeros((0, width), bool)
        for k, y0 in enumerate(ys):
            rows = y0 + th - top
            acc_p = np.zeros((class_count, rows, width), np.float32)
            acc_w = np.zeros((rows, width), np.float32)
            valid = np.zeros((rows, width), bool)
            n = carry_w.shape[0]
            acc_p[:, :n], acc_w[:n], valid[:n] = carry_p, carry_w, carry_valid

            data = raster_io.read_window(src, Window(0, y0, width, th))
            band_valid = raster_io.valid_mask(data, info.nodata).all(axis=0)
            for b, conv in enumerate(convert):
                if conv:
                    data[b] = to_db(data[b])
            data = meta.normalization.apply(data)
            data[:, ~(band_valid[None] & np.isfinite(data)).all(axis=0)] = 0.0  # nodata -> the training mean
            valid[y0 - top :] = band_valid
            src.FlushCache()  # rows above are not read again

            weights_y = (y0 > 0, y0 + th < height)
            for b0 in range(0, len(xs), batch_size):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                batch_xs = xs[b0 : b0 + batch_size]
                batch = np.stack([_pad_to(data[:, :, x0 : x0 + tw], tile) for x0 in batch_xs])
                probs = _to_probabilities(model.run(batch), class_count)
                if probs.shape[1] != class_count or probs.shape[2:] != (tile, tile):
                    raise SarSegError(
                        f"model '{meta.name}' returned shape {tuple(probs.shape)} for a {tile}x{tile} tile; "
                        f"expected {class_count} class channels of the tile size"
                    )
                for i, x0 in enumerate(batch_xs):
                    w = blend_window(
                        tile, overlap, top=weights_y[0], bottom=weights_y[1], left=x0 > 0, right=x0 + tw < width
                    )
                    w = w[:th, :tw]  # a cropped axis spans the raster alone, so its weights are flat
                    rs = slice(y0 - top, y0 - top + th)
                    cs = slice(x0, x0 + tw)
                    acc_p[:, rs, cs] += probs[i, :, :th, :tw] * w
                    acc_w[rs, cs] += w
                batches += 1
                done_tiles += len(batch_xs)
                if progress:
                    progress(100.0 * done_tiles / total_tiles)

            final = (ys[k + 1] if k + 1 < len(ys) else height) - top
            with np.errstate(invalid="ignore", divide="ignore"):
                p = acc_p[:, :final] / acc_w[:final]
            ok = valid[:final]
            classes = np.argmax(p, axis=0).astype(np.uint8)
            classes[~ok] = CLASS_NODATA
            class_pixels += np.bincount(classes[ok], minlength=class_count)[:class_count]
            nodata_pixels += int((~ok).sum())
            window = Window(0, top, width, final)
            class_writer.write(window, classes)
            class_writer.release_cache()
            if prob_writer:
                prob_writer.write(window, np.where(ok[None], p, np.nan))
                prob_writer.release_cache()
            if conf_writer:
                conf_writer.write(window, np.where(ok, p.max(axis=0), np.nan))
                conf_writer.release_cache()
            carry_p, carry_w, carry_valid = acc_p[:, final:], acc_w[final:], valid[final:]
            top += final

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
        "converted_to_db": [i + 1 for i, c in enumerate(convert) if c],
    }
