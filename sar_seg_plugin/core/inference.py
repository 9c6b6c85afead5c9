"""Tiled segmentation of a raster with an ONNX model: the runner that ties the pieces together.

Tiles run in rows, batches of tiles left to right (:mod:`.tiling`); the model runs on a worker thread while the
next batch is read and the previous one blended. Finished pixels leave at once and are written in whole GeoTIFF
blocks (:mod:`.class_rasters`). Rasters whose pixel size the model was not trained on are warped there and back
(:mod:`.resampling`). Memory is a few tiles plus a few bytes per raster column, whatever the raster size. No qgis
import: plain pytest covers it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..models.metadata import ModelMetadata
from . import domain, model_check, raster_io
from .class_rasters import CONFIDENCE_MEASURES, RowStager, describe_confidence, open_writers
from .errors import CancelledError, SarSegError
from .model_check import CHECK_KEY, ModelCheck
from .outputs import OutputSet, check_destinations, remove_folder, temporary_folder
from .preprocess import check_has_data
from .resampling import (
    ResamplePlan,
    finish_from_probabilities,
    linear_copy,
    raster_pixel_size_m,
    resampling_plan,
    warp,
)
from .tiling import Batch, Blender, TileRows, read_batches, tile_starts
from .units import AUTO, DB, LINEAR, TO_DB, ModelInput, plan_model_input
from .vectors import PolygonRequest, polygonize_classes

LogFn = Callable[[str], None]
#: Output metadata: the fill value of an input that declares no nodata value, taken as no data, and the sampled
#: share of pixels that held it in every band ("value share"; absent when there was none, or nodata is declared).
FILL_KEY = "SARSEG_INPUT_FILL"


class _Probabilities:
    """Model output (n, c, h, w) -> per-class probabilities (n, classes, h, w), shape checked.

    Whether the model outputs logits (softmax applied) or probabilities (kept as they are) is decided on the first
    batch; a single sigmoid channel (a Deepness binary model) becomes background/object.
    """

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.classes = len(meta.class_names)
        self.already_probabilities: bool | None = None

    def __call__(self, out: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``size``: the (height, width) of the tiles the model was given."""
        out = out.astype(np.float32, copy=False)
        sigmoid = out.ndim == 4 and out.shape[1] == 1 and self.classes == 2
        if out.ndim != 4 or (out.shape[1] != self.classes and not sigmoid) or out.shape[2:] != tuple(size):
            raise SarSegError(
                f"model '{self.meta.name}' returned shape {tuple(out.shape)} for a {size[0]}x{size[1]} tile; "
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
        # Softmax over the class axis; the reductions run class by class (contiguous planes), not along axis 1.
        top = out[:, 0].copy()
        for c in range(1, out.shape[1]):
            np.maximum(top, out[:, c], out=top)
        e = out - top[:, None]
        np.exp(e, out=e)
        total = e[:, 0].copy()
        for c in range(1, out.shape[1]):
            total += e[:, c]
        e /= total[:, None]
        return e


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
    polygons: PolygonRequest | None = None,
    tile_rows: TileRows | None = None,
    fill: float | bool | None = None,
    reference: Any | None = None,
) -> dict[str, Any]:
    """Segment ``src_path`` with ``model`` (a ``registry.LoadedModel``) into a uint8 class raster at ``dst_path``.

    Optional outputs: float32 per-class probabilities and a confidence raster, ``confidence`` "max" (probability of
    the chosen class) or "entropy" (normalised entropy, 0 = certain, 1 = uniform; see :func:`confidence_of`).
    Input nodata pixels (any band the model reads) become class 255 / NaN.

    The model's bands are found by name where the raster names them (VV, VH, ...), else taken in order; each band's
    scale (dB or linear power) is decided by the rule of :mod:`.units` (``input_scale`` overrides it) and converted
    to the model's unit. What was decided is said in ``log`` (``warn`` when a band's unit and values disagree) and
    written to the outputs' metadata. The outputs appear together or not at all. Returns counts and timing; raises
    CancelledError (nothing written) when ``is_canceled`` turns true. ``polygons``: the classes also as polygons
    (:func:`.vectors.polygonize_classes`), written with the rasters.

    With ``resample`` (the default), a raster whose pixel size differs from the model's ``pixel_size_m`` by more
    than 10 %, or whose CRS is geographic (degrees), is warped to the model's pixel size (bilinear, in linear
    power; in the local UTM zone for geographic input), segmented, and the results are warped back onto the
    raster's exact grid (the probabilities bilinear, the classes and confidence read off them). A model that records
    the pixel sizes it was trained on resamples only outside that range. See :func:`resampling_plan`.

    When the model records the envelope of its training inputs, the raster's ENL, per-band dB percentiles and
    pixel size are measured on the sample its units are decided from (before any resampling) and compared with
    it (:mod:`.domain`): each way it lies outside is a ``warn`` message, a summary goes to ``log``, and the
    outcome is written to every output's metadata (``SARSEG_INPUT_DOMAIN`` and related items) and returned under
    ``"input_domain"``. The run goes on either way.

    The probability of the chosen class is tallied as the classes are written (on the model's grid when the
    raster is resampled): its mean, per class and overall, and the share of pixels under 0.5 are returned under
    ``"confidence"`` and said in ``log``, beside the model's own figures off its training data when it records them
    (``ModelMetadata.confidence_reference``); more than a quarter of unsure pixels is a ``warn`` message.

    ``tile_rows``: ``src_path`` is a strip of a taller raster (:func:`.tiling.strip_rows`), segmented with the
    tiles laid as in the whole raster, so its core rows equal the whole run's (no resampling then).

    Pixels holding the same 0 (or a dB value at most -90, such as -99) in every band the model reads, in a raster
    that declares no nodata value, are the fill outside a swath: the raster is then read as if it declared that
    value as nodata (:func:`.raster_io.declare_fill`; ``fill``, a value or False, imposes the decision, as a
    strip takes the whole raster's).

    ``reference``: the model ``model`` is a fast copy of (the float32 U-Net of the bundled int8 copy), on the same
    device. Before the raster is segmented, a few tiles holding data, spread over it and the most unlike one
    another, run through both (:class:`.model_check.ModelCheck`); the reference segments the raster when the two
    agree on fewer than :data:`.model_check.MIN_AGREEMENT` of those pixels (or :data:`.model_check.TILE_FLOOR` of
    one tile's). What was measured and decided goes to ``log`` (``warn``
    when the reference takes over), to the outputs' metadata (``SARSEG_MODEL_CHECK``) and to the result
    (``"model_check"``).
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
    if reference is not None:
        differ = [
            f
            for f in ("class_names", "input_bands", "input_units", "tile_size", "tile_overlap", "normalization")
            if getattr(reference.metadata, f) != getattr(meta, f)
        ]
        if differ:
            raise SarSegError(f"model '{meta.name}' cannot be checked against a model whose {', '.join(differ)} differ")
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
        if log and info.scaling:
            log(raster_io.scaling_note(info))
        windows = raster_io.read_spread_windows(src)  # a bounded sample spread over the raster, every band
        samples = check_has_data(src, info, windows=windows)  # an all-nodata raster is refused before any output
        model_input = plan_model_input(meta, info, samples, input_scale)
        model_input.tell(log, warn)
        # an undeclared fill read through a copy that declares it, so that tiles, warps and checks all leave it out
        found = None
        if fill is None:
            src, info, found = raster_io.declare_fill(src, info, model_input.bands, windows)
        elif fill is not False and any(info.nodata[b - 1] is None for b in model_input.bands):
            src, info = raster_io.with_nodata(src, info, float(fill))
        if found is not None and log:
            log(raster_io.fill_note(found))
        sizes = [np.uint8, np.float32, np.float32]
        bands = [1, len(meta.class_names), 1]
        check_destinations(
            [(p, raster_io.raster_bytes(info, t, n)) for p, t, n in zip(outputs, sizes, bands) if p], log
        )
        plan = None
        if tile_rows is not None:
            resample = False  # a strip is segmented on the whole raster's grid, decided by the caller
        # the input's ENL, percentiles and pixel size, for the resampling plan (single-look input) and the check
        measured = None if meta.input_domain is None else _measure_native(src, meta, model_input, windows)
        if resample:
            plan, reason = resampling_plan(src, meta, *plan_inputs(None if measured is None else measured[0]))
            if log:
                log(reason)
        elif log:
            log("Resampling to the model's pixel size is turned off: the raster is segmented on its own grid")
        checked = check_input_domain(src, meta, model_input, windows, plan, measured)
        windows = samples = measured = None
        checked.tell(log, warn)
        metadata = {**model_input.metadata(), **checked.metadata()}
        if found is not None:
            metadata[FILL_KEY] = f"{found[0]:g} {found[1]:.4f}"
        with OutputSet() as run_outputs:
            run = _Run(model, model_input, (dst_path, probabilities_path, confidence_path), batch_size, confidence,
                       metadata, started, progress, is_canceled, log, run_outputs, tile_rows, reference,
                       warn)  # fmt: skip
            result = _segment_resampled(src, plan, run) if plan else _segment_open_raster(src, run)
            if polygons is not None:  # from the class raster just written, moved into place with it
                result["polygons"] = polygonize_classes(
                    str(run_outputs.temporary_of(dst_path)), polygons.path, dict(enumerate(meta.class_names)),
                    layer_name="land_cover", simplify=polygons.simplify, min_area_m2=polygons.min_area_m2,
                    outputs=run_outputs, is_canceled=is_canceled,
                )  # fmt: skip
        result["input_domain"] = checked.to_json()
        line, unsure = describe_confidence(
            result["confidence"], meta.confidence_reference, outside=checked.status == "outside"
        )
        if log:
            log(line)
        if unsure and warn:
            warn(unsure)
        return result
    except (SarSegError, CancelledError) as err:
        # A traceback keeps the GDAL dataset alive in a reference cycle that a later garbage collection frees,
        # possibly after GDAL has shut down (a crash): drop the frames that hold it.
        raise err.with_traceback(None) from None
    finally:
        src = None


@dataclass
class _Run:
    """What one segmentation needs beyond its input raster; the same for the open-raster and the resampled path."""

    model: Any  # a registry.LoadedModel
    model_input: ModelInput  # which bands are read and how they are converted
    paths: Sequence[str | None]  # the class, probability and confidence destinations (None: not asked for)
    batch_size: int
    confidence: str  # "max" or "entropy"
    metadata: dict[str, str]  # written to every output
    started: float  # time.perf_counter() at the start
    progress: Callable[[float], None] | None = None
    is_canceled: Callable[[], bool] | None = None
    log: LogFn | None = None
    outputs: OutputSet | None = None  # the run's outputs, committed together (None: plain files)
    tile_rows: TileRows | None = None  # a strip of a taller raster, tiled as the whole one
    reference: Any | None = None  # the model ``model`` is a fast copy of, checked on tiles spread over the raster
    warn: LogFn | None = None


def _segment_open_raster(src: Any, run: _Run) -> dict[str, Any]:
    """Tiles in rows, batches left to right; finished columns of each tile row leave the accumulators at once.

    Held in memory: the tiles of the current batch and the columns they still share with the next one; the
    rows the next tile row overlaps (about ``overlap`` rows of the raster width, see :func:`tile_starts`); and
    the output rows waiting for a whole block row (:class:`RowStager`).
    """
    model, model_input, log, confidence = run.model, run.model_input, run.log, run.confidence
    meta: ModelMetadata = model.metadata
    info = raster_io.read_info(src)
    probabilities_path, confidence_path = run.paths[1], run.paths[2]
    tile, overlap = meta.tile_size, meta.tile_overlap
    stride = tile - overlap
    width, height = info.width, info.height
    multiple = meta.size_multiple
    ys, xs = tile_starts(height, tile, stride, multiple), tile_starts(width, tile, stride, multiple)
    if run.tile_rows is not None:
        ys = list(run.tile_rows.starts)
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
        cut = (
            f"; tiles of the last row or column cut to what is left, in multiples of {multiple} px"
            if multiple and (ys[-1] + tile > height or xs[-1] + tile > width)
            else ""
        )
        log(
            f"{total_tiles} tiles of {tile} px (overlap {overlap}) in {len(ys)} rows, batch size {run.batch_size}" + cut
        )

    band_rows = max([b - a for a, b in zip(ys, ys[1:])] + [height - ys[-1]])
    done_tiles = batches = 0
    with ExitStack() as stack:
        writers = open_writers(stack, info, meta, run.paths, confidence, run.outputs, run.metadata)
        stagers = [
            RowStager(writer, width, height, band_rows, 0 if k == 0 else np.nan)
            for k, writer in enumerate(writers)
            if writer is not None
        ]
        strip = run.tile_rows or TileRows((), False, False)
        blender = Blender(
            meta, width, height, ys, xs, stagers, bool(probabilities_path), confidence if confidence_path else None,
            strip.open_top, strip.open_bottom,
        )  # fmt: skip
        # The model runs on a worker thread (onnxruntime releases the GIL) while this thread blends the previous
        # batch and reads the next: reading and blending hide behind inference.
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="sarseg-model"))
        to_probabilities = _Probabilities(meta)
        check = _model_check(run)
        active = model  # the reference where the check finds the fast copy off, or on a small raster
        checked: dict[tuple[int, int], np.ndarray] = {}  # (y0, x0) -> the chosen model's output of a checked tile
        if check is not None:
            if total_tiles < model_check.MIN_TILES:
                check.skip(total_tiles)
            else:
                checked = _run_check(check, src, info, run, ys, xs)
            _tell_check(check, run, writers)
            if not check.keep_fast:
                active = run.reference
        waiting: tuple[Batch, Future] | None = None
        batches_iter = read_batches(src, info, meta, model_input, ys, xs, run.batch_size, run.is_canceled)
        while True:
            batch = next(batches_iter, None)
            running = (batch, _submit(pool, active, batch, ys, checked)) if batch is not None else None
            if waiting is not None:
                done, future = waiting
                blender.add(done, to_probabilities(future.result(), done.tiles.shape[2:]))
                batches += 1
                done_tiles += len(done.xs)
                if run.progress:
                    run.progress(100.0 * done_tiles / total_tiles)
            if running is None:
                break
            waiting = running
    class_pixels, nodata_pixels = blender.class_pixels, blender.nodata_pixels

    seconds = time.perf_counter() - run.started
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
        "confidence": blender.tally.summary(meta.class_names),
        **_input_summary(model_input),
        **_check_summary(check),
    }


def _model_check(run: _Run) -> ModelCheck | None:
    """The check of ``run.model`` against ``run.reference`` (None without a reference)."""
    if run.reference is None:
        return None
    fast, reference = run.model, run.reference
    tile = fast.metadata.tile_size
    return ModelCheck(
        Path(str(fast.path)).stem, Path(str(reference.path)).stem, model_check.CHECK_PIXELS, model_check.MIN_AGREEMENT,
        model_check.TILE_FLOOR, tile * tile // 4,
    )  # fmt: skip


def _run_check(
    check: ModelCheck, src: Any, info: Any, run: _Run, ys: list[int], xs: list[int]
) -> dict[tuple[int, int], np.ndarray]:
    """Read tiles spread over the raster (:func:`.model_check.spread_tiles`) and run those holding data through both
    models, the most unlike first (:func:`.model_check.unlike_first`), until ``check`` decides. The raster is
    segmented after; returned, keyed by their (row, column) start, the outputs of the model chosen for the tiles
    it ran, so that they are not run again."""
    meta = run.model.metadata
    batches, features = [], []
    for r, c in model_check.spread_tiles(len(ys), len(xs), model_check.MAX_CHECK_TILES):
        batch = next(read_batches(src, info, meta, run.model_input, [ys[r]], [xs[c]], 1, run.is_canceled))
        found = model_check.tile_features(batch.tiles[0], batch.valid)
        if found is not None:
            batches.append((ys[r], xs[c], batch))
            features.append(found)
    outputs = {}
    for i in model_check.unlike_first(features):
        y0, x0, batch = batches[i]
        fast, reference = run.model.run(batch.tiles), run.reference.run(batch.tiles)
        outputs[(y0, x0)] = (fast, reference)
        check.add(fast, reference, [batch.valid])
        if not check.pending:
            break
    check.finish()
    return {key: pair[0] if check.keep_fast else pair[1] for key, pair in outputs.items()}


def _submit(
    pool: ThreadPoolExecutor, model: Any, batch: Batch, ys: list[int], checked: dict[tuple[int, int], np.ndarray]
) -> Future:
    """The model's output of ``batch``, running on ``pool``; at once where the check already ran ``model`` on every
    tile of it (those outputs then leave ``checked``)."""
    y0 = ys[batch.row]
    if all((y0, x0) in checked for x0 in batch.xs):
        done: Future = Future()
        done.set_result(np.concatenate([checked.pop((y0, x0)) for x0 in batch.xs]))
        return done
    return pool.submit(model.run, batch.tiles)


def _tell_check(check: ModelCheck, run: _Run, writers: Sequence[Any]) -> None:
    """Say what the model check measured and decided (a warning when the reference took over), and record it in
    the outputs' metadata."""
    note = check.describe()
    say = run.warn if check.refused else run.log
    if say:
        say("Model check: " + note)
    for writer in writers:
        if writer is not None:
            writer.ds.SetMetadataItem(CHECK_KEY, note)


def _check_summary(check: ModelCheck | None) -> dict[str, Any]:
    if check is None:
        return {}
    return {"model_check": {"agreement": check.agreement, "worst_tile": check.worst, "pixels": check.pixels,
                            "tiles": check.tiles, "fast_kept": bool(check.keep_fast),
                            "note": check.describe()}}  # fmt: skip


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
    measured: _Measured | None = None,
) -> domain.DomainCheck:
    """Compare the raster with the model's training envelope (:mod:`.domain`), from ``windows``: the sample
    :func:`raster_io.read_spread_windows` read of every band of ``src``, in the raster's own units.

    The ENL is measured on the first backscatter band the model reads, the percentiles on each of them, both on
    the raster's native pixels; the pixel size is the raster's (geometric mean of x and y). When ``plan``
    averages the raster to coarser pixels (multilooking), what is checked is the sample averaged the same way
    (:func:`domain.measure_averaged`): what the model sees; the native ENL is still reported. ``measured``: the
    native measurement when already made (:func:`_measure_native`).
    """
    if meta.input_domain is None:
        return domain.DomainCheck("unchecked", note="the model records no input envelope")
    measured = measured or _measure_native(src, meta, model_input, windows)
    if measured is None:
        return domain.DomainCheck("unchecked", note="the model reads no backscatter band")
    stats, (sample, names, scales, native) = measured
    if stats.enl is None and not stats.percentiles_db:
        return domain.DomainCheck("unchecked", note="the sampled windows hold no valid pixel")
    note = ""
    if stats.enl is None:
        note = f"too few whole {domain.ENL_WINDOW}x{domain.ENL_WINDOW} cells of data to measure the ENL"
    if plan is not None and plan.method == "average" and native is not None:
        native_enl = stats.enl
        stats = domain.measure_averaged(sample, names, scales, native, plan.pixel_size_m, native_ties=stats.ties)
        note = f"checked as averaged to {plan.pixel_size_m:.3g} m pixels" + (
            f"; ENL about {native_enl:.2g} at the raster's {native:.3g} m" if native_enl is not None else ""
        )
    warnings = domain.check_domain(stats, meta.input_domain)
    status = "outside" if warnings else "inside"
    return domain.DomainCheck(status, stats, tuple(warnings), note)


#: What :func:`_measure_native` returns: the stats and what they were measured from (sample, names, scales, pixel size).
_Measured = tuple[domain.DomainStats, tuple[list[np.ndarray], list[str], list[str], float | None]]


def _measure_native(
    src: Any, meta: ModelMetadata, model_input: ModelInput, windows: Sequence[np.ndarray]
) -> _Measured | None:
    """The :class:`domain.DomainStats` of the backscatter bands the model reads, on the raster's native pixels,
    and what they were measured from (sample, band names, scales, pixel size); None when it reads none."""
    sar = [i for i, unit in enumerate(meta.input_units) if unit in (DB, LINEAR)]
    if not sar or len(model_input.scales) != len(sar):
        return None
    size = raster_pixel_size_m(src)
    names, scales = [meta.input_bands[i] for i in sar], [s.scale for s in model_input.scales]
    # gamma0 or beta0 measured as the sigma0 the model is given, against the envelope of the sigma0 it was trained on
    sample = [
        np.stack([model_input.to_sigma0(w[model_input.bands[i] - 1], scale) for i, scale in zip(sar, scales)])
        for w in windows
    ]
    native = None if size is None else math.sqrt(size[0] * size[1])
    return domain.measure_domain(sample, names, scales, native), (sample, names, scales, native)


def plan_inputs(stats: domain.DomainStats | None) -> tuple[float | None, int | None]:
    """What the resampling plan needs of the input's native measurement: its ENL (single-look input) and the
    size of the blocks its values repeat in (nearest-neighbour upsampling); None for what is unknown."""
    if stats is None:
        return None, None
    return stats.enl, None if stats.ties is None else stats.ties.block


def input_plan_inputs(
    src: Any, meta: ModelMetadata, model_input: ModelInput, windows: Sequence[np.ndarray]
) -> tuple[float | None, int | None]:
    """:func:`plan_inputs` measured on ``windows`` (the sample :func:`raster_io.read_spread_windows` read of every
    band): what the resampling plan needs (:func:`resampling_plan`)."""
    measured = _measure_native(src, meta, model_input, windows)
    return plan_inputs(None if measured is None else measured[0])


# --- Resampling to the model's pixel size ------------------------------------------------------------------------


def _segment_resampled(src: Any, plan: ResamplePlan, run: _Run) -> dict[str, Any]:
    """Warp the input to the model's grid, segment it into temporary files and warp the results back."""
    model_input, paths, progress, is_canceled, log = run.model_input, run.paths, run.progress, run.is_canceled, run.log
    meta: ModelMetadata = run.model.metadata
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
        radiometry=model_input.radiometry,
        units=model_input.units,
    )
    class_count = len(meta.class_names)
    tmp_dir = None
    warped = source = tmp_ds = probabilities = None
    with ExitStack() as stack:
        # The final writers first: they check the output folders before any work, and abort on failure.
        class_writer, prob_writer, conf_writer = open_writers(
            stack, info, meta, paths, run.confidence, run.outputs, run.metadata
        )
        try:
            tmp_dir = temporary_folder(Path(paths[0]).parent)
            source = src
            if any_db:
                linear_path = str(tmp_dir / "linear.tif")
                if log:
                    log("Converting dB bands to linear power for resampling (intensities are not averaged in dB)")
                linear_copy(src, linear_path, model_input, is_canceled)
                source = raster_io.open_raster(linear_path)
            elif model_input.reordered:
                source = gdal.Translate("", src, format="VRT", bandList=list(model_input.bands))
            src_nodata = [source.GetRasterBand(i + 1).GetNoDataValue() for i in range(source.RasterCount)]
            has_nodata = all(nd is not None for nd in src_nodata)
            warped = warp(
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
            # The probabilities always come back (bilinear); the classes and the confidence are read off them.
            tmp_paths = [str(tmp_dir / "classes.tif"), str(tmp_dir / "probabilities.tif"), None]
            stats = _segment_open_raster(
                warped,
                dataclasses.replace(
                    run,
                    model_input=warped_input,
                    paths=tmp_paths,
                    metadata=warped_input.metadata(),
                    progress=(lambda p: progress(0.9 * p)) if progress else None,
                    outputs=None,
                ),
            )
            warped = None
            if "model_check" in stats:  # said by the run on the model's grid; recorded in the final outputs too
                for writer in (class_writer, prob_writer, conf_writer):
                    if writer is not None:
                        writer.ds.SetMetadataItem(CHECK_KEY, stats["model_check"]["note"])
            if prob_writer is not None:
                probabilities = prob_writer.ds
            else:
                probabilities = raster_io.create_like(
                    str(tmp_dir / "probabilities_back.tif"), info, class_count, np.float32, float("nan")
                )
            tmp_ds = raster_io.open_raster(tmp_paths[1])
            warp(
                probabilities,
                tmp_ds,
                "the results back to the raster's grid",
                is_canceled,
                resampleAlg="bilinear",
                srcNodata=float("nan"),
                dstNodata=float("nan"),
                warpOptions=["INIT_DEST=NO_DATA"],
                multithread=True,
                copyMetadata=False,  # the output keeps the run's metadata (input units, domain check)
            )
            tmp_ds = None
            if progress:
                progress(95.0)
            class_pixels, nodata_pixels = finish_from_probabilities(
                src, model_input.bands, probabilities, class_writer, prob_writer, conf_writer, run.confidence
            )
            probabilities = None
            if progress:
                progress(100.0)
        finally:
            warped = source = tmp_ds = probabilities = None
            remove_folder(tmp_dir)
    seconds = time.perf_counter() - run.started
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
