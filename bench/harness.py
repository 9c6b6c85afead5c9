"""What the benchmarks share: the synthetic SAR raster generator, headless QGIS with the sarseg provider, CPU and
peak-memory readings, measuring subprocesses and the printed tables.

Imported by each ``bench/*.py`` (run as a script, so this folder is on ``sys.path``); importing it puts the project
root on ``sys.path`` for ``sar_seg_plugin`` and ``training``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"
REPORT_PREFIX = "SARSEG_BENCH "
LOOKS = 4.4  # equivalent number of looks of the generated speckle (Sentinel-1 GRD-like)
CELL = 97.0  # size of the piecewise-constant regions, pixels (in rotated coordinates)
GEN_BLOCK = 1024

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- Synthetic SAR rasters --------------------------------------------------------------------------


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_uniform(key: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A deterministic uniform [0, 1) value for each (a, b) integer pair."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(key) * np.uint64(0x9E3779B97F4A7C15) + a.astype(np.int64).astype(np.uint64))
        h = _mix(h ^ (b.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def scene_block(x0: int, y0: int, width: int, height: int, band: int, seed: int) -> np.ndarray:
    """Noise-free backscatter (linear power) of a window: rotated cells of constant level plus points."""
    y, x = np.mgrid[y0 : y0 + height, x0 : x0 + width].astype(np.float64)
    u = np.floor((x * 0.866 + y * 0.5) / CELL)
    v = np.floor((y * 0.866 - x * 0.5) / (CELL * 0.7))
    level_db = -22.0 + 20.0 * hash_uniform(seed, u, v)
    if band > 1:  # a cross-pol-like band: darker, partly independent
        level_db -= 4.0 + 6.0 * hash_uniform(seed + band, u, v)
    level = 10.0 ** (level_db / 10.0)
    points = hash_uniform(seed + 1000, x, y) < 2e-4
    level[points] *= 200.0
    return level


def create_geotiff(path: Path, size: int, bands: int, data_type: int, options: Sequence[str]) -> Any:
    """A new size x size GeoTIFF in EPSG:32631 with 10 m pixels (the benchmarks' synthetic grid)."""
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, data_type, options=list(options))
    if ds is None:
        raise RuntimeError(f"cannot create {path}: {gdal.GetLastErrorMsg()}")
    ds.SetGeoTransform([500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    return ds


def make_raster(path: Path, size: int, bands: int, seed: int, compress: str = "NONE", looks: float = LOOKS) -> float:
    """Write a size x size float32 raster of :func:`scene_block` times Gamma(looks, 1/looks) speckle, block by
    block (band 1 "VV", band 2 "VH", EPSG:32631, 10 m); returns the seconds it took."""
    from osgeo import gdal

    t0 = time.perf_counter()
    opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_SAFER", f"COMPRESS={compress}"]
    if compress != "NONE":
        opts += ["PREDICTOR=3", "ZLEVEL=1", "NUM_THREADS=ALL_CPUS"]
    if bands > 1:
        opts.append("INTERLEAVE=BAND")
    ds = create_geotiff(path, size, bands, gdal.GDT_Float32, opts)
    for b in range(1, bands + 1):
        ds.GetRasterBand(b).SetDescription(["VV", "VH"][b - 1] if b <= 2 else f"B{b}")
    for y0 in range(0, size, GEN_BLOCK):
        for x0 in range(0, size, GEN_BLOCK):
            w, h = min(GEN_BLOCK, size - x0), min(GEN_BLOCK, size - y0)
            for b in range(1, bands + 1):
                rng = np.random.default_rng([seed, b, y0, x0])
                speck = rng.standard_gamma(looks, size=(h, w), dtype=np.float32) / np.float32(looks)
                data = (scene_block(x0, y0, w, h, b, seed).astype(np.float32) * speck).astype(np.float32)
                ds.GetRasterBand(b).WriteArray(data, x0, y0)
        ds.FlushCache()  # write and drop this row of tiles: the generator's memory stays one block row
    ds.FlushCache()
    ds = None
    return time.perf_counter() - t0


# --- QGIS headless ----------------------------------------------------------------------------------

_QGIS: dict[str, object] = {}


def start_qgis() -> Callable[..., dict]:
    """Start QGIS without GUI, register Processing and the sarseg provider; returns ``processing.run``."""
    if "run" in _QGIS:
        return _QGIS["run"]  # type: ignore[return-value]
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for p in (QGIS_PLUGINS, str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from sar_seg_plugin.processing.provider import SarSegProvider

    provider = SarSegProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    import processing

    _QGIS.update(app=app, provider=provider, processing=processing, run=processing.run)
    return processing.run


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MB.

    Not ``ru_maxrss``: Linux carries the peak of the pre-exec address space into ``ru_maxrss`` across
    ``execve``, so a child spawned by a large parent reports at least the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- Measuring subprocesses ---------------------------------------------------------------------------


def child_report(measure: Callable[[], dict] | None = None) -> int:
    """Body of a measuring subprocess: start QGIS, note the baseline memory, run ``measure`` (its figures are
    reported), and print one ``SARSEG_BENCH {json}`` line with the peak RSS; returns the exit status."""
    start_qgis()
    from osgeo import gdal

    out: dict[str, object] = {"baseline_rss_mb": peak_rss_mb(), "gdal_cachemax_mb": gdal.GetCacheMax() / 2**20}
    if measure is not None:
        out.update(measure())
    out["maxrss_mb"] = peak_rss_mb()
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(REPORT_PREFIX + json.dumps(out), flush=True)
    return 0


def run_child(script: str | Path, extra: Sequence[str], env: dict[str, str] | None = None) -> dict:
    """Run ``script`` as a measuring subprocess (its :func:`child_report` line), with ``env`` added to this
    process's environment; also polls its RSS (``polled_rss_mb``)."""
    import psutil

    cmd = [sys.executable, str(Path(script).resolve()), *extra]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=err, text=True)
        polled = 0
        try:
            ps = psutil.Process(proc.pid)
            while proc.poll() is None:
                polled = max(polled, ps.memory_info().rss)
                time.sleep(0.02)
        except psutil.NoSuchProcess:
            pass
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in stdout.splitlines():
        if line.startswith(REPORT_PREFIX):
            result = json.loads(line[len(REPORT_PREFIX) :])
            result["polled_rss_mb"] = polled / 2**20
            return result
    raise RuntimeError(f"child {' '.join(extra)} failed ({proc.returncode}):\n{stdout}\n{stderr}")


# --- Printing and timing ------------------------------------------------------------------------------


def heading(text: str) -> None:
    print()
    print(text)
    print("=" * len(text))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    print(fmt(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(fmt(r))
    sys.stdout.flush()


def mps(pixels: float, seconds: float) -> float:
    return pixels / seconds / 1e6


def best_of(repeat: int, fn: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Run ``fn`` (returning (wall, cpu) seconds) ``repeat`` times; the fastest run."""
    return min((fn() for _ in range(max(1, repeat))), key=lambda t: t[0])


def open_bench(title: str, prefix: str, workdir: str | None, where: str = "") -> tuple[Path, float]:
    """Start a benchmark: a fresh work directory (under ``workdir`` or /tmp), a throw-away QGIS profile in it
    shared with the subprocesses (no user settings read or written), and the header line describing the machine.
    Returns the work directory and the start time."""
    parent = Path(workdir).resolve() if workdir else Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(work / "qgis-profile"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import platform

    from osgeo import gdal

    print(title)
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
        f"GDAL {gdal.__version__}; work directory {work}{where}"
    )
    return work, time.perf_counter()


def load_average() -> str:
    """The 1, 5 and 15 min load averages: other work on the machine skews the figures."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
