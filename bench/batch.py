#!/usr/bin/env python3
"""Batch benchmark: ``sarseg:segment``'s core over 8 rasters and over one large raster split into strips, on local
Dask clusters of 1 and 2 workers, against one process doing the same work.

Inputs: synthetic Sentinel-1-like VV/VH linear-power GeoTIFFs from the benchmarks' generator (``harness.make_raster``:
EPSG:32631, 10 m, float32, Gamma(4.4) speckle): 8 rasters of 1536² px (``--quick``: 512²; 25 tiles of the bundled
model each, enough for its int8 copy's check) and one of 4096² px (``--quick``: 2048²), kept in
``bench/.cache/batch/``.

Sections:

1. **8 rasters.** Baseline: one process segments them one after another with ``sarseg:segment``'s default model
   (the bundled int8 copy, checked against the float32 U-Net on each raster) on every core (onnxruntime threads =
   cores); the batch runs the same by default. The same 8 rasters with the float32 U-Net, as batches ran it before,
   are given for comparison. Then ``run_batch`` on a local cluster of 1 worker (threads = cores) and of 2
   workers (cores shared: threads = cores / 2). Seconds from submission to the last record (the cluster's start is
   given apart), MP/s, ratio to the baseline, each worker's peak RSS (VmHWM), and whether every output is the
   baseline's file byte for byte.
2. **One raster split.** Baseline: one process segments the large raster whole with the float32 U-Net, the model
   every strip runs (threads = cores). Then
   ``split_segment`` into 2 and 4 strips on 2 workers: seconds (strips and the mosaic), MP/s, ratio, and whether
   the pixels equal the whole run's.

On a machine with two cores, two workers cannot beat one process using both cores on model inference (the work is
the same; the cluster adds scheduling and, for strips, the halo's re-computation): the figures say what the
distribution costs here. On a cluster, throughput scales with the workers' cores.

Usage: ``.venv/bin/python bench/batch.py [--quick] [--workdir DIR] [--keep]``. Exit status 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness  # the benchmarks' shared code; puts the project root on sys.path
import numpy as np
from osgeo import gdal

from sar_seg_plugin.core import batch
from sar_seg_plugin.core.inference import segment_raster
from sar_seg_plugin.models.registry import fast_segmentation_model, load_checked, load_model

CACHE = Path(__file__).resolve().parent / ".cache" / "batch"
SEED = 20261206


def _rasters(quick: bool) -> tuple[list[Path], Path]:
    small, large = (512, 2048) if quick else (1536, 4096)
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(8):
        p = CACHE / f"scene_{small}_{k}.tif"
        if not p.exists():
            harness.make_raster(p, small, 2, SEED + k)
        paths.append(p)
    big = CACHE / f"large_{large}.tif"
    if not big.exists():
        harness.make_raster(big, large, 2, SEED + 100)
    return paths, big


def _client(workers: int, threads: int):  # noqa: ANN202
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=50)  # fmt: skip
    client = Client(cluster)
    return client, cluster, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sarseg-bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    scenes, big = _rasters(args.quick)
    size = gdal.Open(str(scenes[0])).RasterXSize
    big_size = gdal.Open(str(big)).RasterXSize
    mp = len(scenes) * size * size / 1e6
    print(f"SAR Seg batch benchmark: {cores} CPU cores, load average {harness.load_average()}")
    print(f"8 rasters of {size}² px ({mp:.1f} MP), one raster of {big_size}² px ({big_size**2 / 1e6:.1f} MP)\n")

    # 1. 8 rasters
    model = load_model("sarseg_unet_vvvh", "cpu", cores)
    fast, reference, _ = load_checked(fast_segmentation_model(), "cpu", cores)
    started = time.perf_counter()
    for p in scenes:
        segment_raster(str(p), str(work / "float32.tif"), model)
    float32_s = time.perf_counter() - started
    base = work / "single"
    base.mkdir()
    kept = 0
    started = time.perf_counter()
    for p in scenes:
        result = segment_raster(str(p), str(base / f"{p.stem}_classes.tif"), fast, reference=reference)
        kept += bool(result.get("model_check", {}).get("fast_kept"))
    baseline = time.perf_counter() - started
    rows = [
        ("one process, float32 U-Net", cores, float32_s, None, None, None),
        ("one process, default model", cores, baseline, None, harness.peak_rss_mb(), True),
    ]
    for workers in (1, 2):
        threads = max(1, cores // workers)
        out = work / f"w{workers}"
        tasks = batch.plan_tasks("segment", [{"input": str(p)} for p in scenes], str(out),
                                 batch.parse_options("segment", [f"threads={threads}"]))  # fmt: skip
        client, cluster, start_s = _client(workers, threads)
        try:
            started = time.perf_counter()
            records = batch.run_batch(tasks, client)
            seconds = time.perf_counter() - started
            rss = max(client.run(harness.peak_rss_mb).values())
        finally:
            client.close()
            cluster.close()
        same = all(r.status == batch.DONE for r in records) and all(
            filecmp.cmp(base / Path(r.output).name, r.output, shallow=False) for r in records
        )
        rows.append((f"Dask, {workers} worker(s)", threads, seconds, start_s, rss, same))
    print(
        f"1. 8 rasters, segment (default model: {fast.path.stem}, kept by its check on {kept} of 8; the batch runs "
        "the same)"
    )
    print(f"{'run':<28}{'threads':>8}{'seconds':>9}{'MP/s':>7}{'ratio':>7}{'start s':>9}{'peak RSS':>10}  identical")
    for name, threads, seconds, start_s, rss, same in rows:
        start = f"{start_s:9.1f}" if start_s is not None else f"{'-':>9}"
        peak = f"{rss:8.0f} MB" if rss is not None else f"{'-':>11}"
        identical = "-" if same is None else "yes" if same else "NO"
        print(f"{name:<28}{threads:>8}{seconds:9.1f}{mp / seconds:7.2f}{baseline / seconds:7.2f}{start}"
              f"{peak}  {identical}")  # fmt: skip

    # 2. one raster split
    whole = work / "whole.tif"
    started = time.perf_counter()
    segment_raster(str(big), str(whole), model)
    whole_s = time.perf_counter() - started
    big_mp = big_size**2 / 1e6
    print(f"\n2. One raster of {big_size}² px split into strips on 2 workers")
    print(f"{'run':<28}{'seconds':>9}{'MP/s':>7}{'ratio':>7}  identical")
    print(f"{'one process, whole':<28}{whole_s:9.1f}{big_mp / whole_s:7.2f}{1.0:7.2f}  yes")
    client, cluster, _ = _client(2, max(1, cores // 2))
    try:
        for parts in (2, 4):
            out = work / f"split{parts}"
            (task,) = batch.plan_tasks("segment", [{"input": str(big)}], str(out),
                                       batch.parse_options("segment", [f"threads={max(1, cores // 2)}"]))  # fmt: skip
            started = time.perf_counter()
            record = batch.split_segment(task, client, parts)
            seconds = time.perf_counter() - started
            same = record.status == batch.DONE and np.array_equal(
                gdal.Open(str(whole)).ReadAsArray(), gdal.Open(task.output).ReadAsArray()
            )
            print(f"{f'{parts} strips, 2 workers':<28}{seconds:9.1f}{big_mp / seconds:7.2f}"
                  f"{whole_s / seconds:7.2f}  {'yes' if same else 'NO'}  ({record.message})")  # fmt: skip
    finally:
        client.close()
        cluster.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
