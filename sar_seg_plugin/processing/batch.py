"""sarseg:batch — one of SAR Seg's tools over many inputs on a Dask cluster (``python -m sar_seg_plugin.batch``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core import batch, outputs
from .base import SarSegAlgorithm

PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


def python_executable() -> str:
    """The Python interpreter to start the batch with: the one of the Python QGIS runs (its prefix's interpreter,
    which sees the same GDAL bindings and packages; inside QGIS, ``sys.executable`` is the QGIS program or
    whatever python3 comes first on the PATH), else python3 on the PATH."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = []
    for prefix in (sys.prefix, sys.base_prefix):
        candidates += [str(Path(prefix) / "bin" / f"python{version}"), str(Path(prefix) / "bin" / "python3"),
                       str(Path(prefix) / "python.exe")]  # fmt: skip
    candidates += [sys.executable, getattr(sys, "_base_executable", "")]
    for candidate in candidates:
        if candidate and Path(candidate).name.lower().startswith("python") and Path(candidate).is_file():
            return candidate
    found = shutil.which("python3") or shutil.which("python")
    if not found:
        raise QgsProcessingException("No Python interpreter found to start the batch: put python3 on the PATH.")
    return found


class BatchAlgorithm(SarSegAlgorithm):
    TOOL = "TOOL"
    INPUTS = "INPUTS"
    OPTIONS = "OPTIONS"
    WORKERS = "WORKERS"
    SCHEDULER = "SCHEDULER"
    SPLIT = "SPLIT"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    SUMMARY = "SUMMARY"
    DONE = "DONE"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"

    NAME = "batch"
    DISPLAY_NAME = "Batch over an archive (Dask)"
    GROUP_ID = "batch"
    HELP = (
        "Runs one SAR Seg tool over many inputs on a Dask cluster: a local cluster of worker processes on this "
        "computer, or a running Dask scheduler (a cluster on Kubernetes or HPC). The outputs are the files the tool "
        "writes when run alone.\n\n"
        "<b>Tool</b>: import_sentinel1, speckle_filter, convert_db, segment, forecast (one per folder of dated "
        "rasters) or flood_map.\n"
        "<b>Inputs</b>: a folder (its rasters; its .zip / .SAFE products for the import; its subfolders of dated "
        "rasters for the forecast), a glob pattern such as /data/s1/*.tif, or a CSV list with a column 'input' "
        "(and 'pre' for a flood map's pre-event image, 'output' to name an output).\n"
        "<b>Tool options</b>: key=value pairs separated by ';', e.g. filter=refined_lee; window=5. "
        + "; ".join(f"{t}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for t, o in batch.OPTIONS.items())
        + ".\n"
        "<b>Workers</b>: worker processes of the local cluster; their CPU cores are shared among them.\n"
        "<b>Scheduler</b> (advanced): the address of a running Dask scheduler, e.g. tcp://host:8786; its workers "
        "need GDAL, numpy, scipy, onnxruntime and this plugin's folder importable, and the same paths to the data.\n"
        "<b>Split each raster into strips</b> (advanced, segment): this many strips segmented side by side (the same "
        "pixels as a whole run of the float32 model, which every strip runs in place of the default int8 copy, "
        "whose check decides per raster).\n\n"
        "Every output is written whole; a rerun skips the outputs already there (resume). An input that fails does "
        "not stop the others: the summary CSV lists each input with its status, seconds and message. The log gives "
        "the address of Dask's dashboard."
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterEnum(self.TOOL, self.tr("Tool"), options=list(batch.TOOLS),
                                                     defaultValue=batch.TOOLS.index("segment")))  # fmt: skip
        self.addParameter(QgsProcessingParameterString(self.INPUTS, self.tr("Inputs (folder, glob pattern or CSV)")))
        self.addParameter(QgsProcessingParameterString(self.OPTIONS, self.tr("Tool options (key=value; ...)"),
                                                       defaultValue="", optional=True))  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WORKERS, self.tr("Workers (local cluster)"), QgsProcessingParameterNumber.Integer, 2, False, 1, 256
            )  # fmt: skip
        )
        advanced = [
            QgsProcessingParameterString(self.SCHEDULER, self.tr("Dask scheduler address (tcp://host:8786)"),
                                         defaultValue="", optional=True),
            QgsProcessingParameterNumber(self.SPLIT, self.tr("Split each raster into strips (segment)"),
                                         QgsProcessingParameterNumber.Integer, 0, False, 0, 1024),
        ]  # fmt: skip
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.SUMMARY, self.tr("Summary"), self.tr("CSV files (*.csv)"), optional=True, createByDefault=False
            )  # fmt: skip
        )
        for name, label in ((self.DONE, "Inputs done"), (self.SKIPPED, "Inputs skipped"), (self.FAILED, "Failed")):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        tool = batch.TOOLS[self.parameterAsEnum(parameters, self.TOOL, context)]
        inputs = self.parameterAsString(parameters, self.INPUTS, context).strip()
        pairs = [p.strip() for p in self.parameterAsString(parameters, self.OPTIONS, context).split(";") if p.strip()]
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        summary = self.parameterAsFileOutput(parameters, self.SUMMARY, context) if parameters.get(self.SUMMARY) else ""
        summary = summary or str(Path(folder) / "batch_summary.csv")
        scheduler = self.parameterAsString(parameters, self.SCHEDULER, context).strip()
        # Refused here, before a cluster starts: an unknown tool option, no input, two inputs writing one file.
        self.run_core(lambda: batch.plan_tasks(tool, batch.find_inputs(inputs, tool), folder,
                                               batch.parse_options(tool, pairs)))  # fmt: skip
        command = [python_executable(), "-m", "sar_seg_plugin.batch", tool, inputs, "--out", folder,
                   "--summary", summary, "--progress", "lines",
                   "--workers", str(self.parameterAsInt(parameters, self.WORKERS, context))]  # fmt: skip
        command += [a for p in pairs for a in ("-o", p)]
        if scheduler:
            command += ["--scheduler", scheduler]
        split = self.parameterAsInt(parameters, self.SPLIT, context)
        if split > 1:
            command += ["--split", str(split)]
        feedback.pushCommandInfo(" ".join(shlex.quote(c) for c in command))
        code, errors = self._run(command, feedback)
        if feedback.isCanceled():
            # The workers stopped with the batch (their process group is gone): what they were writing is stale.
            outputs.remove_stale(folder)
            raise QgsProcessingException(
                self.tr("Cancelled by the user: the outputs finished so far are kept whole; a rerun skips them.")
            )
        if code == 2 or not Path(summary).exists():
            raise QgsProcessingException(errors.strip() or self.tr("The batch stopped (exit status {}).").format(code))
        records = batch.read_summary(summary)
        counts = {s: sum(r.status == s for r in records) for s in (batch.DONE, batch.SKIPPED, batch.FAILED)}
        for r in records:
            if r.status == batch.FAILED:
                feedback.reportError(self.tr("{} failed: {}").format(r.input, r.message), False)
        return {
            self.OUTPUT_FOLDER: folder,
            self.SUMMARY: summary,
            self.DONE: counts[batch.DONE],
            self.SKIPPED: counts[batch.SKIPPED],
            self.FAILED: counts[batch.FAILED],
        }

    def _run(self, command: list[str], feedback: QgsProcessingFeedback) -> tuple[int, str]:
        """Run the batch command, its progress lines to the progress bar, its other lines to the log; Cancel
        stops it (and its workers). Returns the exit status and what it wrote to stderr."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH", "")])])
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   cwd=str(PACKAGE_PARENT), start_new_session=True)  # fmt: skip
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
        reader.start()
        watcher = threading.Thread(target=self._cancel_when_asked, args=(process, feedback), daemon=True)
        watcher.start()
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith("PROGRESS "):
                done, _, total = line.split()[1].partition("/")
                feedback.setProgress(100.0 * int(done) / max(int(total), 1))
                line = line[len("PROGRESS ") :]
            if line:
                feedback.pushInfo(line)
        code = process.wait()
        if feedback.isCanceled():
            _wait_for_group(process.pid)
        reader.join(5)
        process.stdout.close()
        process.stderr.close()
        # Dask's own log lines (worker start and stop) are noise to the user; keep the batch's own messages.
        mine = [e for e in errors if e.startswith("sarseg-batch:")]
        return code, "".join(mine or errors[-20:]).replace("sarseg-batch: ", "")

    @staticmethod
    def _cancel_when_asked(process: subprocess.Popen, feedback: QgsProcessingFeedback) -> None:
        while process.poll() is None:
            if feedback.isCanceled():
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGTERM)
                return
            threading.Event().wait(0.2)


def _wait_for_group(pgid: int, timeout: float = 20.0) -> None:
    """Wait until every process of the group ``pgid`` (a cancelled batch and its Dask workers) has exited."""
    if not hasattr(os, "killpg"):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except OSError:  # no such group any more (or not ours to see)
            return
        time.sleep(0.1)
