"""Raster helpers shared by the unit and QGIS tests: small GeoTIFFs written and read back with plain GDAL,
independently of the plugin's own raster code, plus file checks (digests, files left behind).

Importable as ``from rasters import ...`` (``tests`` is on the pytest ``pythonpath``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from osgeo import gdal, gdal_array, osr

GT = (600000.0, 10.0, 0.0, 4900000.0, 0.0, -10.0)
"""Geotransform of the unit tests' small rasters: UTM 31N metres, 10 m pixels, north up."""


def wkt(epsg: int = 32631) -> str:
    """The WKT of an EPSG coordinate reference system."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def write_raster(
    path,
    array,
    *,
    nodata: float | None = None,
    epsg: int | None = 32631,
    geotransform: tuple[float, ...] | None = None,
    origin: tuple[float, float] = (500000.0, 4800000.0),
    pixel: float = 10.0,
    descriptions: list[str] | None = None,
    units: list[str] | None = None,
    dtype=None,
    scale: float | None = None,
    offset: float | None = None,
) -> str:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF with plain GDAL; return the path as a str.

    ``dtype`` is the file's data type; by default uint8 arrays are written as Byte and anything else as
    Float32. ``geotransform`` wins over ``origin`` (top-left corner) and ``pixel`` (square pixel size).
    ``epsg=None`` writes no coordinate reference system. ``nodata``, ``descriptions`` and ``units`` apply
    to every band (one description / unit per band); so do ``scale`` and ``offset`` (declared, not applied: the
    array holds the stored values).
    """
    array = np.asarray(array)
    if dtype is None:
        dtype = np.uint8 if array.dtype == np.uint8 else np.float32
    array = array.astype(dtype, copy=False)
    if array.ndim == 2:
        array = array[None]
    bands, rows, cols = array.shape
    if geotransform is None:
        geotransform = (origin[0], pixel, 0.0, origin[1], 0.0, -pixel)
    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal_type)
    ds.SetGeoTransform(geotransform)
    if epsg:
        ds.SetProjection(wkt(epsg))
    for b in range(bands):
        band = ds.GetRasterBand(b + 1)  # ``ds`` stays alive while its bands are used
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[b])
        if units:
            band.SetUnitType(units[b])
        if scale is not None:
            band.SetScale(scale)
        if offset is not None:
            band.SetOffset(offset)
        band.WriteArray(array[b])
    ds.FlushCache()
    ds = None
    return str(path)


def read_raster(path, dtype=None) -> np.ndarray:
    """All bands of a raster as a (bands, rows, cols) array, in the file's data type unless ``dtype`` is given."""
    ds = gdal.Open(str(path))  # keep the dataset alive while its bands are read
    data = np.stack([ds.GetRasterBand(b + 1).ReadAsArray() for b in range(ds.RasterCount)])
    ds = None
    return data if dtype is None else data.astype(dtype)


def bilinear_classes(probabilities: Path, factor: int) -> np.ndarray:
    """Most probable classes of a coarse probability raster interpolated (bilinear, edges held) onto the grid
    ``factor`` times finer: fine pixel i has its centre at coarse pixel coordinate (i + 0.5) / factor - 0.5."""
    from scipy import ndimage

    p = read_raster(probabilities).astype(np.float64)
    rows, cols = ((np.arange(n * factor) + 0.5) / factor - 0.5 for n in p.shape[1:])
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    fine = np.stack([ndimage.map_coordinates(b, [rr, cc], order=1, mode="nearest") for b in p])
    classes = fine.argmax(axis=0).astype(np.uint8)
    classes[~np.isfinite(fine).all(axis=0)] = 255  # the class rasters' nodata
    return classes


def file_digest(path) -> str:
    """SHA-256 of a file's bytes (to check that an input was left untouched)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder, keep=()) -> list[str]:
    """Names in ``folder`` other than ``keep`` (temporary files, partial outputs), sorted."""
    return sorted(n for n in os.listdir(folder) if n not in keep)


def partial_files(folder) -> list[str]:
    """Names in ``folder`` of the temporary (``.partial``) files a failed run might leave behind, sorted."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial" in p.name)
