"""Forecast t+1..t+3 from a daily sequence of rasters with a step forecaster, streamed block by block.

The dated rasters are aligned to one grid (:func:`timeseries.aligned`, shared with ``sarseg:stack_time_series``)
and read block by block with a halo as wide as the forecaster's receptive field (every input date and every
horizon widens it), so blocks give exactly what the whole raster would: no seams. No qgis import.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..models.metadata import ModelMetadata
from . import timeseries
from .errors import CancelledError, SarSegError
from .inference import CLASS_NODATA, _hex_rgba, class_writer, raster_pixel_size_m
from .outputs import OutputSet, check_destinations
from .preprocess import check_has_data
from .raster_io import GeoTiffWriter, check_not_same_file, iter_blocks, open_raster, read_info, read_window, valid_mask
from .timeseries import DatedRaster, Grid
from .units import AUTO, ModelInput, plan_model_input

DEFAULT_BLOCK = 256  # onnxruntime needs ~260 MB for a 256 px block with halo (800 MB at 512) and runs faster
LogFn = Callable[[str], None]
#: Metadata key of forecast outputs: JSON with the run, the step, its date and the class areas of every step.
FORECAST_KEY = "SARSEG_FORECAST"
NO_CHANGE = 0
NO_CHANGE_RGBA = (210, 210, 210, 255)


@dataclass
class ForecastStep:
    """One map of a forecast: t0 (the last input date) or a horizon."""

    step: int  # 0 for t0, else the horizon in days
    date: dt.date
    path: str
    probabilities_path: str | None = None
    class_pixels: np.ndarray | None = None

    @property
    def label(self) -> str:
        return "t0" if self.step == 0 else f"t+{self.step}"


@dataclass
class ForecastResult:
    """What a forecast run wrote and measured."""

    run: str
    dates: list[dt.date]
    steps: list[ForecastStep]
    class_names: tuple[str, ...]
    pixel_area_km2: float | None
    change_path: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def areas(self) -> list[dict[str, Any]]:
        """Class areas per step (t0 included): step, label, date, class, pixels, area_km2, fraction."""
        rows = []
        for s in self.steps:
            if s.class_pixels is None:
                continue
            total = max(int(s.class_pixels.sum()), 1)
            for name, count in zip(self.class_names, s.class_pixels):
                rows.append(
                    {
                        "step": s.step,
                        "label": s.label,
                        "date": s.date.isoformat(),
                        "class": name,
                        "pixels": int(count),
                        "area_km2": None if self.pixel_area_km2 is None else float(count) * self.pixel_area_km2,
                        "fraction": float(count) / total,
                    }
                )
        return rows


def output_paths(folder: str, prefix: str, t0: dt.date, horizons: Sequence[int]) -> list[tuple[int, dt.date, str]]:
    """(step, date, path) of the class maps a run writes: t0 and every horizon, named ``<prefix>_t+1_<date>.tif``."""
    steps = [0, *horizons]
    out = []
    for step in steps:
        date = t0 + dt.timedelta(days=step)
        label = "t0" if step == 0 else f"t+{step}"
        out.append((step, date, str(Path(folder) / f"{prefix}_{label}_{date.isoformat()}.tif")))
    return out


def select_sequence(items: Sequence[DatedRaster], length: int) -> tuple[list[DatedRaster], list[str]]:
    """Sort by date (duplicates refused), keep the last ``length`` dates; notes on sorting, gaps and dropped dates."""
    ordered, notes = timeseries.order_by_date(items)
    if len(ordered) < length:
        raise SarSegError(
            f"The forecaster needs a sequence of {length} daily rasters; {len(ordered)} given. "
            f"Add the rasters of the {length - len(ordered)} day(s) before {ordered[0].date.isoformat()}."
        )
    if len(ordered) > length:
        dropped = ordered[: len(ordered) - length]
        notes.append(
            f"The forecaster uses the last {length} dates; {len(dropped)} earlier raster(s) not used "
            f"({dropped[0].date.isoformat()} .. {dropped[-1].date.isoformat()})."
        )
        ordered = ordered[len(ordered) - length :]
    gaps = [(a.date, b.date) for a, b in zip(ordered, ordered[1:]) if (b.date - a.date).days != 1]
    if gaps:
        notes.append(
            "The forecaster was trained on daily sequences, but the dates used are not consecutive days ("
            + ", ".join(f"{a.isoformat()} -> {b.isoformat()}" for a, b in gaps)
            + "); the forecast treats them as consecutive."
        )
    return ordered, notes


class _InputDecoder:
    """Raster block -> the forecaster's input channels and a validity mask, by the kind of raster given.

    The raster is checked on a sample of its values first: class maps must hold the forecaster's classes only,
    probabilities must lie in 0..1, and continuous values are matched to the forecaster's bands and units by the
    rule of :mod:`.units`."""

    def __init__(
        self, meta: ModelMetadata, input_kind: str, item: DatedRaster, ds: gdal.Dataset, choice: str = AUTO
    ) -> None:
        self.meta, self.kind = meta, input_kind
        info = read_info(ds)
        self.nodata = [ds.GetRasterBand(b + 1).GetNoDataValue() for b in range(info.band_count)]
        name = item.name or Path(item.path).name
        classes = len(meta.class_names)
        self.bands: tuple[int, ...] | None = None  # all bands
        self.model_input: ModelInput | None = None
        self.notes: list[str] = []
        samples = check_has_data(ds, info)
        if input_kind == "classes":
            if info.band_count == 1 and np.issubdtype(info.dtype, np.integer):
                self.mode = "class map"
                values = np.unique(samples[0])
                if values.size and (values.min() < 0 or values.max() >= classes):
                    raise SarSegError(
                        f"'{name}' holds class values {_listing(values)}, but the forecaster knows classes "
                        f"0..{classes - 1} only ({', '.join(meta.class_names)}). Give class maps of these classes "
                        "(e.g. outputs of sarseg:segment with the bundled model), or set the other values to nodata."
                    )
            elif info.band_count == classes:
                self.mode = "probabilities"
                low, high = (
                    float(min(s.min() for s in samples if s.size)),
                    float(max(s.max() for s in samples if s.size)),
                )
                if low < -1e-3 or high > 1 + 1e-3:
                    raise SarSegError(
                        f"'{name}' has {classes} bands but values from {low:.4g} to {high:.4g}: not class "
                        "probabilities (0..1). Give class maps, or the class probabilities written by sarseg:segment."
                    )
            else:
                raise SarSegError(
                    f"'{name}' has {info.band_count} {info.dtype} band(s). The forecaster takes class maps (one "
                    f"integer band, classes 0..{classes - 1}: {', '.join(meta.class_names)}) or class probabilities "
                    f"({classes} bands), e.g. the output of sarseg:segment."
                )
        else:
            self.mode = "values"
            try:
                self.model_input = plan_model_input(meta, info, samples, choice)
            except SarSegError as err:
                raise SarSegError(f"'{name}': {err}") from None
            self.bands = self.model_input.bands
            self.nodata = [self.nodata[b - 1] for b in self.bands]
            self.notes = [f"'{name}': {n}" for n in self.model_input.notes + self.model_input.warnings]

    def __call__(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = valid_mask(data, self.nodata).all(axis=0)
        if self.mode == "class map":
            labels = data[0].astype(np.int64)
            classes = len(self.meta.class_names)
            valid &= (labels >= 0) & (labels < classes)
            onehot = np.zeros((classes, *labels.shape), np.float32)
            for c in range(classes):
                onehot[c] = (labels == c) & valid
            return onehot, valid
        out = data.astype(np.float32, copy=True)
        if self.model_input is not None:
            self.model_input.apply(out)
        out[:, ~valid] = 0.0
        return out, valid


def _listing(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f", ... ({values.size} values)" if values.size > limit else "")


def pixel_area_km2(ds: gdal.Dataset) -> float | None:
    """Area of one pixel in km² (projected CRS; a geographic CRS at the raster's centre latitude), None unknown."""
    size = raster_pixel_size_m(ds)
    return None if size is None else size[0] * size[1] / 1e6


def _change_palette(meta: ModelMetadata) -> tuple[dict[int, tuple[int, int, int, int]], list[str]]:
    """Change raster legend: 0 = no change, 1 + from * C + to = a change from class ``from`` to ``to``."""
    names = meta.class_names
    n = len(names)
    colours = {NO_CHANGE: NO_CHANGE_RGBA}  # nodata (255) has no entry: see inference.class_palette
    labels = ["no change"] + [""] * (n * n)
    for a in range(n):
        for b in range(n):
            if a != b:
                colours[1 + a * n + b] = _hex_rgba(meta.class_colors[b])
                labels[1 + a * n + b] = f"{names[a]} -> {names[b]}"
    return colours, labels


def change_classes(meta: ModelMetadata) -> list[tuple[int, str, str]]:
    """(code, label, #rrggbb) of every change-map category, "no change" first."""
    colours, labels = _change_palette(meta)
    return [(code, labels[code], "#{:02x}{:02x}{:02x}".format(*colours[code][:3])) for code in sorted(colours)]


def change_codes(before: np.ndarray, after: np.ndarray, classes: int) -> np.ndarray:
    """uint8 change codes of two class maps: 0 where equal, 1 + before * classes + after elsewhere, 255 nodata."""
    out = np.where(before == after, NO_CHANGE, 1 + before.astype(np.int32) * classes + after).astype(np.uint8)
    out[(before == CLASS_NODATA) | (after == CLASS_NODATA)] = CLASS_NODATA
    return out


def forecast_rasters(
    items: Sequence[DatedRaster],
    model: Any,
    folder: str,
    *,
    prefix: str = "forecast",
    reference_path: str | None = None,
    probabilities: bool = False,
    change_path: str | None = None,
    block_size: int = DEFAULT_BLOCK,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    outputs: OutputSet | None = None,
    input_scale: str = AUTO,
) -> ForecastResult:
    """Forecast every horizon of ``model`` (a ``registry.LoadedForecaster``) from the dated rasters ``items``.

    Writes, in ``folder``, the class map of t0 (the last input date) and of each horizon (see
    :func:`output_paths`), optionally per-class probabilities beside them (``..._probabilities.tif``), and
    optionally a change raster (t0 -> last horizon, :func:`change_codes`). Continuous forecasters write values
    (the model's bands) instead of classes. All outputs appear together or not at all: with ``outputs`` (the
    :class:`~.outputs.OutputSet` of a run that writes more, e.g. a table) they are moved into place when that set
    is committed, else at the end of this call. Continuous inputs are matched to the forecaster's bands and units by
    :mod:`.units` (``input_scale`` overrides their scale).
    """
    started = time.perf_counter()
    meta: ModelMetadata = model.metadata
    horizons = list(meta.horizons)
    ordered, notes = select_sequence(items, int(meta.sequence_length))
    if not Path(folder).is_dir():
        raise SarSegError(f"The output folder '{folder}' does not exist. Create it or choose another.")
    t0 = ordered[-1].date
    planned = output_paths(folder, prefix, t0, horizons)
    inputs = [item.path for item in ordered] + ([reference_path] if reference_path else [])
    for _, _, path in planned:
        check_not_same_file(inputs, path)
    if change_path:
        check_not_same_file(inputs + [p for _, _, p in planned], change_path)

    ref_info = read_info(open_raster(reference_path or ordered[0].path))
    timeseries.require_crs(ref_info)
    grid = Grid.of(ref_info)
    classes_out = meta.output_kind == "classes"
    n_classes = len(meta.class_names)
    step_bytes = grid.width * grid.height * (1 if classes_out else 4 * len(meta.input_bands))
    prob_bytes = grid.width * grid.height * 4 * n_classes if probabilities and classes_out else 0
    check_destinations(
        [(p, step_bytes + prob_bytes) for _, _, p in planned]
        + ([(change_path, grid.width * grid.height)] if change_path and classes_out else []),
        log,
    )
    own_outputs = outputs is None
    run_outputs = OutputSet() if own_outputs else outputs
    sources: list[gdal.Dataset] = []
    run = f"{prefix} {t0.isoformat()}"
    try:
        for item in ordered:
            info = read_info(open_raster(item.path))
            timeseries.require_crs(info)
            integer = np.issubdtype(info.dtype, np.integer)
            resampling = "nearest" if integer else "bilinear"
            ds = timeseries.aligned(item.path, grid, resampling)
            if ds.GetDescription().startswith("/vsimem/"):
                notes.append(f"'{item.name or Path(item.path).name}' was resampled ({resampling}) to the grid used.")
            sources.append(ds)
        decoders = [_InputDecoder(meta, model.input_kind, item, ds, input_scale) for item, ds in zip(ordered, sources)]
        for decoder in decoders:
            for note in decoder.notes:
                if log:
                    log(note)
        area = pixel_area_km2(sources[0])
        halo = int(model.halo)
        s = int(model.state_stride)
        if log:
            log(
                f"Forecaster '{model.name}' ({model.architecture or 'unknown architecture'}, {model.input_kind} "
                f"input) on {model.device_used.upper()}: {len(ordered)} dates {ordered[0].date.isoformat()} .. "
                f"{t0.isoformat()} -> horizons {', '.join(f't+{h}' for h in horizons)}; blocks of {block_size} px "
                f"with a {halo} px halo (the forecaster's receptive field)"
            )
        result = ForecastResult(run, [i.date for i in ordered], [], meta.class_names, area, change_path, notes)
        geotransform = grid.geotransform
        common = {
            "INPUT_DATES": json.dumps([d.isoformat() for d in result.dates]),
            "FORECASTER": model.name,
        }
        with ExitStack() as stack:
            if own_outputs:
                stack.enter_context(run_outputs)  # exits last: moves every finished file into place
            writers: list[GeoTiffWriter] = []
            prob_writers: list[GeoTiffWriter | None] = []
            for step, date, path in planned:
                extra = {**common, "STEP": str(step), "DATE": date.isoformat()}
                if classes_out:
                    writer = class_writer(
                        path, grid.width, grid.height, geotransform, grid.projection, meta, extra, run_outputs
                    )
                else:
                    writer = GeoTiffWriter(
                        path,
                        grid.width,
                        grid.height,
                        len(meta.input_bands),
                        np.float32,
                        geotransform,
                        grid.projection,
                        nodata=float("nan"),
                        descriptions=list(meta.input_bands),
                        units=list(meta.input_units),
                        metadata={"MODEL": meta.name, **extra},
                        outputs=run_outputs,
                    )
                writers.append(stack.enter_context(writer))
                prob_path = None
                if probabilities and classes_out:
                    prob_path = path[: -len(".tif")] + "_probabilities.tif"
                    prob_writers.append(
                        stack.enter_context(
                            GeoTiffWriter(
                                prob_path,
                                grid.width,
                                grid.height,
                                n_classes,
                                np.float32,
                                geotransform,
                                grid.projection,
                                nodata=float("nan"),
                                descriptions=list(meta.class_names),
                                metadata={"MODEL": meta.name, **extra},
                                outputs=run_outputs,
                            )
                        )
                    )
                else:
                    prob_writers.append(None)
                pixels = np.zeros(n_classes, np.int64) if classes_out else None
                result.steps.append(ForecastStep(step, date, path, prob_path, pixels))
            change_writer = None
            if change_path and classes_out:
                colours, labels = _change_palette(meta)
                change_writer = stack.enter_context(
                    GeoTiffWriter(
                        change_path,
                        grid.width,
                        grid.height,
                        1,
                        np.uint8,
                        geotransform,
                        grid.projection,
                        nodata=CLASS_NODATA,
                        descriptions=[f"change t0 -> t+{horizons[-1]}"],
                        metadata={**common, "FROM": t0.isoformat(), "TO": planned[-1][1].isoformat()},
                        color_table=colours,
                        category_names=labels,
                        outputs=run_outputs,
                    )
                )
            blocks = iter_blocks(grid.width, grid.height, block_size, halo)
            row = -1
            for k, block in enumerate(blocks):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                if block.core.y != row:
                    row = block.core.y
                    for src in sources:
                        src.FlushCache()
                maps, valid = [], None
                for src, decode in zip(sources, decoders):
                    channels, ok = decode(read_window(src, block.read, decode.bands))
                    maps.append(channels)
                    valid = ok if valid is None else valid & ok
                seq = np.stack(maps)[None]  # (1, T, C, h, w)
                seq, (ph, pw) = _pad_to_multiple(seq, s)
                out = model.run(seq, len(horizons))[0]  # (H, C, h, w)
                if ph or pw:
                    out = out[..., : out.shape[-2] - ph, : out.shape[-1] - pw]
                inner = block.inner
                ok = valid[inner]
                last = maps[-1][(slice(None), *inner)]
                step_maps = [last] + [out[i][(slice(None), *inner)] for i in range(len(horizons))]
                class_maps = []
                for step, values, writer, prob_writer in zip(result.steps, step_maps, writers, prob_writers):
                    if classes_out:
                        labels = np.argmax(values, axis=0).astype(np.uint8)
                        labels[~ok] = CLASS_NODATA
                        step.class_pixels += np.bincount(labels[ok], minlength=n_classes)[:n_classes]
                        writer.write(block.core, labels)
                        class_maps.append(labels)
                        if prob_writer is not None:
                            prob_writer.write(block.core, np.where(ok[None], values, np.nan))
                    else:
                        writer.write(block.core, np.where(ok[None], values, np.nan))
                if change_writer is not None:
                    change_writer.write(block.core, change_codes(class_maps[0], class_maps[-1], n_classes))
                if block.core.x + block.core.width >= grid.width:  # end of a row of blocks
                    for w in [*writers, *prob_writers, change_writer]:
                        if w is not None:
                            w.release_cache()
                if progress:
                    progress(100.0 * (k + 1) / len(blocks))
            areas = json.dumps({s.label: _areas_of(s, meta, area) for s in result.steps})
            areas_key = "SARSEG_AREAS_KM2" if area is not None else "SARSEG_AREAS_PIXELS"
            for step, writer in zip(result.steps, writers):
                writer.ds.SetMetadataItem(
                    FORECAST_KEY,
                    json.dumps(
                        {
                            "run": run,
                            "step": step.step,
                            "label": step.label,
                            "date": step.date.isoformat(),
                            "colors": dict(zip(meta.class_names, meta.class_colors)),
                        }
                    ),
                )
                if classes_out:
                    writer.ds.SetMetadataItem(areas_key, areas)
    except (SarSegError, CancelledError) as err:
        raise err.with_traceback(None) from None
    finally:
        for src in sources:
            timeseries.release(src)
        sources.clear()
    result.seconds = time.perf_counter() - started
    if log:
        log(f"Forecast {grid.width}x{grid.height} px in {result.seconds:.1f} s")
    return result


def _areas_of(step: ForecastStep, meta: ModelMetadata, area: float | None) -> dict[str, float] | None:
    if step.class_pixels is None:
        return None
    scale = area if area is not None else 1.0
    return {name: float(c) * scale for name, c in zip(meta.class_names, step.class_pixels)}


def _pad_to_multiple(seq: np.ndarray, s: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Edge-pad the last two axes up to multiples of ``s`` (a forecaster with a strided state)."""
    if s <= 1:
        return seq, (0, 0)
    ph, pw = (-seq.shape[-2]) % s, (-seq.shape[-1]) % s
    if ph or pw:
        seq = np.pad(seq, [(0, 0)] * (seq.ndim - 2) + [(0, ph), (0, pw)], mode="edge")
    return seq, (ph, pw)
