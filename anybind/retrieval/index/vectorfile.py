"""Vectors on disk: ``.npy`` files read a block or a handful of rows at a time, never held in memory.

:class:`RowFile` reads rows of a 2-D ``.npy`` file with positioned reads (``os.pread``) into fresh buffers: the
kernel's page cache holds the hot pages, the process holds only what it asked for. It is how the ``ivfpq_disk``
build streams a store's shards and how its search gathers a shortlist. (A memory map would do the same reads, but
on this kind of kernel each fault maps the whole cached folio around the row, up to ~1 MB: a shortlist of 640
rows would add hundreds of MB to the process's RSS per query unless the mapping were dropped after every query,
which costs more than the reads themselves; see docs/benchmarks.md, "Ten million vectors".)

:class:`SegmentWriter` writes a segment with plain file writes, hashing as it goes; :class:`DiskVectors` is the
list of segments of an ``ivfpq_disk`` part and scores a shortlist exactly.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from ...errors import CheckpointError
from .policy import DISK_DTYPES

log = logging.getLogger(__name__)


def _npy_header(n: int, d: int, dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": (int(n), int(d))})
    return buf.getvalue()


class RowFile:
    """Positioned reads of the rows of a C-ordered 2-D ``.npy`` file (the descriptor stays open: a file renamed
    or removed after opening is still read)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                self.offset = f.tell()
            self.fd = os.open(self.path, os.O_RDONLY)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"vector file {self.path} could not be read: {exc}") from exc
        if len(shape) != 2 or fortran:
            raise CheckpointError(f"vector file {self.path} holds a {shape} array; expected (rows, width), C order")
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        size = os.fstat(self.fd).st_size
        if size < self.offset + self.shape[0] * self.row_bytes:
            os.close(self.fd)
            raise CheckpointError(f"vector file {self.path} is truncated: {size} bytes for {self.shape} {self.dtype}")
        self._closer = weakref.finalize(self, os.close, self.fd)

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi`` (a fresh, writable array of the file's dtype)."""
        hi = min(hi, self.shape[0])
        out = np.empty((max(0, hi - lo), self.shape[1]), self.dtype)
        view, at = memoryview(out).cast("B"), 0
        while at < len(view):  # pread may return less than asked for
            got = os.preadv(self.fd, [view[at:]], self.offset + lo * self.row_bytes + at)
            if got <= 0:
                raise CheckpointError(f"vector file {self.path} ended early reading rows {lo}..{hi}")
            at += got
        return out

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows at sorted positions ``rows`` (runs of consecutive rows are read at once)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.empty((0, self.shape[1]), self.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        run_starts = rows[np.concatenate([[0], breaks])]
        run_lens = np.diff(np.concatenate([[0], breaks, [len(rows)]]))
        rb, off, fd = self.row_bytes, self.offset, self.fd
        if len(run_starts) == len(rows):  # the usual case: scattered rows, one read each
            data = b"".join([os.pread(fd, rb, off + r * rb) for r in rows.tolist()])
        else:
            data = b"".join([os.pread(fd, rb * c, off + r * rb) for r, c in zip(run_starts.tolist(), run_lens.tolist())])
        if len(data) != len(rows) * rb:
            raise CheckpointError(f"vector file {self.path} ended early")
        return np.frombuffer(data, self.dtype).reshape(len(rows), self.shape[1])


class Segment:
    """One ``(count, D)`` file of re-ranking vectors. ``scratch``: a build's file, not yet saved (removed with it)."""

    def __init__(self, path: Path, sha256: str, count: int, dtype: str, scratch: bool = False):
        self.path, self.sha256, self.count, self.dtype = Path(path), sha256, int(count), dtype
        self.file = RowFile(self.path)
        self._cleanup = weakref.finalize(self, _unlink, str(self.path)) if scratch else None

    @property
    def scratch(self) -> bool:
        return self._cleanup is not None and self._cleanup.alive

    def save_into(self, folder: Path, stem: str) -> dict:
        """Put this segment's file into ``folder`` as ``<stem>.<sha256[:12]>.npy``: already there, a move of a
        build's scratch file, or a copy; returns its manifest entry."""
        name = f"{stem}.{self.sha256[:12]}.npy"
        target = folder / name
        entry = {"name": name, "sha256": self.sha256, "count": self.count, "dtype": self.dtype}
        if target.exists():  # content-addressed: a file of that name holds these bytes
            return entry
        if self.scratch:
            try:
                os.replace(self.path, target)
                self._cleanup.detach()
                self.path = target
                return entry
            except OSError:  # another disk: copy below; the scratch file goes with this segment
                pass
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
        os.close(fd)
        try:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            else:  # removed under us: the open descriptor still reads it
                with open(tmp, "wb") as f:
                    f.write(_npy_header(self.count, self.file.shape[1], self.dtype))
                    for lo in range(0, self.count, 65536):
                        f.write(memoryview(self.file.block(lo, lo + 65536)).cast("B"))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return entry


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class SegmentWriter:
    """Writes ``n`` rows of width ``d`` as a ``.npy`` file under ``folder``, a block at a time, hashing as it goes."""

    def __init__(self, n: int, d: int, dtype: str = "float16", folder: str | Path | None = None):
        if dtype not in DISK_DTYPES:
            raise ValueError(f"disk_dtype must be one of {DISK_DTYPES}, got {dtype!r}")
        self.n, self.d, self.dtype, self.written = int(n), int(d), dtype, 0
        folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(dir=folder, prefix=".anybind-vectors.", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self._write(_npy_header(n, d, dtype))

    def _write(self, data) -> None:
        self.hash.update(data)
        self.file.write(data)

    def write(self, block: np.ndarray) -> None:
        if block.ndim != 2 or block.shape[1] != self.d or self.written + len(block) > self.n:
            raise ValueError(f"segment of {self.n} x {self.d}: cannot write a {block.shape} block after {self.written} rows")
        self._write(memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B"))
        self.written += len(block)

    def close(self) -> Segment:
        if self.written != self.n:
            self.abort()
            raise ValueError(f"segment {self.path}: {self.written} rows written, {self.n} planned")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return Segment(Path(self.path), self.hash.hexdigest(), self.n, self.dtype, scratch=True)

    def abort(self) -> None:
        self.file.close()
        _unlink(self.path)


class DiskVectors:
    """The re-ranking vectors of an ``ivfpq_disk`` part: segments on disk, in row order, read a shortlist at a time."""

    def __init__(self, segments: list[Segment], d: int, folder: str | None = None):
        self.segments, self.d = list(segments), d
        self.folder = folder  # where appended segments are written until saved
        self.rows_read = 0  # rows read from disk so far (tests and benchmarks read it)
        self._ends = np.cumsum([s.count for s in self.segments], dtype=np.int64)

    @classmethod
    def load(cls, files: list[tuple[Path, dict]], d: int) -> "DiskVectors":
        segments = []
        for path, e in files:
            seg = Segment(path, e["sha256"], int(e["count"]), e.get("dtype", "float16"))
            if seg.file.shape != (seg.count, d) or seg.file.dtype != np.dtype(seg.dtype):
                raise CheckpointError(f"index file {path} holds {seg.file.shape} {seg.file.dtype} vectors; its manifest "
                                      f"says ({seg.count}, {d}) {seg.dtype}")
            segments.append(seg)
        return cls(segments, d)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def nbytes(self) -> int:
        return sum(s.count * self.d * np.dtype(s.dtype).itemsize for s in self.segments)

    def append(self, vectors: np.ndarray) -> None:
        """A new segment holding ``vectors`` (rows after the existing ones)."""
        dtype = self.segments[0].dtype if self.segments else "float16"
        w = SegmentWriter(len(vectors), self.d, dtype, self.folder)
        w.write(vectors)
        self.segments.append(w.close())
        self._ends = np.cumsum([s.count for s in self.segments], dtype=np.int64)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted ``positions`` (in the file's dtype)."""
        positions = np.asarray(positions, dtype=np.int64)
        self.rows_read += len(positions)
        if len(self.segments) == 1:
            return self.segments[0].file.gather(positions)
        out = np.empty((len(positions), self.d), self.segments[0].dtype)
        which = np.searchsorted(self._ends, positions, side="right")
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.segments[s].file.gather(positions[sel] - (self._ends[s - 1] if s else 0))
        return out

    def rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of each query among its shortlist ``candidates`` (positions, -1 = none)."""
        scores = np.full((len(q), k), -np.inf, np.float32)
        found = np.full((len(q), k), -1, np.int64)
        for i, cand in enumerate(candidates):
            cand = np.unique(cand[cand >= 0])  # sorted: reads walk each file forwards
            if not len(cand):
                continue
            # einsum, not BLAS: BLAS's threads stall a busy machine for milliseconds
            s = np.einsum("ij,j->i", self.take(cand), q[i], dtype=np.float32)
            kk = min(k, len(cand))
            top = np.argpartition(-s, kk - 1)[:kk] if kk < len(cand) else np.arange(len(cand))
            top = top[np.argsort(-s[top], kind="stable")]
            scores[i, :kk], found[i, :kk] = s[top], cand[top]
        return scores, found

    def save_into(self, folder: Path, stem: str) -> list[dict]:
        return [s.save_into(folder, stem) for s in self.segments]
