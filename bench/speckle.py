#!/usr/bin/env python3
"""Speckle filter benchmark: throughput, peak memory and a side-by-side run with Orfeo ToolBox.

Every SAR Seg figure is measured through the Processing algorithm ``sarseg:speckle_filter`` run headless
(``processing.run`` in a plain Python process), on synthetic linear-power SAR rasters: piecewise-constant
regions (rotated cells, -22..-2 dB, a few bright point targets) times Gamma(L, 1/L) speckle, written
tile by tile with GDAL from a fixed seed.

Sections, in order:

1. throughput of each of the 8 filters on a two-band raster (default 4096 x 4096, window 7, 4.4 looks);
2. peak RSS of single-band Lee 7x7 runs on growing rasters (5000², 10000², 20000²), each in its own
   subprocess, next to a bare QGIS + Processing process;
3. Orfeo ToolBox ``otbcli_Despeckle`` (Lee, Frost, Gamma-MAP, Kuan) against the same filters on the same
   single band: time, speed ratio and the largest differences, whole image and interior;
4. a summary of the targets with PASS / FAIL.

Usage: ``.venv/bin/python bench/speckle.py [--quick] [--size N] [--rss-sizes 5000,10000,20000]
[--skip-rss] [--skip-otb] [--filters lee,kuan] [--workdir DIR] [--keep]``. ``make bench`` runs it with
the defaults (about 5 minutes on two cores). Exit status 0 whatever the figures: it measures, it does
not test.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from harness import (
    best_of,
    child_report,
    cpu_seconds,
    heading,
    make_raster,
    mps,
    open_bench,
    run_child,
    scene_block,
    start_qgis,
    table,
)

from sar_seg_plugin.core import speckle  # numpy/scipy only, no qgis

ALGORITHM = "sarseg:speckle_filter"
OTB_APP = "otbcli_Despeckle"
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


FILTERS: tuple[str, ...] = speckle.FILTERS
WINDOW = 7
LOOKS = 4.4
DAMPING = 2.0
SIGMA = 0.9
SEED = 20240917

# Targets of the summary.
TARGET_LEE_MPS_PER_BAND = 8.0
TARGET_OTB_RATIO = 1.0
TARGET_OTB_REL_DIFF = 1e-5
TARGET_PEAK_RSS_MB = 500.0
TARGET_RSS_SIZE = 20000

# Our filter name -> (OTB filter name, extra OTB arguments). The radius is window // 2.
OTB_FILTERS: dict[str, tuple[str, list[str]]] = {
    "lee": ("lee", ["-filter.lee.nblooks", str(LOOKS)]),
    "frost": ("frost", ["-filter.frost.deramp", str(DAMPING)]),
    "gamma_map": ("gammamap", ["-filter.gammamap.nblooks", str(LOOKS)]),
    "kuan": ("kuan", ["-filter.kuan.nblooks", str(LOOKS)]),
}


# --- Synthetic SAR rasters --------------------------------------------------------------------------


def single_band_copy(src: Path, dst: Path, band: int = 1) -> None:
    """Copy one band of a raster to an uncompressed tiled GeoTIFF (same layout as the source)."""
    from osgeo import gdal

    opts = gdal.TranslateOptions(
        bandList=[band], creationOptions=["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=NONE"]
    )
    if gdal.Translate(str(dst), str(src), options=opts) is None:
        raise RuntimeError(f"cannot copy band {band} of {src}: {gdal.GetLastErrorMsg()}")


# --- QGIS headless ----------------------------------------------------------------------------------


def run_algorithm(src: Path, dst: Path, name: str) -> tuple[float, float]:
    """``processing.run("sarseg:speckle_filter")`` once; returns (wall seconds, CPU seconds of the process)."""
    from qgis.core import QgsProcessingFeedback

    run = start_qgis()
    params = {
        "INPUT": str(src),
        "FILTER": FILTERS.index(name),
        "WINDOW": WINDOW,
        "LOOKS": LOOKS,
        "ESTIMATE_LOOKS": False,
        "DAMPING": DAMPING,
        "SIGMA": SIGMA,
        "INPUT_SCALE": 0,
        "OUTPUT": str(dst),
    }
    feedback = QgsProcessingFeedback(False)
    c0, t0 = cpu_seconds(), time.perf_counter()
    run(ALGORITHM, params, feedback=feedback)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if not dst.exists():
        raise RuntimeError(f"{ALGORITHM} ({name}) wrote no output {dst}")
    return wall, cpu


# --- Child processes (peak RSS) ---------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a measuring subprocess: print one JSON line and exit."""

    def measure() -> dict:
        wall, cpu = run_algorithm(Path(args.child_input), Path(args.child_output), args.child_filter)
        return {"seconds": wall, "cpu_seconds": cpu}

    return child_report(measure if args.child == "run" else None)


# --- Orfeo ToolBox ------------------------------------------------------------------------------------


@dataclass
class OtbRun:
    seconds: float
    cpu_seconds: float
    threads_logged: str
    bands_out: int


def run_otb(src: Path, dst: Path, name: str, threads: str | None, out_options: str = "") -> OtbRun:
    """``otbcli_Despeckle`` on ``src``; ``threads`` None keeps the environment's default."""
    otb_name, extra = OTB_FILTERS[name]
    radius = str(WINDOW // 2)
    cmd = [OTB_APP, "-in", str(src), "-out", str(dst) + out_options, "float", "-filter", otb_name]
    cmd += [f"-filter.{otb_name}.rad", radius, *extra]
    env = dict(os.environ)
    if threads is not None:
        env[ITK_THREADS_ENV] = threads
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not dst.exists():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    log = proc.stdout + proc.stderr
    m = re.search(r"use at most (\d+) threads", log)
    from osgeo import gdal

    ds = gdal.Open(str(dst))
    bands_out = ds.RasterCount
    ds = None
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return OtbRun(wall, cpu, m.group(1) if m else "?", bands_out)


def read_band(path: Path, band: int = 1) -> np.ndarray:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    arr = ds.GetRasterBand(band).ReadAsArray().astype(np.float64)
    ds = None
    return arr


@dataclass
class Diff:
    max_abs: float
    max_rel: float
    n_rel_over: int  # pixels with relative difference above the agreement target
    n_pixels: int


def compare(ours: np.ndarray, ref: np.ndarray) -> Diff:
    both = np.isfinite(ours) & np.isfinite(ref)
    a = np.abs(ours - ref)
    rel = a / np.maximum(np.abs(ref), 1e-30)
    mismatched_nan = int((np.isfinite(ours) != np.isfinite(ref)).sum())
    return Diff(
        max_abs=float(a[both].max()) if both.any() else float("nan"),
        max_rel=float(rel[both].max()) if both.any() else float("nan"),
        n_rel_over=int((rel[both] > TARGET_OTB_REL_DIFF).sum()) + mismatched_nan,
        n_pixels=int(ours.size),
    )


# --- Printing -----------------------------------------------------------------------------------------


def label(name: str) -> str:
    return speckle.FILTER_LABELS[name]


# --- Sections -----------------------------------------------------------------------------------------


@dataclass
class Results:
    lee_band_mps: float | None = None
    otb_ratio: float | None = None
    otb_agreement: dict[str, float] = field(default_factory=dict)
    rss: dict[int, float] = field(default_factory=dict)


def core_mps(name: str, n: int = 1024) -> float:
    """Single-thread in-memory speed of the core filter (no I/O, no blocks): MP/s on an n x n array."""
    x = (scene_block(0, 0, n, n, 1, SEED) * np.random.default_rng(1).gamma(LOOKS, 1 / LOOKS, (n, n))).astype(np.float32)
    kw = {"window": WINDOW, "looks": LOOKS, "damping": DAMPING, "sigma": SIGMA}
    speckle.apply_filter(name, x[:64, :64], None, **kw)  # warm caches (Lee Sigma's range, imports)
    t0 = time.perf_counter()
    speckle.apply_filter(name, x, None, **kw)
    return mps(n * n, time.perf_counter() - t0)


def section_throughput(args: argparse.Namespace, work: Path, res: Results) -> None:
    size, bands = args.size, 2
    heading(f"1. Throughput per filter: {size}x{size} x {bands} bands float32, window {WINDOW}, {LOOKS} looks")
    src = work / f"tp_{size}.tif"
    gen = make_raster(src, size, bands, SEED)
    print(
        f"Input: {src.name}, tiled 256x256, uncompressed, generated in {gen:.1f} s (not measured); "
        f"the plugin's pre-pass (check_has_data) on it takes {prepass_seconds(src):.2f} s."
    )
    # Warm-up: imports, thread pool and allocator growth happen once, outside the timings.
    warm = work / "warm.tif"
    make_raster(warm, 256, 1, SEED)
    run_algorithm(warm, work / "warm_out.tif", "lee")
    rows = []
    for name in args.filters:
        dst = work / f"tp_{size}_{name}.tif"
        wall, cpu = best_of(args.repeat, lambda name=name, dst=dst: run_algorithm(src, dst, name))
        band_mps = mps(size * size * bands, wall)
        if name == "lee":
            res.lee_band_mps = band_mps
        rows.append(
            [
                label(name),
                f"{wall:.2f}",
                f"{band_mps:.2f}",
                f"{mps(size * size, wall):.2f}",
                f"{cpu / wall:.2f}",
                f"{core_mps(name):.2f}",
            ]
        )
        if not args.keep:
            dst.unlink()
        print(f"  ... {label(name)}: {wall:.2f} s", file=sys.stderr, flush=True)
    table(["filter", "seconds", "MP/s per band", "MP/s per raster", "CPU/wall", "core 1-thread MP/s"], rows)
    workers = max(1, min(4, os.cpu_count() or 1))
    print(
        f"seconds: best of {args.repeat} run(s) of processing.run('{ALGORITHM}'), end to end (pre-pass, block reads, "
        f"filter on {workers} worker threads, DEFLATE-compressed tiled output).\n"
        f"MP/s per band = {size}*{size}*{bands} / seconds / 1e6; MP/s per raster = {size}*{size} / seconds / 1e6.\n"
        "CPU/wall: process CPU time over wall time (2.0 = both cores busy). core 1-thread MP/s: "
        "speckle.apply_filter alone on an in-memory 1024x1024 array, one thread, no I/O."
    )
    if res.lee_band_mps is not None:
        print(f"Lee 7x7: {res.lee_band_mps:.2f} MP/s per band (target >= {TARGET_LEE_MPS_PER_BAND:g}).")


def section_rss(args: argparse.Namespace, work: Path, res: Results) -> None:
    heading(f"2. Peak RSS against raster size: single-band Lee {WINDOW}x{WINDOW}, one subprocess per run")
    env = dict(os.environ)
    base = run_child(__file__, ["--child", "baseline"])
    print(
        f"Baseline (QGIS + Processing + sarseg provider started, no run): peak RSS {base['maxrss_mb']:.0f} MB.\n"
        f"GDAL block cache limit in the children: {base['gdal_cachemax_mb']:.0f} MB "
        f"(GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
    )
    rows = []
    sizes = list(args.rss_sizes)
    for i, size in enumerate(sizes):
        src = work / f"rss_{size}.tif"
        dst = work / f"rss_{size}_lee.tif"
        gen = make_raster(src, size, 1, SEED, compress=args.rss_compress)
        print(f"  ... generated {size}x{size} in {gen:.1f} s", file=sys.stderr, flush=True)
        pre = prepass_seconds(src)
        runs = [("", env)]
        if i == len(sizes) - 1 and args.cache_diagnostic:
            runs.append(
                (f" GDAL_CACHEMAX={args.cache_diagnostic}", {**env, "GDAL_CACHEMAX": str(args.cache_diagnostic)})
            )
        for suffix, run_env in runs:
            child = ["--child", "run", "--child-input", str(src), "--child-output", str(dst), "--child-filter", "lee"]
            r = run_child(__file__, child, run_env)
            if not suffix:
                res.rss[size] = float(r["maxrss_mb"])
            rows.append(
                [
                    f"{size}x{size}{suffix}",
                    f"{size * size / 1e6:.0f}",
                    f"{src.stat().st_size / 2**20:.0f}",
                    f"{r['maxrss_mb']:.0f}",
                    f"{r['polled_rss_mb']:.0f}",
                    f"{r['maxrss_mb'] - base['maxrss_mb']:+.0f}",
                    f"{r['seconds']:.1f}",
                    f"{mps(size * size, r['seconds']):.2f}",
                    f"{r['cpu_seconds'] / r['seconds']:.2f}",
                    f"{pre:.1f}",
                ]
            )
            print(f"  ... {size}x{size}{suffix}: {r['maxrss_mb']:.0f} MB, {r['seconds']:.1f} s", file=sys.stderr)
            dst.unlink()
        if not args.keep:
            src.unlink()
    table(
        [
            "raster",
            "MP",
            "input MB",
            "peak RSS MB",
            "polled MB",
            "vs baseline",
            "seconds",
            "MP/s",
            "CPU/wall",
            "pre-pass s",
        ],
        rows,
    )
    print(
        f"Inputs: single band float32, tiled 256x256, COMPRESS={args.rss_compress}"
        f"{' (PREDICTOR=3, ZLEVEL=1)' if args.rss_compress != 'NONE' else ''}; generation not timed.\n"
        "peak RSS: VmHWM of the child (QGIS start-up + one processing.run); ru_maxrss is not used because Linux "
        "carries the parent's peak into a child's ru_maxrss across exec. polled MB: RSS sampled every 20 ms "
        "from this process (a lower bound, a cross-check). seconds/MP/s: processing.run alone, pre-pass "
        "included; pre-pass s: the plugin's check_has_data on that input, timed separately.\n"
        + (
            f"The last row repeats the largest raster with GDAL_CACHEMAX={args.cache_diagnostic} (MB) to show "
            "how much of the peak is GDAL's block cache."
            if args.cache_diagnostic
            else ""
        )
    )


def prepass_seconds(src: Path) -> float:
    """Time of the statistics pre-pass that speckle_filter_raster does before filtering."""
    from sar_seg_plugin.core.preprocess import check_has_data
    from sar_seg_plugin.core.raster_io import open_raster, read_info

    t0 = time.perf_counter()
    ds = open_raster(src)
    check_has_data(ds, read_info(ds))
    ds = None
    return time.perf_counter() - t0


def section_otb(args: argparse.Namespace, work: Path, res: Results, two_band: Path | None) -> None:
    size = args.size
    heading(f"3. Side by side with Orfeo ToolBox ({OTB_APP}), band 1 of the {size}x{size} raster")
    if shutil.which(OTB_APP) is None:
        print(f"{OTB_APP} not found: install it with `bash scripts/setup.sh otb-bin`. Section skipped.")
        return
    if two_band is None or not two_band.exists():
        two_band = work / f"tp_{size}.tif"
        make_raster(two_band, size, 2, SEED)
    one = work / f"otb_in_{size}.tif"
    single_band_copy(two_band, one)
    help_run = subprocess.run([OTB_APP, "-help"], capture_output=True, text=True)
    version = help_run.stdout + help_run.stderr
    m = re.search(r"version ([\d.]+)", version)
    default_threads = os.environ.get(ITK_THREADS_ENV)
    print(
        f"OTB {m.group(1) if m else '?'}; {ITK_THREADS_ENV} in this environment: "
        f"{default_threads if default_threads is not None else '(unset: ITK picks the thread count)'}; "
        f"{os.cpu_count()} CPUs."
    )

    # OTB on the two-band raster: how many bands does it filter?
    probe = work / "otb_probe.tif"
    probe_run = run_otb(two_band, probe, "lee", None)
    print(
        f"OTB on the two-band input writes {probe_run.bands_out} band(s): Despeckle filters band 1 only "
        "(it extracts channel 1), so both tools are timed on a single-band copy of band 1."
        if probe_run.bands_out == 1
        else f"OTB on the two-band input writes {probe_run.bands_out} bands: it filters every band."
    )
    probe.unlink()
    tiny = work / "otb_tiny.tif"
    make_raster(tiny, 64, 1, SEED)
    tiny_run = run_otb(tiny, work / "otb_tiny_out.tif", "lee", None)
    print(f"OTB process start-up + 64x64 run: {tiny_run.seconds:.2f} s (included in the OTB times below).")

    npx = size * size
    rows = []
    diff_rows = []
    ours_lee_wall = None
    variants: list[tuple[str, OtbRun]] = []
    for name in [f for f in OTB_FILTERS if f in args.filters]:
        ours_path = work / f"ours_{name}.tif"
        otb_path = work / f"otb_{name}.tif"
        wall, cpu = best_of(args.repeat, lambda name=name, dst=ours_path: run_algorithm(one, dst, name))
        o = min((run_otb(one, otb_path, name, None) for _ in range(max(1, args.repeat))), key=lambda t: t.seconds)
        ratio = o.seconds / wall  # = (ours MP/s) / (OTB MP/s)
        if name == "lee":
            ours_lee_wall = wall
            res.otb_ratio = ratio
        rows.append(
            [
                label(name),
                f"{wall:.2f}",
                f"{mps(npx, wall):.2f}",
                f"{cpu / wall:.2f}",
                f"{o.seconds:.2f}",
                f"{mps(npx, o.seconds):.2f}",
                f"{o.cpu_seconds / o.seconds:.2f}",
                o.threads_logged,
                f"{ratio:.2f}",
            ]
        )
        ours, ref = read_band(ours_path), read_band(otb_path)
        b = WINDOW // 2
        whole, inner = compare(ours, ref), compare(ours[b:-b, b:-b], ref[b:-b, b:-b])
        res.otb_agreement[name] = inner.max_rel
        diff_rows.append(
            [
                label(name),
                f"{whole.max_abs:.3g}",
                f"{whole.max_rel:.3g}",
                f"{whole.n_rel_over}",
                f"{inner.max_abs:.3g}",
                f"{inner.max_rel:.3g}",
                f"{inner.n_rel_over}",
            ]
        )
        if name == "lee":
            for threads in ("2", "1"):
                out = work / f"otb_lee_t{threads}.tif"
                t = min(
                    (run_otb(one, out, "lee", threads) for _ in range(max(1, args.repeat))), key=lambda t: t.seconds
                )
                variants.append((f"{ITK_THREADS_ENV}={threads}", t))
                out.unlink()
            deflate = "?&gdal:co:TILED=YES&gdal:co:COMPRESS=DEFLATE&gdal:co:PREDICTOR=3&gdal:co:ZLEVEL=1"
            out = work / "otb_lee_deflate.tif"
            variants.append(
                ("default threads, DEFLATE tiled output like ours", run_otb(one, out, "lee", None, deflate))
            )
            out.unlink()
        for p in (ours_path, otb_path):
            if not args.keep:
                p.unlink()
        print(f"  ... {label(name)}: ours {wall:.2f} s, OTB {o.seconds:.2f} s", file=sys.stderr, flush=True)

    print(f"\nTime on one band ({size}x{size} = {npx / 1e6:.1f} MP), window {WINDOW} (OTB radius {WINDOW // 2}):")
    table(
        [
            "filter",
            "SAR Seg s",
            "SAR Seg MP/s",
            "CPU/wall",
            "OTB s",
            "OTB MP/s",
            "CPU/wall",
            "OTB threads",
            "ratio ours/OTB",
        ],
        rows,
    )
    if ours_lee_wall is not None:
        print("\nOTB Lee, other settings (ratio against the SAR Seg Lee run above):")
        table(
            ["OTB run", "seconds", "MP/s", "CPU/wall", "OTB threads", "ratio ours/OTB"],
            [
                [
                    what,
                    f"{t.seconds:.2f}",
                    f"{mps(npx, t.seconds):.2f}",
                    f"{t.cpu_seconds / t.seconds:.2f}",
                    t.threads_logged,
                    f"{t.seconds / ours_lee_wall:.2f}",
                ]
                for what, t in variants
            ],
        )
    print(
        f"Best of {args.repeat} run(s) each. SAR Seg: processing.run in this process (QGIS already started), "
        f"{max(1, min(4, os.cpu_count() or 1))} worker threads, DEFLATE-compressed tiled output. OTB: a new "
        "process per run (start-up included), uncompressed output unless said, default -ram 256 MB.\n"
        "'OTB threads' is what OTB logs ('will use at most N threads'); CPU/wall is the measured parallelism."
    )
    print("\nLargest differences SAR Seg - OTB (relative = |ours - OTB| / |OTB|):")
    table(
        [
            "filter",
            "whole max abs",
            "whole max rel",
            f"whole px rel>{TARGET_OTB_REL_DIFF:g}",
            "interior max abs",
            "interior max rel",
            f"interior px rel>{TARGET_OTB_REL_DIFF:g}",
        ],
        diff_rows,
    )
    print(
        f"Interior: the image without its {WINDOW // 2}-pixel border. At the border OTB replicates edge pixels "
        "(zero-flux Neumann) while SAR Seg leaves outside-the-image pixels out of the statistics, so only the "
        "interior is expected to agree. Values are float32 (relative resolution ~6e-8)."
    )


def section_targets(args: argparse.Namespace, res: Results) -> None:
    heading("4. Targets")

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    rows = []
    v = res.lee_band_mps
    rows.append(
        [
            f"Lee {WINDOW}x{WINDOW} MP/s per band ({args.size}²)",
            f">= {TARGET_LEE_MPS_PER_BAND:g}",
            "not run" if v is None else f"{v:.2f}",
            verdict(None if v is None else v >= TARGET_LEE_MPS_PER_BAND),
        ]
    )
    v = res.otb_ratio
    rows.append(
        [
            "Lee speed ratio SAR Seg / OTB (default threads)",
            f">= {TARGET_OTB_RATIO:g}",
            "not run" if v is None else f"{v:.2f}",
            verdict(None if v is None else v >= TARGET_OTB_RATIO),
        ]
    )
    if res.otb_agreement:
        worst = max(res.otb_agreement, key=lambda k: res.otb_agreement[k])
        v = res.otb_agreement[worst]
        rows.append(
            [
                f"OTB agreement, interior max rel diff ({', '.join(label(k) for k in res.otb_agreement)})",
                f"<= {TARGET_OTB_REL_DIFF:g}",
                f"{v:.3g} ({label(worst)})",
                verdict(bool(v <= TARGET_OTB_REL_DIFF)),
            ]
        )
    else:
        rows.append(["OTB agreement, interior max rel diff", f"<= {TARGET_OTB_REL_DIFF:g}", "not run", verdict(None)])
    if res.rss:
        largest = max(res.rss)
        v = res.rss[largest]
        what = f"Peak RSS, Lee on {largest}²" + (
            "" if largest == TARGET_RSS_SIZE else f" (target is for {TARGET_RSS_SIZE}²)"
        )
        rows.append([what, f"< {TARGET_PEAK_RSS_MB:g} MB", f"{v:.0f} MB", verdict(v < TARGET_PEAK_RSS_MB)])
        smallest = min(res.rss)
        if largest != smallest:
            growth = res.rss[largest] - res.rss[smallest]
            rows.append(
                [
                    f"RSS flat: growth {smallest}² -> {largest}² ({(largest / smallest) ** 2:.0f}x pixels)",
                    "< 100 MB",
                    f"{growth:+.0f} MB",
                    verdict(growth < 100),
                ]
            )
    else:
        rows.append([f"Peak RSS, Lee on {TARGET_RSS_SIZE}²", f"< {TARGET_PEAK_RSS_MB:g} MB", "not run", verdict(None)])
    table(["target", "goal", "measured", "result"], rows)


# --- Main ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, help="side of the throughput / OTB raster (default 4096, --quick 1024)")
    p.add_argument(
        "--rss-sizes",
        help="comma-separated sides of the peak-RSS rasters (default 5000,10000,20000; --quick 1000,2000,4000)",
    )
    p.add_argument("--rss-compress", default="DEFLATE", choices=["DEFLATE", "NONE"], help="peak-RSS input compression")
    p.add_argument("--filters", default=",".join(FILTERS), help="comma-separated filters (default all 8)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per SAR Seg / OTB measurement; the best is kept")
    p.add_argument(
        "--cache-diagnostic",
        type=int,
        default=64,
        help="also run the largest peak-RSS raster with this GDAL_CACHEMAX in MB (0: do not)",
    )
    p.add_argument("--quick", action="store_true", help="small rasters, for a check in a minute")
    p.add_argument("--skip-throughput", action="store_true", help="skip section 1")
    p.add_argument("--skip-rss", action="store_true", help="skip section 2")
    p.add_argument("--skip-otb", action="store_true", help="skip section 3")
    p.add_argument("--workdir", help="where to create the temporary work directory (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and the rasters in it")
    # Internal: a measuring subprocess of section 2.
    p.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    p.add_argument("--child-filter", default="lee", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (1024 if args.quick else 4096)
    sizes = args.rss_sizes or ("1000,2000,4000" if args.quick else "5000,10000,20000")
    args.rss_sizes = [int(s) for s in sizes.split(",") if s.strip()]
    args.filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    unknown = [f for f in args.filters if f not in FILTERS]
    if unknown:
        p.error(f"unknown filter(s) {', '.join(unknown)}; choose from {', '.join(FILTERS)}")
    if args.size < 64:
        p.error("--size must be at least 64")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)

    work, t_start = open_bench("SAR Seg speckle benchmark", "sarseg-bench-", args.workdir)
    start_qgis()
    from qgis.core import Qgis

    print(f"QGIS {Qgis.version()}; algorithm {ALGORITHM}; window {WINDOW}, looks {LOOKS}, Frost damping {DAMPING}")
    res = Results()
    try:
        two_band = None
        if not args.skip_throughput:
            section_throughput(args, work, res)
            two_band = work / f"tp_{args.size}.tif"
        if not args.skip_rss:
            section_rss(args, work, res)
        if not args.skip_otb:
            section_otb(args, work, res, two_band)
        section_targets(args, res)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nTotal benchmark time {time.perf_counter() - t_start:.0f} s"
        + (f"; files kept in {work}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
