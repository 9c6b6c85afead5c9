"""Resampling a raster to the pixel size a model runs at, and back: the plan (what, why, how), GDAL warps with
errors and cancel handled, and the linear-power copy intensities are interpolated in. No qgis import."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from osgeo import gdal, osr

from ..models.metadata import ModelMetadata
from . import domain, raster_io
from .class_rasters import CLASS_NODATA, argmax_and_max, confidence_of
from .errors import CancelledError, SarSegError
from .raster_io import GeoTiffWriter
from .units import DB, LINEAR, ModelInput, convert_scale

RESAMPLE_TOLERANCE = 0.10  # relative pixel-size difference accepted without resampling
#: Measured ENL under which a raster is taken as single-look and averaged 2 x 2 before a model trained on a range of
#: pixel sizes that holds twice its own (the estimator reads about 0.9 on single-look data, 1.3-1.45 at 1.5 looks).
#: Single-look speckle is the input such models read worst, and multilooking it first is what SAR practice does:
#: the bundled model on evaluation-only single-look scenes at 10 m scored mIoU 0.58-0.61 on its own grid against
#: 0.63-0.65 averaged to 20 m (four sets of 12 scenes), while at 1.5 looks the gain was 0.017 and on scenes of its
#: own training family, with finer structures, averaging lost 0.01-0.03 at one look and more above.
SINGLE_LOOK_ENL = 1.2
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
    """(x, y) pixel size of an open raster in metres on the ground and whether its CRS is geographic; None when
    unknown (no geotransform, no CRS, or a CRS neither projected nor geographic). See :func:`ground_pixel_size_m`."""
    gt = raster_io.geotransform_of(ds)
    srs = _raster_srs(ds)
    if gt is None or srs is None:
        return None
    return ground_pixel_size_m(gt, srs, ds.RasterXSize, ds.RasterYSize)


def ground_pixel_size_m(
    gt: Sequence[float], srs: osr.SpatialReference, width: int, height: int
) -> tuple[float, float, bool] | None:
    """(x, y) ground size in metres of the pixels of a grid (geotransform ``gt``, ``width`` x ``height``) in
    ``srs``, and whether the CRS is geographic; None for a CRS neither projected nor geographic.

    Projected CRS: geotransform units times the metres one unit covers on the ground at the grid's centre
    (:func:`ground_metres_per_unit`: the CRS linear unit, corrected where the projection stretches lengths, as Web
    Mercator does away from the equator). Geographic CRS: degrees converted at the centre latitude (111320 m x
    cos(latitude) per degree of longitude, 110574 m per degree of latitude)."""
    size_x, size_y = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    if srs.IsProjected():
        unit = ground_metres_per_unit(gt, srs, width, height)
        return size_x * unit, size_y * unit, False
    if srs.IsGeographic():
        to_degrees = srs.GetAngularUnits() * 180.0 / math.pi
        _, lat = _centre_of(gt, width, height)
        lat_deg = lat * to_degrees
        cos_lat = max(math.cos(math.radians(lat_deg)), 1e-6)
        return (
            size_x * to_degrees * METRES_PER_DEGREE_LON_EQUATOR * cos_lat,
            size_y * to_degrees * METRES_PER_DEGREE_LAT,
            True,
        )
    return None


#: Scale error of a projection (ground length / length in the CRS) below which its linear unit is taken as it is:
#: UTM stays within 0.04 % of it near its central meridian and 0.1 % at the zone's edges.
SCALE_TOLERANCE = 0.01


def ground_metres_per_unit(gt: Sequence[float], srs: osr.SpatialReference, width: int, height: int) -> float:
    """Metres on the ground per unit of a projected CRS at the centre of a grid: its linear unit, times the
    projection's scale there where that departs from 1 by more than :data:`SCALE_TOLERANCE` (Web Mercator at 48°
    latitude: a CRS metre is 0.67 m on the ground). The scale is measured by projecting one pixel's steps to an
    azimuthal equidistant projection centred on the grid, which keeps distances from its centre."""
    unit = float(srs.GetLinearUnits() or 1.0)
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # a grid outside its CRS's domain: the unit, without a message
    try:
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        cx, cy = _centre_of(gt, width, height)
        geographic = srs.CloneGeogCS()
        geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        lon, lat, _ = osr.CoordinateTransformation(srs, geographic).TransformPoint(cx, cy)
        if not (math.isfinite(lon) and math.isfinite(lat) and abs(lat) < 90.0):
            return unit
        local = osr.SpatialReference()
        if local.ImportFromProj4(f"+proj=aeqd +lat_0={lat:.10f} +lon_0={lon:.10f} +ellps=WGS84 +units=m +no_defs"):
            return unit
        local.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        to_local = osr.CoordinateTransformation(srs, local)
        x0, y0, _ = to_local.TransformPoint(cx, cy)
        scales = []
        for dx, dy in ((gt[1], gt[4]), (gt[2], gt[5])):
            x1, y1, _ = to_local.TransformPoint(cx + dx, cy + dy)
            scales.append(math.hypot(x1 - x0, y1 - y0) / (math.hypot(dx, dy) * unit))
        scale = math.sqrt(scales[0] * scales[1])
    except Exception:  # noqa: BLE001 - a grid GDAL cannot project (far outside its CRS): the unit as it is
        return unit
    finally:
        gdal.PopErrorHandler()
    if not math.isfinite(scale) or scale <= 0 or abs(scale - 1.0) <= SCALE_TOLERANCE:
        return unit
    return unit * scale


def _centre_of(gt: Sequence[float], width: int, height: int) -> tuple[float, float]:
    col, row = width / 2.0, height / 2.0
    return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]


def _centre(ds: Any, gt: Sequence[float]) -> tuple[float, float]:
    return _centre_of(gt, ds.RasterXSize, ds.RasterYSize)


def _metres_per_unit(ds: Any, srs: osr.SpatialReference) -> float:
    return ground_metres_per_unit(raster_io.geotransform_of(ds), srs, ds.RasterXSize, ds.RasterYSize)


def _utm_wkt(ds: Any, srs: osr.SpatialReference) -> tuple[str, str]:
    """WKT and a label of the WGS 84 UTM zone holding the raster centre (geographic raster)."""
    gt = raster_io.geotransform_of(ds)
    lon, lat = _centre(ds, gt)
    to_degrees = srs.GetAngularUnits() * 180.0 / math.pi
    lon, lat = lon * to_degrees, lat * to_degrees
    zone = int(math.floor(((lon + 180.0) % 360.0) / 6.0)) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(epsg)
    return utm.ExportToWkt(), f"EPSG:{epsg} (UTM zone {zone}{'N' if lat >= 0 else 'S'})"


def resampling_plan(
    ds: Any, meta: ModelMetadata, enl: float | None = None, block: int | None = None
) -> tuple[ResamplePlan | None, str]:
    """Whether the raster must be warped to the model's pixel size, and a log line saying what and why.

    A model that records the range of pixel sizes it was trained on (its input-domain envelope) is given the
    raster as it is inside that range, averaged (multilooked in linear power) to the range's lower end when the
    raster is finer, bilinearly warped to its upper end when coarser (see :func:`_range_plan`); a single-look
    raster (``enl``, measured on the raster, under :data:`SINGLE_LOOK_ENL`) is averaged 2 x 2 where the range
    allows, and one whose values repeat in ``block`` x ``block`` blocks (nearest-neighbour upsampling,
    :func:`.domain.measure_ties`) is averaged back over them where the range allows. Other models get their
    ``pixel_size_m`` (bilinear) unless the raster is within 10 % of it.
    """
    trained = domain.trained_pixel_sizes(meta.input_domain)
    if trained is not None:
        return _range_plan(ds, trained, enl, block)
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
            model_m / _metres_per_unit(ds, srs),
            f"Resampling: the raster's pixel size ({described}) differs from the model's ({model_m:g} m) by "
            f"{differs:.0%}; warping to {model_m:g} m pixels for the model (bilinear, linear power), "
            "results are warped back to the raster's grid",
            model_m,
        ),
    )


def _range_plan(
    ds: Any, trained: tuple[float, float], enl: float | None = None, block: int | None = None
) -> tuple[ResamplePlan | None, str]:
    """The resampling of a model trained on pixel sizes ``trained`` (low, high metres).

    Inside the range (10 % tolerance at its ends), a projected raster is segmented on its own grid. Outside it,
    the raster is warped to the nearest end: averaged in linear power when that is coarser than the raster
    (multilooking: the speckle is reduced as in the coarser products the model saw), bilinear when finer
    (detail is not restored; the input-domain check warns). A geographic raster is warped to the local UTM zone
    at its own pixel size clamped into the range, averaged when that is coarser than the raster. A single-look
    raster (``enl`` under :data:`SINGLE_LOOK_ENL`) inside the range whose doubled pixel size still is, is
    averaged 2 x 2 (to twice its pixel size: about 4 looks). A projected raster whose values repeat in ``block`` x
    ``block`` blocks (upsampled by nearest neighbour) is averaged over them, to the pixel size it was made at,
    where that is inside the range (whether its own pixel size is or not).
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
    tol = RESAMPLE_TOLERANCE
    inside = all(lo * (1.0 - tol) <= v <= hi * (1.0 + tol) for v in (sx, sy))
    single_look = enl is not None and enl < SINGLE_LOOK_ENL
    # a geographic raster is warped anyway: what counts is its pixel size in metres, not each axis's
    at_least_lo = lo * (1.0 - tol) <= native if geographic else inside
    made = [block * v for v in (sx, sy)] if block else []  # the pixel size the blocks were made at
    blocks = bool(made) and not geographic and all(lo * (1.0 - tol) <= v <= hi * (1.0 + tol) for v in made)
    multilook = single_look and at_least_lo and 2.0 * max(sx, sy) <= hi * (1.0 + tol) and not blocks
    if multilook:
        target = 2.0 * native
    if blocks:
        target = block * native
    method = "average" if target > max(sx, sy) else "bilinear"
    how = "averaging in linear power (multilooking)" if method == "average" else "bilinear interpolation, linear power"
    back = "results are warped back to the raster's grid"
    looks = f"it looks single-look (ENL about {enl:.2g}, measured on a sample)" if single_look else ""
    if multilook:
        how = "averaging 2 x 2 pixels in linear power: multilooking to about 4 looks"
    keep = "Turn 'Resample to the model's pixel size' off to keep the raster's own grid."
    if geographic:
        dst_wkt, label = _utm_wkt(ds, srs)
        fits = "its own pixel size" if target == native else f"its pixel size clamped into the {trained_text}"
        fits = f"twice its pixel size, inside the {trained_text}" if multilook else fits
        return _with_reason(
            ResamplePlan(
                dst_wkt,
                target,
                f"Resampling: the raster's CRS is geographic (degrees, about {described} pixels at its centre); "
                f"warping to {target:.3g} m pixels in {label} ({fits} the model was trained on; {how}), {back}"
                + (f". It{looks[2:]}, and the model reads single-look speckle worst. {keep}" if multilook else ""),
                target,
                method,
            )
        )

    def in_own_crs(reason: str) -> tuple[ResamplePlan, str]:
        """A plan to ``target`` m pixels in the raster's own CRS."""
        return _with_reason(ResamplePlan(srs.ExportToWkt(), target / _metres_per_unit(ds, srs), reason, target, method))

    if blocks:
        return in_own_crs(
            f"Resampling: the raster's values repeat in {block} x {block} blocks of its {described} pixels: it "
            f"was resampled by nearest neighbour from {target:.3g} m pixels, and its pixel size is not its "
            f"detail. Averaging the blocks back to {target:.3g} m pixels (in the {trained_text} the model was "
            f"trained on) for the model, {back}. {keep}"
        )
    if multilook:
        return in_own_crs(
            f"Resampling: the raster's pixel size ({described}) is inside the {trained_text} the model was "
            f"trained on, but {looks}, and the model reads single-look speckle worst: warping to "
            f"{target:.3g} m pixels ({how}), {back}. {keep}"
        )
    if inside:
        beyond = f"; {looks}, but twice its pixel size would be beyond that range" if single_look else ""
        return None, (
            f"No resampling: the raster's pixel size ({described}) is inside the {trained_text} the model was "
            f"trained on{beyond}"
        )
    side = "finer than" if native < lo else "coarser than" if native > hi else "partly outside"
    return in_own_crs(
        f"Resampling: the raster's pixel size ({described}) is {side} the {trained_text} the model was "
        f"trained on; warping to {target:.3g} m pixels ({how}), {back}"
    )


def _with_reason(plan: ResamplePlan) -> tuple[ResamplePlan, str]:
    return plan, plan.reason


def _check_warp(result: Any, what: str, is_canceled: Callable[[], bool] | None) -> Any:
    if is_canceled and is_canceled():
        raise CancelledError("Cancelled by the user.")
    if not result:
        raise SarSegError(f"Resampling {what} failed: {gdal.GetLastErrorMsg() or 'unknown GDAL error'}")
    return result


def warp(dst: Any, src: Any, what: str, is_canceled: Callable[[], bool] | None, **options: Any) -> Any:
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


def linear_copy(src: Any, path: str, model_input: ModelInput, is_canceled: Callable[[], bool] | None) -> None:
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


def finish_from_probabilities(
    src: Any,
    bands: Sequence[int],
    probabilities: Any,
    class_writer: GeoTiffWriter,
    prob_writer: GeoTiffWriter | None,
    conf_writer: GeoTiffWriter | None,
    confidence: str,
) -> tuple[np.ndarray, int]:
    """Write the classes and confidence of the probabilities warped back onto the raster's grid
    (``probabilities``: ``prob_writer``'s dataset, or a temporary one), nodata where the input's ``bands`` are
    nodata (the warps smear nodata edges) or no probability came back; count classes.

    The class of a pixel is the most probable class of the probabilities written for it, as on the open-raster
    path: classes warped by nearest neighbour would put every boundary on the coarser grid the model ran on (on
    evaluation-only scenes, mIoU 0.603 -> 0.608 single look, 0.640 -> 0.645 at 5 m: README, *Results on the
    raster's grid*)."""
    info = raster_io.read_info(src)
    nodata = [info.nodata[b - 1] for b in bands]
    class_count = probabilities.RasterCount
    class_pixels = np.zeros(class_count, dtype=np.int64)
    nodata_pixels = 0
    # One output tile at a time: GDAL 3.6 decodes a read that spans several tiles of a file written with
    # NUM_THREADS on worker threads, which for the band-interleaved multi-band probabilities prints a libtiff
    # error per tile ("Bad value 4 for ExtraSamples"; the values read are right).
    for block in raster_io.iter_blocks(info.width, info.height, raster_io.TILE):
        w = block.core
        ok = raster_io.valid_mask(raster_io.read_window(src, w, bands), nodata).all(axis=0)
        p = raster_io.read_window(probabilities, w)
        ok &= np.isfinite(p).all(axis=0)
        p[:, ~ok] = np.nan
        classes, top = argmax_and_max(np.where(ok, p, 0.0))
        classes[~ok] = CLASS_NODATA
        class_pixels += np.bincount(classes[ok], minlength=class_count)[:class_count]
        nodata_pixels += int((~ok).sum())
        class_writer.write(w, classes[None])
        class_writer.release_cache()
        if prob_writer is not None:
            prob_writer.write(w, p)
            prob_writer.release_cache()
        if conf_writer is not None:
            conf = top if confidence == "max" else confidence_of(p, confidence)
            conf = np.where(ok, conf, np.nan).astype(np.float32)
            conf_writer.write(w, conf[None])
            conf_writer.release_cache()
        src.FlushCache()
        probabilities.FlushCache()
    return class_pixels, nodata_pixels
