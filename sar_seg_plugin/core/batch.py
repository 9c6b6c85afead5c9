"""Run one of SAR Seg's tools over many inputs on a Dask cluster (``dask.distributed``). No qgis import.

The tools are the same core functions the Processing algorithms call, so a batch gives the files a QGIS run gives.
What this module adds around them:

- **Inputs** (:func:`find_inputs`): a folder, a glob pattern or a CSV list (column ``input``; ``pre`` for a flood
  map's pre-event image; ``output`` to name a file). Each input becomes a :class:`Task` with its output path
  decided before any work (:func:`plan_tasks`), so two inputs can never write the same file.
- **Whole files, resume**: every output is written by the worker under a hidden temporary name and renamed into
  place when complete (:mod:`.outputs`), so an output that exists is finished, and a rerun skips it.
- **Failures stay local**: :func:`run_task` turns an input's error into a ``failed`` record with its message; the
  others go on. A worker that dies takes its task back to the scheduler, which gives it to another worker (Dask
  retries a task whose worker died up to ``distributed.scheduler.allowed-failures`` times).
- **One large raster across workers** (:func:`split_segment`): strips with the model's halo
  (:func:`.tiling.strip_rows`), each segmented by a worker with the whole raster's tile layout, then copied into
  one GeoTIFF: the same pixels as one process segmenting the whole raster.
- **Summary**: one :class:`Record` per input (input, output, status, seconds, message, worker), written as CSV.

``dask`` and ``distributed`` are imported only by the functions that need a client.
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..models.registry import fast_segmentation_model
from .errors import CancelledError, SarSegError

TOOLS = ("import_sentinel1", "speckle_filter", "convert_db", "segment", "forecast", "flood_map")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img")
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
SUMMARY_FIELDS = ("input", "output", "status", "seconds", "message", "worker")
#: Options each tool takes, with their defaults (strings from the command line are converted to these types).
OPTIONS: dict[str, dict[str, Any]] = {
    "import_sentinel1": {"radiometry": "sigma0", "scale": "linear", "pixel_size": 10.0, "polarisations": ""},
    "speckle_filter": {"filter": "lee", "window": 7, "looks": 4.4},
    "convert_db": {"direction": "auto"},
    "segment": {"model": fast_segmentation_model(), "device": "cpu", "threads": 0, "confidence": False},
    "forecast": {"model": "sarseg_convlstm_classes", "method": "model", "prefix": "forecast", "threads": 0},
    "flood_map": {"min_area_m2": 1000.0},
}


@dataclass
class Task:
    """One input of a batch: the tool, its input(s), the output it writes (a file, or a folder for ``forecast``)
    and the tool's options."""

    tool: str
    input: str
    output: str
    options: dict[str, Any] = field(default_factory=dict)
    pre: str = ""  # flood_map: the pre-event image


@dataclass
class Record:
    """What became of one task (a row of the summary CSV)."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    message: str = ""
    worker: str = ""


# --- planning -----------------------------------------------------------------------------------------------------


def parse_options(tool: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings to the tool's options (typed like :data:`OPTIONS`); unknown keys are refused."""
    if tool not in TOOLS:
        raise SarSegError(f"Unknown tool '{tool}': choose one of {', '.join(TOOLS)}.")
    defaults = OPTIONS[tool]
    options = dict(defaults)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            known = ", ".join(f"{k}={v}" for k, v in defaults.items())
            raise SarSegError(f"'{pair}' is not an option of {tool}: give key=value with one of {known}.")
        kind = type(defaults[key])
        try:
            if kind is bool:
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                options[key] = lowered in ("true", "1", "yes")
            else:
                options[key] = kind(value.strip())
        except ValueError:
            raise SarSegError(f"Option {key} of {tool} takes a {kind.__name__}; '{value}' given.") from None
    return options


def _is_input(path: Path, tool: str) -> bool:
    if path.name.startswith("."):  # hidden: SAR Seg's own temporaries among them
        return False
    if tool == "import_sentinel1":
        return (path.is_file() and path.suffix.lower() == ".zip") or (path.is_dir() and path.suffix.upper() == ".SAFE")
    if tool == "forecast":
        return path.is_dir() and any(_is_input(p, "segment") for p in path.iterdir())
    return path.is_file() and path.suffix.lower() in RASTER_SUFFIXES


def find_inputs(spec: str, tool: str) -> list[dict[str, str]]:
    """The inputs named by ``spec``: a CSV file (column ``input``, optional ``pre`` and ``output``; relative paths
    from the CSV's folder), a folder (its rasters; its ``.zip`` / ``.SAFE`` products for ``import_sentinel1``; its
    subfolders of dated rasters for ``forecast``, or the folder itself when it holds the rasters), or a glob
    pattern. Rows of ``{"input", "pre", "output"}``."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "input" not in columns:
                raise SarSegError(
                    f"'{path.name}' has no 'input' column (columns: {', '.join(columns) or 'none'}). "
                    "Give one path per row under a header 'input' (and 'pre' for a flood map's pre-event image)."
                )
            rows = []
            for row in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if not row.get("input"):
                    continue
                rows.append({k: _from(path.parent, row.get(k, "")) for k in ("input", "pre", "output")})
        if not rows:
            raise SarSegError(f"'{path.name}' lists no input.")
        return rows
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if _is_input(p, tool))
        if not found and tool == "forecast" and any(_is_input(p, "segment") for p in path.iterdir()):
            found = [path]
        if not found:
            kinds = {"import_sentinel1": ".zip or .SAFE products", "forecast": "folders of dated rasters"}
            raise SarSegError(f"'{path}' holds no {kinds.get(tool, 'rasters (' + ', '.join(RASTER_SUFFIXES) + ')')}.")
        return [{"input": str(p), "pre": "", "output": ""} for p in found]
    matches = sorted(glob.glob(str(path)))
    if not matches:
        raise SarSegError(f"No file matches '{spec}': give a folder, a CSV list or a glob pattern (e.g. 'in/*.tif').")
    return [{"input": str(Path(m).resolve()), "pre": "", "output": ""} for m in matches]


def _from(folder: Path, value: str) -> str:
    if not value:
        return ""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".zip", ".SAFE", ".safe", *RASTER_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_for(tool: str, source: str, folder: str, options: Mapping[str, Any]) -> str:
    """The output a tool writes for ``source`` in ``folder``: ``<name>_<what>.tif`` (a folder ``<name>`` for a
    forecast)."""
    stem = _stem(source)
    suffix = {
        "import_sentinel1": f"_{options.get('radiometry', 'sigma0')}.tif",
        "speckle_filter": f"_{options.get('filter', 'lee')}.tif",
        "convert_db": "_converted.tif",
        "segment": "_classes.tif",
        "flood_map": "_flood.tif",
        "forecast": "",
    }[tool]
    return str(Path(folder) / f"{stem}{suffix}")


def plan_tasks(tool: str, rows: Sequence[Mapping[str, str]], folder: str, options: Mapping[str, Any]) -> list[Task]:
    """A task per input row, each with its output in ``folder`` (a row's own ``output`` wins); refuses two tasks
    writing one file, and a flood map's missing pre-event image."""
    tasks, seen = [], {}
    for row in rows:
        source = row["input"]
        output = row.get("output") or output_for(tool, source, folder, options)
        key = os.path.normcase(os.path.abspath(output))
        if key in seen:
            raise SarSegError(
                f"'{seen[key]}' and '{source}' would both write '{output}': rename one, or name the outputs in a "
                "CSV list (column 'output')."
            )
        seen[key] = source
        pre = row.get("pre", "")
        if pre and tool != "flood_map":
            raise SarSegError(f"The 'pre' column is for flood_map; {tool} takes one input per row.")
        tasks.append(Task(tool, source, output, dict(options), pre))
    return tasks


# --- running one task (on a worker) -------------------------------------------------------------------------------

_MODELS: dict[tuple[str, ...], Any] = {}


def _model(kind: str, name: str, device: str, threads: int) -> Any:
    """A model loaded once per worker process (onnxruntime sessions are reused across tasks): a forecaster, or a
    segmentation model as ``sarseg:segment`` runs it, ``(model, reference)`` (``models.registry.load_checked``: the
    bundled int8 copy with the float32 model it is checked against on each raster; any other model unchecked)."""
    from ..models.registry import load_checked, load_forecaster

    key = (kind, name, device, str(threads))
    if key not in _MODELS:
        if kind == "forecaster":
            _MODELS[key] = load_forecaster(name, device, threads or None)
        else:
            _MODELS[key] = load_checked(name, device, threads or None)[:2]
    return _MODELS[key]


def _checked_model(opts: Mapping[str, Any], device: str | None = None) -> tuple[Any, Any | None]:
    """The segmentation model of a task's ``opts`` and the model it is checked against (None: unchecked)."""
    return _model("segmentation", opts["model"], device or opts["device"], int(opts.get("threads") or 0))


def _strip_model(opts: Mapping[str, Any], device: str | None = None) -> Any:
    """The model every strip of a split raster runs: the float32 model in place of its int8 copy. The copy's check
    decides per raster, and strips segmented alone could each decide otherwise: one model for all keeps the strips'
    pixels those of one run."""
    model, reference = _checked_model(opts, device)
    return reference if reference is not None else model


def forecast_items(folder: str) -> list[Any]:
    """The dated rasters of a forecast area (dates from the file names, as in ``sarseg:forecast``)."""
    from .timeseries import DatedRaster, date_from_name

    items, undated = [], []
    for p in sorted(Path(folder).iterdir()):
        if _is_input(p, "segment"):
            date = date_from_name(p.name)
            (items if date else undated).append(DatedRaster(str(p), date, p.stem) if date else p.name)
    if not items:
        raise SarSegError(f"'{folder}' holds no raster with a date in its name (e.g. sar_20240305.tif).")
    if undated:
        raise SarSegError(
            f"'{folder}' holds rasters without a date in their names ({', '.join(undated[:3])}): a forecast area's "
            "folder must hold only its dated maps. Move the others out."
        )
    return items


def _forecast_done(task: Task) -> tuple[bool, Callable[[], None]]:
    from .forecast import forecast_rasters, output_paths

    opts = task.options
    model = _model("forecaster", opts["model"], "cpu", int(opts.get("threads") or 0))
    items = forecast_items(task.input)
    t0 = max(i.date for i in items)
    last = output_paths(task.output, opts["prefix"], t0, model.metadata.horizons)[-1][2]

    def run() -> None:
        Path(task.output).mkdir(parents=True, exist_ok=True)
        forecast_rasters(items, model, task.output, prefix=opts["prefix"], method=opts["method"], confidence=True)

    return Path(last).exists(), run


def _runner(task: Task) -> tuple[bool, Callable[[], None]]:
    """Whether the task's output is already there, and the call that makes it."""
    opts, src, dst = task.options, task.input, task.output
    if task.tool == "forecast":
        return _forecast_done(task)
    done = Path(dst).exists()
    if task.tool == "speckle_filter":
        from .preprocess import SpeckleSettings, speckle_filter_raster

        settings = SpeckleSettings(opts["filter"], int(opts["window"]), float(opts["looks"]) or None)
        return done, lambda: speckle_filter_raster(src, dst, settings)
    if task.tool == "convert_db":
        from .preprocess import convert_db_raster

        return done, lambda: convert_db_raster(src, dst, opts["direction"])
    if task.tool == "segment":
        from .inference import segment_raster

        def segment() -> None:
            model, reference = _checked_model(opts)
            confidence = str(Path(dst).with_name(Path(dst).stem + "_confidence.tif")) if opts["confidence"] else None
            segment_raster(src, dst, model, confidence_path=confidence, reference=reference)

        return done, segment
    if task.tool == "flood_map":
        from .flood import flood_map

        return done, lambda: flood_map(src, dst, pre=task.pre or None, min_area_m2=float(opts["min_area_m2"]))
    if task.tool == "import_sentinel1":
        from .sentinel1 import import_product, open_product

        pols = [p.strip() for p in str(opts["polarisations"]).split(",") if p.strip()] or None
        return done, lambda: import_product(
            open_product(src), dst, polarisations=pols, radiometry=opts["radiometry"], scale=opts["scale"],
            pixel_size=float(opts["pixel_size"]),
        )  # fmt: skip
    raise SarSegError(f"Unknown tool '{task.tool}': choose one of {', '.join(TOOLS)}.")


def run_task(task: Task) -> Record:
    """Run one task where it is called (a worker, or this process): skipped when its output exists, ``failed``
    with the error's message when the tool refuses the input or fails. Never raises for the input's sake."""
    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        done, run = _runner(task)
        if done:
            return Record(task.input, task.output, SKIPPED, 0.0, "output exists (finished earlier)", worker)
        Path(task.output).parent.mkdir(parents=True, exist_ok=True)
        run()
    except (SarSegError, CancelledError) as err:
        return Record(task.input, task.output, FAILED, time.perf_counter() - started, str(err), worker)
    except Exception as err:  # any other error of one input must not stop the batch
        where = traceback.extract_tb(err.__traceback__)[-1]
        message = f"{type(err).__name__}: {err} ({Path(where.filename).name}:{where.lineno})"
        return Record(task.input, task.output, FAILED, time.perf_counter() - started, message, worker)
    return Record(task.input, task.output, DONE, time.perf_counter() - started, "", worker)


# --- one raster across workers ------------------------------------------------------------------------------------


@dataclass
class SplitPlan:
    """How :func:`split_segment` cuts one raster: strips, and the band scale decided once for the whole raster."""

    strips: list[Any]
    input_scale: str
    folder: str  # where the strips are written (beside the output, removed at the end)
    fill: float | None = None  # the whole raster's undeclared fill value (raster_io.declare_fill), if any


def plan_split(task: Task, parts: int) -> SplitPlan | None:
    """Strips for segmenting ``task``'s raster on ``parts`` workers, or None when it cannot be split exactly: the
    raster must be segmented on its own grid (no resampling) with one scale for all its bands."""
    from . import raster_io
    from .inference import input_plan_inputs
    from .preprocess import check_has_data
    from .resampling import resampling_plan
    from .tiling import strip_rows
    from .units import plan_model_input

    meta = _strip_model(task.options, "cpu").metadata
    src = raster_io.open_raster(task.input)
    info = raster_io.read_info(src)
    windows = raster_io.read_spread_windows(src)
    model_input = plan_model_input(meta, info, check_has_data(src, info, windows=windows))
    src, info, fill = raster_io.declare_fill(src, info, model_input.bands, windows)  # as the whole run does
    scales = {s.scale for s in model_input.scales}
    resample, _ = resampling_plan(src, meta, *input_plan_inputs(src, meta, model_input, windows))
    height, src = info.height, None
    if resample is not None or len(scales) != 1:
        return None
    scale = scales.pop()
    strips = strip_rows(height, meta.tile_size, meta.tile_overlap, parts, meta.size_multiple)
    out = Path(task.output)
    return SplitPlan(strips, scale, str(out.with_name(f".{out.name}.strips")), None if fill is None else fill[0])


def strip_path(plan: SplitPlan, index: int) -> str:
    return str(Path(plan.folder) / f"strip_{index:04d}.tif")


def segment_strip(task: Task, plan: SplitPlan, index: int) -> Record:
    """Segment one strip of ``task``'s raster (on a worker) into the strip folder: its core rows only, written
    whole; skipped when a finished strip is there (a rerun)."""
    from osgeo import gdal

    from .inference import segment_raster
    from .outputs import OutputSet

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    strip = plan.strips[index]
    target = strip_path(plan, index)
    if Path(target).exists():
        return Record(task.input, target, SKIPPED, 0.0, "strip finished earlier", worker)
    Path(plan.folder).mkdir(parents=True, exist_ok=True)
    opts = task.options
    model = _strip_model(opts)
    src = gdal.Open(task.input)
    width = src.RasterXSize
    y0, y1 = strip.read
    base = Path(plan.folder) / f"read_{index:04d}"
    try:
        gdal.Translate(f"{base}.vrt", src, format="VRT", srcWin=[0, y0, width, y1 - y0])
        src = None
        segment_raster(
            f"{base}.vrt", f"{base}.tif", model, input_scale=plan.input_scale, tile_rows=strip.rows,
            fill=False if plan.fill is None else plan.fill,
        )  # fmt: skip
        lo, hi = strip.core
        with OutputSet() as outputs:
            temporary = outputs.add(target)
            done = gdal.Translate(
                str(temporary), f"{base}.tif", srcWin=[0, lo - y0, width, hi - lo], creationOptions=["TILED=YES"]
            )
            if done is None:
                raise SarSegError(f"Cannot write '{target}': {gdal.GetLastErrorMsg()}")
            done = None
    except (SarSegError, CancelledError) as err:
        return Record(task.input, target, FAILED, time.perf_counter() - started, str(err), worker)
    finally:
        for suffix in (".vrt", ".tif"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
    return Record(task.input, target, DONE, time.perf_counter() - started, "", worker)


def mosaic_strips(task: Task, plan: SplitPlan) -> None:
    """The strips of ``plan`` copied, block by block, into ``task.output`` (written whole, with the class names,
    colours and metadata of a whole run); the strip folder is removed."""
    import numpy as np
    from osgeo import gdal

    from .raster_io import GeoTiffWriter, category_names, iter_blocks, read_window

    paths = [strip_path(plan, s.index) for s in plan.strips]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise SarSegError(f"{len(missing)} strip(s) of '{task.input}' are missing: rerun the batch to finish them.")
    vrt = gdal.BuildVRT(str(Path(plan.folder) / "mosaic.vrt"), paths)
    try:
        first = gdal.Open(paths[0])
        band = first.GetRasterBand(1)
        names = category_names(band)
        table = band.GetColorTable()
        colors = {i: table.GetColorEntry(i) for i in range(table.GetCount())} if table else None
        metadata = first.GetMetadata()
        src = gdal.Open(task.input)
        with GeoTiffWriter(
            task.output, vrt.RasterXSize, vrt.RasterYSize, 1, np.uint8, src.GetGeoTransform(), src.GetProjection(),
            nodata=band.GetNoDataValue(), color_table=colors, category_names=names, metadata=metadata,
        ) as out:  # fmt: skip
            for block in iter_blocks(vrt.RasterXSize, vrt.RasterYSize, 1024):
                out.write(block.core, read_window(vrt, block.core, [1], np.uint8))
        first = band = src = None
    finally:
        vrt = None
    shutil.rmtree(plan.folder, ignore_errors=True)


# --- the batch ----------------------------------------------------------------------------------------------------


def start_client(workers: int = 2, scheduler: str | None = None, threads: int = 1) -> Any:
    """A ``distributed.Client``: of the scheduler at ``scheduler`` (``tcp://host:8786``), or of a local cluster of
    ``workers`` processes of ``threads`` thread(s) each."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SarSegError(
            "Batch runs need Dask's distributed scheduler: pip install 'dask[distributed]' (and bokeh for its "
            f"dashboard) into the Python that runs them ({sys.executable})."
        ) from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except OSError as err:
            raise SarSegError(f"No Dask scheduler answers at {scheduler} ({err}): start one or leave it out.") from None
    if workers < 1:
        raise SarSegError(f"A batch needs at least one worker; {workers} given.")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=":0", silence_logs=40
    )
    return Client(cluster)


def _missing_modules(tool: str) -> list[str]:
    """The modules ``tool`` needs that this Python cannot import (run on each worker)."""
    import importlib

    needed = ["numpy", "scipy", "osgeo.gdal", "sar_seg_plugin.core.batch"]
    if tool in ("segment", "forecast"):
        needed.append("onnxruntime")
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing.append(f"{name} ({err})")
    return missing


def check_workers(client: Any, tool: str) -> None:
    """Refuse, before any task, workers that cannot run ``tool``: each worker's missing modules, and what to do."""
    try:
        found = client.run(_missing_modules, tool)
    except Exception as err:  # a worker that cannot even unpickle the check lacks sar_seg_plugin
        raise SarSegError(f"The Dask workers cannot run SAR Seg's code ({type(err).__name__}: {err}).") from None
    lacking = {worker: missing for worker, missing in found.items() if missing}
    if lacking:
        lines = "; ".join(f"{w}: {', '.join(m)}" for w, m in sorted(lacking.items()))
        raise SarSegError(
            f"Some Dask workers cannot run {tool}: {lines}. Install GDAL's Python bindings, numpy, scipy and "
            "onnxruntime in the workers' Python, and make this plugin's folder importable there (PYTHONPATH)."
        )


ProgressFn = Callable[[int, int, Record], None]


def run_batch(
    tasks: Sequence[Task],
    client: Any,
    *,
    split: int = 0,
    progress: ProgressFn | None = None,
    runner: Callable[[Task], Record] = run_task,
) -> list[Record]:
    """Run ``tasks`` on ``client``'s workers, one Dask task per input; records in the order of ``tasks``.

    ``split`` > 1 (segment only): each raster is cut into that many strips run on the workers side by side and
    mosaicked by this process (:func:`split_segment`). ``progress(done, total, record)`` after each input.
    ``runner``: the function run per task (tests wrap :func:`run_task`)."""
    from distributed import as_completed

    if split > 1:
        if any(t.tool != "segment" for t in tasks):
            raise SarSegError("Only segment splits a raster across workers: leave --split out for other tools.")
        records = []
        for k, task in enumerate(tasks):
            records.append(split_segment(task, client, split))
            if progress:
                progress(k + 1, len(tasks), records[-1])
        return records
    futures = {client.submit(runner, task, key=f"sarseg-{task.tool}-{k}-{_stem(task.input)}", pure=False): k
               for k, task in enumerate(tasks)}  # fmt: skip
    records: list[Record | None] = [None] * len(tasks)
    for finished, future in enumerate(as_completed(futures), start=1):
        k = futures[future]
        records[k] = _record_of(future, tasks[k])
        if progress:
            progress(finished, len(tasks), records[k])
    return [r for r in records if r is not None]


def _record_of(future: Any, task: Task) -> Record:
    """A future's record; a task that failed outside the tool (its worker died too often) is a failed record."""
    try:
        return future.result()
    except Exception as err:
        name = type(err).__name__
        hint = " (its worker died each time it ran it: out of memory?)" if name == "KilledWorker" else ""
        return Record(task.input, task.output, FAILED, 0.0, f"{name}: {err}{hint}", "")


def split_segment(task: Task, client: Any, parts: int) -> Record:
    """Segment one raster as ``parts`` strips on ``client``'s workers, then mosaic them here (see the module
    docstring); a raster that cannot be split exactly is segmented whole on one worker, and the record says so."""
    started = time.perf_counter()
    if Path(task.output).exists():
        return Record(task.input, task.output, SKIPPED, 0.0, "output exists (finished earlier)", "")
    try:
        plan = plan_split(task, parts)
    except SarSegError as err:
        return Record(task.input, task.output, FAILED, time.perf_counter() - started, str(err), "")
    if plan is None:
        record = client.submit(run_task, task, pure=False).result()
        record.message = "segmented whole: the raster is resampled, or its bands differ in scale"
        return record
    futures = [client.submit(segment_strip, task, plan, s.index, pure=False) for s in plan.strips]
    results = [_record_of(f, task) for f in futures]
    failed = [r for r in results if r.status == FAILED]
    workers = sorted({r.worker for r in results if r.worker})
    if failed:
        return Record(task.input, task.output, FAILED, time.perf_counter() - started, failed[0].message, "")
    try:
        mosaic_strips(task, plan)
    except Exception as err:  # noqa: BLE001 - reported in the record, the batch goes on
        return Record(task.input, task.output, FAILED, time.perf_counter() - started, str(err), "")
    message = f"{len(plan.strips)} strips on {len(workers)} worker(s)"
    return Record(task.input, task.output, DONE, time.perf_counter() - started, message, ", ".join(workers))


def write_summary(records: Sequence[Record], path: str) -> None:
    """The summary CSV (columns :data:`SUMMARY_FIELDS`), written whole."""
    from .outputs import OutputSet

    with OutputSet() as outputs:
        temporary = outputs.add(path)
        with open(temporary, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            for r in records:
                row = asdict(r)
                row["seconds"] = f"{r.seconds:.2f}"
                writer.writerow(row)


def read_summary(path: str) -> list[Record]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Record(**{**row, "seconds": float(row["seconds"])}) for row in csv.DictReader(f)]
