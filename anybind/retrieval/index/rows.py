"""An index's row metadata without a Python dict per row: JSONL files read one line at a time.

Ten million rows held as dicts take several GB; :class:`RowMetadata` keeps large ones in their JSONL files (an
index's own ``metadata`` file, or a store's shard files while an index built from it is not yet saved), maps
each file and keeps only the byte offset of each line, and decodes a row when it is asked for (a search decodes
only its hits). Rows added later are held in memory. It reads like a list: ``len``, ``[i]``, slices, iteration.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from ...errors import CheckpointError
from .. import files
from ..files import jsonl_bytes

LAZY_BYTES = 64 << 20  # JSONL files at least this large are read lazily (~500k rows of id, modality, source)


class _JsonlBlock:
    """The lines of one JSONL file: a read-only mapping and the offset where each line starts."""

    def __init__(self, path: Path, expected: int | None = None):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise CheckpointError(f"metadata file {self.path} could not be read: {exc}") from exc
        starts, at, step = [np.zeros(1, np.int64)], 0, 64 << 20
        while at < size:  # line ends found in 64 MB windows: the whole file is never copied
            window = np.frombuffer(self.map[at:at + step], dtype=np.uint8)
            starts.append(np.flatnonzero(window == 10).astype(np.int64) + at + 1)
            at += step
        bounds = np.concatenate(starts)
        if size and bounds[-1] != size:  # a last line without its newline
            bounds = np.append(bounds, size)
        blank = np.diff(bounds) <= 1  # empty lines ("\n" alone) hold no row
        self.starts, self.ends = bounds[:-1][~blank], bounds[1:][~blank]
        if expected is not None and len(self.starts) != expected:
            raise CheckpointError(f"metadata file {self.path} has {len(self.starts)} rows, expected {expected}")

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, i: int) -> bytes:
        return bytes(self.map[int(self.starts[i]):int(self.ends[i])])

    def row(self, i: int) -> dict:
        try:
            return json.loads(self.line(i))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"metadata file {self.path} line {i + 1} is damaged: {exc}") from exc

    def copy_to(self, out) -> None:
        """Write every line (each ending in a newline) to the open binary file ``out``."""
        for lo in range(0, len(self), 65536):
            hi = min(len(self), lo + 65536)
            chunk = bytes(self.map[int(self.starts[lo]):int(self.ends[hi - 1])])
            out.write(chunk if chunk.endswith(b"\n") else chunk + b"\n")


class RowMetadata(Sequence):
    """Row metadata as JSONL blocks (read lazily) followed by rows held in memory."""

    def __init__(self, blocks: Iterable[_JsonlBlock] = (), rows: Iterable[Mapping[str, Any]] = ()):
        self.blocks = list(blocks)
        self.ends = np.cumsum([len(b) for b in self.blocks], dtype=np.int64)
        self.extra: list[dict] = [dict(r) for r in rows]

    @classmethod
    def from_files(cls, paths: Iterable[Path], counts: Iterable[int] | None = None) -> "RowMetadata":
        counts = list(counts) if counts is not None else None
        return cls([_JsonlBlock(p, counts[i] if counts else None) for i, p in enumerate(paths)])

    @property
    def _on_disk(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __len__(self) -> int:
        return self._on_disk + len(self.extra)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        if i >= self._on_disk:
            return self.extra[i - self._on_disk]
        b = int(np.searchsorted(self.ends, i, side="right"))
        return self.blocks[b].row(i - (int(self.ends[b - 1]) if b else 0))

    def __iter__(self) -> Iterator[dict]:
        for block in self.blocks:
            for j in range(len(block)):
                yield block.row(j)
        yield from self.extra

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.extra.extend(dict(r) for r in rows)

    def append(self, row: Mapping[str, Any]) -> None:
        self.extra.append(dict(row))

    def copy_to(self, out) -> None:
        for block in self.blocks:
            block.copy_to(out)
        for lo in range(0, len(self.extra), 65536):
            out.write(jsonl_bytes(self.extra[lo:lo + 65536]))


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (a list or a :class:`RowMetadata`) as JSONL, a block at a time."""
    with open(path, "wb") as out:
        if isinstance(rows, RowMetadata):
            rows.copy_to(out)
            return
        for lo in range(0, len(rows), 65536):
            out.write(jsonl_bytes(rows[lo:lo + 65536]))


def read_jsonl(path: Path, count: int | None = None) -> list[dict] | RowMetadata:
    """A metadata file's rows: a list, or a :class:`RowMetadata` when the file is :data:`LAZY_BYTES` or larger."""
    path = Path(path)
    if path.stat().st_size >= LAZY_BYTES:
        return RowMetadata.from_files([path], [count] if count is not None else None)
    return files.read_jsonl(path)
