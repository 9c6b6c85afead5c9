"""Dated raster sequences: dates from names, ordering, and alignment of rasters to one grid.

Shared by ``sarseg:stack_time_series`` and the forecasting tool.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from .errors import CancelledError, SarSegError
from .raster_io import (
    CancelFn,
    GeoTiffWriter,
    ProgressFn,
    RasterInfo,
    check_not_same_file,
    iter_blocks,
    open_raster,
    read_info,
    read_window,
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
    """A raster grid: size, geotransform and CRS (WKT)."""

    width: int
    height: int
    geotransform: tuple[float, ...]
    projection: str

    @classmethod
    def of(cls, info: RasterInfo) -> Grid:
        return cls(info.width, info.height, tuple(info.geotransform), info.projection)

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


def same_crs(a: str, b: str) -> bool:
    if not a or not b:
        return a == b
    return bool(_srs(a).IsSame(_srs(b)))


def require_crs(info: RasterInfo) -> None:
    """Refuse a raster without a usable coordinate reference system."""
    if not info.projection or _srs(info.projection).Validate() != 0:
        raise SarSegError(
            f"The raster '{info.path}' has no valid coordinate reference system (CRS). Assign one first "
            "(Raster > Projections > Assign Projection) so it can be placed on the map and aligned."
        )


def bounds_in(grid: Grid, target_wkt: str) -> tuple[float, float, float, float]:
    """The grid's bounds expressed in another CRS."""
    if same_crs(grid.projection, target_wkt):
        return grid.bounds
    ct = osr.CoordinateTransformation(_srs(grid.projection), _srs(target_wkt))
    xmin, ymin, xmax, ymax = grid.bounds
    return tuple(ct.TransformBounds(xmin, ymin, xmax, ymax, 21))


def check_overlap(grid: Grid, reference: Grid, name: str) -> None:
    """Refuse a raster that does not overlap the reference grid."""
    xmin, ymin, xmax, ymax = bounds_in(grid, reference.projection)
    rxmin, rymin, rxmax, rymax = reference.bounds
    if xmin >= rxmax or xmax <= rxmin or ymin >= rymax or ymax <= rymin:
        raise SarSegError(
            f"'{name}' does not overlap the reference raster (its extent {xmin:.1f}, {ymin:.1f}, {xmax:.1f}, "
            f"{ymax:.1f} vs {rxmin:.1f}, {rymin:.1f}, {rxmax:.1f}, {rymax:.1f} in the reference CRS). "
            "Give rasters that cover the same area."
        )


def aligned(path: str, reference: Grid, resampling: str = "bilinear") -> gdal.Dataset:
    """The raster on the reference grid: itself when already aligned, else a virtual warped copy.

    The warp is a VRT (computed block by block when read), so nothing is loaded whole.
    """
    ds = open_raster(path)
    info = read_info(ds)
    grid = Grid.of(info)
    if grid.same_as(reference):
        return ds
    require_crs(info)
    check_overlap(grid, reference, Path(path).name)
    xmin, ymin, xmax, ymax = reference.bounds
    nodata = info.nodata[0]
    try:
        warped = gdal.Warp(
            f"/vsimem/sarseg_align_{uuid.uuid4().hex}.vrt",
            ds,
            format="VRT",
            outputBounds=(xmin, ymin, xmax, ymax),
            width=reference.width,
            height=reference.height,
            dstSRS=reference.projection,
            resampleAlg=RESAMPLING[resampling],
            srcNodata=nodata,
            dstNodata=nodata if nodata is not None else float("nan"),
            multithread=True,
        )
    except RuntimeError:
        warped = None
    if warped is None:
        raise SarSegError(f"Aligning '{path}' to the reference grid failed: {gdal.GetLastErrorMsg()}")
    return warped


def stack_rasters(
    items: Sequence[DatedRaster],
    dst_path: str,
    reference_path: str | None = None,
    resampling: str = "auto",
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
) -> dict[str, object]:
    """Align dated rasters to one grid and write them, in date order, as one multi-band GeoTIFF.

    Band ``t * B + b`` holds band ``b`` of date ``t``; band descriptions read "YYYY-MM-DD <band>" and the
    dataset metadata ``SARSEG_DATES`` lists the dates. Returns the dates, notes and the grid used.
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
    sources = [aligned(item.path, reference, resampling) for item in ordered]
    for item, info in zip(ordered, infos):
        if not Grid.of(info).same_as(reference):
            notes.append(f"'{item.name or Path(item.path).name}' was resampled ({resampling}) to the reference grid.")

    same_dtype = len({i.dtype for i in infos}) == 1
    out_dtype = infos[0].dtype if (integer and same_dtype) else np.dtype(np.float32)
    nodatas = {i.nodata[0] for i in infos}
    integer_nodata = nodatas.pop() if len(nodatas) == 1 else None
    nodata = integer_nodata if np.issubdtype(out_dtype, np.integer) else float("nan")
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
    total = len(blocks) * len(sources)
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
        units=first.units * len(sources),
        metadata=metadata,
    ) as writer:
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
                if np.issubdtype(out_dtype, np.floating):
                    ok = valid_mask(data, [src.GetRasterBand(b + 1).GetNoDataValue() for b in range(bands)])
                    data = np.where(ok, data, np.nan)
                out[t * bands : (t + 1) * bands] = data
                done += 1
                if progress:
                    progress(100.0 * done / total)
            writer.write(block.core, out)
            writer.release_cache()
    virtual = [src.GetDescription() for src in sources if src.GetDescription().startswith("/vsimem/")]
    sources.clear()  # close the warped datasets before freeing their in-memory files
    for path in virtual:
        gdal.Unlink(path)
    return {"dates": dates, "notes": notes, "grid": reference}
