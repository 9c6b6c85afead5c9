"""``python -m sar_seg_plugin.batch``: run a SAR Seg tool over many inputs on a Dask cluster. No qgis import.

    python -m sar_seg_plugin.batch segment "archive/*.tif" --out maps --workers 2
    python -m sar_seg_plugin.batch import_sentinel1 products/ --out sigma0 --scheduler tcp://host:8786
    python -m sar_seg_plugin.batch flood_map pairs.csv --out floods -o min_area_m2=2000
    python -m sar_seg_plugin.batch segment big.tif --out maps --split 4

Exit status: 0 when every input is done or skipped, 1 when one or more failed (the others are finished and listed
in the summary), 2 when the batch could not start (bad arguments, no input, no scheduler).
See :mod:`sar_seg_plugin.core.batch` for what happens to each input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "sar_seg_plugin"

from .core import batch  # noqa: E402
from .core.errors import SarSegError  # noqa: E402
from .core.outputs import remove_stale  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sar_seg_plugin.batch",
        description="Run one SAR Seg tool over many inputs on a Dask cluster (a local one by default).",
        epilog="Options per tool (-o key=value): "
        + "; ".join(f"{t}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for t, o in batch.OPTIONS.items()),
    )
    parser.add_argument("tool", choices=batch.TOOLS, help="the tool to run on each input")
    parser.add_argument("inputs", help="a folder, a glob pattern ('in/*.tif') or a CSV list (column 'input')")
    parser.add_argument("--out", required=True, help="the folder the outputs go to (created if needed)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="a tool option")
    parser.add_argument("--workers", type=int, default=2, help="local cluster: worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="local cluster: CPU threads per worker's model "
                        "(default: the machine's cores shared among the workers)")  # fmt: skip
    parser.add_argument("--scheduler", default="", help="address of a running Dask scheduler (tcp://host:8786)")
    parser.add_argument("--split", type=int, default=0, help="segment: cut each raster into this many strips "
                        "run side by side on the workers (same pixels as a whole run of the float32 model, which "
                        "every strip runs)")  # fmt: skip
    parser.add_argument("--summary", default="", help="summary CSV (default: <out>/batch_summary.csv)")
    parser.add_argument("--progress", choices=("bar", "lines", "none"), default="bar",
                        help="a bar on the terminal, a line per input (for programs), or nothing")  # fmt: skip
    return parser.parse_args(argv)


class Bar:
    """A progress bar on one terminal line (``lines``: one plain line per finished input, for a program)."""

    def __init__(self, total: int, mode: str, stream: TextIO) -> None:
        self.total, self.mode, self.stream = total, mode, stream
        self.started = time.perf_counter()
        self.counts = {batch.DONE: 0, batch.SKIPPED: 0, batch.FAILED: 0}

    def __call__(self, done: int, total: int, record: batch.Record) -> None:
        self.counts[record.status] = self.counts.get(record.status, 0) + 1
        if self.mode == "lines":
            note = f" {record.message}" if record.message else ""
            print(f"PROGRESS {done}/{total} {record.status} {record.input}{note}", file=self.stream, flush=True)
        elif self.mode == "bar":
            width = 30
            filled = int(width * done / max(total, 1))
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (total - done) if done else 0.0
            c = self.counts
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  done {c[batch.DONE]}  skipped "
                f"{c[batch.SKIPPED]}  failed {c[batch.FAILED]}  {elapsed:.0f} s (about {eta:.0f} s left)"
            )
            print(line, end="\n" if done == total else "", file=self.stream, flush=True)


def _close(client: object, scheduler: str) -> None:
    """Close the client, and the local cluster it started (a scheduler given by address is left running)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None and not scheduler:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    try:
        options = batch.parse_options(args.tool, args.option)
        workers = max(1, args.workers)
        if not args.scheduler and args.tool in ("segment", "forecast") and not options.get("threads"):
            options["threads"] = args.threads or max(1, (os.cpu_count() or 1) // workers)
        rows = batch.find_inputs(args.inputs, args.tool)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        remove_stale(args.out)  # what an interrupted earlier run left half-written
        tasks = batch.plan_tasks(args.tool, rows, args.out, options)
        client = batch.start_client(workers, args.scheduler or None)
    except SarSegError as err:
        print(f"sarseg-batch: {err}", file=sys.stderr)
        return 2
    try:
        batch.check_workers(client, args.tool)
    except SarSegError as err:
        print(f"sarseg-batch: {err}", file=sys.stderr)
        _close(client, args.scheduler)
        return 2
    summary = args.summary or str(Path(args.out) / "batch_summary.csv")
    try:
        where = args.scheduler or f"a local cluster of {workers} worker(s)"
        print(f"{args.tool} on {len(tasks)} input(s), {where}", file=out)
        link = getattr(client, "dashboard_link", "")
        print(f"Dask dashboard: {link or 'not available (install bokeh)'}", file=out, flush=True)
        records = batch.run_batch(tasks, client, split=args.split, progress=Bar(len(tasks), args.progress, out))
    except SarSegError as err:
        print(f"sarseg-batch: {err}", file=sys.stderr)
        return 2
    finally:
        _close(client, args.scheduler)
    batch.write_summary(records, summary)
    failed = [r for r in records if r.status == batch.FAILED]
    counts = {s: sum(r.status == s for r in records) for s in (batch.DONE, batch.SKIPPED, batch.FAILED)}
    print(
        f"{counts[batch.DONE]} done, {counts[batch.SKIPPED]} skipped (finished earlier), {counts[batch.FAILED]} "
        f"failed in {sum(r.seconds for r in records):.1f} s of work. Summary: {summary}",
        file=out,
    )
    for r in failed:
        print(f"FAILED {r.input}: {r.message}", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
