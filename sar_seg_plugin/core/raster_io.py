"""Block-wise raster reading and atomic GeoTIFF writing on GDAL (QGIS's own ``osgeo.gdal``).

Every algorithm streams through this module: rasters are read window by window (with a halo for
neighbourhood filters) and written tile by tile, so memory is bounded by the block, not the raster.
Outputs are written to a hidden temporary file beside the destination and moved into place only when
the run succeeds (:mod:`.outputs`); a failed or cancelled run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from osgeo import gdal, gdal_array

from .errors import CancelledError, SarSegError
from .outputs import OutputSet

DEFAULT_BLOCK = 512
#: The tile size of every GeoTIFF SAR Seg writes.
TILE = 256

ProgressFn = Callable[[float], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class Window:
    """A pixel rectangle of a raster."""

    x: int
    y: int
    width: int
    height: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)


@dataclass(frozen=True)
class Block:
    """A block to produce (``core``) and the larger window to read for it (``read`` = core + halo)."""

    index: int
    core: Window
    read: Window

    @property
    def inner(self) -> tuple[slice, slice]:
        """Slices of the core inside an array read over ``read``."""
        oy = self.core.y - self.read.y
        ox = self.core.x - self.read.x
        return slice(oy, oy + self.core.height), slice(ox, ox + self.core.width)


def iter_blocks(width: int, height: int, block_size: int = DEFAULT_BLOCK, halo: int = 0) -> list[Block]:
    """Cover a ``width`` x ``height`` raster with blocks; each read window is the block grown by
    ``halo`` pixels and clipped to the raster (pixels outside the raster count as missing)."""
    if width <= 0 or height <= 0:
        raise SarSegError(f"The raster is empty ({width} x {height} pixels).")
    blocks = []
    for y in range(0, height, block_size):
        for x in range(0, width, block_size):
            w = min(block_size, width - x)
            h = min(block_size, height - y)
            rx, ry = max(0, x - halo), max(0, y - halo)
            rw = min(width, x + w + halo) - rx
            rh = min(height, y + h + halo) - ry
            blocks.append(Block(len(blocks), Window(x, y, w, h), Window(rx, ry, rw, rh)))
    return blocks


@dataclass
class RasterInfo:
    """What an algorithm needs to know about an input raster."""

    path: str
    width: int
    height: int
    band_count: int
    geotransform: tuple[float, ...]  # a unit pixel grid when the raster has none (see georeferenced)
    projection: str
    nodata: list[float | None]
    descriptions: list[str]
    units: list[str]
    dtype: np.dtype
    metadata: dict[str, str] = field(default_factory=dict)
    georeferenced: bool = True  # False for e.g. radar-geometry images: outputs then get no geotransform either
    scaling: list[tuple[float, float]] = field(default_factory=list)  # declared (scale, offset) applied, if any

    def band_label(self, band: int) -> str:
        """A readable label for a 1-based band: its description or 'band N'."""
        description = self.descriptions[band - 1]
        return description if description else f"band {band}"


def raster_bytes(info: RasterInfo, dtype: np.dtype | type = np.float32, bands: int | None = None) -> int:
    """Uncompressed size of a raster on the grid of ``info`` (``bands`` bands, all of ``info``'s by default):
    what an output may need on disk at most."""
    count = info.band_count if bands is None else bands
    return info.width * info.height * count * np.dtype(dtype).itemsize


def try_open(path: str, flags: int = gdal.OF_RASTER | gdal.OF_READONLY) -> gdal.Dataset | None:
    """``gdal.OpenEx`` that returns None on failure whether or not GDAL exceptions are enabled
    (QGIS enables them; plain GDAL scripts usually do not)."""
    try:
        return gdal.OpenEx(path, flags)
    except RuntimeError:
        return None


def category_names(band: gdal.Band) -> list[str]:
    """A band's category names (class names), [] when it has none. GDAL 3.6 loads them from a GeoTIFF's .aux.xml
    (PAM) only once the band's metadata has been read, so that is read first."""
    band.GetMetadata()
    return list(band.GetCategoryNames() or [])


def open_raster(path: str | os.PathLike) -> gdal.Dataset:
    """Open a raster read-only, with a clear error when GDAL cannot read it.

    Besides file paths, GDAL connection strings (``GPKG:file.gpkg:table``, ``NETCDF:...``, ``/vsizip/...``)
    are accepted.
    """
    path = str(path)
    if not path:
        raise SarSegError("No raster was given. Choose a raster layer or file.")
    ds = try_open(path)
    if ds is None:
        if not os.path.exists(path) and ":" not in path and not path.startswith("/vsi"):
            raise SarSegError(f"The raster file '{path}' does not exist. Check the path.")
        raise SarSegError(
            f"'{path}' could not be opened as a raster ({gdal.GetLastErrorMsg() or 'unknown format'}). "
            "Give a GDAL-readable raster such as a GeoTIFF."
        )
    if ds.RasterCount == 0:
        raise SarSegError(f"'{path}' has no raster bands. Give a raster with at least one band.")
    pairs = declared_scaling(ds)
    if pairs:
        ds = unscaled(ds, path, pairs)
    return ds


# Where a virtual copy made by :func:`unscaled` keeps what it was made from (a domain of its own, so that the
# items never reach an output's metadata).
READ_DOMAIN = "SARSEG_READ"


def declared_scaling(ds: gdal.Dataset) -> list[tuple[float, float]] | None:
    """Each band's declared (scale, offset) when any band declares one other than (1, 0), else None.

    Archives store backscatter as scaled integers (dB x 100 in Int16, or UInt16 with an offset) and declare the
    scale and offset on the band; QGIS shows ``stored value x scale + offset``, GDAL's plain reads return the
    stored value.
    """
    pairs = []
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        scale, offset = band.GetScale(), band.GetOffset()
        pairs.append((1.0 if scale is None else float(scale), 0.0 if offset is None else float(offset)))
    return pairs if any(pair != (1.0, 0.0) for pair in pairs) else None


def unscaled(ds: gdal.Dataset, path: str, pairs: Sequence[tuple[float, float]]) -> gdal.Dataset:
    """A virtual copy (VRT, in memory) of ``ds`` that reads ``stored value x scale + offset`` in floating point,
    the values QGIS shows (``pairs``: each band's (scale, offset), :func:`declared_scaling`); the stored nodata value
    reads as NaN (declared as the copy's nodata), names, units and metadata are kept, and :func:`read_info` gives
    the file's path and the scales (:func:`scaling_note`)."""
    wide = gdal_array.GDALTypeCodeToNumericTypeCode(ds.GetRasterBand(1).DataType)
    out_type = gdal.GDT_Float64 if np.dtype(wide).itemsize >= 4 and wide != np.float32 else gdal.GDT_Float32
    declares = any(ds.GetRasterBand(i + 1).GetNoDataValue() is not None for i in range(ds.RasterCount))
    options = {"noData": "nan"} if declares else {}
    try:
        vrt = gdal.Translate("", ds, format="VRT", unscale=True, outputType=out_type, **options)
    except RuntimeError:
        vrt = None
    if vrt is None:
        raise SarSegError(f"Applying the band scale and offset of '{path}' failed: {gdal.GetLastErrorMsg()}")
    for i in range(ds.RasterCount):
        src_band, band = ds.GetRasterBand(i + 1), vrt.GetRasterBand(i + 1)
        band.SetUnitType(src_band.GetUnitType() or "")
        names = category_names(src_band)
        if names:
            band.SetCategoryNames(names)
    vrt.SetMetadataItem("SOURCE", path, READ_DOMAIN)
    vrt.SetMetadataItem("SCALING", ";".join(f"{s!r},{o!r}" for s, o in pairs), READ_DOMAIN)
    return vrt


def source_path(ds: gdal.Dataset) -> str:
    """The file a dataset reads: its description, or the file behind a copy made by :func:`unscaled`."""
    return ds.GetMetadataItem("SOURCE", READ_DOMAIN) or ds.GetDescription()


def scaling_note(info: RasterInfo) -> str | None:
    """A log line saying which declared scales and offsets the values were read with, or None."""
    if not info.scaling:
        return None
    parts = [
        f"{info.band_label(i + 1)} = stored x {scale:g} {'+' if offset >= 0 else '-'} {abs(offset):g}"
        for i, (scale, offset) in enumerate(info.scaling)
        if (scale, offset) != (1.0, 0.0)
    ]
    return (
        f"'{Path(info.path).name}' stores scaled values and declares their scale and offset: read as QGIS shows them "
        f"({'; '.join(parts)})"
    )


def check_not_same_file(inputs: Sequence[str | os.PathLike | None], output: str | os.PathLike) -> None:
    """Refuse to write over an input: the input would be destroyed while it is read."""
    out = os.path.realpath(output)
    for path in inputs:
        if path and os.path.exists(path) and os.path.realpath(path) == out:
            raise SarSegError(
                f"The output '{output}' is the input raster '{path}'. Choose another output file; "
                "inputs are never overwritten."
            )


UNIT_GRID = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def geotransform_of(ds: gdal.Dataset) -> tuple[float, ...] | None:
    """The raster's geotransform, or None when it has none (GDAL's default unit grid is not returned)."""
    try:
        gt = ds.GetGeoTransform(can_return_null=True)
    except RuntimeError:
        gt = None
    return tuple(gt) if gt else None


def has_georeferencing(ds: gdal.Dataset) -> bool:
    """Whether a raster can be placed on a map: a geotransform or ground control points."""
    return geotransform_of(ds) is not None or ds.GetGCPCount() > 0


def read_info(ds: gdal.Dataset) -> RasterInfo:
    """Describe an open dataset: size, georeferencing, nodata, band descriptions and units."""
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    geotransform = geotransform_of(ds)
    dtype = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(bands[0].DataType))
    scaling = ds.GetMetadataItem("SCALING", READ_DOMAIN)
    return RasterInfo(
        path=source_path(ds),
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        band_count=ds.RasterCount,
        geotransform=geotransform or UNIT_GRID,
        projection=ds.GetProjection() or "",
        nodata=[b.GetNoDataValue() for b in bands],
        descriptions=[b.GetDescription() or "" for b in bands],
        units=[b.GetUnitType() or "" for b in bands],
        dtype=dtype,
        metadata=ds.GetMetadata() or {},
        georeferenced=geotransform is not None,
        scaling=[tuple(float(v) for v in pair.split(",")) for pair in scaling.split(";")] if scaling else [],
    )


def read_window(
    ds: gdal.Dataset, window: Window, bands: Sequence[int] | None = None, dtype: np.dtype = np.float32
) -> np.ndarray:
    """Read ``window`` of the 1-based ``bands`` (all by default) as a (bands, rows, cols) array."""
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    out = np.empty((len(band_list), window.height, window.width), dtype=dtype)
    for i, b in enumerate(band_list):
        arr = ds.GetRasterBand(b).ReadAsArray(window.x, window.y, window.width, window.height)
        if arr is None:
            raise SarSegError(f"Reading band {b} of '{source_path(ds)}' failed: {gdal.GetLastErrorMsg()}")
        out[i] = arr
    return out


def valid_mask(data: np.ndarray, nodata: Sequence[float | None]) -> np.ndarray:
    """True where a pixel holds data: finite and not the band's nodata value. ``data`` is (bands, h, w)."""
    valid = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.ones(data.shape, bool)
    for i, nd in enumerate(nodata):
        if nd is not None and np.isfinite(nd):
            valid[i] &= data[i] != nd
    return valid


def sample_band(ds: gdal.Dataset, band: int, max_pixels: int = 1_000_000) -> np.ndarray:
    """Valid values of a band on a regular decimated grid (all pixels for small rasters).

    GDAL decimates each sampled row while reading, and the row's blocks leave GDAL's cache once the sample moves
    to the next row of blocks: memory stays at ``max_pixels`` plus one row of blocks, whatever the raster size
    (one decimated read of the whole band would fill GDAL's block cache, up to 5 % of RAM).
    """
    w, h = ds.RasterXSize, ds.RasterYSize
    step = max(1.0, np.sqrt(w * h / max_pixels))
    bw, bh = max(1, int(w / step)), max(1, int(h / step))
    rb = ds.GetRasterBand(band)
    block_rows = max(1, rb.GetBlockSize()[1])
    rows = np.minimum(((np.arange(bh) + 0.5) * (h / bh)).astype(np.int64), h - 1)  # GDAL's nearest rows
    arr = np.empty((bh, bw), dtype=np.float64)
    for i, r in enumerate(rows):
        line = rb.ReadAsArray(0, int(r), w, 1, buf_xsize=bw, buf_ysize=1)
        if line is None:
            raise SarSegError(f"Reading band {band} of '{source_path(ds)}' failed: {gdal.GetLastErrorMsg()}")
        arr[i] = line[0]
        if i + 1 < bh and rows[i + 1] // block_rows != r // block_rows:
            ds.FlushCache()  # the dataset, not the band: pixel-interleaved files cache every band's blocks
    ds.FlushCache()
    ok = valid_mask(arr[None], [rb.GetNoDataValue()])[0]
    return arr[ok]


def spread_windows(width: int, height: int, count: int = 16, size: int = 256) -> list[Window]:
    """Up to ``count`` non-overlapping ``size`` x ``size`` windows spread evenly from edge to edge."""
    w, h = min(size, width), min(size, height)
    side = max(1, int(np.sqrt(count)))
    nx, ny = max(1, min(side, width // size)), max(1, min(side, height // size))

    def starts(n: int, length: int, extent: int) -> list[int]:
        return [(length - extent) // 2] if n == 1 else [k * (length - extent) // (n - 1) for k in range(n)]

    return [Window(x, y, w, h) for y in starts(ny, height, h) for x in starts(nx, width, w)]


def sample_windows(ds: gdal.Dataset, band: int, count: int = 16, size: int = 256) -> np.ndarray:
    """Valid values of a band read from up to ``count`` windows of ``size`` pixels spread over it.

    Cheaper than :func:`sample_band` on large rasters (only the tiles under the windows are decoded);
    good for telling the scale of the data or a percentile, not for whole-raster statistics.
    """
    w, h = ds.RasterXSize, ds.RasterYSize
    if w * h <= count * size * size:
        return sample_band(ds, band, w * h)
    nodata = [ds.GetRasterBand(band).GetNoDataValue()]
    pieces = []
    for window in spread_windows(w, h, count, size):
        data = read_window(ds, window, [band], np.float64)
        pieces.append(data[valid_mask(data, nodata)])
    return np.concatenate(pieces)


def read_spread_windows(
    ds: gdal.Dataset, bands: Sequence[int] | None = None, count: int = 16, size: int = 256
) -> list[np.ndarray]:
    """The windows :func:`sample_windows` reads, kept whole: float64 (bands, h, w) arrays of up to ``count``
    ``size`` x ``size`` windows spread over the raster (the whole raster as one window when it is no larger
    than the windows together), nodata and non-finite pixels as NaN.

    A bounded sample that keeps the pixels' neighbours (for local statistics such as the number of looks);
    its valid values, band by band, are those of :func:`sample_windows`.
    """
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    nodata = [ds.GetRasterBand(b).GetNoDataValue() for b in band_list]
    w, h = ds.RasterXSize, ds.RasterYSize
    windows = [Window(0, 0, w, h)] if w * h <= count * size * size else spread_windows(w, h, count, size)
    out = []
    for window in windows:
        data = read_window(ds, window, band_list, np.float64)
        data[~valid_mask(data, nodata)] = np.nan
        out.append(data)
    ds.FlushCache()
    return out


#: A value every band shares at a pixel, at or below this (dB), is a fill: no backscatter is that dark (noise floors
#: are about -30 dB, the plugin's dB floor -50); tools write -99, -100 or -9999 where there is no data.
FILL_DB_MAX = -90.0


def undeclared_fill(
    windows: Sequence[np.ndarray], bands: Sequence[int], nodata: Sequence[float | None]
) -> tuple[float, float] | None:
    """(value, share of the sampled pixels) of the fill of a raster that declares no nodata value for any of
    ``bands`` (1-based), else None (nodata declared, or no fill found). ``windows``: :func:`read_spread_windows`.

    Products fill the area outside a swath with 0, or, in dB, with a value such as -99 or -9999, often without
    declaring it. A pixel where every band holds the same value, and that value is 0 or at most
    :data:`FILL_DB_MAX`, is not backscatter (linear power or dB): the most frequent such value is the fill."""
    if any(nodata[b - 1] is not None for b in bands):
        return None
    finite, values = 0, []
    for data in windows:
        picked = data[[b - 1 for b in bands]]
        finite += int(np.isfinite(picked).all(axis=0).sum())
        same = (picked == picked[:1]).all(axis=0) & ((picked[0] == 0) | (picked[0] <= FILL_DB_MAX))
        values.append(picked[0][same])
    found = np.concatenate(values) if values else np.empty(0)
    if not found.size or not finite:
        return None
    candidates, counts = np.unique(found, return_counts=True)
    k = int(np.argmax(counts))
    return float(candidates[k]), int(counts[k]) / finite


def declare_fill(
    ds: gdal.Dataset, info: RasterInfo, bands: Sequence[int], windows: Sequence[np.ndarray] | None = None
) -> tuple[gdal.Dataset, RasterInfo, tuple[float, float] | None]:
    """``ds``, its info and None as they are, or, where :func:`undeclared_fill` finds a fill in ``bands``, a copy
    that declares its value as every band's nodata (:func:`with_nodata`; then that value in any band is no data,
    as in products that declare it), its info and (value, share) (said by :func:`fill_note`). ``windows``: the
    raster's :func:`read_spread_windows`, when already read (their fill pixels are set to NaN in place)."""
    windows = read_spread_windows(ds) if windows is None else windows
    fill = undeclared_fill(windows, bands, info.nodata)
    if fill is None:
        return ds, info, None
    for data in windows:
        data[data == fill[0]] = np.nan
    return (*with_nodata(ds, info, fill[0]), fill)


def fill_note(fill: tuple[float, float]) -> str:
    """The log line of :func:`declare_fill`."""
    value, share = fill
    return (
        f"{share:.1%} of the sampled pixels hold {value:g} in every band read and the raster declares no nodata "
        "value: that is the fill outside a swath, taken as no data, not as backscatter"
    )


def with_nodata(ds: gdal.Dataset, info: RasterInfo, value: float) -> tuple[gdal.Dataset, RasterInfo]:
    """A virtual copy (VRT, in memory) of ``ds`` whose bands declare ``value`` as nodata, and its info (under the
    input's path, for messages); the file is untouched."""
    vrt = gdal.Translate("", ds, format="VRT", noData=value)
    if vrt is None:
        raise SarSegError(f"could not declare nodata on '{info.path}': {gdal.GetLastErrorMsg()}")
    return vrt, replace(read_info(vrt), path=info.path, scaling=info.scaling)


def _creation_options(dtype: np.dtype, band_count: int, compress: str) -> list[str]:
    opts = ["TILED=YES", f"BLOCKXSIZE={TILE}", f"BLOCKYSIZE={TILE}", "BIGTIFF=IF_SAFER", f"COMPRESS={compress}"]
    if compress in ("DEFLATE", "ZSTD", "LZW"):
        opts.append("PREDICTOR=2" if np.issubdtype(dtype, np.integer) else "PREDICTOR=3")
        opts.append("NUM_THREADS=ALL_CPUS")
    if compress == "DEFLATE":
        opts.append("ZLEVEL=1")
    if band_count > 1:
        opts.append("INTERLEAVE=BAND")
    return opts


def create_like(path: str, info: RasterInfo, band_count: int, dtype: np.dtype | type, nodata: float) -> gdal.Dataset:
    """A scratch tiled, uncompressed GeoTIFF on the grid of ``info`` (for intermediate results a run deletes with
    its temporary folder; outputs go through :class:`GeoTiffWriter`)."""
    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype))
    ds = gdal.GetDriverByName("GTiff").Create(
        path,
        info.width,
        info.height,
        band_count,
        gdal_type,
        options=_creation_options(np.dtype(dtype), band_count, "NONE"),
    )
    if ds is None:
        raise SarSegError(f"Cannot create the temporary raster '{path}': {gdal.GetLastErrorMsg()}")
    if info.georeferenced:
        ds.SetGeoTransform(list(info.geotransform))
    if info.projection:
        ds.SetProjection(info.projection)
    for i in range(band_count):
        ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
    return ds


class GeoTiffWriter:
    """Write a tiled, compressed GeoTIFF window by window; atomic on success, nothing left on failure.

    Use as a context manager: leaving the block normally moves the file into place, an exception
    (including :class:`CancelledError`) deletes the temporary file and leaves any existing file untouched.
    With ``outputs`` (the :class:`~.outputs.OutputSet` of a run with several outputs), leaving the block only
    finishes the temporary file: the set moves it into place together with the run's other outputs.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        band_count: int,
        dtype: np.dtype | type,
        geotransform: Sequence[float] | None,
        projection: str,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        metadata: dict[str, str] | None = None,
        band_metadata: Sequence[dict[str, str]] | None = None,
        color_table: dict[int, tuple[int, int, int, int]] | None = None,
        category_names: Sequence[str] | None = None,
        compress: str = "DEFLATE",
        outputs: OutputSet | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise SarSegError(f"Output '{self.path}' must be a GeoTIFF file ending in .tif.")
        if not self.path.parent.is_dir():
            raise SarSegError(f"The output folder '{self.path.parent}' does not exist. Create it or choose another.")
        self.dtype = np.dtype(dtype)
        self._own_outputs = outputs is None
        self.outputs = OutputSet() if outputs is None else outputs
        self.tmp_path = self.outputs.add(self.path)
        driver = gdal.GetDriverByName("GTiff")
        gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(self.dtype)
        try:
            self.ds = driver.Create(
                str(self.tmp_path),
                width,
                height,
                band_count,
                gdal_type,
                options=_creation_options(self.dtype, band_count, compress),
            )
        except RuntimeError:
            self.ds = None
        if self.ds is None:
            message = gdal.GetLastErrorMsg()
            self.outputs.discard(self.tmp_path)
            raise SarSegError(f"Cannot create '{self.path}': {message}. Check the folder is writable.")
        if geotransform is not None:
            self.ds.SetGeoTransform(list(geotransform))
        if projection:
            self.ds.SetProjection(projection)
        if metadata:
            self.ds.SetMetadata({k: str(v) for k, v in metadata.items()})
        for i in range(band_count):
            band = self.ds.GetRasterBand(i + 1)
            if nodata is not None:
                band.SetNoDataValue(float(nodata))
            if descriptions and i < len(descriptions) and descriptions[i]:
                band.SetDescription(descriptions[i])
            if units and i < len(units) and units[i]:
                band.SetUnitType(units[i])
            if band_metadata and i < len(band_metadata) and band_metadata[i]:
                band.SetMetadata({k: str(v) for k, v in band_metadata[i].items()})
        if color_table:
            ct = gdal.ColorTable()
            for value, rgba in color_table.items():
                ct.SetColorEntry(int(value), tuple(int(c) for c in rgba))
            self.ds.GetRasterBand(1).SetRasterColorTable(ct)
            self.ds.GetRasterBand(1).SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        if category_names:
            self.ds.GetRasterBand(1).SetCategoryNames(list(category_names))
        self.band_count = band_count

    @classmethod
    def like(
        cls, path: str | os.PathLike, info: RasterInfo, dtype: np.dtype | type = np.float32, **options: object
    ) -> GeoTiffWriter:
        """A writer on the grid of ``info`` (size, geotransform, CRS, band count and descriptions);
        ``options`` are the other constructor arguments (nodata, units, metadata, ...)."""
        options.setdefault("descriptions", info.descriptions)
        geotransform = info.geotransform if info.georeferenced else None
        return cls(path, info.width, info.height, info.band_count, dtype, geotransform, info.projection, **options)

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write a (bands, rows, cols) array (or (rows, cols) for one band) at ``window``."""
        if array.ndim == 2:
            array = array[None]
        if array.shape != (self.band_count, window.height, window.width):
            raise ValueError(f"block shape {array.shape} does not match window {window} x {self.band_count} bands")
        for i in range(self.band_count):
            self._gdal_write(
                lambda i=i: self.ds.GetRasterBand(i + 1).WriteArray(
                    array[i].astype(self.dtype, copy=False), window.x, window.y
                )
            )

    def _gdal_write(self, call: Callable[[], object]) -> None:
        """Run a GDAL write, turning its failure (an error code, or RuntimeError with GDAL exceptions on) into
        SarSegError. The GDAL exception is not chained: its traceback would keep the dataset open after the run
        removed its file, and the dataset would then fail again, noisily, whenever Python frees it."""
        try:
            failed = call() not in (0, None)
            message = gdal.GetLastErrorMsg() if failed else ""
        except RuntimeError as exc:
            failed, message = True, str(exc)
        if failed:
            raise SarSegError(f"Writing '{self.path}' failed: {message}. Is the disk full?")

    def release_cache(self) -> None:
        """Write finished tiles to disk and drop them from GDAL's block cache.

        GDAL keeps written tiles cached up to its process-wide limit (5 % of RAM by default), so without
        this the memory of a run grows with the raster instead of staying at a block's worth.
        """
        self._gdal_write(lambda: self.ds.FlushCache())

    def close(self) -> None:
        """Finish the temporary file: write what GDAL still caches and close it, raising if that fails."""
        if self.ds is None:
            return
        gdal.ErrorReset()
        try:
            self._gdal_write(lambda: self.ds.FlushCache())
        finally:
            failure = self._close_dataset()  # closing writes the file's directory
        if failure:
            raise SarSegError(f"Writing '{self.path}' failed: {failure}. Is the disk full?")

    def _close_dataset(self) -> str:
        """Close the dataset without GDAL printing or raising from its destructor; returns GDAL's error, if any.

        With GDAL exceptions on (as in QGIS), a failure while closing (a full disk) is raised in a destructor, which
        Python can only print as 'Exception ignored' with a traceback: it is caught here instead."""
        if self.ds is None:
            return ""
        caught: list[str] = []
        hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: caught.append(str(unraisable.exc_value))
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        gdal.ErrorReset()
        try:
            self.ds = None
            if gdal.GetLastErrorType() >= gdal.CE_Failure:
                caught.append(gdal.GetLastErrorMsg())
        finally:
            gdal.PopErrorHandler()
            sys.unraisablehook = hook
        return caught[0] if caught else ""

    def commit(self) -> Path:
        """Finish the file and, unless it belongs to a run's :class:`~.outputs.OutputSet`, move it (and its
        side-cars) into place."""
        try:
            self.close()
        except BaseException:
            self.abort()
            raise
        if self._own_outputs:
            self.outputs.commit()
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the destination is left as it was."""
        self._close_dataset()
        self.outputs.discard(self.tmp_path)

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
            return
        self._close_dataset()
        if self._own_outputs:
            self.outputs.__exit__(exc_type, exc, tb)  # removes the file; names a full disk as such
        else:
            self.abort()


BlockFn = Callable[[np.ndarray, np.ndarray, Block], np.ndarray]


def map_blocks(
    src: gdal.Dataset,
    writer: GeoTiffWriter,
    func: BlockFn,
    *,
    halo: int = 0,
    block_size: int = DEFAULT_BLOCK,
    bands: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
    is_canceled: CancelFn | None = None,
    workers: int | None = None,
) -> None:
    """Stream ``src`` through ``func`` block by block into ``writer``.

    ``func(data, valid, block)`` receives the float32 (bands, h, w) pixels of ``block.read`` (core + halo)
    and their validity mask, and returns a (out_bands, h, w) array over the same read window; its core
    is written. Blocks are computed on a small thread pool (numpy and scipy release the GIL) while reads
    and writes stay on this thread; at most ``2 * workers`` blocks are in memory at once.
    """
    info = read_info(src)
    band_list = list(bands) if bands is not None else list(range(1, info.band_count + 1))
    nodata = [info.nodata[b - 1] for b in band_list]
    blocks = iter_blocks(info.width, info.height, block_size, halo)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    pending: deque[tuple[Block, Future]] = deque()
    done = 0

    def flush_one() -> None:
        nonlocal done
        block, fut = pending.popleft()
        out = fut.result()
        if out.ndim == 2:
            out = out[None]
        writer.write(block.core, out[(slice(None), *block.inner)])
        writer.release_cache()
        done += 1
        if progress:
            progress(100.0 * done / len(blocks))

    def compute(data: np.ndarray, block: Block) -> np.ndarray:
        return func(data, valid_mask(data, nodata), block)

    pool = ThreadPoolExecutor(max_workers=workers)
    row = 0
    try:
        for block in blocks:
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            if block.core.y != row:
                # Tiles above this block row are not read again: free them from GDAL's cache.
                src.FlushCache()
                row = block.core.y
            data = read_window(src, block.read, band_list)
            pending.append((block, pool.submit(compute, data, block)))
            while len(pending) >= 2 * workers:
                flush_one()
        while pending:
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            flush_one()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def block_cache_limit(limit: int) -> Iterator[None]:
    """Lower GDAL's block cache to ``limit`` bytes for the duration (never raise it): GDAL's default (5 % of RAM)
    lets a pass over a large raster keep GBs of decoded blocks."""
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(min(before, limit))
    try:
        yield
    finally:
        gdal.SetCacheMax(before)
