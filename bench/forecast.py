#!/usr/bin/env python3
"""Forecast benchmark: the ``sarseg:forecast`` algorithm against bare onnxruntime, and its peak memory.

The default bundled forecaster (``sarseg_convlstm_classes``: a ConvLSTM encoder step and decoder step, the time
loop run in Python) takes the last 4 daily class maps (one uint8 band, classes 0..4, nodata 255) and forecasts
t+1, t+2 and t+3. The inputs are synthetic: 4 daily class maps of piecewise-constant parcels (a hash of the parcel
coordinates, from a fixed seed) where a few percent of the parcels change class from one day to the next, plus a
little per-pixel noise, written block by block with GDAL (tiled 256x256, DEFLATE, EPSG:32631, 10 m pixels), so the
generator's memory stays one block row whatever the size.

Sections, in order:

1. bare onnxruntime: the forecaster's step loop (``LoadedForecaster.run(seq, 3)``: 4 encoder steps, 3 decoder
   steps) on the same blocks the algorithm processes for a 2048 x 2048 raster (blocks of
   core.forecast.DEFAULT_BLOCK px with the forecaster's halo, read and one-hot encoded beforehand), in a plain loop;
2. the algorithm end to end, ``processing.run("sarseg:forecast")`` in a headless QGIS (read, alignment check,
   one-hot decoding, the step loop, argmax, writing the class maps of t0, t+1, t+2 and t+3 and, by default, the
   confidence raster of each horizon) on those rasters, and its ratio to section 1. Only INPUTS, DATES, DEVICE (CPU)
   and OUTPUT_FOLDER are given: with OUTPUT_CHANGE, OUTPUT_AREAS and OUTPUT_HINDCAST omitted the algorithm writes
   neither the change map nor the tables, and with 4 dates there is no hindcast;
3. peak RSS (VmHWM) of one subprocess per raster size (default 2000², 4000², 8000²) through the algorithm;
4. a summary of the targets with PASS / FAIL.

Throughput is given two ways: MP/s (raster) = raster pixels / seconds / 1e6, for the whole forecast (all 3
horizons), and MP/s per horizon = 3 x that (forecast map pixels produced per second). The forecaster runs at
roughly 0.4-0.5 MP/s (raster) on two cores, which is why the sizes are smaller than in ``bench/segment.py``
(4096², and 5000², 10000², 20000² there): the defaults keep the whole run to about 4.5 minutes on two cores, most
of it the 8000² peak-RSS run (``--quick``: 512², RSS 500², 1000², 2000², about 30 seconds).

Usage: ``.venv/bin/python bench/forecast.py [--quick] [--size N] [--rss-sizes 2000,4000,8000] [--skip-rss]
[--repeat 2] [--workdir DIR] [--keep]``. Exit status 0 whatever the figures: it measures, it does not test.
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

from sar_seg_plugin.core.forecast import DEFAULT_BLOCK as BLOCK  # the algorithm's block size
from sar_seg_plugin.core.raster_io import iter_blocks  # numpy/GDAL only, no qgis

ALGORITHM = "sarseg:forecast"
MODEL = "sarseg_convlstm_classes"
DEVICE_CPU = 1  # the algorithm's DEVICE enum: 0 auto, 1 CPU, 2 CUDA

SEED = 20240917
DATES = ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04")
N_CLASSES = 5
NODATA = 255

TARGET_RATIO = 0.8
TARGET_PEAK_RSS_MB = 1024.0
TARGET_RSS_GROWTH_MB = 100.0


# --- Rasters ------------------------------------------------------------------------------------------

CELL_X, CELL_Y = 48, 36  # parcel size, pixels (each parcel row is shifted by a hashed offset)
DAILY_CHANGE = 0.04  # share of the parcels changing class from one day to the next
PIXEL_NOISE = 0.005  # share of the pixels with a random class on a given day
GEN_BLOCK = 1024


def _parcel_classes(seed: int, u: np.ndarray, v: np.ndarray, day: int) -> np.ndarray:
    """Class (0..4) of the parcels (u, v) on ``day`` (0-based): a base class, then a few changes each day."""
    cls = np.floor(harness.hash_uniform(seed, u, v) * N_CLASSES).astype(np.uint8)
    for d in range(1, day + 1):
        changes = harness.hash_uniform(seed + 10 * d, u, v) < DAILY_CHANGE
        new = np.floor(harness.hash_uniform(seed + 10 * d + 1, u, v) * N_CLASSES).astype(np.uint8)
        cls = np.where(changes, new, cls)
    return cls


def class_block(x0: int, y0: int, width: int, height: int, day: int, seed: int) -> np.ndarray:
    """uint8 class map of a window on ``day``: parcels looked up in a small per-window table, plus pixel noise."""
    rows = np.arange(y0, y0 + height) // CELL_Y
    v0, v1 = int(rows[0]), int(rows[-1])
    vs = np.arange(v0, v1 + 1)
    offsets = np.floor(harness.hash_uniform(seed + 7, vs, vs) * CELL_X).astype(np.int64)  # per parcel row
    u = (np.arange(x0, x0 + width)[None, :] + offsets[rows - v0][:, None]) // CELL_X  # (height, width)
    u0, u1 = int(u.min()), int(u.max())
    uu, vv = np.meshgrid(np.arange(u0, u1 + 1), vs)
    table = _parcel_classes(seed, uu, vv, day)  # (parcel rows, parcel columns) of this window only
    out = table[(rows - v0)[:, None], u - u0]
    rng = np.random.default_rng([seed, day, y0, x0])
    noisy = rng.random((height, width)) < PIXEL_NOISE
    out[noisy] = rng.integers(0, N_CLASSES, int(noisy.sum()), dtype=np.uint8)
    return out


def make_class_raster(path: Path, size: int, day: int, seed: int = SEED) -> None:
    """A size x size uint8 class map (nodata 255), tiled 256x256, DEFLATE, EPSG:32631, 10 m pixels."""
    from osgeo import gdal

    opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_SAFER", "COMPRESS=DEFLATE", "ZLEVEL=1"]
    ds = harness.create_geotiff(path, size, 1, gdal.GDT_Byte, opts)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    band.SetDescription("class")
    for y0 in range(0, size, GEN_BLOCK):
        for x0 in range(0, size, GEN_BLOCK):
            w, h = min(GEN_BLOCK, size - x0), min(GEN_BLOCK, size - y0)
            band.WriteArray(class_block(x0, y0, w, h, day, seed), x0, y0)
        ds.FlushCache()  # write and drop this row of tiles: the generator's memory stays one block row
    band = None
    ds = None


def make_sequence(work: Path, size: int, tag: str = "") -> tuple[list[Path], float]:
    """The 4 daily class maps of a size x size raster (one file per date); returns (paths, seconds)."""
    t0 = time.perf_counter()
    paths = []
    for day, date in enumerate(DATES):
        path = work / f"cls{tag}_{size}_{date.replace('-', '')}.tif"
        make_class_raster(path, size, day)
        paths.append(path)
    return paths, time.perf_counter() - t0


def changed_share(paths: Sequence[Path]) -> float:
    """Mean share of the pixels whose class differs from the day before (read on the first 1024 x 1024 window)."""
    from osgeo import gdal

    maps = []
    for p in paths:
        ds = gdal.Open(str(p))
        n = min(1024, ds.RasterXSize, ds.RasterYSize)
        maps.append(ds.GetRasterBand(1).ReadAsArray(0, 0, n, n))
        ds = None
    return float(np.mean([(a != b).mean() for a, b in zip(maps, maps[1:])]))


# --- Section 1: bare onnxruntime ------------------------------------------------------------------------


def load_model():
    from sar_seg_plugin.models.registry import load_forecaster

    return load_forecaster(MODEL, "cpu")


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 class map -> (5, h, w) float32 one-hot, all zeros on nodata (what the algorithm feeds)."""
    onehot = np.zeros((N_CLASSES, *labels.shape), np.float32)
    for c in range(N_CLASSES):
        onehot[c] = labels == c
    return onehot


def prepared_blocks(paths: Sequence[Path], model) -> list[np.ndarray]:
    """The algorithm's blocks (BLOCK px, clipped halo), read and one-hot encoded: (1, 4, 5, h, w) float32 each."""
    from osgeo import gdal

    datasets = [gdal.Open(str(p)) for p in paths]
    width, height = datasets[0].RasterXSize, datasets[0].RasterYSize
    s = int(model.state_stride)
    blocks = []
    for block in iter_blocks(width, height, BLOCK, int(model.halo)):
        r = block.read
        seq = np.stack([one_hot(ds.GetRasterBand(1).ReadAsArray(r.x, r.y, r.width, r.height)) for ds in datasets])
        seq = seq[None]
        ph, pw = (-seq.shape[-2]) % s, (-seq.shape[-1]) % s
        if ph or pw:  # a forecaster with a strided state: edge-padded as core.forecast does
            seq = np.pad(seq, [(0, 0)] * 3 + [(0, ph), (0, pw)], mode="edge")
        blocks.append(np.ascontiguousarray(seq))
    datasets.clear()
    return blocks


@dataclass
class BareRun:
    blocks: int
    seconds: float
    cpu_seconds: float


def bare_loop(model, blocks: list[np.ndarray], horizons: int, repeat: int) -> BareRun:
    """Plain loop of ``model.run(seq, horizons)`` over the pre-built blocks; best of ``repeat``."""
    model.run(blocks[0], horizons)  # warm-up: allocator growth, first-run kernels
    best = None
    for _ in range(max(1, repeat)):
        c0, t0 = harness.cpu_seconds(), time.perf_counter()
        for seq in blocks:
            model.run(seq, horizons)
        wall, cpu = time.perf_counter() - t0, harness.cpu_seconds() - c0
        if best is None or wall < best.seconds:
            best = BareRun(len(blocks), wall, cpu)
    return best


# --- Section 2: the algorithm ---------------------------------------------------------------------------


def run_forecast(inputs: Sequence[Path], folder: Path) -> tuple[float, float, dict]:
    """``processing.run("sarseg:forecast", {INPUTS, DATES, DEVICE, OUTPUT_FOLDER})`` once into a new folder;
    returns (wall, CPU) seconds and the results dictionary."""
    from qgis.core import QgsProcessingFeedback

    run = harness.start_qgis()
    if folder.exists():
        shutil.rmtree(folder)
    params = {
        "INPUTS": [str(p) for p in inputs],
        "DATES": ",".join(DATES),
        "DEVICE": DEVICE_CPU,
        "OUTPUT_FOLDER": str(folder),
    }
    c0, t0 = harness.cpu_seconds(), time.perf_counter()
    results = run(ALGORITHM, params, feedback=QgsProcessingFeedback(False))
    wall, cpu = time.perf_counter() - t0, harness.cpu_seconds() - c0
    written = sorted(p for p in folder.glob("*.tif") if not p.name.endswith("_confidence.tif"))
    confidence = sorted(folder.glob("*_confidence.tif"))
    if len(written) != 4 or len(confidence) != 3:
        raise RuntimeError(
            f"{ALGORITHM} wrote {len(written)} class map(s) and {len(confidence)} confidence raster(s) in {folder}, "
            "not 4 (t0 .. t+3) and 3 (t+1 .. t+3)"
        )
    return wall, cpu, results


# --- Section 3: child processes -------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a measuring subprocess: print one JSON line and exit."""

    def measure() -> dict:
        inputs = [Path(p) for p in args.child_input.split(os.pathsep)]
        wall, cpu, _ = run_forecast(inputs, Path(args.child_output))
        return {"seconds": wall, "cpu_seconds": cpu}

    return harness.child_report(measure if args.child == "run" else None)


# --- Sections -------------------------------------------------------------------------------------------


@dataclass
class Results:
    horizons: int = 3
    bare_mps: float | None = None
    algo_mps: float | None = None
    rss: dict[int, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.algo_mps is None or self.bare_mps is None:
            return None
        return self.algo_mps / self.bare_mps


def section_bare(args: argparse.Namespace, inputs: Sequence[Path], model, res: Results) -> None:
    size = args.size
    harness.heading(
        f"1. Bare onnxruntime, {MODEL}: the step loop on the algorithm's blocks of a {size}x{size} raster, plain loop"
    )
    import onnxruntime as ort

    t0 = time.perf_counter()
    blocks = prepared_blocks(inputs, model)
    prep = time.perf_counter() - t0
    block_px = sum(b.shape[-1] * b.shape[-2] for b in blocks)
    out_px = size * size
    horizons = res.horizons
    print(
        f"onnxruntime {ort.__version__}, CPU provider, {model.threads} intra-op threads ({os.cpu_count()} CPUs), "
        f"the sessions the plugin opens (load_forecaster('{MODEL}', 'cpu')). Blocks: {len(blocks)} of {BLOCK} px "
        f"with a {model.halo} px halo (clipped at the raster edge), {block_px / out_px:.3f}x the raster's pixels; "
        f"each (1, {len(DATES)}, {N_CLASSES}, h, w) float32 one-hot, read and encoded beforehand in {prep:.1f} s "
        f"(not timed, {sum(b.nbytes for b in blocks) / 2**20:.0f} MB)."
    )
    r = bare_loop(model, blocks, horizons, args.repeat)
    del blocks
    res.bare_mps = harness.mps(out_px, r.seconds)
    print(f"  ... bare loop: {r.seconds:.2f} s", file=sys.stderr, flush=True)
    harness.table(
        ["run", "blocks", "seconds", "blocks/s", "block MP/s", "MP/s (raster)", "MP/s per horizon", "CPU/wall"],
        [
            [
                f"model.run(seq, {horizons})",
                r.blocks,
                f"{r.seconds:.2f}",
                f"{r.blocks / r.seconds:.2f}",
                f"{harness.mps(block_px, r.seconds):.3f}",
                f"{res.bare_mps:.3f}",
                f"{horizons * res.bare_mps:.3f}",
                f"{r.cpu_seconds / r.seconds:.2f}",
            ]
        ],
    )
    print(
        f"Best of {args.repeat} timed loop(s) after one warm-up block. One model.run = {len(DATES)} encoder steps + "
        f"{horizons} decoder steps. MP/s (raster) = {size}*{size} raster pixels / seconds / 1e6 for the whole "
        f"forecast (all {horizons} horizons), the same unit as section 2; MP/s per horizon = {horizons} x that (map "
        f"pixels forecast per second); block MP/s counts every block pixel, halo included."
    )


def section_algorithm(args: argparse.Namespace, work: Path, inputs: Sequence[Path], res: Results) -> None:
    size = args.size
    harness.heading(f"2. The algorithm end to end: processing.run('{ALGORITHM}') on the {size}x{size} rasters")
    warm, _ = make_sequence(work, 512, "warm")
    _, _, results = run_forecast(warm, work / "warm_out")  # imports, model load path, GDAL drivers: once, untimed
    best = None
    for i in range(max(1, args.repeat)):
        folder = work / f"forecast_{size}_{i}"
        wall, cpu, results = run_forecast(inputs, folder)
        print(f"  ... algorithm run {i + 1}: {wall:.2f} s", file=sys.stderr, flush=True)
        if best is None or wall < best[0]:
            best = (wall, cpu)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    wall, cpu = best
    res.algo_mps = harness.mps(size * size, wall)
    h = res.horizons
    harness.table(
        ["run", "seconds", "MP/s (raster)", "MP/s per horizon", "CPU/wall"],
        [["processing.run", f"{wall:.2f}", f"{res.algo_mps:.3f}", f"{h * res.algo_mps:.3f}", f"{cpu / wall:.2f}"]],
    )
    extra = [k for k in ("OUTPUT_CHANGE", "OUTPUT_AREAS", "OUTPUT_HINDCAST") if k in results]
    print(
        f"Best of {args.repeat} run(s) after a 512x512 warm-up run, in this process (QGIS started once), each into a "
        "new output folder. Includes loading the forecaster (two onnxruntime sessions per run), reading and aligning "
        f"the {len(DATES)} inputs, one-hot decoding, the step loop, argmax and writing the class maps of t0 and "
        f"t+1..t+{h} (DEFLATE, paletted) and the confidence of t+1..t+{h} (float32). Parameters: INPUTS, DATES, "
        "DEVICE = CPU, OUTPUT_FOLDER only; "
        + (
            f"processing.run still returned {', '.join(extra)}."
            if extra
            else "OUTPUT_CHANGE, OUTPUT_AREAS and OUTPUT_HINDCAST omitted: no change map and no tables are written."
        )
    )
    print("\nRatio algorithm / bare onnxruntime (MP/s over MP/s):")
    harness.table(
        ["comparison", "bare MP/s", "algorithm MP/s", "ratio b/a"],
        [["vs bare step loop", f"{res.bare_mps:.3f}", f"{res.algo_mps:.3f}", f"{res.ratio:.3f}"]],
    )
    print(
        "(a) runs exactly the blocks (halo included) the algorithm runs, so the ratio measures the algorithm's "
        "overhead (model load, I/O, one-hot decoding, argmax, writing 4 maps), not the cost of the halo. "
        f"Target >= {TARGET_RATIO:g}."
    )


def section_rss(args: argparse.Namespace, work: Path, res: Results) -> None:
    harness.heading("3. Peak RSS against raster size: 4 daily class maps through the algorithm, one subprocess each")
    base = harness.run_child(__file__, ["--child", "baseline"])
    print(
        f"Baseline (QGIS + Processing + sarseg provider started, no run): peak RSS {base['maxrss_mb']:.0f} MB.\n"
        f"GDAL block cache limit in the children: {base['gdal_cachemax_mb']:.0f} MB "
        f"(GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset: 5% of RAM')})."
    )
    rows = []
    for size in args.rss_sizes:
        inputs, gen = make_sequence(work, size, "rss")
        folder = work / f"rss_{size}_out"
        print(f"  ... generated 4 x {size}x{size} in {gen:.1f} s", file=sys.stderr, flush=True)
        r = harness.run_child(
            __file__,
            ["--child", "run", "--child-input", os.pathsep.join(map(str, inputs)), "--child-output", str(folder)],
        )
        res.rss[size] = float(r["maxrss_mb"])
        mps = harness.mps(size * size, r["seconds"])
        rows.append(
            [
                f"{size}x{size}",
                f"{size * size / 1e6:.0f}",
                f"{sum(p.stat().st_size for p in inputs) / 2**20:.1f}",
                f"{gen:.1f}",
                f"{r['maxrss_mb']:.0f}",
                f"{r['polled_rss_mb']:.0f}",
                f"{r['maxrss_mb'] - base['maxrss_mb']:+.0f}",
                f"{r['seconds']:.1f}",
                f"{mps:.3f}",
                f"{res.horizons * mps:.3f}",
                f"{r['cpu_seconds'] / r['seconds']:.2f}",
            ]
        )
        print(f"  ... {size}x{size}: {r['maxrss_mb']:.0f} MB, {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        if not args.keep:
            for p in inputs:
                p.unlink()
            shutil.rmtree(folder, ignore_errors=True)
    harness.table(
        [
            "raster",
            "MP",
            "inputs MB",
            "gen s",
            "peak RSS MB",
            "polled MB",
            "vs baseline",
            "seconds",
            "MP/s",
            "MP/s/horizon",
            "CPU/wall",
        ],
        rows,
    )
    print(
        f"Inputs: {len(DATES)} uint8 class maps per size, tiled 256x256, DEFLATE (inputs MB: the 4 files together); "
        "generation (gen s) not timed in the run.\npeak RSS: VmHWM of the child (QGIS start-up + one "
        "processing.run), read from /proc/self/status (not ru_maxrss, which Linux carries over from the parent "
        "across exec). polled MB: RSS sampled every 20 ms from this process (a lower bound, a cross-check). "
        "seconds / MP/s: processing.run alone (MP/s of the raster, all horizons)."
    )


def section_targets(args: argparse.Namespace, res: Results) -> None:
    harness.heading("4. Targets")

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    def fmt(v: float | None, scale: int = 1) -> str:
        return "not run" if v is None else f"{scale * v:.3f}"

    h = res.horizons
    rows = [
        [f"bare onnxruntime MP/s (raster, {args.size}², info)", "-", fmt(res.bare_mps), ""],
        [f"bare onnxruntime MP/s per horizon ({args.size}², info)", "-", fmt(res.bare_mps, h), ""],
        [f"algorithm MP/s end to end (raster, {args.size}², info)", "-", fmt(res.algo_mps), ""],
        [f"algorithm MP/s per horizon ({args.size}², info)", "-", fmt(res.algo_mps, h), ""],
    ]
    v = res.ratio
    rows.append(
        [
            "ratio algorithm / bare onnxruntime step loop",
            f">= {TARGET_RATIO:g}",
            fmt(v),
            verdict(None if v is None else v >= TARGET_RATIO),
        ]
    )
    if res.rss:
        largest, smallest = max(res.rss), min(res.rss)
        v = res.rss[largest]
        rows.append(
            [f"Peak RSS on {largest}²", f"< {TARGET_PEAK_RSS_MB:g} MB", f"{v:.0f} MB", verdict(v < TARGET_PEAK_RSS_MB)]
        )
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
        rows.append(["Peak RSS on the largest raster", f"< {TARGET_PEAK_RSS_MB:g} MB", "not run", verdict(None)])
    harness.table(["target", "goal", "measured", "result"], rows)


# --- Main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--size",
        type=int,
        help="side of the throughput rasters (default 2048, --quick 512); section 1 holds all the blocks of this "
        "size one-hot in memory (about 85 MB per 1000x1000)",
    )
    p.add_argument(
        "--rss-sizes",
        help="comma-separated sides of the peak-RSS rasters (default 2000,4000,8000; --quick 500,1000,2000)",
    )
    p.add_argument("--repeat", type=int, default=2, help="timed runs per measurement in sections 1 and 2; best kept")
    p.add_argument("--quick", action="store_true", help="small rasters, for a check in a minute")
    p.add_argument("--skip-rss", action="store_true", help="skip section 3 (peak RSS)")
    p.add_argument("--workdir", help="where to create the temporary work directory (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and the rasters in it")
    p.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (512 if args.quick else 2048)
    sizes = args.rss_sizes or ("500,1000,2000" if args.quick else "2000,4000,8000")
    args.rss_sizes = [int(s) for s in sizes.split(",") if s.strip()]
    if args.size < 64 or any(s < 64 for s in args.rss_sizes):
        p.error("raster sides must be at least 64")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)

    work, t_start = harness.open_bench("SAR Seg forecast benchmark", "sarseg-fcbench-", args.workdir)
    harness.start_qgis()
    from qgis.core import Qgis

    model = load_model()
    meta = model.metadata
    res = Results(horizons=len(meta.horizons))
    print(
        f"QGIS {Qgis.version()}; algorithm {ALGORITHM}; forecaster {model.name} ({model.architecture}, "
        f"{model.input_kind} input, {model.state_channels} state channels, state stride {model.state_stride}): "
        f"{meta.sequence_length} dates -> horizons {', '.join(f't+{h}' for h in meta.horizons)}, classes "
        f"{', '.join(meta.class_names)}; halo {model.halo} px"
    )
    try:
        inputs, gen = make_sequence(work, args.size)
        print(
            f"Inputs: {len(inputs)} daily class maps {DATES[0]} .. {DATES[-1]}, {args.size}x{args.size} uint8 "
            f"(nodata {NODATA}), tiled 256x256, DEFLATE, EPSG:32631 10 m; parcels {CELL_X}x{CELL_Y} px, "
            f"{changed_share(inputs):.1%} of the pixels change class from one day to the next; generated in "
            f"{gen:.1f} s (not measured)."
        )
        section_bare(args, inputs, model, res)
        del model
        section_algorithm(args, work, inputs, res)
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
