"""Safe file writing: atomic replacement, writer locks, folders anybind may own.

Every file anybind writes goes through :func:`atomic_write_bytes` (temp file in the same folder, fsync,
``os.replace``), so a reader sees the old file or the whole new one. A folder that holds a store, an index or a
training run has one writer at a time: :class:`WriterLock` takes an OS lock (``fcntl.flock``) on
``<folder>/.anybind.lock``; the kernel drops it when the holder dies, so a lock file left by a killed process never
blocks the next writer. anybind never deletes a file in a folder it does not own (:func:`check_owned_folder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import CheckpointError

LOCK_NAME = ".anybind.lock"


class LockedError(CheckpointError):
    """Another process is writing the same store, index or run directory."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename or a new link in it) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def clean_temp_files(folder: str | Path, patterns: Iterable[str] = (".*.tmp",)) -> list[Path]:
    """Remove temp files an interrupted writer left in ``folder`` (call it while holding the folder's lock)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def check_owned_folder(path: str | Path, marker: str, what: str, allowed: Iterable[str] = ()) -> None:
    """Refuse to write a ``what`` into an existing folder that holds other files and no ``marker``.

    An empty folder, a missing one, or one holding ``marker`` (written by anybind) is fine.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"cannot write the {what} to {path}: it is a file, not a folder")
    if (path / marker).exists():
        return
    if marker != "store.json" and (path / "store.json").exists():
        raise CheckpointError(f"refusing to write the {what} into {path}: it is an embedding store's folder; "
                              f"write the {what} to a subfolder such as {path / what.split()[-1]}")
    ok = {LOCK_NAME, *allowed}
    others = sorted(p.name for p in path.iterdir() if p.name not in ok and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise CheckpointError(f"refusing to write the {what} into {path}: the folder holds files that are not an anybind "
                              f"{what} ({shown}); give a new or empty folder")


class WriterLock:
    """Exclusive (or, with ``shared=True``, cooperating) writer lock on a folder; a context manager.

    ``shared`` locks are taken by the ranks of one distributed job writing disjoint parts of one store: they
    exclude an exclusive writer, not each other.
    """

    def __init__(self, folder: str | Path, what: str, *, shared: bool = False):
        self.folder = Path(folder)
        self.what = what
        self.shared = shared
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> "WriterLock":
        import fcntl

        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(f"{self.what} {self.folder} is being written by another process ({holder}); wait for it "
                              f"to finish or write elsewhere") from None
        except BaseException:
            os.close(fd)
            raise
        if not self.shared:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a writer dropped without finishing still frees its folder
        try:
            self.release()
        except Exception:  # noqa: BLE001
            pass


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "PID unknown (a shared writer)"
    return f"PID {info.get('pid')} on {info.get('host')}"
