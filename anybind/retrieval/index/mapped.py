"""Re-ranking vectors on disk: ``.npy`` segments written a chunk at a time and read through memory maps.

A segment is written by :class:`SegmentWriter` with plain file writes (never through a writable mapping, whose
dirty pages would count as the process's memory), hashed as it is written, then mapped read-only.
:class:`MappedVectors` gathers the rows a query's shortlist names and scores them exactly; pages it touched stay
mapped (and count in the process's RSS) until they pass ``mapped_max`` bytes, when the mappings drop them
(``madvise(MADV_DONTNEED)``: the kernel keeps them in its page cache, so the next touch costs a minor fault,
not a disk read).
"""

from __future__ import annotations

import hashlib
import io
import logging
import mmap
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from ...errors import CheckpointError
from .policy import DISK_DTYPES, parse_bytes

log = logging.getLogger(__name__)


def _npy_header(n: int, d: int, dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": (int(n), int(d))})
    return buf.getvalue()


class Segment:
    """One ``(count, D)`` file of re-ranking vectors, mapped read-only. ``scratch``: a build's file, not yet saved."""

    def __init__(self, path: Path, sha256: str, count: int, dtype: str, scratch: bool = False):
        self.path, self.sha256, self.count, self.dtype = Path(path), sha256, int(count), dtype
        self.array = np.load(self.path, mmap_mode="r", allow_pickle=False) if count else np.zeros((0, 0), dtype)
        self._cleanup = weakref.finalize(self, _unlink, str(self.path)) if scratch else None

    @property
    def scratch(self) -> bool:
        return self._cleanup is not None and self._cleanup.alive

    def release(self) -> None:
        """Drop this process's mapping of the pages read so far (they stay in the kernel's page cache)."""
        m = getattr(self.array, "_mmap", None)
        if m is not None and hasattr(m, "madvise"):
            m.madvise(mmap.MADV_DONTNEED)

    def save_into(self, folder: Path, stem: str) -> dict:
        """Put this segment's file into ``folder`` as ``<stem>.<sha256[:12]>.npy``: already there, a move of a
        build's scratch file, a hard link, or a copy; returns its manifest entry."""
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
            except OSError:  # another disk: copy below, the scratch file goes with this segment
                pass
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
        os.close(fd)
        try:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            else:  # the file was removed under us: write it again from the mapping
                with open(tmp, "wb") as f:
                    f.write(_npy_header(self.count, self.array.shape[1], self.dtype))
                    for lo in range(0, self.count, 65536):
                        f.write(np.ascontiguousarray(self.array[lo:lo + 65536]).tobytes())
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


class MappedVectors:
    """The re-ranking vectors of an ``ivfpq_disk`` part: segments read in row order through memory maps."""

    def __init__(self, segments: list[Segment], d: int, mapped_max: int | str = "1G", folder: str | None = None):
        self.segments, self.d = list(segments), d
        self.mapped_max = parse_bytes(mapped_max) or 0
        self.folder = folder  # where appended segments are written until saved
        self.rows_read = 0  # rows gathered so far (tests and benchmarks read it)
        self.releases = 0
        self._since_release = 0
        self._ends = np.cumsum([s.count for s in self.segments], dtype=np.int64)

    @classmethod
    def load(cls, files: list[tuple[Path, dict]], d: int, settings: dict) -> "MappedVectors":
        segments = []
        for path, e in files:
            try:
                seg = Segment(path, e["sha256"], int(e["count"]), e.get("dtype", "float16"))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"index file {path} could not be read: {exc}") from exc
            if seg.count and (seg.array.shape != (seg.count, d) or seg.array.dtype != np.dtype(seg.dtype)):
                raise CheckpointError(f"index file {path} holds {seg.array.shape} {seg.array.dtype} vectors; its manifest "
                                      f"says ({seg.count}, {d}) {seg.dtype}")
            segments.append(seg)
        return cls(segments, d, settings.get("mapped_max", "1G"))

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
        """float32 rows at ``positions`` (in that order)."""
        positions = np.asarray(positions, dtype=np.int64)
        self.rows_read += len(positions)
        # a row touches at least one page, which stays mapped (resident) until released
        self._since_release += len(positions) * max(4096, self.d * self.segments[0].array.itemsize if self.segments else 0)
        if len(self.segments) == 1:
            out = self.segments[0].array[positions].astype(np.float32)
        else:
            out = np.empty((len(positions), self.d), np.float32)
            which = np.searchsorted(self._ends, positions, side="right")
            for s in np.unique(which):
                sel = which == s
                out[sel] = self.segments[s].array[positions[sel] - (self._ends[s - 1] if s else 0)]
        if self.mapped_max and self._since_release > self.mapped_max:
            self.release()
        return out

    def release(self) -> None:
        for s in self.segments:
            s.release()
        self._since_release = 0
        self.releases += 1

    def rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of each query among its shortlist ``candidates`` (positions, -1 = none)."""
        scores = np.full((len(q), k), -np.inf, np.float32)
        found = np.full((len(q), k), -1, np.int64)
        for i, cand in enumerate(candidates):
            cand = np.unique(cand[cand >= 0])  # sorted: the gather walks each mapping forwards
            if not len(cand):
                continue
            s = np.einsum("ij,j->i", self.take(cand), q[i])  # not BLAS: its threads stall a busy machine
            kk = min(k, len(cand))
            top = np.argpartition(-s, kk - 1)[:kk] if kk < len(cand) else np.arange(len(cand))
            top = top[np.argsort(-s[top], kind="stable")]
            scores[i, :kk], found[i, :kk] = s[top], cand[top]
        return scores, found

    def save_into(self, folder: Path, stem: str) -> list[dict]:
        return [s.save_into(folder, stem) for s in self.segments]
