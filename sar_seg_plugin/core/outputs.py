"""Every output of a run written whole, or none: hidden temporaries beside the destinations, moved into place together.

A tool first checks every destination (:func:`check_destinations`: not a folder, in a folder that exists and can be
written, with room for the estimated size), then writes each output to a temporary from :meth:`OutputSet.add` and
leaves the ``with OutputSet()`` block: on success every temporary is moved into place, on any error (or Cancel)
every temporary is removed and nothing at the destinations changes.

Temporaries are named ``.<name>.sarseg-<host>-<pid>-<random>.partial<ext>`` (folders ``.sarseg-<host>-<pid>-
<random>.partial``). The name says which machine and process made them, so what a killed run leaves behind
(``kill -9``, a power cut) is recognised as stale and removed by the next run that writes in the same folder
(:func:`remove_stale`); SIGTERM and SIGHUP during a run remove them at once (:func:`removed_on_termination`).
No qgis import.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import SarSegError

TAG = "sarseg"
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_TEMPORARY = re.compile(rf"^\.(?:.*\.)?{TAG}-(?P<host>[0-9a-f]{{6}})-(?P<pid>\d+)-[0-9a-f]{{8}}\.partial")
#: Files a raster, a GeoPackage or SQLite database keeps beside itself; a stale one would describe another file.
SIDECARS = (".aux.xml", ".msk", "-wal", "-shm", "-journal")
#: Below this much free space a failed write is taken to be a full disk.
FULL_DISK_BYTES = 16 * 2**20
TERMINATION_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))

_LOCK = threading.RLock()
_LIVE: set[str] = set()  # temporaries (files or folders) of runs in progress in this process


def _register(path: Path) -> Path:
    with _LOCK:
        _LIVE.add(str(path))
    return path


def _unregister(path: Path) -> None:
    with _LOCK:
        _LIVE.discard(str(path))


def temporary_path(destination: str | os.PathLike, suffix: str | None = None) -> Path:
    """A hidden temporary beside ``destination``, with its extension (or ``suffix``), registered as live."""
    dst = Path(destination)
    ext = dst.suffix if suffix is None else suffix
    stem = dst.name[: len(dst.name) - len(dst.suffix)] if dst.suffix else dst.name
    name = f".{stem}.{TAG}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{ext}"
    return _register(dst.with_name(name))


def temporary_folder(parent: str | os.PathLike) -> Path:
    """A new hidden folder in ``parent`` for a run's intermediate files; remove it with :func:`remove_folder`."""
    path = _register(Path(parent) / f".{TAG}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        path.mkdir()
    except OSError:
        _unregister(path)
        raise
    return path


def remove_folder(path: str | os.PathLike | None) -> None:
    """Remove a folder made by :func:`temporary_folder` and everything in it."""
    if path is None:
        return
    shutil.rmtree(path, ignore_errors=True)
    _unregister(Path(path))


def _family(temporary: Path) -> list[Path]:
    """The temporary and the files made beside it (``.aux.xml``, ``-wal``, a shapefile's ``.dbf`` ...)."""
    stem = temporary.name[: len(temporary.name) - len(temporary.suffix)] if temporary.suffix else temporary.name
    try:
        names = os.listdir(temporary.parent)
    except OSError:
        return []
    return [temporary.parent / n for n in names if n.startswith(stem)]


def _remove_family(temporary: Path) -> None:
    for path in _family(temporary):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()


def remove_live_temporaries() -> None:
    """Remove every temporary of this process (a run ended by a signal or at exit)."""
    with _LOCK:
        live = [Path(p) for p in _LIVE]
        _LIVE.clear()
    for path in live:
        _remove_family(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale(folder: str | os.PathLike) -> list[str]:
    """Remove, in ``folder``, the temporaries left by SAR Seg runs of this machine whose process has ended (or,
    for this process, whose run has ended); returns their names. Other machines' temporaries are left alone."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    with _LOCK:
        live = tuple(os.path.basename(p) for p in _LIVE if os.path.dirname(p) == str(folder))
    removed = []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid == os.getpid():
            if any(entry.name.startswith(name.rsplit(".partial", 1)[0]) for name in live):
                continue
        elif _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
    return sorted(removed)


# --- checking destinations before any work -------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_destinations(
    destinations: Sequence[tuple[str | os.PathLike, float]], log: Callable[[str], None] | None = None
) -> None:
    """Refuse, before any work, destinations that cannot be written: ``(path, estimated bytes)`` pairs.

    A destination must not be a folder, its folder must exist and take a new file, two outputs must not share a
    path, and each disk must have room for the estimates of the outputs it holds. Stale temporaries of killed runs
    in these folders are removed on the way (and said in ``log``).
    """
    seen: dict[str, str] = {}
    need: dict[int, float] = {}
    folder_of: dict[int, Path] = {}
    for destination, estimate in destinations:
        dst = Path(destination)
        key = os.path.realpath(dst)
        if key in seen:
            raise SarSegError(f"Two outputs are the same file '{dst}'. Give each output its own file name.")
        seen[key] = str(dst)
        if dst.is_dir():
            raise SarSegError(f"The output '{dst}' is an existing folder. Give a file name inside it instead.")
        folder = dst.parent
        if not folder.is_dir():
            raise SarSegError(f"The output folder '{folder}' does not exist. Create it or choose another.")
        removed = remove_stale(folder)
        if removed and log:
            log(
                f"Removed {len(removed)} temporary file(s) left in '{folder}' by an interrupted run: "
                f"{', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''}"
            )
        _probe(folder, dst)
        device = os.stat(folder).st_dev
        need[device] = need.get(device, 0.0) + max(0.0, float(estimate))
        folder_of.setdefault(device, folder)
    for device, total in need.items():
        check_space(folder_of[device], total)


def check_space(folder: str | os.PathLike, estimate: float) -> None:
    """Refuse to start when the disk holding ``folder`` has less free space than the outputs may need."""
    free = shutil.disk_usage(folder).free
    if estimate > free:
        raise SarSegError(
            f"The disk holding '{folder}' has {_size(free)} free, but the outputs may need up to {_size(estimate)} "
            "(uncompressed). Free some space or choose a folder on another disk. No output was written."
        )


def _probe(folder: Path, dst: Path) -> None:
    """Create and remove a file in ``folder``: the only sure test that a run may write there."""
    probe = temporary_path(dst, ".probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = {
            errno.EROFS: "it is on a read-only disk",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "your disk quota is used up",
        }.get(exc.errno, exc.strerror or str(exc))
        raise SarSegError(
            f"Cannot write the output '{dst.name}' in '{folder}': {reason}. Choose a folder you can write to. "
            "No output was written."
        ) from None
    finally:
        _unregister(probe)


# --- full disks --------------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def full_disk(exc: BaseException, folders: Sequence[str | os.PathLike]) -> str | None:
    """The folder whose disk is full, when ``exc`` comes from writing there; else None. Call it before removing
    the temporaries (which frees the space)."""
    said_full = any(
        (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "no space left" in str(e).lower()
        for e in _chain(exc)
    )
    writing = said_full or any(re.search(r"writ|flush|disk|append", str(e), re.IGNORECASE) for e in _chain(exc))
    if not writing:
        return None
    for folder in dict.fromkeys(str(f) for f in folders):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < FULL_DISK_BYTES:
                return folder
    return str(folders[0]) if said_full and folders else None


class DiskFullError(SarSegError):
    """A write failed because the disk holding an output is full."""

    def __init__(self, folder: str) -> None:
        super().__init__(
            f"The disk holding '{folder}' is full: the outputs could not be written. Free some space there or "
            "choose a folder on another disk. No output was written."
        )
        self.folder = folder


# --- a run's outputs, committed together ----------------------------------------------------------------------------


def _move_family(temporary: Path, destination: Path) -> None:
    """Move a temporary and its side files into place: ``.x.sarseg-...partial.tif.aux.xml`` -> ``x.tif.aux.xml``."""
    t_stem = temporary.name[: len(temporary.name) - len(temporary.suffix)] if temporary.suffix else temporary.name
    d_stem = destination.name[: len(destination.name) - len(temporary.suffix)] if temporary.suffix else destination.name
    family = [p for p in _family(temporary) if p != temporary]
    moved = {destination.name}
    os.replace(temporary, destination)
    for path in family:
        target = destination.with_name(d_stem + path.name[len(t_stem) :])
        os.replace(path, target)
        moved.add(target.name)
    for suffix in SIDECARS:  # an earlier file's side files would describe the wrong file
        stale = destination.with_name(destination.name + suffix)
        if stale.name not in moved and stale.exists():
            stale.unlink()


class OutputSet:
    """The outputs of one run. :meth:`add` gives the temporary to write each destination to; leaving the ``with``
    block moves them all into place, or, on an exception, removes them all (and names a full disk as such)."""

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path]] = []
        self._staged: set[Path] = set()  # temporaries in a hidden folder of their own

    def add(self, destination: str | os.PathLike, suffix: str | None = None, staged: bool = False) -> Path:
        """The temporary to write ``destination`` to (created by the caller).

        ``staged``: the temporary keeps the destination's own name, in a hidden folder beside it, for writers that
        derive something from the file name (a GeoPackage layer is named after its file; QGIS reads a format from
        everything after the first dot of a name)."""
        if staged:
            temporary = temporary_folder(Path(destination).parent) / Path(destination).name
            self._staged.add(temporary)
        else:
            temporary = temporary_path(destination, suffix)
        self._items.append((temporary, Path(destination)))
        return temporary

    def discard(self, temporary: str | os.PathLike) -> None:
        """Remove one temporary now (an output that will not be written after all)."""
        temporary = Path(temporary)
        self._remove(temporary)
        self._items = [(t, d) for t, d in self._items if t != temporary]

    def temporary_of(self, destination: str | os.PathLike) -> Path:
        """The temporary registered last for ``destination`` (written, not yet moved into place)."""
        for temporary, target in reversed(self._items):
            if target == Path(destination):
                return temporary
        raise KeyError(str(destination))

    @property
    def destinations(self) -> list[Path]:
        return [d for _, d in self._items]

    def commit(self) -> None:
        """Move every finished temporary into place (each move is a rename within its folder)."""
        try:
            for temporary, destination in self._items:
                _move_family(temporary, destination)
                self._remove(temporary)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove every temporary; the destinations stay as they were."""
        for temporary, _ in self._items:
            self._remove(temporary)

    def _remove(self, temporary: Path) -> None:
        if temporary in self._staged:
            remove_folder(temporary.parent)
        else:
            _remove_family(temporary)
            _unregister(temporary)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.commit()
            return
        full = full_disk(exc, [d.parent for d in self.destinations]) if self._items else None
        self.abort()
        if full is not None and not isinstance(exc, DiskFullError):
            raise DiskFullError(full) from exc


def write_text(destination: str | os.PathLike, text: str, outputs: OutputSet | None = None) -> Path:
    """Write a text file whole: as one of ``outputs`` (moved into place with the run's other outputs) or, without
    them, on its own at once."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        raise SarSegError(f"The output folder '{destination.parent}' does not exist. Create it or choose another.")
    own = outputs is None
    run = OutputSet() if own else outputs
    with run if own else contextlib.nullcontext():
        temporary = run.add(destination)
        with open(temporary, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return destination


# --- ended by a signal ------------------------------------------------------------------------------------------------

_PREVIOUS: dict[int, Any] = {}
_DEPTH = 0


def _on_termination(signum: int, frame: Any) -> None:
    remove_live_temporaries()
    with _LOCK:
        _restore_handlers()
    os.kill(os.getpid(), signum)  # the default action again: the process ends as the sender meant


def _restore_handlers() -> None:
    global _DEPTH
    for signum, previous in _PREVIOUS.items():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, previous)
    _PREVIOUS.clear()
    _DEPTH = 0


@contextlib.contextmanager
def removed_on_termination() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP (what ``timeout``, systemd and batch schedulers send) first remove
    this process's temporaries, then end the process as they would have.

    Only the main thread may install signal handlers, and only signals left to their default action are taken
    over; elsewhere (QGIS desktop runs algorithms on worker threads) the temporaries a killed run leaves are removed
    by the next run in their folder (:func:`remove_stale`). Ctrl+C raises KeyboardInterrupt, which the outputs'
    own cleanup handles.
    """
    global _DEPTH
    installed = False
    if threading.current_thread() is threading.main_thread():
        with _LOCK:
            if _DEPTH == 0:
                for signum in TERMINATION_SIGNALS:
                    with contextlib.suppress(ValueError, OSError):
                        if signal.getsignal(signum) == signal.SIG_DFL:
                            _PREVIOUS[signum] = signal.signal(signum, _on_termination)
            _DEPTH += 1
            installed = True
    try:
        yield
    finally:
        if installed:
            with _LOCK:
                _DEPTH -= 1
                if _DEPTH <= 0:
                    _restore_handlers()


atexit.register(remove_live_temporaries)
