#!/usr/bin/env python3
"""Segmentation benchmark: the ``sarseg:segment`` algorithm against bare onnxruntime, and its peak memory.

The model ``sarseg:segment`` runs by default (the int8 copy ``sarseg_unet_vvvh_int8``, checked against the float32
``sarseg_unet_vvvh`` on tiles spread over the raster; VV/VH in dB, tiles and overlap from its metadata) runs on
synthetic two-band linear-power SAR rasters (the generator of ``bench/harness.py``, bands tagged unit "linear"
so the algorithm converts them to dB), written block by block with GDAL from a fixed seed.

Sections, in order:

1. bare onnxruntime on the same model and the same tiles the algorithm processes for a 4096 x 4096 raster
   (pre-read, converted to dB and normalised beforehand), in a plain loop, batch 1, 2 and 4;
2. the algorithm end to end, ``processing.run("sarseg:segment")`` in a headless QGIS (read, dB conversion,
   normalisation, inference, blending, write) on that raster, and its ratio to section 1;
3. peak RSS (VmHWM) of one subprocess per raster size (default 5000², 10000², 20000²) through the algorithm;
4. a summary of the targets with PASS / FAIL.

Usage: ``.venv/bin/python bench/segment.py [--quick] [--size N] [--rss-sizes 5000,10000,20000] [--skip-rss]
[--repeat 2] [--workdir DIR] [--keep] [--model NAME]``; ``--model sarseg_unet_vvvh`` measures the float32 model
(given to the algorithm as its model file, so unchecked) instead of the default.
Exit status 0 whatever the figures: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import harness  # the benchmarks' shared code; puts the project root on sys.path
import numpy as np

from sar_seg_plugin.core.radiometry import to_db
from sar_seg_plugin.core.tiling import batch_columns, tile_extent, tile_starts  # numpy only, no qgis
from sar_seg_plugin.models.registry import fast_segmentation_model, resolve_model

ALGORITHM = "sarseg:segment"
MODEL = fast_segmentation_model()  # what sarseg:segment runs by default (checked against float32 on each run)
SEED = 20240917
BATCH_SIZE = 1  # the algorithm's default BATCH_SIZE
BARE_BATCHES = (1, 2, 4)

TARGET_RATIO = 0.85
TARGET_MPS = 2.0  # end to end, default settings, on a 2-core machine
TARGET_PEAK_RSS_MB = 1024.0
TARGET_RSS_SIZE = 20000
TARGET_RSS_GROWTH_MB = 100.0


# --- Rasters ------------------------------------------------------------------------------------------


def make_sar_raster(path: Path, size: int, seed: int = SEED) -> float:
    """Two-band (VV, VH) float32 linear-power raster, tiled, uncompressed, units "linear"; returns seconds."""
    from osgeo import gdal

    t0 = time.perf_counter()
    harness.make_raster(path, size, 2, seed)
    ds = gdal.Open(str(path), gdal.GA_Update)
    for b in (1, 2):
        ds.GetRasterBand(b).SetUnitType("linear")
    ds = None
    return time.perf_counter() - t0


# --- Section 1: bare onnxruntime ------------------------------------------------------------------------


def ort_session():
    """An onnxruntime session opened like the plugin opens it (CPU, ORT_ENABLE_ALL, the plugin's thread count)."""
    import onnxruntime as ort

    from sar_seg_plugin.models.registry import default_threads

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = default_threads()
    return ort.InferenceSession(str(resolve_model(MODEL)), sess_options=options, providers=["CPUExecutionProvider"])


def model_metadata():
    from sar_seg_plugin.models.registry import load_model

    return load_model(MODEL, "cpu").metadata


def prepared_tiles(src: Path, meta) -> list[list[np.ndarray]]:
    """The tiles the algorithm feeds the model, per tile row: read, converted to dB, normalised, float32."""
    from osgeo import gdal

    tile, stride, multiple = meta.tile_size, meta.tile_size - meta.tile_overlap, meta.size_multiple
    ds = gdal.Open(str(src))
    width, height = ds.RasterXSize, ds.RasterYSize
    if width < tile or height < tile:
        raise SystemExit(f"--size must be at least the model tile ({tile})")
    ys, xs = tile_starts(height, tile, stride, multiple), tile_starts(width, tile, stride, multiple)
    rows = []
    for y0 in ys:
        th = tile_extent(y0, height, tile)
        data = np.stack([ds.GetRasterBand(b).ReadAsArray(0, y0, width, th) for b in (1, 2)]).astype(np.float32)
        data = meta.normalization.apply(np.stack([to_db(band) for band in data]))
        rows.append(
            [np.ascontiguousarray(data[:, :, x0 : x0 + tile_extent(x0, width, tile)], dtype=np.float32) for x0 in xs]
        )
    ds = None
    return rows


@dataclass
class BareRun:
    batch: int
    batches: int
    seconds: float
    cpu_seconds: float


def bare_loop(session, rows: list[list[np.ndarray]], batch: int, repeat: int) -> BareRun:
    """Plain loop of ``session.run`` over pre-stacked batches (grouped per tile row, as the algorithm does)."""
    name = session.get_inputs()[0].name
    out = session.get_outputs()[0].name
    # per tile row, as the algorithm groups them: up to ``batch`` tiles of one width
    batches = [np.stack(r[i:j]) for r in rows for i, j in batch_columns([t.shape[2] for t in r], batch)]
    session.run([out], {name: batches[0]})  # warm-up: allocator growth, first-run kernels
    best = None
    for _ in range(max(1, repeat)):
        c0, t0 = harness.cpu_seconds(), time.perf_counter()
        for b in batches:
            session.run([out], {name: b})
        wall, cpu = time.perf_counter() - t0, harness.cpu_seconds() - c0
        if best is None or wall < best.seconds:
            best = BareRun(batch, len(batches), wall, cpu)
    return best


# --- Section 2: the algorithm ---------------------------------------------------------------------------


def run_segment(src: Path, dst: Path) -> tuple[float, float]:
    """``processing.run("sarseg:segment", {INPUT, OUTPUT})`` once; returns (wall, CPU) seconds."""
    from qgis.core import QgsProcessingFeedback

    run = harness.start_qgis()
    if dst.exists():
        dst.unlink()
    c0, t0 = harness.cpu_seconds(), time.perf_counter()
    params = {"INPUT": str(src), "OUTPUT": str(dst)}
    if fast_segmentation_model() != MODEL:
        params["MODEL_FILE"] = str(resolve_model(MODEL))
    run(ALGORITHM, params, feedback=QgsProcessingFeedback(False))
    wall, cpu = time.perf_counter() - t0, harness.cpu_seconds() - c0
    if not dst.exists():
        raise RuntimeError(f"{ALGORITHM} wrote no output {dst}")
    return wall, cpu


# --- Section 3: child processes -------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a measuring subprocess: print one JSON line and exit."""

    def measure() -> dict:
        wall, cpu = run_segment(Path(args.child_input), Path(args.child_output))
        return {"seconds": wall, "cpu_seconds": cpu}

    return harness.child_report(measure if args.child == "run" else None)


# --- Sections -------------------------------------------------------------------------------------------


@dataclass
class Results:
    bare_mps: dict[int, float] = field(default_factory=dict)
    algo_mps: float | None = None
    rss: dict[int, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.algo_mps is None or not self.bare_mps:
            return None
        return self.algo_mps / max(self.bare_mps.values())  # against the fastest bare loop


def section_bare(args: argparse.Namespace, src: Path, res: Results) -> None:
    size = args.size
    heading = f"1. Bare onnxruntime, {MODEL}: the algorithm's tiles of a {size}x{size} raster in a plain loop"
    harness.heading(heading)
    import onnxruntime as ort

    meta = model_metadata()
    t0 = time.perf_counter()
    rows = prepared_tiles(src, meta)
    prep = time.perf_counter() - t0
    n_tiles, per_row = sum(len(r) for r in rows), len(rows[0])
    tile_px = sum(t.shape[1] * t.shape[2] for r in rows for t in r)
    tile, overlap = meta.tile_size, meta.tile_overlap
    session = ort_session()
    print(
        f"onnxruntime {ort.__version__}, CPU provider, ORT_ENABLE_ALL, default intra-op threads ({os.cpu_count()} "
        f"CPUs). Tiles: {len(rows)} rows x {len(rows[0])} = {n_tiles} of {tile}x{tile}, overlap {overlap}, "
        f"stride {tile - overlap}"
        + (
            f", the last row and column cut to {rows[-1][-1].shape[1]} px (multiples of {meta.size_multiple})"
            if rows[-1][-1].shape[1:] != (tile, tile)
            else ""
        )
        + f"; read + dB + normalise beforehand in {prep:.1f} s (not timed)."
    )
    out_px = size * size
    table_rows = []
    for batch in BARE_BATCHES:
        r = bare_loop(session, rows, batch, args.repeat)
        res.bare_mps[batch] = harness.mps(out_px, r.seconds)
        table_rows.append(
            [
                f"batch {batch}",
                r.batches,
                f"{r.seconds:.2f}",
                f"{n_tiles / r.seconds:.1f}",
                f"{harness.mps(tile_px, r.seconds):.2f}",
                f"{res.bare_mps[batch]:.2f}",
                f"{r.cpu_seconds / r.seconds:.2f}",
            ]
        )
        print(f"  ... bare batch {batch}: {r.seconds:.2f} s", file=sys.stderr, flush=True)
    del rows
    harness.table(["run", "batches", "seconds", "tiles/s", "tile MP/s", "MP/s (raster)", "CPU/wall"], table_rows)
    print(
        f"Best of {args.repeat} timed loop(s) after one warm-up batch. MP/s (raster) = {size}*{size} output pixels / "
        f"seconds / 1e6, the same unit as section 2; tile MP/s counts every tile pixel ({tile_px}, "
        f"{tile_px / out_px:.2f}x the raster because tiles overlap). Batches are grouped per tile row, tiles of one "
        f"size together, as in the algorithm ({per_row} tiles a row)."
    )


def section_algorithm(args: argparse.Namespace, work: Path, src: Path, res: Results) -> None:
    size = args.size
    harness.heading(f"2. The algorithm end to end: processing.run('{ALGORITHM}') on the {size}x{size} raster")
    warm = work / "warm.tif"
    make_sar_raster(warm, 512)
    run_segment(warm, work / "warm_out.tif")  # imports, model load path, GDAL drivers: once, untimed
    best = None
    for i in range(max(1, args.repeat)):
        dst = work / f"seg_{size}_{i}.tif"
        wall, cpu = run_segment(src, dst)
        print(f"  ... algorithm run {i + 1}: {wall:.2f} s", file=sys.stderr, flush=True)
        if best is None or wall < best[0]:
            best = (wall, cpu)
        if not args.keep:
            dst.unlink()
    wall, cpu = best
    res.algo_mps = harness.mps(size * size, wall)
    rows = [
        ["processing.run", f"{wall:.2f}", f"{res.algo_mps:.2f}", f"{cpu / wall:.2f}"],
    ]
    harness.table(["run", "seconds", "MP/s (raster)", "CPU/wall"], rows)
    print(
        f"Best of {args.repeat} run(s) after a 512x512 warm-up run, in this process (QGIS started once). Includes "
        "model loading (an onnxruntime session per run), reading, dB conversion, normalisation, inference "
        f"(batch {BATCH_SIZE}, the default), blending and writing the class raster."
    )
    print("\nRatio algorithm / bare onnxruntime (MP/s over MP/s):")
    ratio_rows = []
    for batch, bare in sorted(res.bare_mps.items()):
        ratio_rows.append(
            [f"vs bare batch {batch}", f"{bare:.2f}", f"{res.algo_mps:.2f}", f"{res.algo_mps / bare:.3f}"]
        )
    harness.table(["comparison", "bare MP/s", "algorithm MP/s", "ratio b/a"], ratio_rows)
    print(
        "(a) runs exactly the overlapping tiles the algorithm runs, so the ratio measures the algorithm's overhead "
        f"(I/O, dB, normalisation, blending, writing, model load), not the cost of the overlap. The target "
        f"(>= {TARGET_RATIO:g}) is against the fastest bare loop, whatever its batch size."
    )


def section_rss(args: argparse.Namespace, work: Path, res: Results) -> None:
    harness.heading("3. Peak RSS against raster size: two-band linear power through the algorithm, one subprocess each")
    base = harness.run_child(__file__, ["--child", "baseline", "--model", MODEL])
    print(
        f"Baseline (QGIS + Processing + sarseg provider started, no run): peak RSS {base['maxrss_mb']:.0f} MB.\n"
        f"GDAL block cache limit in the children: {base['gdal_cachemax_mb']:.0f} MB "
        f"(GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
    )
    rows = []
    for size in args.rss_sizes:
        src = work / f"rss_{size}.tif"
        dst = work / f"rss_{size}_seg.tif"
        gen = make_sar_raster(src, size)
        print(f"  ... generated {size}x{size} in {gen:.1f} s", file=sys.stderr, flush=True)
        r = harness.run_child(
            __file__, ["--child", "run", "--model", MODEL, "--child-input", str(src), "--child-output", str(dst)]
        )
        res.rss[size] = float(r["maxrss_mb"])
        rows.append(
            [
                f"{size}x{size}",
                f"{size * size / 1e6:.0f}",
                f"{src.stat().st_size / 2**20:.0f}",
                f"{gen:.1f}",
                f"{r['maxrss_mb']:.0f}",
                f"{r['polled_rss_mb']:.0f}",
                f"{r['maxrss_mb'] - base['maxrss_mb']:+.0f}",
                f"{r['seconds']:.1f}",
                f"{harness.mps(size * size, r['seconds']):.2f}",
                f"{r['cpu_seconds'] / r['seconds']:.2f}",
            ]
        )
        print(f"  ... {size}x{size}: {r['maxrss_mb']:.0f} MB, {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        if not args.keep:
            src.unlink()
            dst.unlink(missing_ok=True)
    harness.table(
        ["raster", "MP", "input MB", "gen s", "peak RSS MB", "polled MB", "vs baseline", "seconds", "MP/s", "CPU/wall"],
        rows,
    )
    print(
        "Inputs: two bands float32 (VV, VH, unit linear), tiled 256x256, uncompressed; generation (gen s) not "
        "timed in the run.\npeak RSS: VmHWM of the child (QGIS start-up + one processing.run), read from "
        "/proc/self/status (not ru_maxrss, which Linux carries over from the parent across exec). polled MB: RSS "
        "sampled every 20 ms from this process (a lower bound, a cross-check). seconds / MP/s: processing.run alone."
    )


def section_targets(args: argparse.Namespace, res: Results) -> None:
    harness.heading("4. Targets")

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    rows = []
    for batch in sorted(res.bare_mps):
        rows.append(
            [f"bare onnxruntime MP/s, batch {batch} ({args.size}², info)", "-", f"{res.bare_mps[batch]:.2f}", ""]
        )
    v = res.algo_mps
    rows.append(
        [
            f"algorithm MP/s end to end ({args.size}², {os.cpu_count()} cores)",
            f">= {TARGET_MPS:g}",
            "not run" if v is None else f"{v:.2f}",
            verdict(None if v is None else v >= TARGET_MPS),
        ]
    )
    v = res.ratio
    rows.append(
        [
            "ratio algorithm / fastest bare onnxruntime loop",
            f">= {TARGET_RATIO:g}",
            "not run" if v is None else f"{v:.3f}",
            verdict(None if v is None else v >= TARGET_RATIO),
        ]
    )
    if res.rss:
        largest, smallest = max(res.rss), min(res.rss)
        v = res.rss[largest]
        what = f"Peak RSS on {largest}²" + (
            "" if largest == TARGET_RSS_SIZE else f" (target is for {TARGET_RSS_SIZE}²)"
        )
        rows.append([what, f"< {TARGET_PEAK_RSS_MB:g} MB", f"{v:.0f} MB", verdict(v < TARGET_PEAK_RSS_MB)])
        if largest != smallest:
            growth = res.rss[largest] - res.rss[smallest]
            rows.append(
                [
                    f"RSS flat: growth {smallest}² -> {largest}² ({(largest / smallest) ** 2:.0f}x pixels)",
                    f"< {TARGET_RSS_GROWTH_MB:g} MB",
                    f"{growth:+.0f} MB",
                    verdict(growth < TARGET_RSS_GROWTH_MB),
                ]
            )
    else:
        rows.append([f"Peak RSS on {TARGET_RSS_SIZE}²", f"< {TARGET_PEAK_RSS_MB:g} MB", "not run", verdict(None)])
    harness.table(["target", "goal", "measured", "result"], rows)


# --- Main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, help="side of the throughput raster (default 4096, --quick 1024)")
    p.add_argument(
        "--rss-sizes",
        help="comma-separated sides of the peak-RSS rasters (default 5000,10000,20000; --quick 1000,2000,4000)",
    )
    p.add_argument("--repeat", type=int, default=2, help="timed runs per measurement in sections 1 and 2; best kept")
    p.add_argument("--quick", action="store_true", help="small rasters, for a check in a minute")
    p.add_argument("--skip-rss", action="store_true", help="skip section 3 (peak RSS)")
    p.add_argument("--workdir", help="where to create the temporary work directory (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and the rasters in it")
    p.add_argument("--model", default=MODEL, help=f"bundled model name or ONNX path (default {MODEL})")
    p.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (1024 if args.quick else 4096)
    sizes = args.rss_sizes or ("1000,2000,4000" if args.quick else "5000,10000,20000")
    args.rss_sizes = [int(s) for s in sizes.split(",") if s.strip()]
    if args.size < 256 or any(s < 256 for s in args.rss_sizes):
        p.error("raster sides must be at least 256 (the model tile)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global MODEL
    args = parse_args(argv)
    MODEL = args.model
    if args.child:
        return child_main(args)

    work, t_start = harness.open_bench("SAR Seg segmentation benchmark", "sarseg-segbench-", args.workdir)
    harness.start_qgis()
    from qgis.core import Qgis

    meta = model_metadata()
    print(
        f"QGIS {Qgis.version()}; algorithm {ALGORITHM}; model {MODEL}: {', '.join(meta.input_bands)} in "
        f"{'/'.join(meta.input_units)}, {len(meta.class_names)} classes, tile {meta.tile_size}, overlap "
        f"{meta.tile_overlap}"
    )
    res = Results()
    try:
        src = work / f"seg_in_{args.size}.tif"
        gen = make_sar_raster(src, args.size)
        print(
            f"Input: {src.name}, {args.size}x{args.size} x 2 bands float32 linear power (unit 'linear'), tiled "
            f"256x256, uncompressed, generated in {gen:.1f} s (not measured)."
        )
        section_bare(args, src, res)
        section_algorithm(args, work, src, res)
        if not args.skip_rss:
            section_rss(args, work, res)
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
