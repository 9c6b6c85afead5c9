"""Zonal features of polygons over a raster, computed block by block.

The polygons are burnt into a zone raster on the raster's own grid (a pixel belongs to the polygon that contains
its centre; where polygons overlap, the later one wins). Blocks of the zone raster, the data raster and an optional
class raster are then read together and folded into per-zone accumulators: pixel counts, sums and sums of squares,
fixed-bin histograms (for percentiles) and class counts. Memory is one block plus a fixed size per zone, whatever
the raster size. Embeddings (:func:`zone_embeddings`) run the encoder over each zone's own pixels, one tile row of
its bounding window at a time. No qgis import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osgeo import gdal, ogr, osr

from . import raster_io
from .errors import CancelledError, SarSegError
from .radiometry import LINEAR, to_db
from .raster_io import RasterInfo, Window
from .timeseries import Grid
from .units import (
    AUTO,
    BandMatch,
    BandScale,
    ModelInput,
    band_name,
    check_band_order,
    flag_amplitude,
    polarisation_of,
    refuse_normalised,
    resolve_band,
)

#: Histogram bins per statistic series: percentiles are exact to (value range / HIST_BINS).
HIST_BINS = 1024
PERCENTILES = (10, 50, 90)
#: Band descriptions taken as SAR polarisations: their statistics are in dB.
#: Cross-polarisation ratios (numerator, denominator): VH/VV in dB is VH_dB - VV_dB.
RATIOS = (("VH", "VV"), ("HV", "HH"))
DEFAULT_BLOCK = 512
#: Pixels of the zone raster burnt at a time (a strip of whole rows).
ZONE_STRIP_PIXELS = 4 * 1024 * 1024
#: Decoded blocks GDAL may keep while the zonal passes read (bytes): beyond this, the inputs' blocks are dropped.
#: GDAL's own limit (5 % of RAM by default) would otherwise let memory grow with the raster.
CACHE_BUDGET = 128 * 1024 * 1024
ProgressFn = Callable[[float], None]
LogFn = Callable[[str], None]


def column_name(text: str) -> str:
    """A field-name-safe lower-case version of a label: 'built-up' -> 'built_up', 'Bare soil' -> 'bare_soil'."""
    name = re.sub(r"[^0-9a-z]+", "_", text.strip().lower()).strip("_")
    return name or "x"


# --- zones -------------------------------------------------------------------------------------------------------


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def rasterize_zones(geometries: Sequence[bytes | None], grid: Grid, path: str) -> None:
    """Burn polygons (WKB in the grid's CRS; None = skipped) into a GeoTIFF on ``grid`` (UInt16, or UInt32 from
    65,535 polygons): pixel value i + 1 where the pixel centre lies in ``geometries[i]``, 0 elsewhere. Burnt in
    strips of rows, so memory does not grow with the raster."""
    mem = ogr.GetDriverByName("Memory").CreateDataSource("zones")
    layer = mem.CreateLayer("zones", _srs(grid.projection) if grid.projection else None, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("zone", ogr.OFTInteger64))
    defn = layer.GetLayerDefn()
    for i, wkb in enumerate(geometries):
        if wkb is None:
            continue
        feature = ogr.Feature(defn)
        feature.SetField("zone", i + 1)
        feature.SetGeometry(ogr.CreateGeometryFromWkb(bytes(wkb)))
        layer.CreateFeature(feature)
    options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    dtype = gdal.GDT_UInt16 if len(geometries) < 65535 else gdal.GDT_UInt32
    ds = gdal.GetDriverByName("GTiff").Create(path, grid.width, grid.height, 1, dtype, options)
    if ds is None:
        raise SarSegError(f"Could not create the zone raster '{path}': {gdal.GetLastErrorMsg()}")
    ds.SetGeoTransform(grid.geotransform)
    if grid.projection:
        ds.SetProjection(grid.projection)
    band = ds.GetRasterBand(1)
    # Burnt a strip of rows at a time into memory, written, and flushed: GDAL would otherwise keep every written
    # block in its cache (up to 5 % of RAM) until the file is closed.
    x0, dx, rx, y0, ry, dy = grid.geotransform
    strip = max(1, min(grid.height, ZONE_STRIP_PIXELS // max(grid.width, 1)))
    for top in range(0, grid.height, strip):
        rows = min(strip, grid.height - top)
        chunk = gdal.GetDriverByName("MEM").Create("", grid.width, rows, 1, dtype)
        chunk.SetGeoTransform((x0 + top * rx, dx, rx, y0 + top * dy, ry, dy))
        if grid.projection:
            chunk.SetProjection(grid.projection)
        xs = (x0 + top * rx, x0 + top * rx + grid.width * dx)
        ys = (y0 + top * dy, y0 + (top + rows) * dy)
        layer.SetSpatialFilterRect(min(xs), min(ys), max(xs), max(ys))
        if gdal.RasterizeLayer(chunk, [1], layer, options=["ATTRIBUTE=zone"]) != 0:
            raise SarSegError(f"Burning the polygons into a zone raster failed: {gdal.GetLastErrorMsg()}")
        band.WriteArray(chunk.GetRasterBand(1).ReadAsArray(), 0, top)
        chunk = None
        ds.FlushCache()
    ds = None


def inside_fraction(wkb: bytes, bounds: tuple[float, float, float, float]) -> float:
    """Share (0..1) of a polygon's area inside the rectangle ``bounds`` = (xmin, ymin, xmax, ymax)."""
    geom = ogr.CreateGeometryFromWkb(bytes(wkb))
    area = geom.GetArea()
    if area <= 0:
        return 0.0
    xmin, ymin, xmax, ymax = bounds
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)):
        ring.AddPoint_2D(x, y)
    box = ogr.Geometry(ogr.wkbPolygon)
    box.AddGeometry(ring)
    inter = geom.Intersection(box)
    return min(1.0, (inter.GetArea() if inter is not None else 0.0) / area)


def trim_cache(*datasets: gdal.Dataset | None) -> None:
    """Drop the datasets' cached blocks once GDAL's block cache holds more than :data:`CACHE_BUDGET`."""
    if gdal.GetCacheUsed() > CACHE_BUDGET:
        for ds in datasets:
            if ds is not None:
                ds.FlushCache()


# --- which statistics ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One statistic series: a band (``bands = (b,)``) or a dB ratio of two bands (``(numerator, denominator)``)."""

    name: str  # column prefix, e.g. "vv", "vh_vv", "b1"
    bands: tuple[int, ...]  # 0-based band indices
    lo: float  # histogram range
    hi: float


@dataclass
class BandPlan:
    """How a raster's bands become statistics: which bands go to dB and which series are summarised."""

    to_db: list[bool]
    series: list[Series]
    notes: list[str] = field(default_factory=list)  # for the log, as warnings
    scales: list[BandScale] = field(default_factory=list)  # how each SAR band's scale was decided


def _range(values: np.ndarray) -> tuple[float, float]:
    """Histogram range of a sample: its extremes widened by 5 % (values outside land in the end bins)."""
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max(0.05 * (hi - lo), 1e-3 * max(abs(lo), abs(hi), 1.0))
    return lo - pad, hi + pad


def plan_bands(ds: gdal.Dataset, info: RasterInfo, choice: str = AUTO) -> BandPlan:
    """Band statistics to compute. Bands named as SAR polarisations (VV, VH, HH, HV) are summarised in dB (linear
    power converted, each band's scale decided by :func:`.units.resolve_band`, ``choice`` overriding it), with the
    cross-polarisation ratio VH/VV (or HV/HH) in dB when both bands are there; other bands are summarised as stored.
    Histogram ranges come from a decimated sample of the raster."""
    pols = [polarisation_of(d) for d in info.descriptions]
    samples = [raster_io.sample_band(ds, b + 1, max_pixels=250_000) for b in range(info.band_count)]
    notes = []
    if not any(pols) and info.band_count == 2:
        taken = BandMatch((1, 2), "band 1 is taken as VV and band 2 as VH")
        taken, swapped = check_band_order(("VV", "VH"), info.descriptions, taken, samples)
        pols = [None, None]
        for name, band in zip(("VV", "VH"), taken.bands):
            pols[band - 1] = name
        notes.append(
            swapped or "The raster's bands are not named: band 1 is taken as VV and band 2 as VH (dB statistics)."
        )
    convert, series, scales, sar_samples = [], [], [], []
    if any(pols):
        refuse_normalised(info.metadata, info.path)
    for b, sample in enumerate(samples):
        is_sar = pols[b] is not None
        conv = False
        if is_sar:
            label = band_name(info, b + 1)
            scale = resolve_band(b + 1, label, info.units[b], info.descriptions[b], info.dtype, sample, choice)
            scales.append(scale)
            sar_samples.append(sample)
            conv = scale.scale == LINEAR
        if conv:
            sample = to_db(sample).astype(np.float64)
        convert.append(conv)
        series.append(Series(column_name(pols[b] or f"B{b + 1}"), (b,), *_range(sample)))
    scales = flag_amplitude([p for p in pols if p], sar_samples, scales)
    for num, den in RATIOS:
        if num in pols and den in pols:
            i, j = pols.index(num), pols.index(den)
            a, b = series[i], series[j]  # any difference of values in both ranges lies in this one
            series.append(Series(f"{column_name(num)}_{column_name(den)}", (i, j), a.lo - b.hi, a.hi - b.lo))
    return BandPlan(convert, series, notes, scales)


# --- accumulation ---------------------------------------------------------------------------------------------------


class ZonalAccumulator:
    """Per-zone running sums, histograms and class counts (zones numbered 1..n)."""

    def __init__(self, n_zones: int, series: Sequence[Series], n_classes: int = 0) -> None:
        self.n = n_zones
        self.series = list(series)
        self.n_classes = n_classes
        self.zone_pixels = np.zeros(n_zones, np.int64)  # pixel centres inside the zone
        self.valid_pixels = np.zeros(n_zones, np.int64)  # ... holding data in every band
        s = len(self.series)
        self.sums = np.zeros((n_zones, s))
        self.sumsq = np.zeros((n_zones, s))
        self.hist = [np.zeros((n_zones, HIST_BINS), np.int32) for _ in range(s)]
        self.class_counts = np.zeros((n_zones, n_classes), np.int64)

    def add_block(
        self, zones: np.ndarray, bands_db: np.ndarray | None, valid: np.ndarray, classes: np.ndarray | None
    ) -> None:
        """Fold one block in: ``zones`` (h, w) ids, ``bands_db`` (bands, h, w) values ready for statistics (dB
        for SAR bands), ``valid`` (h, w) pixels holding data in every band, ``classes`` (h, w) class ids."""
        n = self.n
        inzone = zones > 0
        if not inzone.any():
            return
        self.zone_pixels += np.bincount(zones[inzone].astype(np.int64) - 1, minlength=n)[:n]
        m = inzone & valid
        zi = zones[m].astype(np.int64) - 1
        counts = np.bincount(zi, minlength=n)[:n]
        self.valid_pixels += counts
        if bands_db is not None and zi.size:
            # Histograms over the zones present in the block only: a linear bincount, no sort.
            present = np.flatnonzero(counts)
            local_of = np.zeros(n, np.int64)
            local_of[present] = np.arange(present.size)
            local = local_of[zi] * HIST_BINS
            for s, ser in enumerate(self.series):
                x = bands_db[ser.bands[0]][m].astype(np.float64)
                if len(ser.bands) == 2:
                    x = x - bands_db[ser.bands[1]][m]
                centre = 0.5 * (ser.lo + ser.hi)  # shifted sums keep the variance accurate
                d = x - centre
                self.sums[:, s] += np.bincount(zi, weights=d, minlength=n)[:n]
                self.sumsq[:, s] += np.bincount(zi, weights=d * d, minlength=n)[:n]
                bins = np.clip(((x - ser.lo) * (HIST_BINS / (ser.hi - ser.lo))).astype(np.int64), 0, HIST_BINS - 1)
                hist = np.bincount(local + bins, minlength=present.size * HIST_BINS)
                self.hist[s][present] += hist.reshape(present.size, HIST_BINS).astype(np.int32)
        if classes is not None and self.n_classes:
            c = classes.astype(np.int64)
            mc = inzone & (c >= 0) & (c < self.n_classes)
            key = (zones[mc].astype(np.int64) - 1) * self.n_classes + c[mc]
            self.class_counts += np.bincount(key, minlength=n * self.n_classes)[: n * self.n_classes].reshape(
                n, self.n_classes
            )

    # --- results ---

    def _percentile(self, s: int, q: float) -> np.ndarray:
        ser = self.series[s]
        hist = self.hist[s].astype(np.int64)
        total = hist.sum(axis=1)
        cum = np.cumsum(hist, axis=1)
        target = q / 100.0 * total
        # first bin whose cumulative count reaches the target rank; linear inside the bin
        idx = np.minimum((cum < target[:, None]).sum(axis=1), HIST_BINS - 1)
        rows = np.arange(self.n)
        before = np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], 0)
        in_bin = hist[rows, idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(in_bin > 0, (target - before) / np.maximum(in_bin, 1), 0.5)
        width = (ser.hi - ser.lo) / HIST_BINS
        out = ser.lo + (idx + np.clip(frac, 0.0, 1.0)) * width
        return np.where(total > 0, out, np.nan)

    def statistics(self) -> dict[str, np.ndarray]:
        """Columns ``<series>_mean``, ``_std`` (population), ``_p10``, ``_p50``, ``_p90``; NaN without valid pixels."""
        out: dict[str, np.ndarray] = {}
        count = self.valid_pixels.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            for s, ser in enumerate(self.series):
                centre = 0.5 * (ser.lo + ser.hi)
                mean_d = self.sums[:, s] / count
                var = np.maximum(self.sumsq[:, s] / count - mean_d**2, 0.0)
                out[f"{ser.name}_mean"] = mean_d + centre
                out[f"{ser.name}_std"] = np.sqrt(var)
                for q in PERCENTILES:
                    out[f"{ser.name}_p{q}"] = self._percentile(s, q)
        empty = self.valid_pixels == 0
        for values in out.values():
            values[empty] = np.nan
        return out

    def fractions(self) -> np.ndarray:
        """(zones, classes) share of each class among the zone's classified pixels; NaN without any."""
        total = self.class_counts.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.class_counts / np.maximum(total, 1), np.nan)


# --- driver -----------------------------------------------------------------------------------------------------------


@dataclass
class ZonalResult:
    """Per-zone features (arrays of length n_zones, NaN where a zone has no data)."""

    zone_pixels: np.ndarray
    valid_pixels: np.ndarray
    classified_pixels: np.ndarray
    statistics: dict[str, np.ndarray]
    fractions: np.ndarray | None  # (n, classes), in the order of the class names given


def zonal_features(
    raster: gdal.Dataset,
    zones: gdal.Dataset,
    n_zones: int,
    *,
    plan: BandPlan | None = None,
    classes: gdal.Dataset | None = None,
    class_names: Sequence[str] = (),
    block_size: int = DEFAULT_BLOCK,
    progress: ProgressFn | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> ZonalResult:
    """Per-zone statistics (when ``plan``) and class fractions (when ``classes``, a raster on the same grid).

    Block by block: memory is a block plus a fixed amount per zone.
    """
    info = raster_io.read_info(raster)
    if (zones.RasterXSize, zones.RasterYSize) != (info.width, info.height):
        raise SarSegError("the zone raster is not on the raster's grid")
    if classes is not None and (classes.RasterXSize, classes.RasterYSize) != (info.width, info.height):
        raise SarSegError("the class raster is not on the raster's grid")
    series = plan.series if plan is not None else []
    acc = ZonalAccumulator(n_zones, series, len(class_names) if classes is not None else 0)
    class_band = classes.GetRasterBand(1) if classes is not None else None
    blocks = raster_io.iter_blocks(info.width, info.height, block_size)
    for k, block in enumerate(blocks):
        if is_canceled and is_canceled():
            raise CancelledError("Cancelled by the user.")
        win: Window = block.core
        z = zones.GetRasterBand(1).ReadAsArray(win.x, win.y, win.width, win.height)
        if not (z > 0).any():
            continue
        data = raster_io.read_window(raster, win)
        valid = raster_io.valid_mask(data, info.nodata).all(axis=0)
        bands_db = None
        if plan is not None:
            bands_db = data.copy()
            for b, conv in enumerate(plan.to_db):
                if conv:
                    bands_db[b] = to_db(bands_db[b])
        cls = None
        if class_band is not None:
            cls = class_band.ReadAsArray(win.x, win.y, win.width, win.height)
            if cls is None:
                raise SarSegError(f"Reading the class raster failed: {gdal.GetLastErrorMsg()}")
        acc.add_block(z, bands_db, valid, cls)
        trim_cache(raster, zones, classes)
        if progress:
            progress(100.0 * (k + 1) / len(blocks))
    return ZonalResult(
        zone_pixels=acc.zone_pixels,
        valid_pixels=acc.valid_pixels,
        classified_pixels=acc.class_counts.sum(axis=1),
        statistics=acc.statistics() if plan is not None else {},
        fractions=acc.fractions() if classes is not None else None,
    )


# --- embeddings -------------------------------------------------------------------------------------------------------


def pixel_window(
    envelope: tuple[float, float, float, float], geotransform: Sequence[float], width: int, height: int
) -> Window | None:
    """Pixels of a north-up raster covering an envelope (xmin, xmax, ymin, ymax), clipped; None when outside."""
    x0, dx, _, y0, _, dy = geotransform
    xmin, xmax, ymin, ymax = envelope
    cols = sorted(((xmin - x0) / dx, (xmax - x0) / dx))
    rows = sorted(((ymax - y0) / dy, (ymin - y0) / dy))
    c0, c1 = max(0, int(np.floor(cols[0]))), min(width, int(np.ceil(cols[1])))
    r0, r1 = max(0, int(np.floor(rows[0]))), min(height, int(np.ceil(rows[1])))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def zone_embeddings(
    raster: gdal.Dataset,
    zones: gdal.Dataset,
    windows: Sequence[Window | None],
    encoder: Any,
    model_input: ModelInput,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, int]:
    """Each zone's embedding: the zone's bounding window (``windows[i]`` for zone i + 1) is cut into encoder tiles;
    in each tile, pixels outside the zone or without data are set to the training mean (0 after normalisation;
    tiles at the window's right and bottom edges are padded with it),
    and the tile embeddings are averaged weighted by the zone's valid pixels in them. The encoder thus sees the
    zone's own pixels only. Read one tile row of one window at a time.

    Returns ((zones, d) embeddings, NaN rows for zones without a valid pixel; the number of tiles run).
    """
    meta = encoder.metadata
    tile = meta.tile_size
    info = raster_io.read_info(raster)
    nodata = [info.nodata[b - 1] for b in model_input.bands]
    n = len(windows)
    emb_sum: np.ndarray | None = None
    weight = np.zeros(n)
    pending: list[tuple[int, float, np.ndarray]] = []
    tiles_run = 0

    def flush() -> None:
        nonlocal emb_sum, tiles_run
        if not pending:
            return
        batch = np.ascontiguousarray(np.stack([t for _, _, t in pending]), dtype=np.float32)
        out = np.asarray(encoder.run(batch), dtype=np.float64).reshape(len(pending), -1)
        if emb_sum is None:
            emb_sum = np.zeros((n, out.shape[1]))
        for (i, count, _), e in zip(pending, out):
            emb_sum[i] += count * e
            weight[i] += count
        tiles_run += len(pending)
        pending.clear()

    done = 0
    for i, win in enumerate(windows):
        if is_canceled and is_canceled():
            raise CancelledError("Cancelled by the user.")
        if win is None:
            continue
        for y in range(0, win.height, tile):  # tiles side by side: each pixel counts once
            rows = Window(win.x, win.y + y, win.width, min(tile, win.height - y))
            z = zones.GetRasterBand(1).ReadAsArray(rows.x, rows.y, rows.width, rows.height)
            mine = z == i + 1
            if not mine.any():
                continue
            data = raster_io.read_window(raster, rows, model_input.bands)
            mine &= raster_io.valid_mask(data, nodata).all(axis=0)
            data = meta.normalization.apply(model_input.apply(data))
            data[:, ~(mine[None] & np.isfinite(data)).all(axis=0)] = 0.0
            for x in range(0, win.width, tile):
                count = float(mine[:, x : x + tile].sum())
                if count == 0:
                    continue
                piece = data[:, :, x : x + tile]
                ph, pw = tile - piece.shape[1], tile - piece.shape[2]
                pending.append((i, count, np.pad(piece, ((0, 0), (0, ph), (0, pw))) if ph or pw else piece))
                if len(pending) >= batch_size:
                    flush()
        trim_cache(raster, zones)
        done += 1
        if progress:
            progress(100.0 * done / n)
    flush()
    if emb_sum is None:
        return np.full((n, meta.embedding_size or 0), np.nan), 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight[:, None] > 0, emb_sum / weight[:, None], np.nan), tiles_run
