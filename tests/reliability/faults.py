"""Fault injection for anybind's atomic writers: a simulated SIGKILL before any one file operation.

:class:`KillSwitch` wraps every file operation a writer can make under one folder (create or open for writing,
fsync, truncate, rename / replace, link, symlink, mkdir, unlink, rmdir, a safetensors write). Without ``kill_at``
it records them; with ``kill_at=k`` the first ``k - 1`` happen and the k-th raises :class:`Killed`, as does every
later one: as after a real kill, nothing the writer does after that instant reaches the disk (its cleanup handlers
included). Writer locks taken meanwhile are released on exit, as the kernel releases a dead process's locks.

:func:`every_kill_point` runs a writer on fresh copies of a folder, killed before each of its operations in turn.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path
from typing import Callable

LOCK_NAME = ".anybind.lock"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Killed(BaseException):
    """The simulated kill (a BaseException: ``except Exception`` in the code under test cannot swallow it)."""


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class KillSwitch:
    def __init__(self, root: str | Path, kill_at: int | None = None):
        self.root = os.path.realpath(root)
        self.kill_at = kill_at
        self.ops: list[str] = []
        self.killed = False
        self._saved: list[tuple[object, str, object]] = []
        self._locks: list = []
        self._lock_fds: list[int] = []

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _resolve(self, path, dir_fd=None) -> str | None:
        if isinstance(path, int):
            return _fd_path(path)
        try:
            p = os.fsdecode(path)
        except TypeError:
            return None
        if dir_fd is not None and not os.path.isabs(p):
            base = _fd_path(dir_fd)
            p = os.path.join(base, p) if base else p
        return os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(p)))) + os.sep + os.path.basename(p)

    def _op(self, name: str, *paths, dir_fd=None) -> None:
        resolved = [self._resolve(p, dir_fd) for p in paths]
        inside = [r for r in resolved if r and (r + os.sep).startswith(self.root + os.sep)]
        if not inside:
            return
        if self.killed:
            raise Killed("already killed")
        self.ops.append(f"{name}({', '.join(os.path.relpath(r, self.root) for r in inside)})")
        if self.kill_at is not None and len(self.ops) >= self.kill_at:
            self.killed = True
            raise Killed(f"killed before operation {len(self.ops)}: {self.ops[-1]}")

    def _patch(self, owner, attr: str, make: Callable) -> None:
        original = getattr(owner, attr)
        self._saved.append((owner, attr, original))
        setattr(owner, attr, make(original))

    # ------------------------------------------------------------------------------------------ patches
    def __enter__(self) -> "KillSwitch":
        import safetensors.torch

        from anybind.io import WriterLock

        op = self._op

        def two(name):
            return lambda f: (lambda src, dst, *a, **k: (op(name, src, dst, dir_fd=k.get("dst_dir_fd")), f(src, dst, *a, **k))[1])

        for name in ("replace", "rename", "link"):
            self._patch(os, name, two(name))
        self._patch(os, "symlink", lambda f: lambda src, dst, *a, **k: (op("symlink", dst, dir_fd=k.get("dir_fd")),
                                                                         f(src, dst, *a, **k))[1])
        for name in ("unlink", "remove", "rmdir", "mkdir"):
            self._patch(os, name, lambda f, n=name: lambda path, *a, **k: (op(n, path, dir_fd=k.get("dir_fd")),
                                                                           f(path, *a, **k))[1])
        # fsync is counted (a kill point) but not run: durability across a power cut is not what is simulated
        self._patch(os, "fsync", lambda f: lambda fd: op("fsync", fd))
        self._patch(os, "ftruncate", lambda f: lambda fd, *a, **k: (op("ftruncate", fd), f(fd, *a, **k))[1])

        lock_fds = self._lock_fds

        def os_open(f):
            def wrapped(path, flags, *a, **k):
                if flags & _WRITE_FLAGS:
                    op("open", path, dir_fd=k.get("dir_fd"))
                fd = f(path, flags, *a, **k)
                if os.path.basename(os.fsdecode(path)) == LOCK_NAME:
                    lock_fds.append(fd)
                return fd
            return wrapped

        self._patch(os, "open", os_open)

        def py_open(f):
            def wrapped(file, mode="r", *a, **k):
                if isinstance(mode, str) and any(c in mode for c in "wax+"):
                    op("open", file)
                return f(file, mode, *a, **k)
            return wrapped

        self._patch(builtins, "open", py_open)
        self._patch(io, "open", py_open)
        self._patch(safetensors.torch, "save_file",
                    lambda f: lambda tensors, filename, *a, **k: (op("save_file", filename), f(tensors, filename, *a, **k))[1])

        locks = self._locks

        def acquire(f):
            def wrapped(lock, *a, **k):
                locks.append(lock)
                return f(lock, *a, **k)
            return wrapped

        self._patch(WriterLock, "acquire", acquire)
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved.clear()
        if self.killed:  # the dead process's locks die with it (also one killed halfway through acquire())
            for lock in self._locks:
                lock._fd = None
            for fd in self._lock_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def every_kill_point(template: Path, scratch: Path, action: Callable[[Path], object],
                     check: Callable[[Path, str], None], recover: Callable[[Path], None] | None = None) -> int:
    """Run ``action(folder)`` on a fresh copy of ``template`` killed before each of its file operations in turn;
    after each kill ``check(folder, what)`` asserts every published name, then ``recover(folder)`` runs the next
    writer (and asserts what it finds). Returns how many kill points there were."""
    import pytest

    probe = copy_folder(template, scratch / "probe")
    with KillSwitch(probe) as counting:
        action(probe)
    check(probe, "no kill")
    n = len(counting.ops)
    assert n > 0, "the writer made no file operation under the folder"
    for k in range(1, n + 1):
        folder = copy_folder(template, scratch / f"kill_{k:03d}")
        with KillSwitch(folder, kill_at=k) as switch:
            with pytest.raises(Killed):
                action(folder)
        what = f"killed before operation {k}/{n}: {switch.ops[-1]}"
        check(folder, what)
        if recover is not None:
            recover(folder)
        shutil.rmtree(folder)
    return n
