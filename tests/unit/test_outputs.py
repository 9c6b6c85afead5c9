"""Every output of a run written whole or none: temporaries, commit, stale leftovers, destination checks, full
disks and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rasters import write_raster

from sar_seg_plugin.core import outputs
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.outputs import DiskFullError, OutputSet, check_destinations, remove_stale, write_text
from sar_seg_plugin.core.raster_io import GeoTiffWriter, Window

ROOT = Path(__file__).resolve().parents[2]


def test_outputs_appear_together_when_the_block_ends(tmp_path):
    with OutputSet() as run:
        a, b = run.add(tmp_path / "a.csv"), run.add(tmp_path / "b.html")
        a.write_text("1")
        b.write_text("2")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])  # hidden until the end
        assert a.name.startswith(".a.sarseg-") and a.name.endswith(".partial.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.html"]
    assert (tmp_path / "a.csv").read_text() == "1"


def test_a_failure_removes_every_temporary_and_keeps_earlier_files(tmp_path):
    (tmp_path / "a.csv").write_text("earlier run")
    with pytest.raises(RuntimeError, match="boom"), OutputSet() as run:
        write_text(tmp_path / "a.csv", "new", run)
        with GeoTiffWriter(tmp_path / "r.tif", 4, 4, 1, np.float32, None, "", outputs=run) as writer:
            writer.write(Window(0, 0, 4, 4), np.ones((4, 4), np.float32))
        raise RuntimeError("boom")  # e.g. the last output fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    assert (tmp_path / "a.csv").read_text() == "earlier run"


def test_a_staged_output_keeps_its_name_and_its_side_files_move_with_it(tmp_path):
    (tmp_path / "t.gpkg-wal").write_text("an earlier file's journal")  # would corrupt the new file
    with OutputSet() as run:
        staged = run.add(tmp_path / "t.gpkg", staged=True)
        assert staged.name == "t.gpkg" and staged.parent.name.startswith(".sarseg-")
        staged.write_text("db")
        (staged.parent / "t.gpkg-shm").write_text("shm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gpkg", "t.gpkg-shm"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_temporaries_of_ended_processes_are_removed_and_others_kept(tmp_path):
    dead, host = _dead_pid(), outputs._HOST
    stale = [f".o.sarseg-{host}-{dead}-0123abcd.partial.tif", f".o.sarseg-{host}-{dead}-0123abcd.partial.tif.aux.xml"]
    other_host = f".o.sarseg-ffffff-{dead}-0123abcd.partial.tif"  # maybe still written by another machine
    alive = f".o.sarseg-{host}-{os.getppid()}-0123abcd.partial.tif"  # a running process
    for name in [*stale, other_host, alive, "o.tif", "notes.partial.txt"]:
        (tmp_path / name).write_text("x")
    (tmp_path / f".sarseg-{host}-{dead}-89abcdef.partial").mkdir()
    mine = outputs.temporary_path(tmp_path / "m.tif")  # this process, in use
    mine.write_text("x")
    removed = remove_stale(tmp_path)
    assert removed == sorted([*stale, f".sarseg-{host}-{dead}-89abcdef.partial"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host, alive, "o.tif", "notes.partial.txt",
                                                                mine.name])  # fmt: skip
    outputs._unregister(mine)  # now this process's run has ended: its leftover is stale
    assert remove_stale(tmp_path) == [mine.name]


def test_destinations_are_checked_before_any_work(tmp_path):
    (tmp_path / "folder.tif").mkdir()
    cases = [
        ([(tmp_path / "folder.tif", 0)], "is an existing folder"),
        ([(tmp_path / "missing" / "o.tif", 0)], "does not exist"),
        ([(tmp_path / "a.tif", 0), (tmp_path / "a.tif", 0)], "Two outputs are the same file"),
        ([(tmp_path / "a.tif", 2**62)], "may need up to"),
    ]
    for destinations, fragment in cases:
        with pytest.raises(SarSegError, match=fragment):
            check_destinations(destinations)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.tif"]


def test_a_read_only_folder_is_refused_before_any_work(readonly_dir):
    with pytest.raises(SarSegError, match=r"Cannot write the output 'o.tif' in '.*readonly': (it is on a read-only "
                                          r"disk|permission denied)"):  # fmt: skip
        check_destinations([(readonly_dir / "o.tif", 0)])


def test_a_full_disk_is_named_and_leaves_nothing(small_disk):
    """A raster larger than the disk: the write fails with ENOSPC; the message names the full disk."""
    big = GeoTiffWriter(small_disk / "big.tif", 1024, 1024, 1, np.float32, None, "", compress="NONE")
    with pytest.raises(DiskFullError, match=f"The disk holding '{small_disk}' is full"), big as writer:
        for row in range(0, 1024, 64):
            writer.write(Window(0, row, 1024, 64), np.random.default_rng(row).random((64, 1024), np.float32))
            writer.release_cache()
    assert list(small_disk.iterdir()) == []


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from sar_seg_plugin.core.outputs import OutputSet, removed_on_termination
    with removed_on_termination(), OutputSet() as run:
        run.add(Path({folder!r}) / "a.tif").write_text("half")
        run.add(Path({folder!r}) / "b.gpkg", staged=True).write_text("half")
        print("ready", flush=True)
        time.sleep(60)
    """
)


def test_sigterm_removes_the_temporaries_and_ends_the_process(tmp_path):
    script = SIGTERM_SCRIPT.format(root=str(ROOT), folder=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 2  # a temporary file and a staging folder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # ended by the signal, as the sender meant
    assert list(tmp_path.iterdir()) == []


def test_the_handlers_are_restored_after_a_run():
    before = signal.getsignal(signal.SIGTERM)
    with outputs.removed_on_termination():
        # taken over only from the default action (a handler someone else installed is left alone)
        expected = outputs._on_termination if before == signal.SIG_DFL else before
        assert signal.getsignal(signal.SIGTERM) == expected
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_writer_into_an_existing_folder_name_leaves_no_temporary(tmp_path):
    """os.replace onto a folder fails at commit: the finished temporary must not stay behind."""
    (tmp_path / "o.tif").mkdir()
    src = write_raster(tmp_path / "in.tif", np.ones((8, 8), np.float32))
    with pytest.raises(OSError), GeoTiffWriter(tmp_path / "o.tif", 8, 8, 1, np.float32, None, "") as writer:
        writer.write(Window(0, 0, 8, 8), np.ones((8, 8), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "o.tif"]
    assert Path(src).exists()
