#!/usr/bin/env python3
"""Sentinel-1 import benchmark: ``sarseg:import_sentinel1`` on a full-size IW GRDH product and on an area of interest.

The product is built by ``scripts/s1_product.py`` on the real manifest and annotation of
``S1B_IW_GRDH_1SDV_20210401T052623_...`` (25,788 x 16,685 px, VV + VH; ``make setup`` fetches them), with
calibration and noise files whose look-up tables sample known functions and digital numbers of a known pattern.
It is written once into ``bench/.cache`` (about a minute). Every run is a ``processing.run`` in its own process.

Sections:

1. values: sigma0 of the full-size product on strips across the swath against the independent
   (DN² - noise) / A² from the known functions (max relative difference);
2. an area of interest (a 0.1 degree box at the scene centre, about a commune), then the whole product, at 10 m:
   seconds and peak RSS (VmHWM) of the process;
3. Orfeo ToolBox ``otbcli_SARCalibration`` on the same measurement (radar geometry, no geocoding) when installed;
4. targets: values within 1e-3 relative, peak RSS < 1 GB, no slower than OTB.

Usage: ``.venv/bin/python bench/import_s1.py [--skip-full] [--pixel-size 10] [--workdir DIR] [--keep]``.
Exit status 0 whatever the figures: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import numpy as np

sys.path.insert(0, str(harness.ROOT / "scripts"))
import s1_product  # noqa: E402 - scripts/ is not a package

ALG = "sarseg:import_sentinel1"
CACHE = Path(__file__).resolve().parent / ".cache" / "s1_full"
TARGET_REL = 1e-3
TARGET_RSS_MB = 1024.0


def product() -> Path:
    """The full-size product (written once)."""
    safe = CACHE / s1_product.SOURCE.name
    if not (safe / "measurement").is_dir() or len(list((safe / "measurement").glob("*.tiff"))) < 2:
        t0 = time.perf_counter()
        s1_product.write_product(CACHE, 1)
        print(f"  ... wrote the full-size product in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return safe


def run_import(params: dict) -> dict:
    from qgis.core import QgsProcessingFeedback

    run = harness.start_qgis()
    c0, t0 = harness.cpu_seconds(), time.perf_counter()
    out = run(ALG, params, feedback=QgsProcessingFeedback(False))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": harness.cpu_seconds() - c0, "output": out["OUTPUT"]}


def child_main(args: argparse.Namespace) -> int:
    return harness.child_report((lambda: run_import(json.loads(args.child_params))) if args.child == "run" else None)


def section_values(safe: Path) -> float:
    harness.heading("1. Values: sigma0 against (DN² - noise) / A² from the known look-up functions")
    from osgeo import gdal

    from sar_seg_plugin.core import sentinel1 as s1

    p = s1.open_product(str(safe))
    worst = 0.0
    rows = []
    for pol in ("VV", "VH"):
        m = p.measurements[pol]
        cal = s1.Calibrator(
            s1.calibration_vectors(s1._read_text(m.calibration), "sigma0"), s1.noise_vectors(s1._read_text(m.noise))
        )
        ds = gdal.Open(m.tiff)
        samples, lines = ds.RasterXSize, ds.RasterYSize
        for r0 in (0, lines // 3, 2 * lines // 3, lines - 64):
            dn = ds.GetRasterBand(1).ReadAsArray(0, r0, samples, 64)
            got, _ = cal(dn, r0, 0)
            r, c = np.arange(r0, r0 + 64, dtype=float)[:, None], np.arange(samples, dtype=float)[None, :]
            a = s1_product.sigma_lut(r, c, samples, lines)
            noise = s1_product.noise_range(r, c, samples, lines) * s1_product.noise_azimuth(
                r, s1_product.swath_of(c, samples), lines
            )
            ref = (dn.astype(float) ** 2 - noise) / a**2
            ok = (dn > 0) & (ref > 0)
            rel = float(np.max(np.abs(got[ok] / ref[ok] - 1)))
            worst = max(worst, rel)
            rows.append([pol, f"{r0}..{r0 + 63}", f"{ok.sum():,}", f"{rel:.2e}"])
    harness.table(["band", "lines", "pixels", "max relative difference"], rows)
    return worst


def section_runs(args: argparse.Namespace, safe: Path, work: Path) -> dict[str, dict]:
    harness.heading(f"2. {ALG} at {args.pixel_size:g} m: seconds and peak RSS, one process per run")
    from osgeo import gdal

    from sar_seg_plugin.core import sentinel1 as s1

    lon, lat = s1.footprint_centre(gdal.Open(str(safe / "manifest.safe")).GetGCPs())
    box = f"{lon - 0.05},{lon + 0.05},{lat - 0.05},{lat + 0.05} [EPSG:4326]"
    runs = {"area of interest (0.1 degree box)": {"EXTENT": box}}
    if not args.skip_full:
        runs["whole product, VV + VH"] = {}
    base = harness.run_child(__file__, ["--child", "baseline"])
    results, rows = {}, []
    for name, extra in runs.items():
        out = work / name.split(" ")[0]
        params = {"INPUT": str(safe), "PIXEL_SIZE": args.pixel_size, "OUTPUT_FOLDER": str(out), **extra}
        r = harness.run_child(__file__, ["--child", "run", "--child-params", json.dumps(params)])
        ds = gdal.Open(r["output"])
        size = f"{ds.RasterXSize} x {ds.RasterYSize} x {ds.RasterCount}"
        ds = None
        results[name] = r
        rows.append([name, size, f"{r['seconds']:.1f}", f"{r['cpu_seconds'] / r['seconds']:.2f}",
                     f"{r['maxrss_mb']:.0f}", f"+{r['maxrss_mb'] - base['maxrss_mb']:.0f}"])  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    harness.table(["run", "output px", "seconds", "CPU/wall", "peak RSS MB", "vs baseline"], rows)
    print(f"Baseline (QGIS + Processing + provider, no run): {base['maxrss_mb']:.0f} MB.")
    return results


def section_otb(safe: Path, work: Path) -> tuple[float, float] | None:
    harness.heading("3. Orfeo ToolBox otbcli_SARCalibration (sigma0, radar geometry) on the VV measurement")
    if shutil.which("otbcli_SARCalibration") is None:
        print("not installed (make bench installs otb-bin): not run")
        return None
    tiff = next((safe / "measurement").glob("*-vv-*.tiff"))
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["otbcli_SARCalibration", "-in", str(tiff), "-out", str(work / "otb.tif"), "float", "-lut", "sigma",
         "-removenoise", "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        print(f"failed after {seconds:.1f} s (exit {proc.returncode}): {tail[0]}")
        return None
    # The same sigma0 in radar geometry from both, on strips across the swath.
    from osgeo import gdal

    from sar_seg_plugin.core import sentinel1 as s1

    m = s1.open_product(str(safe)).measurements["VV"]
    cal = s1.Calibrator(
        s1.calibration_vectors(s1._read_text(m.calibration), "sigma0"), s1.noise_vectors(s1._read_text(m.noise))
    )
    dn_ds, otb_ds = gdal.Open(m.tiff), gdal.Open(str(work / "otb.tif"))
    diffs = []
    for r0 in range(0, dn_ds.RasterYSize - 64, dn_ds.RasterYSize // 6):
        ours, _ = cal(dn_ds.GetRasterBand(1).ReadAsArray(0, r0, dn_ds.RasterXSize, 64), r0, 0)
        theirs = otb_ds.GetRasterBand(1).ReadAsArray(0, r0, dn_ds.RasterXSize, 64)
        ok = np.isfinite(ours) & (ours > 10 ** (s1.DEFAULT_FLOOR_DB / 10)) & (theirs > 0)
        diffs.append(np.abs(ours[ok] / theirs[ok] - 1))
    d = np.concatenate(diffs)
    dn_ds = otb_ds = None
    print(
        f"OTB {seconds:.1f} s. Against SAR Seg's sigma0 in radar geometry ({d.size:,} pixels on 6 strips): relative "
        f"difference median {np.median(d):.1e}, 99th percentile {np.percentile(d, 99):.1e}, max {d.max():.1e}"
    )
    ours = radar_calibration_seconds(safe, work)
    print(f"SAR Seg, the same work (the import's radar-geometry pass, VV, noise removed, to a GeoTIFF): {ours:.1f} s")
    return seconds, ours


def radar_calibration_seconds(safe: Path, work: Path) -> float:
    """The import's first pass alone on VV: read DN strips, calibrate and denoise, write float32 (like OTB)."""
    from osgeo import gdal

    from sar_seg_plugin.core import sentinel1 as s1

    t0 = time.perf_counter()
    m = s1.open_product(str(safe)).measurements["VV"]
    cal = s1.Calibrator(
        s1.calibration_vectors(s1._read_text(m.calibration), "sigma0"), s1.noise_vectors(s1._read_text(m.noise))
    )
    src = gdal.Open(m.tiff)
    w, h = src.RasterXSize, src.RasterYSize
    dst = gdal.GetDriverByName("GTiff").Create(str(work / "ours.tif"), w, h, 1, gdal.GDT_Float32, ["TILED=YES"])
    for r0 in range(0, h, s1.STRIP_LINES):
        rh = min(s1.STRIP_LINES, h - r0)
        strip, _ = cal(src.GetRasterBand(1).ReadAsArray(0, r0, w, rh), r0, 0)
        dst.GetRasterBand(1).WriteArray(strip, 0, r0)
        dst.FlushCache()
        src.FlushCache()
    dst = None
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-full", action="store_true", help="only the area of interest")
    p.add_argument("--pixel-size", type=float, default=10.0)
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    p.add_argument("--child-params", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    if not s1_product.available():
        print("Sentinel-1 metadata missing: run make setup")
        return 0
    work, t_start = harness.open_bench("SAR Seg Sentinel-1 import benchmark", "sarseg-s1bench-", args.workdir)
    try:
        safe = product()
        worst = section_values(safe)
        runs = section_runs(args, safe, work)
        otb = section_otb(safe, work)
        harness.heading("4. Targets")
        rows = [["values, max relative difference", f"<= {TARGET_REL:g}", f"{worst:.1e}",
                 "PASS" if worst <= TARGET_REL else "FAIL"]]  # fmt: skip
        for name, r in runs.items():
            rows.append([f"peak RSS, {name}", f"< {TARGET_RSS_MB:.0f} MB", f"{r['maxrss_mb']:.0f} MB",
                         "PASS" if r["maxrss_mb"] < TARGET_RSS_MB else "FAIL"])  # fmt: skip
        if otb is not None:
            rows.append(["calibration + noise, VV, radar geometry: s (OTB s)", "<= OTB", f"{otb[1]:.1f} ({otb[0]:.1f})",
                         "PASS" if otb[1] <= otb[0] else "FAIL"])  # fmt: skip
        harness.table(["target", "goal", "measured", "result"], rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nTotal benchmark time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
