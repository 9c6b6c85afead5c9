"""Forecast t+1..t+3 from a daily sequence of rasters with a step forecaster, streamed block by block.

The dated rasters are aligned to one grid (:func:`timeseries.aligned`, shared with ``sarseg:stack_time_series``)
and read block by block with a halo as wide as the forecaster's receptive field (every input date and every
horizon widens it), so blocks give exactly what the whole raster would: no seams. No qgis import.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..models.metadata import ModelMetadata, hex_rgba
from . import raster_io, timeseries
from .class_rasters import CLASS_NODATA, argmax_and_max, class_writer
from .errors import CancelledError, SarSegError
from .evaluation import raster_class_names, recode_by_names
from .forecast_methods import (
    BEST,
    CHOICE_MARGIN_ACCURACY,
    CHOICE_MARGIN_RMSE,
    CHOICES,
    HIGH_CONFIDENCE,
    METHODS,
    MODEL,
    TREND,
    TREND_RADIUS,
    BaselineForecaster,
    ScoreBoard,
    ScoreRow,
    baseline,
    best_method,
)
from .outputs import OutputSet, check_destinations
from .preprocess import check_has_data
from .raster_io import GeoTiffWriter, check_not_same_file, iter_blocks, open_raster, read_info, read_window, valid_mask
from .resampling import raster_pixel_size_m
from .timeseries import DatedRaster, Grid
from .units import AUTO, ModelInput, plan_model_input

DEFAULT_BLOCK = 256  # onnxruntime needs ~260 MB for a 256 px block with halo (800 MB at 512) and runs faster
LogFn = Callable[[str], None]
#: Metadata key of forecast outputs: JSON with the run, the step, its date and the class areas of every step.
FORECAST_KEY = "SARSEG_FORECAST"
NO_CHANGE = 0
NO_CHANGE_RGBA = (210, 210, 210, 255)
#: Most recent forecast origins the hindcast replays (each costs one more model run over the raster).
HINDCAST_ORIGINS = 3


@dataclass
class ForecastStep:
    """One map of a forecast: t0 (the last input date) or a horizon."""

    step: int  # 0 for t0, else the horizon in days
    date: dt.date
    path: str
    probabilities_path: str | None = None
    class_pixels: np.ndarray | None = None
    confidence_path: str | None = None
    changed_confident: int = 0  # valid pixels whose class differs from t0's with probability >= HIGH_CONFIDENCE

    @property
    def label(self) -> str:
        return "t0" if self.step == 0 else f"t+{self.step}"

    @property
    def changed_confident_share(self) -> float | None:
        """Share of the valid area that changes class from t0 with high confidence (None for t0 or values)."""
        if self.step == 0 or self.class_pixels is None:
            return None
        return self.changed_confident / max(int(self.class_pixels.sum()), 1)


@dataclass
class HindcastOrigin:
    """A past forecast the hindcast replays: its origin (last input date), input dates and observed targets."""

    index: int  # of the origin in the date-ordered series
    window: list[int]  # indices of its input dates
    targets: list[tuple[int, int]]  # (horizon, index of the date observed at origin + horizon)


@dataclass
class Hindcast:
    """How the model and the baselines would have done on the user's own last dates (see :func:`plan_hindcast`)."""

    origins: list[dt.date]
    observed: list[dt.date]  # the dates scored
    rows: list[ScoreRow]
    kind: str  # "classes" (accuracy) or "continuous" (RMSE)

    def row(self, method: str, horizon: int) -> ScoreRow | None:
        return next((r for r in self.rows if r.method == method and r.horizon == horizon), None)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the origins, the observed dates scored, the kind of score and every row."""
        return {
            "origins": [d.isoformat() for d in self.origins],
            "observed": [d.isoformat() for d in self.observed],
            "kind": self.kind,
            "rows": [r.as_dict() for r in self.rows],
        }

    def losing(self) -> list[int]:
        """Horizons where the model did not beat persistence (skill <= 0)."""
        return [r.horizon for r in self.rows if r.method == MODEL and r.pixels and not r.skill > 0]

    def verdict(self) -> str | None:
        """A plain warning when the model did not beat persistence at some horizon, else None."""
        losing = self.losing()
        if not losing:
            return None
        return (
            f"On this area the model does NOT beat persistence at {', '.join(f't+{h}' for h in losing)}: over "
            f"the last {len(self.observed)} day(s), 'nothing changes' was at least as right as the model. Treat its "
            "forecast as unproven here; the persistence method, or a longer series to judge it on, is the safer choice."
        )

    def lines(self) -> list[str]:
        """The log's report: one line per horizon (model, persistence, trend and the skill)."""
        measure = "accuracy" if self.kind == "classes" else "RMSE"
        span = f"{self.observed[0].isoformat()} .. {self.observed[-1].isoformat()}"
        out = [
            f"Hindcast on this area: the forecast replayed from {len(self.origins)} earlier date(s) "
            f"({', '.join(d.isoformat() for d in self.origins)}) and compared with what was observed over the last "
            f"{len(self.observed)} day(s) ({span}); {measure}, skill = 1 - error / error of persistence:"
        ]
        for h in sorted({r.horizon for r in self.rows}):
            cells = []
            for method in METHODS:
                row = self.row(method, h)
                if row is None or not row.pixels:
                    continue
                value = row.accuracy if self.kind == "classes" else row.rmse
                cell = f"{method} {value:.3f}"
                if method != "persistence":
                    cell += f" (skill {row.skill:+.2f})"
                cells.append(cell)
            model = self.row(MODEL, h)
            pairs = model.pairs if model else 0
            out.append(f"  t+{h} ({pairs} forecast(s) scored): " + ", ".join(cells))
        return out


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
    method: str = MODEL
    hindcast: Hindcast | None = None
    chosen_by: str = ""  # "hindcast" when the method was chosen on the hindcast (:data:`BEST`)

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
            f"The forecast starts from the last {length} dates; the {len(dropped)} earlier raster(s) "
            f"({dropped[0].date.isoformat()} .. {dropped[-1].date.isoformat()}) are not its inputs (a hindcast "
            "uses the most recent of them)."
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


def plan_hindcast(
    ordered: Sequence[DatedRaster], length: int, horizons: Sequence[int], max_origins: int = HINDCAST_ORIGINS
) -> list[HindcastOrigin]:
    """The past forecasts a hindcast can replay on a date-ordered series, oldest first.

    An origin is a date with ``length`` input dates up to it (counted as the forecast counts them: the rasters
    before it, in order) and at least one later date observed exactly ``horizon`` days after it. The last date is
    never an origin (nothing after it is observed); the ``max_origins`` most recent origins are kept. Empty when the
    series has fewer than ``length + 1`` dates."""
    by_date = {item.date: i for i, item in enumerate(ordered)}
    origins: list[HindcastOrigin] = []
    for o in range(len(ordered) - 2, length - 2, -1):
        targets = [
            (k, by_date[ordered[o].date + dt.timedelta(days=k)])
            for k in horizons
            if ordered[o].date + dt.timedelta(days=k) in by_date
        ]
        if targets:
            origins.append(HindcastOrigin(o, list(range(o - length + 1, o + 1)), targets))
        if len(origins) >= max_origins:
            break
    return origins[::-1]


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
        self.lut: np.ndarray | None = None  # class values recoded by name (see evaluation.recode_by_names)
        self.model_input: ModelInput | None = None
        self.notes: list[str] = []
        # backscatter: the windows read once, for the unit rule and the fill
        windows = None if input_kind == "classes" else raster_io.read_spread_windows(ds)
        samples = check_has_data(ds, info, windows=windows)
        if input_kind == "classes":
            if info.band_count == 1 and np.issubdtype(info.dtype, np.integer):
                self.mode = "class map"
                values = np.unique(samples[0])
                # names from the file itself: an aligned copy (a warped VRT) may not carry them
                names = raster_class_names(open_raster(item.path))
                recode = recode_by_names(names, meta.class_names, f"'{name}'", "the forecaster")
                self.lut = recode.lut  # values it does not name are left out
                if recode.note:
                    self.notes.append(recode.note)
                if self.lut is None and values.size and (values.min() < 0 or values.max() >= classes):
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
            fill = raster_io.undeclared_fill(windows, self.bands, info.nodata)
            if fill is not None:  # the swath's fill, read as no data (as segment does)
                self.nodata = [fill[0]] * len(self.bands)
                self.notes.append(f"'{name}': {raster_io.fill_note(fill)}")

    def __call__(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = valid_mask(data, self.nodata).all(axis=0)
        if self.mode == "class map":
            labels = data[0].astype(np.int64)
            classes = len(self.meta.class_names)
            if self.lut is not None:
                labels = np.where((labels >= 0) & (labels < 256), self.lut[np.clip(labels, 0, 255)], 255)
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
    colours = {NO_CHANGE: NO_CHANGE_RGBA}  # nodata (255) has no entry: see class_rasters.class_palette
    labels = ["no change"] + [""] * (n * n)
    for a in range(n):
        for b in range(n):
            if a != b:
                colours[1 + a * n + b] = hex_rgba(meta.class_colors[b])
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


@dataclass
class _Plan:
    """What a forecast run reads and writes, decided before any pixel is read."""

    meta: ModelMetadata
    horizons: list[int]
    ordered: list[DatedRaster]  # the forecast's input dates
    everything: list[DatedRaster]  # every date given, in order
    origins: list[HindcastOrigin]  # the replayed past forecasts
    planned: list[tuple[int, dt.date, str]]  # (step, date, path) of t0 and each horizon
    classes_out: bool
    confidence: bool
    first: int  # index in ``everything`` of the forecast's first input date
    needed: list[int]  # indices of the dates read
    grid: Grid
    notes: list[str]

    @property
    def t0(self) -> dt.date:
        return self.ordered[-1].date


def _plan(
    items: Sequence[DatedRaster],
    meta: ModelMetadata,
    folder: str,
    prefix: str,
    reference_path: str | None,
    probabilities: bool,
    confidence: bool,
    change_path: str | None,
    hindcast: bool,
    log: LogFn | None,
) -> _Plan:
    """The dates to read and the files to write; refuses outputs that would overwrite an input, a missing folder
    or a disk without room for the outputs."""
    horizons = list(meta.horizons)
    length = int(meta.sequence_length)
    ordered, notes = select_sequence(items, length)
    everything, _ = timeseries.order_by_date(items)
    origins = plan_hindcast(everything, length, horizons) if hindcast else []
    if hindcast and not origins:
        notes.append(
            f"No hindcast: it needs at least {length + 1} daily rasters (the forecast's {length} input dates and a "
            f"later one to check against); {len(everything)} given."
        )
    if not Path(folder).is_dir():
        raise SarSegError(f"The output folder '{folder}' does not exist. Create it or choose another.")
    planned = output_paths(folder, prefix, ordered[-1].date, horizons)
    classes_out = meta.output_kind == "classes"
    confidence = confidence and classes_out
    inputs = [item.path for item in everything] + ([reference_path] if reference_path else [])
    extra_paths = [_beside(p, "confidence") for _, _, p in planned[1:]] if confidence else []
    for path in [p for _, _, p in planned] + extra_paths:
        check_not_same_file(inputs, path)
    if change_path:
        check_not_same_file(inputs + [p for _, _, p in planned], change_path)

    # Dates read: the forecast's inputs, and those of the replayed forecasts and their observed targets.
    first = len(everything) - length
    needed = sorted(
        set(range(first, len(everything)))
        | {i for o in origins for i in o.window}
        | {i for o in origins for _, i in o.targets}
    )
    ref_info = read_info(open_raster(reference_path or everything[needed[0]].path))
    timeseries.require_crs(ref_info)
    grid = Grid.of(ref_info)
    pixels = grid.width * grid.height
    step_bytes = pixels * (1 if classes_out else 4 * len(meta.input_bands))
    prob_bytes = pixels * 4 * len(meta.class_names) if probabilities and classes_out else 0
    conf_bytes = pixels * 4 if confidence else 0
    check_destinations(
        [(p, step_bytes + prob_bytes + (conf_bytes if step else 0)) for step, _, p in planned]
        + ([(change_path, pixels)] if change_path and classes_out else []),
        log,
    )
    return _Plan(
        meta, horizons, ordered, everything, origins, planned, classes_out, confidence, first, needed, grid, notes
    )


def _open_aligned(plan: _Plan, sources: dict[int, gdal.Dataset]) -> None:
    """Open every date read on the forecast's grid (resampled where its grid differs) into ``sources``."""
    for index in plan.needed:
        item = plan.everything[index]
        info = read_info(open_raster(item.path))
        timeseries.require_crs(info)
        resampling = "nearest" if np.issubdtype(info.dtype, np.integer) else "bilinear"
        ds = timeseries.aligned(item.path, plan.grid, resampling)
        if ds.GetDescription().startswith("/vsimem/"):
            plan.notes.append(f"'{item.name or Path(item.path).name}' was resampled ({resampling}) to the grid used.")
        sources[index] = ds


class _StepWriters:
    """The rasters of one run: a map per step (t0 and each horizon), and optionally probabilities, confidence and
    the change raster; :meth:`write` writes one block of them all and counts the classes."""

    def __init__(
        self,
        stack: ExitStack,
        plan: _Plan,
        result: ForecastResult,
        outputs: OutputSet,
        common: dict[str, str],
        probabilities: bool,
        change_path: str | None,
    ) -> None:
        meta, grid = plan.meta, plan.grid
        self.classes_out = plan.classes_out
        self.n_classes = len(meta.class_names)

        def float_writer(
            path: str, bands: list[str], extra: dict[str, str], units: list[str] | None = None
        ) -> GeoTiffWriter:
            writer = GeoTiffWriter(
                path, grid.width, grid.height, len(bands), np.float32, grid.geotransform, grid.projection,
                nodata=float("nan"), descriptions=bands, units=units, metadata={"MODEL": meta.name, **extra},
                outputs=outputs,
            )  # fmt: skip
            return stack.enter_context(writer)

        self.maps: list[GeoTiffWriter] = []
        self.probabilities: list[GeoTiffWriter | None] = []
        self.confidence: list[GeoTiffWriter | None] = []
        for step, date, path in plan.planned:
            extra = {**common, "STEP": str(step), "DATE": date.isoformat()}
            if self.classes_out:
                writer = class_writer(
                    path, grid.width, grid.height, grid.geotransform, grid.projection, meta, extra, outputs
                )
                self.maps.append(stack.enter_context(writer))
            else:
                self.maps.append(float_writer(path, list(meta.input_bands), extra, list(meta.input_units)))
            prob_path = _beside(path, "probabilities") if probabilities and self.classes_out else None
            self.probabilities.append(float_writer(prob_path, list(meta.class_names), extra) if prob_path else None)
            conf_path = _beside(path, "confidence") if plan.confidence and step else None
            self.confidence.append(float_writer(conf_path, ["confidence"], extra) if conf_path else None)
            pixels = np.zeros(self.n_classes, np.int64) if self.classes_out else None
            result.steps.append(ForecastStep(step, date, path, prob_path, pixels, conf_path))
        self.change = None
        if change_path and self.classes_out:
            colours, labels = _change_palette(meta)
            self.change = stack.enter_context(
                GeoTiffWriter(
                    change_path,
                    grid.width,
                    grid.height,
                    1,
                    np.uint8,
                    grid.geotransform,
                    grid.projection,
                    nodata=CLASS_NODATA,
                    descriptions=[f"change t0 -> t+{plan.horizons[-1]}"],
                    metadata={**common, "FROM": plan.t0.isoformat(), "TO": plan.planned[-1][1].isoformat()},
                    color_table=colours,
                    category_names=labels,
                    outputs=outputs,
                )
            )

    def write(self, core: Any, steps: list[ForecastStep], step_maps: list[np.ndarray], ok: np.ndarray) -> None:
        """One block: ``step_maps`` holds t0's map and each horizon's (classes: per-class scores, (C, h, w))."""
        class_maps = []
        for step, values, writer, prob_writer, conf_writer in zip(
            steps, step_maps, self.maps, self.probabilities, self.confidence
        ):
            if not self.classes_out:
                writer.write(core, np.where(ok[None], values, np.nan))
                continue
            labels, top = argmax_and_max(values)
            labels[~ok] = CLASS_NODATA
            step.class_pixels += np.bincount(labels[ok], minlength=self.n_classes)[: self.n_classes]
            writer.write(core, labels)
            class_maps.append(labels)
            if prob_writer is not None:
                prob_writer.write(core, np.where(ok[None], values, np.nan))
            if step.step:
                sure = ok & (labels != class_maps[0]) & (top >= HIGH_CONFIDENCE)
                step.changed_confident += int(sure.sum())
                if conf_writer is not None:
                    conf_writer.write(core, np.where(ok, top, np.nan)[None])
        if self.change is not None:
            self.change.write(core, change_codes(class_maps[0], class_maps[-1], self.n_classes))

    def release_cache(self) -> None:
        for w in [*self.maps, *self.probabilities, *self.confidence, self.change]:
            if w is not None:
                w.release_cache()


def _log_result(result: ForecastResult, grid: Grid, log: LogFn | None) -> None:
    if not log:
        return
    log(f"Forecast {grid.width}x{grid.height} px in {result.seconds:.1f} s")
    for step in result.steps:
        share = step.changed_confident_share
        if share is not None:
            log(
                f"{step.label}: {share:.1%} of the area changes class from t0 with a forecast probability of "
                f"{HIGH_CONFIDENCE:.0%} or more"
            )
    if result.hindcast is not None:
        for line in result.hindcast.lines():
            log(line)


def forecast_rasters(
    items: Sequence[DatedRaster],
    model: Any,
    folder: str,
    *,
    prefix: str = "forecast",
    reference_path: str | None = None,
    probabilities: bool = False,
    confidence: bool = False,
    change_path: str | None = None,
    method: str = MODEL,
    hindcast: bool = True,
    block_size: int = DEFAULT_BLOCK,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: LogFn | None = None,
    outputs: OutputSet | None = None,
    input_scale: str = AUTO,
) -> ForecastResult:
    """Forecast every horizon of ``model`` (a ``registry.LoadedForecaster``) from the dated rasters ``items``.

    Writes, in ``folder``, the class map of t0 (the last input date) and of each horizon (see
    :func:`output_paths`), optionally per-class probabilities (``..._probabilities.tif``) and the confidence of
    each horizon (``..._confidence.tif``: the probability of the forecast class) beside them, and optionally a
    change raster (t0 -> last horizon, :func:`change_codes`). Continuous forecasters write values (the model's
    bands) instead of classes. ``method`` "persistence" or "trend" writes that baseline's forecast instead of the
    model's (:mod:`.forecast_methods`; the model's metadata still sets dates, horizons and classes);
    :data:`~.forecast_methods.BEST` scores the hindcast first and writes the model's forecast unless a baseline did
    clearly better on it (:func:`~.forecast_methods.best_method`; the model's when the series is too short).

    ``hindcast``: when the series holds dates before the last ``sequence_length`` ones, the most recent past
    forecasts are replayed (:func:`plan_hindcast`) with the model and both baselines, and scored against the dates
    actually observed; the result's ``hindcast`` holds the scores and the log reports them.

    All outputs appear together or not at all: with ``outputs`` (the :class:`~.outputs.OutputSet` of a run that
    writes more, e.g. a table) they are moved into place when that set is committed, else at the end of this call.
    Continuous inputs are matched to the forecaster's bands and units by :mod:`.units` (``input_scale`` overrides
    their scale).
    """
    started = time.perf_counter()
    if method not in CHOICES:
        raise SarSegError(f"unknown forecast method '{method}': expected one of {', '.join(CHOICES)}")
    meta: ModelMetadata = model.metadata
    choose = method == BEST
    plan = _plan(
        items, meta, folder, prefix, reference_path, probabilities, confidence, change_path, hindcast or choose, log
    )
    everything, needed, grid, horizons, t0 = plan.everything, plan.needed, plan.grid, plan.horizons, plan.t0
    if choose and not plan.origins:
        plan.notes.append(
            f"Method '{BEST}': the series is too short for a hindcast to choose on, so the model's forecast is written."
        )
        method, choose = MODEL, False
    own_outputs = outputs is None
    run_outputs = OutputSet() if own_outputs else outputs
    sources: dict[int, gdal.Dataset] = {}
    run = f"{prefix} {t0.isoformat()}"
    try:
        _open_aligned(plan, sources)
        decoders = {i: _InputDecoder(meta, model.input_kind, everything[i], sources[i], input_scale) for i in needed}
        for decoder in decoders.values():
            for note in decoder.notes:
                if log:
                    log(note)
        area = pixel_area_km2(sources[needed[0]])
        halo = max(
            int(model.halo) if (method in (MODEL, BEST) or plan.origins) else 0,
            TREND_RADIUS if (method == TREND or plan.origins) else 0,
        )
        s = int(model.state_stride)
        if log:
            what = (
                f"Forecaster '{model.name}' ({model.architecture or 'unknown architecture'}, {model.input_kind} "
                f"input) on {model.device_used.upper()}"
                + (f", or a baseline if one did better on the hindcast ('{BEST}')" if choose else "")
                if method in (MODEL, BEST)
                else f"The {method} baseline (forecaster '{model.name}' sets the dates and classes)"
            )
            log(
                f"{what}: {len(plan.ordered)} dates {plan.ordered[0].date.isoformat()} .. {t0.isoformat()} -> "
                f"horizons {', '.join(f't+{h}' for h in horizons)}; blocks of {block_size} px with a {halo} px halo"
                + (" (the forecaster's receptive field)" if halo else "")
                + (f"; hindcast from {len(plan.origins)} earlier date(s)" if plan.origins else "")
            )
        result = ForecastResult(
            run, [i.date for i in plan.ordered], [], meta.class_names, area, change_path, plan.notes
        )
        board = ScoreBoard(METHODS, horizons, len(meta.class_names), "classes" if plan.classes_out else "continuous")
        blocks = iter_blocks(grid.width, grid.height, block_size, halo)
        window = list(range(plan.first, len(everything)))

        def blocks_read(share: tuple[float, float], dates: Sequence[int]) -> Iterator[tuple[Any, dict, dict]]:
            """Each block with the maps and validity of ``dates`` (indices) read; progress over ``share`` %."""
            row = -1
            for k, block in enumerate(blocks):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                if block.core.y != row:
                    row = block.core.y
                    for src in sources.values():
                        src.FlushCache()
                maps, valids = {}, {}
                for i in dates:
                    maps[i], valids[i] = decoders[i](read_window(sources[i], block.read, decoders[i].bands))
                yield block, maps, valids
                if progress:
                    progress(share[0] + (share[1] - share[0]) * (k + 1) / len(blocks))

        def score(block: Any, maps: dict, valids: dict) -> None:
            for origin in plan.origins:
                _score_origin(origin, everything, model, maps, valids, block.inner, board, plan.classes_out, s)

        if choose:  # a first pass scores the hindcast, which says which method writes the maps
            for block, maps, valids in blocks_read((0.0, 50.0), needed):
                score(block, maps, valids)
            method, errors = best_method(board.rows())
            if log:
                log(_choice_note(method, errors, plan, everything, plan.classes_out))
        forecaster = model if method == MODEL else BaselineForecaster(method, model)
        result.method, result.chosen_by = method, "hindcast" if choose else ""
        common = {
            "INPUT_DATES": json.dumps([d.isoformat() for d in result.dates]),
            "FORECASTER": model.name,
            "METHOD": method,
            **({"METHOD_CHOSEN_BY": "hindcast"} if choose else {}),
        }
        with ExitStack() as stack:
            if own_outputs:
                stack.enter_context(run_outputs)  # exits last: moves every finished file into place
            writers = _StepWriters(stack, plan, result, run_outputs, common, probabilities, change_path)
            # the hindcast scored first needs only the forecast's own dates now
            dates = window if choose else needed
            for block, maps, valids in blocks_read((50.0, 100.0) if choose else (0.0, 100.0), dates):
                inner = block.inner
                seq, ok = _sequence(maps, valids, window)
                out = _run(forecaster, seq, len(horizons), s)[0]  # (K, C, h, w)
                last = maps[window[-1]][(slice(None), *inner)]
                step_maps = [last] + [out[i][(slice(None), *inner)] for i in range(len(horizons))]
                writers.write(block.core, result.steps, step_maps, ok[inner])
                if not choose:
                    score(block, maps, valids)
                if block.core.x + block.core.width >= grid.width:  # end of a row of blocks
                    writers.release_cache()
            if plan.origins:
                observed = sorted({everything[i].date for o in plan.origins for _, i in o.targets})
                result.hindcast = Hindcast(
                    [everything[o.index].date for o in plan.origins], observed, board.rows(), board.kind
                )
                if result.hindcast.verdict() and not (choose and method != MODEL):  # else the choice says it
                    result.notes.append(result.hindcast.verdict())
            _describe_outputs(result, writers.maps, meta, run, area, plan.classes_out)
    except (SarSegError, CancelledError) as err:
        raise err.with_traceback(None) from None
    finally:
        for src in sources.values():
            timeseries.release(src)
        sources.clear()
    result.seconds = time.perf_counter() - started
    _log_result(result, grid, log)
    return result


def _choice_note(
    method: str, errors: dict[str, float], plan: _Plan, everything: Sequence[DatedRaster], classes: bool
) -> str:
    """The log line of the method chosen on the hindcast, with each method's mean score over the horizons."""
    observed = sorted({everything[i].date for o in plan.origins for _, i in o.targets})
    if classes:
        scores = ", ".join(f"{m} {1.0 - errors[m]:.3f}" for m in METHODS if m in errors)
        what, margin = "accuracy", f"by more than {CHOICE_MARGIN_ACCURACY:g} of accuracy"
    else:
        scores = ", ".join(f"{m} {errors[m]:.3f}" for m in METHODS if m in errors)
        what, margin = "RMSE", f"by more than {CHOICE_MARGIN_RMSE:.0%} of the model's RMSE"
    if method == MODEL:
        written = f"the model's forecast (no baseline did clearly better, {margin})"
    else:
        written = f"the {method} forecast: it did clearly better than the model on this area ({margin})"
    return (
        f"Method '{BEST}': mean {what} over t+1..t+{max(plan.horizons)} on this area, from {len(plan.origins)} "
        f"earlier date(s) checked against the last {len(observed)} day(s): {scores or 'none'}. Written: {written}. "
        "A few days of hindcast are a hint, not a proof."
    )


def _beside(path: str, what: str) -> str:
    """``x.tif`` -> ``x_<what>.tif``: a companion raster of a forecast map."""
    return path[: -len(".tif")] + f"_{what}.tif" if path.endswith(".tif") else f"{path}_{what}.tif"


def _sequence(
    maps: dict[int, np.ndarray], valids: dict[int, np.ndarray], window: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(1, T, C, h, w) inputs of the dates ``window`` and where all of them are valid."""
    ok = np.logical_and.reduce([valids[i] for i in window])
    return np.stack([maps[i] for i in window])[None], ok


def _run(forecaster: Any, seq: np.ndarray, horizons: int, stride: int) -> np.ndarray:
    """A forecaster's (1, K, C, h, w) output for (1, T, C, h, w) inputs, edge-padded to its state stride."""
    padded, (ph, pw) = _pad_to_multiple(seq, stride)
    out = forecaster.run(padded, horizons)
    if ph or pw:
        out = out[..., : out.shape[-2] - ph, : out.shape[-1] - pw]
    return out


def _score_origin(
    origin: HindcastOrigin,
    everything: Sequence[DatedRaster],
    model: Any,
    maps: dict[int, np.ndarray],
    valids: dict[int, np.ndarray],
    inner: tuple[slice, slice],
    board: ScoreBoard,
    classes: bool,
    stride: int,
) -> None:
    """Replay one past forecast on a block with the model and both baselines; score it against the observed dates."""
    seq, ok = _sequence(maps, valids, origin.window)
    steps = max(k for k, _ in origin.targets)
    forecasts = {
        "model": _run(model, seq, steps, stride)[0],
        **{m: baseline(m, seq, steps, classes)[0] for m in METHODS if m != MODEL},
    }
    date = everything[origin.index].date
    for k, target in origin.targets:
        valid = (ok & valids[target])[inner]
        observed = maps[target][(slice(None), *inner)]
        if classes:
            observed = np.where(valid, np.argmax(observed, axis=0), CLASS_NODATA)
        for name, values in forecasts.items():
            predicted = values[k - 1][(slice(None), *inner)]
            board.add(name, k, date, np.argmax(predicted, axis=0) if classes else predicted, observed, valid)


def _describe_outputs(
    result: ForecastResult, writers: Sequence[GeoTiffWriter], meta: ModelMetadata, run: str, area: float | None,
    classes_out: bool,
) -> None:  # fmt: skip
    """Each map's forecast description (run, step, date, colours, method, confident change, hindcast) and areas."""
    areas = json.dumps({s.label: _areas_of(s, meta, area) for s in result.steps})
    areas_key = "SARSEG_AREAS_KM2" if area is not None else "SARSEG_AREAS_PIXELS"
    hindcast = result.hindcast.summary() if result.hindcast is not None else None
    for step, writer in zip(result.steps, writers):
        description = {
            "run": run,
            "step": step.step,
            "label": step.label,
            "date": step.date.isoformat(),
            "colors": dict(zip(meta.class_names, meta.class_colors)),
            "method": result.method,
            "method_chosen_by": result.chosen_by,
            "changed_confident": step.changed_confident_share,
            "high_confidence": HIGH_CONFIDENCE,
            "hindcast": hindcast,
        }
        writer.ds.SetMetadataItem(FORECAST_KEY, json.dumps(description))
        if classes_out:
            writer.ds.SetMetadataItem(areas_key, areas)


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
