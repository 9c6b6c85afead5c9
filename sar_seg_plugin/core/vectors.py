"""Polygons from class rasters (GDAL polygonize), for vector workflows. No qgis import.

GDAL's polygonize reads the raster a scanline at a time and keeps only the polygons still open on the current line
(with GDAL's block cache held small while it runs): memory follows the raster's width and the number of open
patches, not its size, and patches that cross block
edges come out whole (nothing to merge). Areas are in km² on the ground: in the layer's CRS when it is projected,
in the UTM zone of the raster's centre when it is in degrees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import CancelledError, SarSegError
from .outputs import OutputSet
from .raster_io import block_cache_limit, iter_blocks, open_raster, read_info, read_window
from .resampling import ground_metres_per_unit
from .timeseries import Grid

POLYGONIZE_CACHE_BYTES = 32 * 2**20


def _area_transform(srs: osr.SpatialReference, x: float, y: float) -> osr.CoordinateTransformation | None:
    """For a CRS in degrees, a transform to the UTM zone at (x, y) (areas in m²); None for a projected CRS."""
    if not srs.IsGeographic():
        return None
    from .sentinel1 import utm_epsg

    utm = osr.SpatialReference()
    utm.ImportFromEPSG(utm_epsg(x, y))
    for s in (srs, utm):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(srs, utm)


def polygonize_classes(
    classes: str,
    destination: str,
    names: Mapping[int, str],
    *,
    layer_name: str = "classes",
    simplify: float = 0.0,
    min_area_m2: float = 0.0,
    outputs: OutputSet | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> int:
    """The patches of the classes ``names`` (class id -> name; other values, nodata included, are left out) of the
    class raster ``classes`` as polygons in the GeoPackage ``destination`` (fields ``class``, ``name`` and
    ``area_km2``); returns how many. ``simplify``: Douglas-Peucker tolerance in the raster's CRS units (each
    polygon on its own: neighbours may then overlap or leave slivers); ``min_area_m2``: smaller patches are left
    out. Written whole or not at all (as one of ``outputs`` when given)."""
    if Path(destination).suffix.lower() != ".gpkg":
        raise SarSegError(f"Polygons are written as a GeoPackage: give a file name ending in .gpkg ({destination}).")
    if simplify < 0 or min_area_m2 < 0:
        raise SarSegError("The simplification tolerance and the minimum area must be 0 or more.")
    ids = sorted(int(k) for k in names)
    if not ids or ids[0] < 0 or ids[-1] > 254:
        raise SarSegError("Class ids to polygonize must lie in 0..254.")
    src = open_raster(classes)
    info = read_info(src)
    grid = Grid.of(info)
    lookup = np.zeros(256, np.uint8)
    lookup[ids] = np.asarray(ids, np.uint8) + 1  # 0 = not polygonized; class c is written c + 1
    run_own = outputs is None
    run = OutputSet() if run_own else outputs
    count = 0
    with run if run_own else ExitStack():
        mask_path = run.add(destination, suffix=".mask.tif")
        target = run.add(destination, staged=True)
        mask = gdal.GetDriverByName("GTiff").Create(
            str(mask_path), info.width, info.height, 1, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"]
        )
        if mask is None:
            raise SarSegError(f"Cannot write beside '{destination}': {gdal.GetLastErrorMsg()}")
        if grid.geotransform is not None:
            mask.SetGeoTransform(list(grid.geotransform))
        mask.SetProjection(grid.projection)
        band = mask.GetRasterBand(1)
        for block in iter_blocks(info.width, info.height, 1024):
            data = read_window(src, block.core, [1], np.uint8)[0]
            band.WriteArray(lookup[data], block.core.x, block.core.y)
            mask.FlushCache()
            src.FlushCache()
        srs = osr.SpatialReference()
        if grid.projection:
            srs.ImportFromWkt(grid.projection)
            srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        vector = gdal.GetDriverByName("GPKG").Create(str(target), 0, 0, 0, gdal.GDT_Unknown)
        layer = vector.CreateLayer(layer_name, srs if grid.projection else None, ogr.wkbPolygon)
        layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
        layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
        layer.CreateField(ogr.FieldDefn("area_km2", ogr.OFTReal))

        def cancel(_complete: float, _message: str, _data: object) -> int:
            return 0 if is_canceled and is_canceled() else 1

        layer.StartTransaction()
        with block_cache_limit(POLYGONIZE_CACHE_BYTES):  # it reads the mask a line at a time: no need for more
            failed = gdal.Polygonize(band, band, layer, 0, [], callback=cancel) != 0
        if failed:
            if is_canceled and is_canceled():
                raise CancelledError("Cancelled by the user.")
            raise SarSegError(f"Polygonizing '{Path(classes).name}' failed: {gdal.GetLastErrorMsg()}")
        gt = grid.geotransform or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        cx, cy = gt[0] + gt[1] * info.width / 2, gt[3] + gt[5] * info.height / 2
        to_metres = _area_transform(srs, cx, cy) if grid.projection else None
        unit = (
            1.0
            if to_metres is not None or not grid.projection
            else ground_metres_per_unit(gt, srs, info.width, info.height)  # Web Mercator: CRS m are not ground m
        )
        layer.ResetReading()
        dropped = []
        for feature in layer:
            value = feature.GetField("class") - 1
            geom = feature.GetGeometryRef()
            metric = geom.Clone()
            if to_metres is not None:
                metric.Transform(to_metres)
            area = metric.GetArea() * unit * unit
            if area < min_area_m2:
                dropped.append(feature.GetFID())
                continue
            if simplify > 0:
                feature.SetGeometry(geom.SimplifyPreserveTopology(simplify))
            feature.SetField("class", value)
            feature.SetField("name", names[value])
            feature.SetField("area_km2", area / 1e6)
            layer.SetFeature(feature)
            count += 1
        for fid in dropped:
            layer.DeleteFeature(fid)
        layer.CommitTransaction()
        layer = vector = mask = band = None
        run.discard(mask_path)
    return count


@dataclass(frozen=True)
class PolygonRequest:
    """Polygons wanted beside a class raster: the GeoPackage, the simplification tolerance (CRS units) and the
    smallest patch kept (m²)."""

    path: str
    simplify: float = 0.0
    min_area_m2: float = 0.0
