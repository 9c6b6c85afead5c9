"""Dated raster sequences: dates from names, ordering, and alignment of rasters to one grid.

Shared by ``sarseg:stack_time_series`` and the forecasting tool.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from . import units
from .errors import CancelledError, SarSegError
from .outputs import check_destinations
from .raster_io import (
    CancelFn,
    GeoTiffWriter,
    ProgressFn,
    RasterInfo,
    category_names,
    check_not_same_file,
    iter_blocks,
    open_raster,
    read_info,
    read_window,
    sample_windows,
    valid_mask,
)

# Patterns tried in order; digits must not touch other digits (so 8-digit ids are not read as dates).
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
RESAMPLING = {
    "nearest": gdal.GRA_NearestNeighbour,
    "bilinear": gdal.GRA_Bilinear,
    "cubic": gdal.GRA_Cubic,
    "average": gdal.GRA_Average,
}
#: Warped copies made by :func:`aligned` live in GDAL's memory file system under this prefix.
_ALIGN_PREFIX = "/vsimem/sarseg_align_"


def date_from_name(name: str) -> dt.date | None:
    """The first valid date written as YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD in a file name, else None."""
    stem = Path(name).name
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(stem):
            try:
                return dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError:
                continue
    return None


def parse_dates(text: str) -> list[dt.date]:
    """Dates from a comma/space-separated list of YYYY-MM-DD or YYYYMMDD values."""
    dates = []
    for token in re.split(r"[,;\s]+", text.strip()):
        if not token:
            continue
        date = date_from_name(token)
        if date is None:
            raise SarSegError(f"'{token}' is not a date. Write dates as YYYY-MM-DD, separated by commas.")
        dates.append(date)
    return dates


@dataclass
class DatedRaster:
    """A raster file and its acquisition date."""

    path: str
    date: dt.date
    name: str = ""


def order_by_date(items: Sequence[DatedRaster]) -> tuple[list[DatedRaster], list[str]]:
    """Sort by date; refuse duplicated dates; return notes on reordering and gaps for the log."""
    notes = []
    ordered = sorted(items, key=lambda item: item.date)
    for a, b in zip(ordered, ordered[1:]):
        if a.date == b.date:
            raise SarSegError(
                f"Two rasters have the same date {a.date.isoformat()}: '{a.name or a.path}' and "
                f"'{b.name or b.path}'. Keep one raster per date."
            )
    if [i.date for i in ordered] != [i.date for i in items]:
        notes.append("The rasters were not in date order; they were sorted by date.")
    for a, b in zip(ordered, ordered[1:]):
        gap = (b.date - a.date).days
        if gap > 1:
            notes.append(f"{gap - 1} day(s) missing between {a.date.isoformat()} and {b.date.isoformat()}.")
    return ordered, notes


@dataclass(frozen=True)
class Grid:
    """A raster grid: size, geotransform and CRS (WKT); ``name`` (the raster it comes from) is for messages."""

    width: int
    height: int
    geotransform: tuple[float, ...]
    projection: str
    name: str = field(default="", compare=False)

    @classmethod
    def of(cls, info: RasterInfo) -> Grid:
        return cls(info.width, info.height, tuple(info.geotransform), info.projection, info.path)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a north-up grid."""
        x0, dx, _, y0, _, dy = self.geotransform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def same_as(self, other: Grid) -> bool:
        if (self.width, self.height) != (other.width, other.height):
            return False
        if not np.allclose(self.geotransform, other.geotransform, rtol=0, atol=1e-6 * abs(self.geotransform[1])):
            return False
        return same_crs(self.projection, other.projection)


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _valid_crs(wkt: str) -> bool:
    if not wkt:
        return False
    try:  # with GDAL exceptions on (as in QGIS), a corrupt WKT raises instead of returning an error code
        return _srs(wkt).Validate() == 0
    except RuntimeError:
        return False


def same_crs(a: str, b: str) -> bool:
    if not a or not b:
        return a == b
    try:
        return bool(_srs(a).IsSame(_srs(b)))
    except RuntimeError:
        return a == b


def _refuse_without_crs(projection: str, what: str) -> None:
    if not _valid_crs(projection):
        raise SarSegError(
            f"The {what} has no valid coordinate reference system (CRS). Assign one first "
            "(Raster > Projections > Assign Projection) so it can be placed on the map and aligned."
        )


def require_crs(info: RasterInfo) -> None:
    """Refuse a raster without a usable coordinate reference system."""
    _refuse_without_crs(info.projection, f"raster '{info.path}'")


def bounds_in(grid: Grid, target_wkt: str) -> tuple[float, float, float, float]:
    """The grid's bounds expressed in another CRS (both must be valid: see :func:`require_crs`)."""
    if same_crs(grid.projection, target_wkt):
        return grid.bounds
    ct = osr.CoordinateTransformation(_srs(grid.projection), _srs(target_wkt))
    xmin, ymin, xmax, ymax = grid.bounds
    return tuple(ct.TransformBounds(xmin, ymin, xmax, ymax, 21))


def check_overlap(grid: Grid, reference: Grid, name: str, role: str = "reference raster") -> None:
    """Refuse a raster that does not overlap the reference grid (``role`` names that grid in messages)."""
    try:
        xmin, ymin, xmax, ymax = bounds_in(grid, reference.projection)
    except (RuntimeError, TypeError) as exc:  # TypeError: no transformation object without GDAL exceptions
        raise SarSegError(
            f"The extent of '{name}' cannot be expressed in the CRS of the {role} ({gdal.GetLastErrorMsg() or exc}). "
            "Check both coordinate reference systems."
        ) from exc
    rxmin, rymin, rxmax, rymax = reference.bounds
    if xmin >= rxmax or xmax <= rxmin or ymin >= rymax or ymax <= rymin:
        raise SarSegError(
            f"'{name}' does not overlap the {role} (its extent {xmin:.1f}, {ymin:.1f}, {xmax:.1f}, "
            f"{ymax:.1f} vs {rxmin:.1f}, {rymin:.1f}, {rxmax:.1f}, {rymax:.1f} in the CRS of the {role}). "
            "Give rasters that cover the same area."
        )


def fill_value(dtype: np.dtype) -> float:
    """The nodata value for pixels a warp leaves empty when the raster declares none: NaN for floating-point
    data, the largest value of the type for integers (255 for Byte, 65535 for UInt16), so class 0 stays a class."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else float("nan")


def aligned(path: str, reference: Grid, resampling: str = "bilinear", role: str = "reference raster") -> gdal.Dataset:
    """The raster on the reference grid: itself when already aligned, else a virtual warped copy.

    The warp is a VRT (computed block by block when read), so nothing is loaded whole. Pixels outside the
    raster get its nodata value, or :func:`fill_value` when it has none; either way the warped bands declare
    it (``GetNoDataValue()``). Free the result with :func:`release`. ``role`` names the reference in messages.
    """
    ds = open_raster(path)
    info = read_info(ds)
    grid = Grid.of(info)
    if grid.same_as(reference):
        return ds
    require_crs(info)
    reference_name = Path(reference.name).name if reference.name else ""
    _refuse_without_crs(reference.projection, f"{role} '{reference_name}'" if reference_name else role)
    check_overlap(grid, reference, Path(path).name, role=role)
    xmin, ymin, xmax, ymax = reference.bounds
    nodata = info.nodata[0]
    try:
        warped = gdal.Warp(
            f"{_ALIGN_PREFIX}{uuid.uuid4().hex}.vrt",
            ds,
            format="VRT",
            outputBounds=(xmin, ymin, xmax, ymax),
            width=reference.width,
            height=reference.height,
            dstSRS=reference.projection,
            resampleAlg=RESAMPLING[resampling],
            srcNodata=nodata,
            dstNodata=nodata if nodata is not None else fill_value(info.dtype),
            multithread=True,
        )
    except RuntimeError:
        warped = None
    if warped is None:
        raise SarSegError(f"Aligning '{path}' to the grid of the {role} failed: {gdal.GetLastErrorMsg()}")
    return warped


def release(ds: gdal.Dataset | None) -> None:
    """Free a dataset returned by :func:`aligned`: a warped copy's in-memory file is deleted (the dataset
    object stays readable until dropped); a raster returned as it is, or None, is left alone."""
    if ds is None:
        return
    path = ds.GetDescription()
    if not path.startswith(_ALIGN_PREFIX):
        return
    # A VRT writes its definition when flushed; once flushed it is not written again when it is
    # eventually closed, so the file deleted below does not come back.
    with contextlib.suppress(RuntimeError):
        ds.FlushCache()
    with contextlib.suppress(RuntimeError):
        gdal.Unlink(path)


def _common_nodata(infos: Sequence[RasterInfo], dtype: np.dtype, warped: bool) -> float | None:
    """The one nodata value of an integer stack: the first raster's when the type can hold it, else the
    largest value of the type; None when no raster has nodata and none is warped (every pixel is data)."""
    first = infos[0].nodata[0]
    if first is not None and _holds(dtype, first):
        return float(first)
    if warped or any(nd is not None for info in infos for nd in info.nodata):
        return fill_value(dtype)
    return None


def _holds(dtype: np.dtype, value: float) -> bool:
    """Whether an integer type can hold ``value`` (so pixels may equal it)."""
    info = np.iinfo(dtype)
    return bool(np.isfinite(value) and float(value).is_integer() and info.min <= value <= info.max)


def _palette(path: str) -> tuple[dict[int, tuple[int, ...]], list[str]] | None:
    """The colour table (index -> RGBA) and category names of a raster's first band, if it has a colour table."""
    ds = open_raster(path)  # kept in a name: a band of a dataset already freed crashes GDAL
    band = ds.GetRasterBand(1)
    table = band.GetRasterColorTable()
    if table is None:
        return None
    colors = {i: tuple(table.GetColorEntry(i)) for i in range(table.GetCount())}
    return colors, category_names(band)


def stack_rasters(
    items: Sequence[DatedRaster],
    dst_path: str,
    reference_path: str | None = None,
    resampling: str = "auto",
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
    input_scale: str = units.AUTO,
) -> dict[str, object]:
    """Align dated rasters to one grid and write them, in date order, as one multi-band GeoTIFF.

    Band ``t * B + b`` holds band ``b`` of date ``t``; band descriptions read "YYYY-MM-DD <band>" and the
    dataset metadata ``SARSEG_DATES`` lists the dates. Floating-point stacks mark nodata with NaN; integer
    stacks (class maps of one data type) with one value on every band (:func:`_common_nodata`), each input's
    own nodata being recoded to it, and keep the first raster's colour table and category names.
    Backscatter rasters (bands in dB or linear power, or named as polarisations) are stacked in one scale: each
    band's scale is decided by :mod:`.units` (``input_scale`` overrides it), a raster in the other scale than the
    earliest one is converted to it (and the notes say so), and the band units say the scale.
    Returns the dates, notes, the grid used, whether the output is ``paletted`` and the band ``units``.
    """
    if len(items) < 2:
        raise SarSegError("Give at least two rasters to stack into a time series.")
    ordered, notes = order_by_date(items)
    check_not_same_file([item.path for item in ordered] + [reference_path], dst_path)
    infos = [read_info(open_raster(item.path)) for item in ordered]
    for info in infos:
        require_crs(info)
    bands = infos[0].band_count
    for item, info in zip(ordered, infos):
        if info.band_count != bands:
            raise SarSegError(
                f"'{item.name or item.path}' has {info.band_count} band(s) but '{ordered[0].name or ordered[0].path}' "
                f"has {bands}. All rasters of a time series must have the same bands."
            )
    ref_info = read_info(open_raster(reference_path)) if reference_path else infos[0]
    if reference_path:
        require_crs(ref_info)
    reference = Grid.of(ref_info)
    integer = all(np.issubdtype(i.dtype, np.integer) for i in infos)
    if resampling == "auto":
        resampling = "nearest" if integer else "bilinear"
    if resampling not in RESAMPLING:
        raise SarSegError(f"Unknown resampling '{resampling}'. Use one of {', '.join(RESAMPLING)}.")
    warped = [not Grid.of(info).same_as(reference) for info in infos]
    for item, resampled in zip(ordered, warped):
        if resampled:
            notes.append(f"'{item.name or Path(item.path).name}' was resampled ({resampling}) to the reference grid.")

    same_dtype = len({i.dtype for i in infos}) == 1
    out_dtype = infos[0].dtype if (integer and same_dtype) else np.dtype(np.float32)
    check_destinations([(dst_path, reference.width * reference.height * bands * len(infos) * out_dtype.itemsize)])
    scales = _stack_scales(ordered, infos, input_scale, notes) if not integer else None
    out_units = scales[0] * len(infos) if scales else [u for info in infos for u in info.units]
    integer_out = np.issubdtype(out_dtype, np.integer)
    nodata = _common_nodata(infos, out_dtype, any(warped)) if integer_out else float("nan")
    palette = _palette(ordered[0].path) if integer_out and bands == 1 else None
    labels = [infos[0].band_label(b + 1) for b in range(bands)]
    descriptions = [f"{item.date.isoformat()} {label}" for item in ordered for label in labels]
    dates = [item.date.isoformat() for item in ordered]
    metadata = {
        "SARSEG_DATES": json.dumps(dates),
        "SARSEG_BANDS_PER_DATE": str(bands),
        "SARSEG_BAND_NAMES": json.dumps(labels),
    }
    first = infos[0]
    blocks = iter_blocks(reference.width, reference.height)
    sources: list[gdal.Dataset] = []
    try:
        for item in ordered:
            sources.append(aligned(item.path, reference, resampling))
        source_nodata = [[src.GetRasterBand(b + 1).GetNoDataValue() for b in range(bands)] for src in sources]
        with GeoTiffWriter(
            dst_path,
            reference.width,
            reference.height,
            bands * len(sources),
            out_dtype,
            reference.geotransform,
            reference.projection,
            nodata=nodata,
            descriptions=descriptions,
            units=out_units,
            metadata=metadata,
            color_table=palette[0] if palette else None,
        ) as writer:
            if palette and palette[1]:
                # GeoTIFF holds one colour table (band 1's: GDAL refuses it on other bands); category
                # names go to the side-car file and can be given to every band.
                for i in range(writer.band_count):
                    writer.ds.GetRasterBand(i + 1).SetCategoryNames(palette[1])
            done = 0
            row = 0
            for block in blocks:
                if block.core.y != row:  # free the tiles of finished rows from GDAL's cache
                    row = block.core.y
                    for src in sources:
                        src.FlushCache()
                out = np.empty((bands * len(sources), block.core.height, block.core.width), out_dtype)
                for t, src in enumerate(sources):
                    if is_canceled and is_canceled():
                        raise CancelledError("Cancelled by the user.")
                    data = read_window(src, block.core, dtype=out_dtype)
                    if integer_out:
                        _recode_nodata(data, source_nodata[t], nodata, ordered[t], ordered[0], first.nodata[0])
                    else:
                        data = np.where(valid_mask(data, source_nodata[t]), data, np.nan)
                        if scales:
                            for b in range(bands):
                                data[b] = units.convert_scale(data[b], scales[t][b], scales[0][b])
                    out[t * bands : (t + 1) * bands] = data
                    done += 1
                    if progress:
                        progress(100.0 * done / (len(blocks) * len(sources)))
                writer.write(block.core, out)
                writer.release_cache()
    finally:
        for src in sources:
            release(src)
        sources.clear()
    return {"dates": dates, "notes": notes, "grid": reference, "paletted": palette is not None, "units": out_units}


def _stack_scales(
    items: Sequence[DatedRaster], infos: Sequence[RasterInfo], choice: str, notes: list[str]
) -> list[list[str]] | None:
    """Each raster's band scales when the stack is backscatter (None otherwise); notes say what is converted."""
    if choice == units.AUTO and not any(units.is_backscatter(info) for info in infos):
        return None
    scales = []
    for item, info in zip(items, infos):
        ds = open_raster(item.path)
        samples = [sample_windows(ds, b + 1) for b in range(info.band_count)]
        ds = None
        decided = units.resolve_scales(info, samples, choice)
        notes.extend(s.note for s in decided if s.warning)
        scales.append([s.scale for s in decided])
    for item, own in zip(items[1:], scales[1:]):
        for b, (scale, target) in enumerate(zip(own, scales[0])):
            if scale != target:
                notes.append(
                    f"Band {b + 1} of '{item.name or Path(item.path).name}' is in {units.scale_label(scale)}, the "
                    f"earliest raster's in {units.scale_label(target)}: converted to match it."
                )
    return scales


def _recode_nodata(
    data: np.ndarray,
    source_nodata: Sequence[float | None],
    nodata: float | None,
    item: DatedRaster,
    first: DatedRaster,
    first_nodata: float | None,
) -> None:
    """In place: a (bands, h, w) integer block's own nodata pixels become the stack's ``nodata``; a valid
    pixel that already holds that value is refused (it would silently turn into nodata)."""
    if nodata is None:
        return
    for b, own in enumerate(source_nodata):
        missing = data[b] == own if own is not None and _holds(data.dtype, own) else np.zeros(data[b].shape, bool)
        clash = (data[b] == nodata) & ~missing
        if clash.any():
            source = (
                f"the nodata value of '{first.name or Path(first.path).name}'"
                if first_nodata is not None and float(first_nodata) == nodata
                else f"the largest {data.dtype} value, used for nodata"
            )
            raise SarSegError(
                f"'{item.name or Path(item.path).name}' holds the value {nodata:g} in valid pixels (band {b + 1}), "
                f"but in the stack {nodata:g} is {source}. Give all rasters the same nodata value, one that no "
                "class uses (Raster > Conversion > Translate, or the layer's Transparency properties)."
            )
        data[b][missing] = nodata
