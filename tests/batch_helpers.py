"""Task runners for the batch tests, importable by Dask's worker processes (they start with the tests' sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

from sar_seg_plugin.core.batch import Record, Task, run_task


def die_once(task: Task) -> Record:
    """Kill the worker process the first time it runs an input named ``kill_me``; then run the task as usual."""
    marker = Path(task.output).with_name(Path(task.output).name + ".died")
    if "kill_me" in Path(task.input).name and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return run_task(task)
