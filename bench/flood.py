#!/usr/bin/env python3
"""Flood mapping benchmark: ``flood.flood_map`` on a pre/post pair and ``flood.polygonize`` of its class raster,
time and peak memory against raster size.

Inputs: pairs of synthetic Sentinel-1-like VV/VH linear-power GeoTIFFs (EPSG:32631, 10 m pixels, float32, tiled
256x256, DEFLATE, band descriptions VV and VH, unit type ``linear``, nodata 0), N x N pixels for N in 2,500, 5,000
and 10,000 (``--quick``: 1,000, 2,000, 4,000). Land is fields of 400 m with their own level (VV -11 +- 2 dB, VH
-18 +- 2.5 dB; the post-event image moves each field by up to +-0.5 dB); a winding river (a contour band of smooth
value noise) and lakes (the peaks of another) are open water in both images (VV -20 dB, VH -26 dB); the flood,
post-event only and at the water's level, covers 15 % of the land, nearer the river more likely. Every pixel is
multiplied by Gamma(4.4, 1/4.4) speckle, independent in the two images. The rasters are written one row of 1024 px
blocks at a time (the generator's memory stays a block row) and kept in ``bench/.cache/flood/`` for the next run;
the generator also gives the true flood and permanent water of every pixel.

Sections, in order:

1. ``flood_map(post, out, pre=pre)`` with its defaults (split-based Kittler-Illingworth thresholds, 3x3 dB
   smoothing, 1000 m² minimum mapping unit) for each size: seconds, MP/s, peak RSS, the thresholds found, the
   flood IoU (class 1 against the generator's flood) with the permanent-water IoU, as a sanity check, and the
   seconds and memory of each phase (thresholds, classes, sieve, copy);
2. ``polygonize(classes, out.gpkg)`` of the flooded class of each of those class rasters: seconds, polygons, peak
   RSS; then, for the smallest and the largest size, both again with GDAL_CACHEMAX=64 (MB), which tells GDAL's
   block cache (5 % of RAM by default) from the code's own memory;
3. a summary of the targets with PASS / FAIL: peak RSS < 1 GB for the 10,000² pair and for polygonizing the
   10,000² class raster, and memory flat in raster size (peak RSS growth from the smallest size to the largest
   < 150 MB, each for flood_map and polygonize).

Every measured run is its own subprocess (a headless QGIS started, as in the plugin, then the core function called
directly), timed around the call, with the subprocess's peak RSS (VmHWM); the baseline is such a subprocess with
QGIS started and the flood module imported, and no run. Generation is not timed in the runs.

About 4 minutes on two cores with a warm cache (the first run also writes 1.7 GB of rasters, under a minute).
Usage: ``.venv/bin/python bench/flood.py [--quick] [--sizes 2500,5000,10000] [--no-capped] [--cache DIR]
[--workdir DIR] [--keep]``. Exit status 0 whatever the figures: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import harness  # the benchmarks' shared code; puts the project root on sys.path
import numpy as np

SEED = 20250214
GEN_VERSION = 1  # bump when the generator changes: cached files carry it in their names
CACHE = Path(__file__).resolve().parent / ".cache" / "flood"
SIZES, QUICK_SIZES = (2500, 5000, 10000), (1000, 2000, 4000)
GEN_BLOCK = 1024
LOOKS = 4.4
PIXEL_M = 10.0

FIELD_PX = 40  # fields of 400 m
LAND_VV_DB, LAND_VV_SPREAD = -11.0, 4.0  # level of a field: mean + spread * (u - 0.5), u uniform
LAND_VH_DB, LAND_VH_SPREAD = -18.0, 5.0
FIELD_CHANGE_DB = 1.0  # post-event field level: + FIELD_CHANGE_DB * (u - 0.5)
WATER_VV_DB, WATER_VH_DB = -20.0, -26.0
RIVER_SCALES, RIVER_HALF_WIDTH = (1600.0, 500.0, 160.0), 0.012  # river: |noise - 0.5| below the half width
LAKE_SCALES, LAKE_LEVEL = (700.0, 230.0, 80.0), 0.78  # lakes: noise above the level
FLOOD_SCALES, FLOOD_RIVER_PULL = (1200.0, 400.0, 120.0), 0.8  # flood: noise - pull * |river noise - 0.5| high
FLOOD_SHARE = 0.15  # of the land
CALIBRATION_POINTS = 600  # per side: the flood level is the quantile of a grid of this many points

TARGET_PEAK_RSS_MB = 1024.0
TARGET_RSS_GROWTH_MB = 150.0
CAPPED_CACHE_MB = 64


# --- Synthetic pair -----------------------------------------------------------------------------------------------


def value_noise(key: int, xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Smooth value noise in [0, 1] at the grid ``ys`` x ``xs`` (pixel coordinates): uniform values on a lattice
    of ``scale`` px, smoothstep-interpolated; the same at a pixel whatever the window it is computed in."""
    gx, gy = xs / scale, ys / scale
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    sx, sy = fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy)
    lx = np.arange(ix.min(), ix.max() + 2)
    ly = np.arange(iy.min(), iy.max() + 2)
    lattice = harness.hash_uniform(key, ly[:, None], lx[None, :])
    cx, cy = ix - lx[0], iy - ly[0]
    rows = lattice[:, cx] * (1.0 - sx) + lattice[:, cx + 1] * sx
    return rows[cy] * (1.0 - sy)[:, None] + rows[cy + 1] * sy[:, None]


def fbm(key: int, xs: np.ndarray, ys: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Octaves of :func:`value_noise`, weights 1, 1/2, 1/4, ..., normalised to [0, 1]."""
    weights = [0.5**i for i in range(len(scales))]
    total = sum(w * value_noise(key + 101 * i, xs, ys, s) for i, (w, s) in enumerate(zip(weights, scales)))
    return total / sum(weights)


def field_values(key: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) value per field of FIELD_PX, at the grid ``ys`` x ``xs``."""
    u, v = np.floor(xs / FIELD_PX).astype(np.int64), np.floor(ys / FIELD_PX).astype(np.int64)
    cells = harness.hash_uniform(key, np.arange(v.min(), v.max() + 1)[:, None], np.arange(u.min(), u.max() + 1)[None])
    return cells[(v - v.min())[:, None], (u - u.min())[None, :]]


@dataclass
class Truth:
    water: np.ndarray  # open water on both dates (river, lakes)
    flood: np.ndarray  # water after the event only
    river_distance: np.ndarray = field(repr=False)  # |river noise - 0.5|


def truth_at(xs: np.ndarray, ys: np.ndarray, flood_level: float) -> Truth:
    r = np.abs(fbm(SEED + 1, xs, ys, RIVER_SCALES) - 0.5)
    water = (r < RIVER_HALF_WIDTH) | (fbm(SEED + 2, xs, ys, LAKE_SCALES) > LAKE_LEVEL)
    wet = fbm(SEED + 3, xs, ys, FLOOD_SCALES) - FLOOD_RIVER_PULL * r
    return Truth(water, ~water & (wet > flood_level), r)


def flood_level(size: int) -> float:
    """The level of the flood noise above which FLOOD_SHARE of the land of a size x size scene floods."""
    pts = (np.arange(CALIBRATION_POINTS) + 0.5) * size / CALIBRATION_POINTS
    t = truth_at(pts, pts, np.inf)
    wet = fbm(SEED + 3, pts, pts, FLOOD_SCALES) - FLOOD_RIVER_PULL * t.river_distance
    return float(np.quantile(wet[~t.water], 1.0 - FLOOD_SHARE))


def block_coords(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(x0, x0 + w) + 0.5, np.arange(y0, y0 + h) + 0.5


def write_pair(pre_path: Path, post_path: Path, size: int, level: float) -> float:
    """Write the pre- and post-event rasters (see the module docstring), under temporary names renamed when
    complete; returns the seconds it took."""
    from osgeo import gdal

    t0 = time.perf_counter()
    opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_SAFER", "COMPRESS=DEFLATE", "ZLEVEL=1",
            "PREDICTOR=3", "NUM_THREADS=ALL_CPUS", "INTERLEAVE=BAND"]  # fmt: skip
    tmps = [p.with_name(p.stem + ".part.tif") for p in (pre_path, post_path)]
    dss = [harness.create_geotiff(t, size, 2, gdal.GDT_Float32, opts) for t in tmps]
    for ds in dss:
        for b, name in ((1, "VV"), (2, "VH")):
            band = ds.GetRasterBand(b)
            band.SetDescription(name)
            band.SetNoDataValue(0.0)
            band.SetUnitType("linear")
    for y0 in range(0, size, GEN_BLOCK):
        for x0 in range(0, size, GEN_BLOCK):
            w, h = min(GEN_BLOCK, size - x0), min(GEN_BLOCK, size - y0)
            xs, ys = block_coords(x0, y0, w, h)
            t = truth_at(xs, ys, level)
            land_vv = LAND_VV_DB + LAND_VV_SPREAD * (field_values(SEED + 10, xs, ys) - 0.5)
            land_vh = LAND_VH_DB + LAND_VH_SPREAD * (field_values(SEED + 11, xs, ys) - 0.5)
            change = FIELD_CHANGE_DB * (field_values(SEED + 12, xs, ys) - 0.5)
            pre = (np.where(t.water, WATER_VV_DB, land_vv), np.where(t.water, WATER_VH_DB, land_vh))
            wet = t.water | t.flood
            post = (np.where(wet, WATER_VV_DB, land_vv + change), np.where(wet, WATER_VH_DB, land_vh + change))
            for i, (ds, dbs) in enumerate(zip(dss, (pre, post))):
                for b, db in enumerate(dbs):
                    rng = np.random.default_rng([SEED, i, b, y0, x0])
                    speckle = rng.standard_gamma(LOOKS, size=(h, w), dtype=np.float32) / np.float32(LOOKS)
                    linear = np.power(np.float32(10.0), db.astype(np.float32) * np.float32(0.1)) * speckle
                    ds.GetRasterBand(b + 1).WriteArray(linear, x0, y0)
        for ds in dss:
            ds.FlushCache()  # write and drop this row of blocks: memory stays one block row
    dss = None
    for tmp, path in zip(tmps, (pre_path, post_path)):
        os.replace(tmp, path)
        Path(str(tmp) + ".aux.xml").unlink(missing_ok=True)
    return time.perf_counter() - t0


def pair(cache: Path, size: int) -> tuple[Path, Path, float, float | None]:
    """The cached pair of ``size``: (pre, post, flood level, generation seconds or None when cached)."""
    pre = cache / f"flood_{size}_v{GEN_VERSION}_pre.tif"
    post = cache / f"flood_{size}_v{GEN_VERSION}_post.tif"
    level = flood_level(size)
    if pre.exists() and post.exists():
        return pre, post, level, None
    print(f"  ... generating the {size}x{size} pair", file=sys.stderr, flush=True)
    return pre, post, level, write_pair(pre, post, size, level)


@dataclass
class Agreement:
    flood_iou: float
    flood_ratio: float  # mapped flood / true flood
    water_iou: float
    true_flood_share: float  # of the land


def agreement(classes: Path, size: int, level: float) -> Agreement:
    """The class raster against the generator's truth, block by block."""
    from osgeo import gdal

    from sar_seg_plugin.core import flood

    ds = gdal.Open(str(classes))
    band = ds.GetRasterBand(1)
    n = np.zeros(7, np.int64)  # flood: and, or, got, truth; water: and, or; land
    for y0 in range(0, size, GEN_BLOCK):
        for x0 in range(0, size, GEN_BLOCK):
            w, h = min(GEN_BLOCK, size - x0), min(GEN_BLOCK, size - y0)
            t = truth_at(*block_coords(x0, y0, w, h), level)
            got = band.ReadAsArray(x0, y0, w, h)
            ok = got != flood.NODATA
            g_flood, t_flood = (got == flood.FLOODED) & ok, t.flood & ok
            g_water, t_water = (got == flood.PERMANENT_WATER) & ok, t.water & ok
            n += [(g_flood & t_flood).sum(), (g_flood | t_flood).sum(), g_flood.sum(), t_flood.sum(),
                  (g_water & t_water).sum(), (g_water | t_water).sum(), (~t.water & ok).sum()]  # fmt: skip
        ds.FlushCache()
    return Agreement(n[0] / max(n[1], 1), n[2] / max(n[3], 1), n[4] / max(n[5], 1), n[3] / max(n[6], 1))


# --- The core in a child process ----------------------------------------------------------------------------------


PHASES = ("thresholds", "classes", "sieve", "copy")  # ends: first threshold logged, progress 70, 85, 100


def rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmRSS:")), 0.0)


def run_flood(post: str, pre: str, out: str) -> dict:
    from sar_seg_plugin.core import flood

    phases: dict[str, list[float]] = {}

    def mark(name: str) -> None:
        if name not in phases:
            phases[name] = [time.perf_counter() - t0, harness.peak_rss_mb(), rss_now_mb()]

    def log(message: str) -> None:
        if message.startswith("water threshold"):
            mark(PHASES[0])

    def progress(percent: float) -> None:
        for name, end in zip(PHASES[1:], (70.0, 85.0, 100.0)):
            if percent >= end - 1e-9:
                mark(name)

    c0, t0 = harness.cpu_seconds(), time.perf_counter()
    result = flood.flood_map(post, out, pre=pre, progress=progress, log=log)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "cpu_seconds": harness.cpu_seconds() - c0,
        "counts": result.counts,
        "thresholds": [[t.name, t.value, t.tiles_used, t.tiles_tried] for t in result.thresholds],
        "phases": phases,
    }


def run_polygonize(classes: str, out: str) -> dict:
    from sar_seg_plugin.core import flood

    c0, t0 = harness.cpu_seconds(), time.perf_counter()
    count = flood.polygonize(classes, out)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": harness.cpu_seconds() - c0, "polygons": count}


def child_main(args: argparse.Namespace) -> int:
    params = json.loads(args.child_params) if args.child_params else {}
    if args.child == "flood":
        return harness.child_report(lambda: run_flood(params["post"], params["pre"], params["out"]))
    if args.child == "polygonize":
        return harness.child_report(lambda: run_polygonize(params["classes"], params["out"]))

    def imports_only() -> dict:
        from sar_seg_plugin.core import flood  # noqa: F401 - what a run imports, measured without a run

        return {}

    return harness.child_report(imports_only)


def measure(kind: str, params: dict, env: dict[str, str] | None = None) -> dict:
    return harness.run_child(__file__, ["--child", kind, "--child-params", json.dumps(params)], env)


# --- Sections -----------------------------------------------------------------------------------------------------


@dataclass
class Results:
    baseline_mb: float = 0.0
    flood: dict[int, dict] = field(default_factory=dict)
    polygonize: dict[int, dict] = field(default_factory=dict)
    capped_flood: dict[int, dict] = field(default_factory=dict)
    capped_polygonize: dict[int, dict] = field(default_factory=dict)


def section_flood(args: argparse.Namespace, work: Path, pairs: dict, res: Results) -> None:
    harness.heading("1. flood_map(post, out, pre=pre): seconds, MP/s, peak RSS, one subprocess per run")
    rows, thresholds = [], []
    for size, (pre, post, level) in pairs.items():
        out = work / f"flood_{size}.tif"
        r = measure("flood", {"post": str(post), "pre": str(pre), "out": str(out)})
        res.flood[size] = r
        a = agreement(out, size, level)
        r["agreement"] = a
        px = size * size
        rows.append([f"{size}x{size}", f"{px / 1e6:.2f}", f"{r['seconds']:.1f}", f"{harness.mps(px, r['seconds']):.2f}",
                     f"{r['cpu_seconds'] / r['seconds']:.2f}", f"{r['maxrss_mb']:.0f}", f"{r['polled_rss_mb']:.0f}",
                     f"{r['maxrss_mb'] - res.baseline_mb:+.0f}", f"{a.flood_iou:.3f}", f"{a.flood_ratio:.3f}",
                     f"{a.water_iou:.3f}"])  # fmt: skip
        thresholds.append([f"{size}x{size}"] + [f"{v:.2f} ({used}/{tried})" for _, v, used, tried in r["thresholds"]])
        shares = ", ".join(f"{k} {v / px:.1%}" for k, v in r["counts"].items())
        print(f"  ... {size}x{size}: {r['seconds']:.1f} s, {r['maxrss_mb']:.0f} MB; {shares}", file=sys.stderr)
    harness.table(["pair", "MP", "seconds", "MP/s", "CPU/wall", "peak RSS MB", "polled MB", "vs baseline",
                   "flood IoU", "flood/truth", "water IoU"], rows)  # fmt: skip
    print()
    names = [t[0] for t in next(iter(res.flood.values()))["thresholds"]]
    harness.table(["pair", *[f"{n}, dB (tiles used/tried)" for n in names]], thresholds)
    print()
    print_phases(res.flood)
    true_share = next(iter(res.flood.values()))["agreement"].true_flood_share
    print(
        f"Defaults: Kittler-Illingworth, smoothing 3x3, minimum mapping unit 1000 m². MP/s = N² / seconds / 1e6 "
        "(one pair of N x N images, VV and VH read from each, thresholded on their mean in dB).\npeak RSS: VmHWM "
        "of the child (QGIS start-up + one "
        "flood_map); polled MB: RSS sampled every 20 ms from this process (a lower bound); vs baseline: minus the "
        f"baseline child.\nflood IoU: class 1 (flooded) against the generator's flood (about {true_share:.1%} of the "
        "land); flood/truth: mapped over true flooded pixels; water IoU: class 2 (permanent water) against the "
        "river and lakes. Generator levels: water VV -20 dB; land -11 +- 2 dB; a flood's drop about 9 dB."
    )


def print_phases(runs: dict[int, dict], label: str = "") -> None:
    """Seconds of each phase of flood_map, with the child's peak and current RSS at its end."""
    rows = []
    for size, r in runs.items():
        row, previous = [f"{size}x{size}{label}"], 0.0
        for name in PHASES:
            at = r["phases"].get(name)
            if at is None:
                row.append("-")
                continue
            row.append(f"{at[0] - previous:.1f} s, {at[1]:.0f}/{at[2]:.0f}")
            previous = at[0]
        rows.append(row)
    harness.table(["pair", *[f"{name}: s, peak/now MB" for name in PHASES]], rows)
    print(
        "Phases of flood_map: thresholds (pass 1: windows read, smoothed, split-based thresholds, until the first "
        "threshold is logged), classes (pass 2: blocks classified into the scratch raster, progress 70 %), sieve "
        "(minimum mapping unit, 85 %), copy (into the compressed output, counting the classes, 100 %); peak/now: "
        "the child's VmHWM and VmRSS at the end of the phase."
    )


def section_polygonize(args: argparse.Namespace, work: Path, pairs: dict, res: Results) -> None:
    harness.heading("2. polygonize(classes, out.gpkg) of the flooded class: seconds, polygons, peak RSS")
    rows = []
    for size in pairs:
        classes = work / f"flood_{size}.tif"
        gpkg = work / f"flood_{size}.gpkg"
        r = measure("polygonize", {"classes": str(classes), "out": str(gpkg)})
        res.polygonize[size] = r
        px = size * size
        rows.append([f"{size}x{size}", f"{px / 1e6:.2f}", f"{r['seconds']:.1f}", f"{harness.mps(px, r['seconds']):.2f}",
                     f"{r['polygons']:,}", f"{gpkg.stat().st_size / 2**20:.1f}", f"{r['maxrss_mb']:.0f}",
                     f"{r['polled_rss_mb']:.0f}", f"{r['maxrss_mb'] - res.baseline_mb:+.0f}"])  # fmt: skip
        print(f"  ... polygonize {size}x{size}: {r['seconds']:.1f} s, {r['maxrss_mb']:.0f} MB", file=sys.stderr)
        gpkg.unlink(missing_ok=True)
    harness.table(["class raster", "MP", "seconds", "MP/s", "polygons", "GPKG MB", "peak RSS MB", "polled MB",
                   "vs baseline"], rows)  # fmt: skip
    if not args.no_capped:
        env = {"GDAL_CACHEMAX": str(CAPPED_CACHE_MB)}
        rows = []
        for size in sorted({min(pairs), max(pairs)}):
            pre, post, _ = pairs[size]
            out = work / f"flood_{size}_capped.tif"
            gpkg = work / f"flood_{size}_capped.gpkg"
            flood_run = measure("flood", {"post": str(post), "pre": str(pre), "out": str(out)}, env)
            poly_run = measure("polygonize", {"classes": str(work / f"flood_{size}.tif"), "out": str(gpkg)}, env)
            res.capped_flood[size], res.capped_polygonize[size] = flood_run, poly_run
            out.unlink(missing_ok=True)
            gpkg.unlink(missing_ok=True)
            for what, default, capped in (("flood_map", res.flood[size], flood_run),
                                          ("polygonize", res.polygonize[size], poly_run)):  # fmt: skip
                rows.append([what, f"{size}x{size}", f"{default['seconds']:.1f}", f"{capped['seconds']:.1f}",
                             f"{default['maxrss_mb']:.0f}", f"{capped['maxrss_mb']:.0f}",
                             f"{default['maxrss_mb'] - capped['maxrss_mb']:+.0f}"])  # fmt: skip
        print()
        print(f"The smallest and largest runs again with GDAL_CACHEMAX={CAPPED_CACHE_MB} (MB):")
        harness.table(["run", "raster", "seconds", f"s, cache {CAPPED_CACHE_MB}", "peak RSS MB",
                       f"MB, cache {CAPPED_CACHE_MB}", "difference"], rows)  # fmt: skip
        print()
        print_phases(res.capped_flood, f", cache {CAPPED_CACHE_MB}")
    print(
        "polygonize writes a DEFLATE mask of the class, GDAL-polygonizes it into a GeoPackage in one transaction and "
        "sets each polygon's area.\npeak RSS: VmHWM of the child (QGIS start-up + one polygonize); the GDAL block "
        "cache in the children is GDAL's default unless said (GDAL_CACHEMAX="
        f"{os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
    )


def section_targets(res: Results) -> None:
    harness.heading("3. Targets")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = []
    big, small = max(res.flood), min(res.flood)
    for what, runs in (("flood_map", res.flood), ("polygonize", res.polygonize)):
        if big in runs:
            r = runs[big]
            rows.append([f"Peak RSS, {what}, {big}²", f"< {TARGET_PEAK_RSS_MB:g} MB", f"{r['maxrss_mb']:.0f} MB",
                         verdict(r["maxrss_mb"] < TARGET_PEAK_RSS_MB)])  # fmt: skip
    for what, runs in (("flood_map", res.flood), ("polygonize", res.polygonize)):
        if big in runs and small in runs and big != small:
            growth = runs[big]["maxrss_mb"] - runs[small]["maxrss_mb"]
            rows.append([f"RSS flat, {what}: growth {small}² -> {big}² ({(big / small) ** 2:.0f}x pixels)",
                         f"< {TARGET_RSS_GROWTH_MB:g} MB", f"{growth:+.0f} MB",
                         verdict(growth < TARGET_RSS_GROWTH_MB)])  # fmt: skip
    for what, runs in (("flood_map", res.capped_flood), ("polygonize", res.capped_polygonize)):
        if big in runs and small in runs and big != small:
            growth = runs[big]["maxrss_mb"] - runs[small]["maxrss_mb"]
            rows.append([f"RSS growth, {what}, {small}² -> {big}², GDAL_CACHEMAX={CAPPED_CACHE_MB} (info)", "-",
                         f"{growth:+.0f} MB", ""])  # fmt: skip
    for size, r in res.flood.items():
        rows.append([f"flood_map, {size}² (info)", "-", f"{r['seconds']:.1f} s, "
                     f"{harness.mps(size * size, r['seconds']):.2f} MP/s, flood IoU {r['agreement'].flood_iou:.3f}",
                     ""])  # fmt: skip
    harness.table(["target", "goal", "measured", "result"], rows)
    if big != 10000:
        print(f"(The targets are stated for 10,000² rasters; these runs went up to {big}².)")


# --- Main ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small pairs (1000, 2000, 4000), for a check in a minute")
    p.add_argument("--sizes", help="comma-separated sides of the pairs (default 2500,5000,10000)")
    p.add_argument("--no-capped", action="store_true", help=f"no rerun with GDAL_CACHEMAX={CAPPED_CACHE_MB}")
    p.add_argument("--cache", default=str(CACHE), help="where generated inputs are kept (default bench/.cache/flood)")
    p.add_argument("--workdir", help="where to create the temporary work directory (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (class rasters)")
    p.add_argument("--child", choices=["baseline", "flood", "polygonize"], help=argparse.SUPPRESS)
    p.add_argument("--child-params", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sizes:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    else:
        args.sizes = list(QUICK_SIZES if args.quick else SIZES)
    if any(s < 256 for s in args.sizes):
        p.error("sizes must be at least 256 pixels")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work, t_start = harness.open_bench(
        "SAR Seg flood mapping benchmark", "sarseg-floodbench-", args.workdir, f"; inputs cached in {cache}"
    )
    print(f"Load average before: {harness.load_average()}")
    res = Results()
    try:
        pairs, gens = {}, []
        for size in args.sizes:
            pre, post, level, gen = pair(cache, size)
            pairs[size] = (pre, post, level)
            if gen is not None:
                gens.append(f"{size}x{size} in {gen:.1f} s")
        mb = sum(p.stat().st_size for pre, post, _ in pairs.values() for p in (pre, post)) / 2**20
        print(
            f"Pairs: {', '.join(f'{s}x{s}' for s in pairs)} px, VV/VH float32 linear power, 10 m, EPSG:32631, "
            f"tiled 256, DEFLATE ({mb:.0f} MB in all); "
            + ("cached" if not gens else "generated " + ", ".join(gens) + " (not measured)")
            + "."
        )
        base = harness.run_child(__file__, ["--child", "baseline"])
        res.baseline_mb = float(base["maxrss_mb"])
        print(
            f"Baseline (QGIS started, flood module imported, no run): peak RSS {res.baseline_mb:.0f} MB. GDAL block "
            f"cache limit in the children: {base['gdal_cachemax_mb']:.0f} MB "
            f"(GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
        )
        section_flood(args, work, pairs, res)
        section_polygonize(args, work, pairs, res)
        section_targets(res)
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
